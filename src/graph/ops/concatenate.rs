//! Concatenation along one dimension.

use super::{Op, Operand, Primitive, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, attr_err, shape_err};

#[derive(Clone, Debug)]
pub(crate) struct Concatenate {
    pub dim: i64,
}

impl Primitive for Concatenate {
    fn name(&self) -> &'static str {
        "concatenate"
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        let first = inputs[0];
        let d = self.dim;
        if d < 0 || d as usize >= first.rank() {
            return attr_err(self.name(), format!("dimension {d} out of range for rank {}", first.rank()));
        }
        let mut dims = first.dims.clone();
        dims[d as usize] = 0;
        for s in inputs {
            let same_elsewhere = s.rank() == first.rank() && s.dims.iter().zip(&first.dims).enumerate().all(|(i, (a, b))| i == d as usize || a == b);
            if s.dtype != first.dtype || !same_elsewhere {
                return shape_err(self.name(), inputs, format!("operands must agree in type and in every dimension but {d}"));
            }
            dims[d as usize] += s.dims[d as usize];
        }
        Ok(Shape::new(first.dtype, &dims))
    }

    /// Each operand's cotangent is its slice of the output's.
    fn vjp(&self, g: &mut Graph, inputs: &[Tensor], _y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut start = 0;
        let mut out = Vec::with_capacity(inputs.len());
        for &x in inputs {
            let n = g.dims(x)[self.dim as usize];
            out.push(Some(g.slice_dim(cot, self.dim as usize, start, start + n)?));
            start += n;
        }
        Ok(out)
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        let names = args.iter().map(|a| a.name).collect::<Vec<_>>().join(", ");
        format!("{result} = stablehlo.concatenate {names}, dim = {} : {} {loc}", self.dim, signature(args, out))
    }
}

impl Graph {
    /// Joins `parts` along `dim`.
    pub fn concatenate(&mut self, parts: &[Tensor], dim: i64) -> Result<Tensor> {
        if parts.is_empty() {
            return attr_err("concatenate", "needs at least one operand");
        }
        if parts.len() == 1 {
            self.check("concatenate", parts[0])?;
            return Ok(parts[0]);
        }
        self.push(Op::Concatenate(Concatenate { dim }), parts)
    }
}
