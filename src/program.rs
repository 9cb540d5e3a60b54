//! The emitted program as a plain value: StableHLO text (or bytecode) with
//! its name and input signature, and the type and shape of one tensor.
//!
//! The graph writes a [`Program`] and the runtime (`pjrt`) compiles one; this
//! module sits below both so that neither imports the other. It holds data
//! and parsing only: it never compiles, loads or runs anything.

use std::collections::BTreeSet;

use crate::tensor::DType;

/// Type and shape of one program input or output.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TensorSpec {
    pub dtype: DType,
    pub dims: Vec<i64>,
}

impl std::fmt::Display for TensorSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "tensor<")?;
        for d in &self.dims {
            write!(f, "{d}x")?;
        }
        write!(f, "{}>", self.dtype)
    }
}

/// A program to compile: StableHLO (MLIR text or bytecode), optionally with
/// its input signature so that executions are checked before the FFI call.
#[derive(Clone, Debug)]
pub struct Program {
    name: String,
    code: Vec<u8>,
    inputs: Option<Vec<TensorSpec>>,
}

impl Program {
    /// A StableHLO module in MLIR text (or bytecode) form. For text, the
    /// input signature is read from `func.func public @main(...)` so that
    /// executions are checked even when the caller declares nothing.
    pub fn stablehlo(name: impl Into<String>, code: impl Into<Vec<u8>>) -> Self {
        let code = code.into();
        let inputs = std::str::from_utf8(&code).ok().and_then(parse_main_signature);
        Program { name: name.into(), code, inputs }
    }

    /// Declares the per-device input signature; `execute` then checks every
    /// argument's type and shape against it.
    pub fn with_inputs(mut self, inputs: Vec<TensorSpec>) -> Self {
        self.inputs = Some(inputs);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn code(&self) -> &[u8] {
        &self.code
    }

    /// The element types of the operands of every `op` in this program's
    /// StableHLO text (e.g. `stablehlo.convolution`, `stablehlo.dot_general`):
    /// what the program asks the compiler to compute those ops in. Empty
    /// for bytecode or a program without such ops.
    pub fn operand_types(&self, op: &str) -> BTreeSet<DType> {
        let Ok(text) = std::str::from_utf8(&self.code) else { return BTreeSet::new() };
        let mut types = BTreeSet::new();
        for line in text.lines() {
            let Some(at) = line.find(&format!("= {op}")) else { continue };
            let rest = &line[at + 2 + op.len()..];
            if !rest.starts_with(['(', ' ']) {
                continue; // another op whose name starts with this one
            }
            // `... : (tensor<AxBxT>, tensor<CxDxT>) -> tensor<...> loc(...)`
            let (Some(open), Some(close)) = (rest.rfind(" : ("), rest.rfind(") -> ")) else { continue };
            if close > open {
                types.extend(tensor_types(&rest[open + 4..close]).into_iter().flatten());
            }
        }
        types
    }

    /// The declared (or parsed) per-device input signature, if known.
    pub fn inputs(&self) -> Option<&[TensorSpec]> {
        self.inputs.as_deref()
    }
}

/// Reads the argument types of `@main` from StableHLO text: `tensor<2x3xf32>`
/// per argument. Returns `None` if the text is not in the expected form (the
/// compiler will then report what is wrong).
pub(crate) fn parse_main_signature(text: &str) -> Option<Vec<TensorSpec>> {
    let start = text.find("@main(")? + "@main(".len();
    let mut depth = 1usize;
    let mut end = start;
    for (i, c) in text[start..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    end = start + i;
                    break;
                }
            }
            _ => {}
        }
    }
    let args = &text[start..end];
    tensor_specs(args)
}

/// The element types of the `tensor<...>` types in `text`, in order; `None`
/// for a type this crate has no [`DType`] for.
fn tensor_types(text: &str) -> Vec<Option<DType>> {
    let mut types = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find("tensor<") {
        let after = &rest[pos + "tensor<".len()..];
        let Some(close) = after.find('>') else { break };
        types.push(after[..close].rsplit('x').next().and_then(dtype_named));
        rest = &after[close..];
    }
    types
}

/// The MLIR name of an element type, as ours.
fn dtype_named(name: &str) -> Option<DType> {
    Some(match name.trim() {
        "f32" => DType::F32,
        "f64" => DType::F64,
        "bf16" => DType::BF16,
        "i32" => DType::I32,
        "ui32" => DType::U32,
        "ui8" => DType::U8,
        "i1" => DType::Pred,
        _ => return None,
    })
}

fn tensor_specs(args: &str) -> Option<Vec<TensorSpec>> {
    let mut specs = Vec::new();
    let mut rest = args;
    while let Some(pos) = rest.find("tensor<") {
        let after = &rest[pos + "tensor<".len()..];
        let close = after.find('>')?;
        let body = &after[..close];
        let mut parts: Vec<&str> = body.split('x').collect();
        let dtype = dtype_named(parts.pop()?)?;
        let dims = parts.iter().map(|d| d.trim().parse::<i64>().ok()).collect::<Option<Vec<_>>>()?;
        specs.push(TensorSpec { dtype, dims });
        rest = &after[close..];
    }
    Some(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_main_signature() {
        let text = "func.func public @main(%a: tensor<2x3xf32> {tf.aliasing_output = 0 : i32}, %b: tensor<i32>, %c: tensor<4xi1>) -> tensor<f32> {";
        let specs = parse_main_signature(text).unwrap();
        assert_eq!(
            specs,
            vec![
                TensorSpec { dtype: DType::F32, dims: vec![2, 3] },
                TensorSpec { dtype: DType::I32, dims: vec![] },
                TensorSpec { dtype: DType::Pred, dims: vec![4] },
            ]
        );
        assert!(parse_main_signature("func.func @main(%a: tensor<2xf16>)").is_none());
        assert_eq!(parse_main_signature("func.func @main()").unwrap(), vec![]);
    }

    #[test]
    fn reads_the_operand_types_of_an_op() {
        let text = "func.func public @main(%arg0: tensor<2x3xf32>) -> tensor<2x2xf32> {\n\
            %0 = stablehlo.convert %arg0 : (tensor<2x3xf32>) -> tensor<2x3xbf16> loc(\"a/convert\")\n\
            %1 = stablehlo.dot_general %0, %0, contracting_dims = [1] x [1] : (tensor<2x3xbf16>, tensor<2x3xbf16>) -> tensor<2x2xbf16> loc(\"a/dot\")\n\
            %2 = stablehlo.convolution(%0, %0) dim_numbers = [b, 0, f]x[o, 0, i]->[b, 0, f] : (tensor<2x3xf32>, tensor<2x3xbf16>) -> tensor<2x2xf32> loc(\"c\")\n}";
        let p = Program::stablehlo("t", text);
        assert_eq!(p.operand_types("stablehlo.dot_general"), BTreeSet::from([DType::BF16]));
        assert_eq!(p.operand_types("stablehlo.convolution"), BTreeSet::from([DType::F32, DType::BF16]));
        assert!(p.operand_types("stablehlo.conv").is_empty(), "a prefix of another op's name matches nothing");
        assert!(p.operand_types("stablehlo.add").is_empty());
    }
}
