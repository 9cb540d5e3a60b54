//! Transpose: output dimension `i` is input dimension `perm[i]`.

use super::{Op, Operand, Primitive, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, check_dims, shape_err};

#[derive(Clone, Debug)]
pub(crate) struct Transpose {
    pub perm: Vec<i64>,
}

impl Primitive for Transpose {
    fn name(&self) -> &'static str {
        "transpose"
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        let x = inputs[0];
        if self.perm.len() != x.rank() {
            return shape_err(self.name(), inputs, format!("permutation {:?} must have one entry per dimension", self.perm));
        }
        check_dims(self.name(), "permutation", &self.perm, x.rank())?;
        let dims: Vec<i64> = self.perm.iter().map(|&p| x.dims[p as usize]).collect();
        Ok(Shape::new(x.dtype, &dims))
    }

    fn vjp(&self, g: &mut Graph, _inputs: &[Tensor], _y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        let mut inverse = vec![0i64; self.perm.len()];
        for (i, &p) in self.perm.iter().enumerate() {
            inverse[p as usize] = i as i64;
        }
        Ok(vec![Some(g.transpose(cot, &inverse)?)])
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        let dims = self.perm.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        format!("{result} = stablehlo.transpose {}, dims = [{dims}] : {} {loc}", args[0].name, signature(args, out))
    }
}

impl Graph {
    pub fn transpose(&mut self, x: Tensor, perm: &[i64]) -> Result<Tensor> {
        self.check("transpose", x)?;
        if perm.iter().enumerate().all(|(i, &p)| p == i as i64) && perm.len() == self.dims(x).len() {
            return Ok(x);
        }
        self.push(Op::Transpose(Transpose { perm: perm.to_vec() }), &[x])
    }
}
