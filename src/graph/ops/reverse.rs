//! Reverse the order of elements along some dimensions (flips a kernel for
//! the input gradient of a convolution).

use super::{Op, Operand, Primitive, i64_array, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, check_dims};

#[derive(Clone, Debug)]
pub(crate) struct Reverse {
    pub dims: Vec<i64>,
}

impl Primitive for Reverse {
    fn name(&self) -> &'static str {
        "reverse"
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        check_dims(self.name(), "dimensions", &self.dims, inputs[0].rank())?;
        Ok(inputs[0].clone())
    }

    fn vjp(&self, g: &mut Graph, _inputs: &[Tensor], _y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.reverse(cot, &self.dims)?)])
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        format!("{result} = \"stablehlo.reverse\"({}) {{dimensions = {}}} : {} {loc}", args[0].name, i64_array(&self.dims), signature(args, out))
    }
}

impl Graph {
    pub fn reverse(&mut self, x: Tensor, dims: &[i64]) -> Result<Tensor> {
        self.push(Op::Reverse(Reverse { dims: dims.to_vec() }), &[x])
    }
}
