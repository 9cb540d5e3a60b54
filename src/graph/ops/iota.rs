//! `iota`: indices along one dimension (0, 1, 2, ...).

use super::{Op, Operand, Primitive};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, attr_err};
use crate::tensor::DType;

#[derive(Clone, Debug)]
pub(crate) struct Iota {
    pub dim: i64,
}

impl Primitive for Iota {
    fn name(&self) -> &'static str {
        "iota"
    }

    fn shape(&self, _inputs: &[&Shape]) -> Result<Shape> {
        unreachable!("iota is created with its shape")
    }

    /// Not a function of anything: no inputs, nothing to propagate.
    fn vjp(&self, _g: &mut Graph, _inputs: &[Tensor], _output: Tensor, _cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![])
    }

    fn emit(&self, result: &str, _args: &[Operand], out: &Shape, loc: &str) -> String {
        format!("{result} = stablehlo.iota dim = {} : {} {loc}", self.dim, out.mlir())
    }
}

impl Graph {
    /// Element `[.., i, ..]` (index `i` along `dim`) equals `i`.
    pub fn iota(&mut self, dtype: DType, dims: &[i64], dim: i64) -> Result<Tensor> {
        if dim < 0 || dim as usize >= dims.len() {
            return attr_err("iota", format!("dimension {dim} out of range for shape {dims:?}"));
        }
        if dtype == DType::Pred {
            return attr_err("iota", "iota of booleans");
        }
        Ok(self.push_unchecked(Op::Iota(Iota { dim }), vec![], Shape::new(dtype, dims)))
    }
}
