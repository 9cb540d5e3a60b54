//! Reshape: same elements in the same (row-major) order, new dimensions.

use super::{Op, Operand, Primitive, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, shape_err};

#[derive(Clone, Debug)]
pub(crate) struct Reshape {
    pub dims: Vec<i64>,
}

impl Primitive for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        let out = Shape::new(inputs[0].dtype, &self.dims);
        if self.dims.iter().any(|&d| d < 0) || out.element_count() != inputs[0].element_count() {
            return shape_err(self.name(), inputs, format!("cannot reshape to {:?}: element counts differ", self.dims));
        }
        Ok(out)
    }

    fn vjp(&self, g: &mut Graph, inputs: &[Tensor], _y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        let dims = g.dims(inputs[0]).to_vec();
        Ok(vec![Some(g.reshape(cot, &dims)?)])
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        format!("{result} = stablehlo.reshape {} : {} {loc}", args[0].name, signature(args, out))
    }
}

impl Graph {
    pub fn reshape(&mut self, x: Tensor, dims: &[i64]) -> Result<Tensor> {
        self.check("reshape", x)?;
        if self.dims(x) == dims {
            return Ok(x);
        }
        self.push(Op::Reshape(Reshape { dims: dims.to_vec() }), &[x])
    }
}
