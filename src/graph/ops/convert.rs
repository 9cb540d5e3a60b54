//! Element type conversion.

use super::{Op, Operand, Primitive, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape};
use crate::tensor::DType;

#[derive(Clone, Debug)]
pub(crate) struct Convert {
    pub to: DType,
}

impl Primitive for Convert {
    fn name(&self) -> &'static str {
        "convert"
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        Ok(inputs[0].with_dtype(self.to))
    }

    /// Between float types the cotangent is converted back; from or to an
    /// integer type the function is piecewise constant (zero derivative).
    fn vjp(&self, g: &mut Graph, inputs: &[Tensor], _y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        let from = g.dtype(inputs[0]);
        if from.is_float() && self.to.is_float() { Ok(vec![Some(g.convert(cot, from)?)]) } else { Ok(vec![None]) }
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        format!("{result} = stablehlo.convert {} : {} {loc}", args[0].name, signature(args, out))
    }
}

impl Graph {
    /// Converts to `to`; a no-op (no node) when already of that type.
    pub fn convert(&mut self, x: Tensor, to: DType) -> Result<Tensor> {
        self.check("convert", x)?;
        if self.dtype(x) == to {
            return Ok(x);
        }
        self.push(Op::Convert(Convert { to }), &[x])
    }
}
