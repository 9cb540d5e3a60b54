//! The emitted program as a plain value: StableHLO text (or bytecode) with
//! its name and input signature, and the type and shape of one tensor.
//!
//! The graph writes a [`Program`] and the runtime (`pjrt`) compiles one; this
//! module sits below both so that neither imports the other. It holds data
//! and parsing only: it never compiles, loads or runs anything.

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
    let mut specs = Vec::new();
    let mut rest = args;
    while let Some(pos) = rest.find("tensor<") {
        let after = &rest[pos + "tensor<".len()..];
        let close = after.find('>')?;
        let body = &after[..close];
        let mut parts: Vec<&str> = body.split('x').collect();
        let ty = parts.pop()?;
        let dtype = match ty.trim() {
            "f32" => DType::F32,
            "f64" => DType::F64,
            "bf16" => DType::BF16,
            "i32" => DType::I32,
            "ui32" => DType::U32,
            "i1" => DType::Pred,
            _ => return None,
        };
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
}
