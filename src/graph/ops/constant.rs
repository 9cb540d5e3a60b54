//! Constants: a splat value or a full literal.

use super::{Op, Operand, Primitive};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, attr_err};
use crate::tensor::{DType, HostTensor};

/// The value of a constant.
#[derive(Clone, Debug, PartialEq)]
pub enum Literal {
    /// Every element equal to this value (converted to the dtype).
    Splat(f64),
    /// Raw little-endian element bytes, row-major.
    Bytes(Vec<u8>),
}

#[derive(Clone, Debug)]
pub(crate) struct Constant {
    pub value: Literal,
}

/// A float as MLIR accepts it: decimal when exact, hex bits for inf/nan.
pub(crate) fn float_literal(v: f64, dtype: DType) -> String {
    match dtype {
        DType::F32 => {
            let f = v as f32;
            if !f.is_finite() {
                return format!("0x{:08X}", f.to_bits());
            }
            let mut s = format!("{f:?}");
            if !s.contains('.') {
                match s.find('e') {
                    Some(e) => s.insert_str(e, ".0"),
                    None => s.push_str(".0"),
                }
            }
            s
        }
        DType::F64 => {
            if !v.is_finite() {
                return format!("0x{:016X}", v.to_bits());
            }
            let mut s = format!("{v:?}");
            if !s.contains('.') {
                match s.find('e') {
                    Some(e) => s.insert_str(e, ".0"),
                    None => s.push_str(".0"),
                }
            }
            s
        }
        DType::BF16 => format!("0x{:04X}", half::bf16::from_f64(v).to_bits()),
        _ => unreachable!("float_literal on {dtype}"),
    }
}

fn splat_literal(v: f64, dtype: DType) -> String {
    match dtype {
        DType::F32 | DType::F64 | DType::BF16 => float_literal(v, dtype),
        DType::I32 => (v as i32).to_string(),
        DType::U32 => (v as u32).to_string(),
        DType::U8 => (v as u8).to_string(),
        DType::Pred => (v != 0.0).to_string(),
    }
}

impl Primitive for Constant {
    fn name(&self) -> &'static str {
        "constant"
    }

    fn shape(&self, _inputs: &[&Shape]) -> Result<Shape> {
        unreachable!("constants are created with their shape")
    }

    fn vjp(&self, _g: &mut Graph, _inputs: &[Tensor], _output: Tensor, _cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![])
    }

    fn emit(&self, result: &str, _args: &[Operand], out: &Shape, loc: &str) -> String {
        let value = match &self.value {
            Literal::Splat(v) => splat_literal(*v, out.dtype),
            Literal::Bytes(bytes) => {
                let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
                format!("\"0x{hex}\"")
            }
        };
        format!("{result} = stablehlo.constant dense<{value}> : {} {loc}", out.mlir())
    }
}

impl Graph {
    /// A tensor of shape `dims` with every element `value`.
    pub fn full(&mut self, value: f64, dtype: DType, dims: &[i64]) -> Result<Tensor> {
        if let Some(d) = dims.iter().find(|&&d| d < 0) {
            return attr_err("constant", format!("negative dimension {d} in {dims:?}"));
        }
        Ok(self.push_unchecked(Op::Constant(Constant { value: Literal::Splat(value) }), vec![], Shape::new(dtype, dims)))
    }

    /// A scalar constant.
    pub fn scalar(&mut self, value: f64, dtype: DType) -> Result<Tensor> {
        self.full(value, dtype, &[])
    }

    /// Zeros shaped like `t`.
    pub fn zeros_like(&mut self, t: Tensor) -> Result<Tensor> {
        let s = self.shape(t).clone();
        self.full(0.0, s.dtype, &s.dims)
    }

    /// A constant holding the values of a host tensor.
    pub fn constant(&mut self, value: &HostTensor) -> Result<Tensor> {
        let shape = Shape::new(value.dtype(), value.dims());
        // A single element is written as a splat: shorter and easier to read.
        let literal = if value.element_count() == 1 && value.dtype() == DType::F32 {
            Literal::Splat(value.to_f32().map_err(|e| crate::graph::GraphError::Attribute { op: "constant", detail: e.to_string() })?[0] as f64)
        } else {
            Literal::Bytes(value.bytes().to_vec())
        };
        Ok(self.push_unchecked(Op::Constant(Constant { value: literal }), vec![], shape))
    }
}
