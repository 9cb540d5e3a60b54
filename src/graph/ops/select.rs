//! `select(pred, on_true, on_false)`, elementwise.

use super::{Op, Operand, Primitive, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, shape_err};
use crate::tensor::DType;

#[derive(Clone, Debug)]
pub(crate) struct Select;

impl Primitive for Select {
    fn name(&self) -> &'static str {
        "select"
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        let (p, a, b) = (inputs[0], inputs[1], inputs[2]);
        if p.dtype != DType::Pred {
            return shape_err("select", inputs, "the predicate must be i1");
        }
        if a != b {
            return shape_err("select", inputs, "both branches must have the same type and shape");
        }
        if !p.dims.is_empty() && p.dims != a.dims {
            return shape_err("select", inputs, "the predicate must be a scalar or shaped like the branches");
        }
        Ok(a.clone())
    }

    /// The cotangent flows to whichever branch was taken.
    fn vjp(&self, g: &mut Graph, inputs: &[Tensor], _y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        let p = inputs[0];
        let zero = g.zeros_like(cot)?;
        let da = g.select(p, cot, zero)?;
        let db = g.select(p, zero, cot)?;
        Ok(vec![None, Some(da), Some(db)])
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        format!("{result} = \"stablehlo.select\"({}, {}, {}) : {} {loc}", args[0].name, args[1].name, args[2].name, signature(args, out))
    }
}

impl Graph {
    pub fn select(&mut self, pred: Tensor, on_true: Tensor, on_false: Tensor) -> Result<Tensor> {
        self.push(Op::Select(Select), &[pred, on_true, on_false])
    }
}
