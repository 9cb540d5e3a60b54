//! `broadcast_in_dim`: the only way shapes grow. Input dimension `i` becomes
//! output dimension `dims[i]` (sizes equal, or 1 to be repeated).

use super::{Op, Operand, Primitive, ReduceKind, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, attr_err, shape_err};

#[derive(Clone, Debug)]
pub(crate) struct BroadcastInDim {
    pub dims: Vec<i64>,
    pub out_dims: Vec<i64>,
}

impl Primitive for BroadcastInDim {
    fn name(&self) -> &'static str {
        "broadcast_in_dim"
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        let x = inputs[0];
        if self.dims.len() != x.rank() {
            return shape_err(self.name(), inputs, format!("broadcast_dimensions {:?} must name one output dimension per input dimension", self.dims));
        }
        for (i, &d) in self.dims.iter().enumerate() {
            if d < 0 || d as usize >= self.out_dims.len() {
                return attr_err(self.name(), format!("dimension {d} out of range for output shape {:?}", self.out_dims));
            }
            if i > 0 && d <= self.dims[i - 1] {
                return attr_err(self.name(), format!("broadcast_dimensions {:?} must be strictly increasing", self.dims));
            }
            let (from, to) = (x.dims[i], self.out_dims[d as usize]);
            if from != to && from != 1 {
                return shape_err(self.name(), inputs, format!("input dimension {i} (size {from}) cannot become output dimension {d} of size {to}"));
            }
        }
        Ok(Shape::new(x.dtype, &self.out_dims))
    }

    /// Sum the cotangent over every dimension that was created or repeated.
    fn vjp(&self, g: &mut Graph, inputs: &[Tensor], _y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = inputs[0];
        let in_dims = g.dims(x).to_vec();
        let mut summed = Vec::new();
        for d in 0..self.out_dims.len() as i64 {
            match self.dims.iter().position(|&m| m == d) {
                None => summed.push(d),
                Some(i) if in_dims[i] == 1 && self.out_dims[d as usize] != 1 => summed.push(d),
                Some(_) => {}
            }
        }
        let reduced = if summed.is_empty() { cot } else { g.reduce(cot, ReduceKind::Sum, &summed)? };
        let dx = if g.dims(reduced) == in_dims.as_slice() { reduced } else { g.reshape(reduced, &in_dims)? };
        Ok(vec![Some(dx)])
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        let dims = self.dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        format!("{result} = stablehlo.broadcast_in_dim {}, dims = [{dims}] : {} {loc}", args[0].name, signature(args, out))
    }
}

impl Graph {
    /// Input dimension `i` becomes output dimension `dims[i]` of `out_dims`.
    pub fn broadcast_in_dim(&mut self, x: Tensor, out_dims: &[i64], dims: &[i64]) -> Result<Tensor> {
        self.check("broadcast_in_dim", x)?;
        if self.dims(x) == out_dims && dims.iter().enumerate().all(|(i, &d)| d == i as i64) {
            return Ok(x);
        }
        self.push(Op::BroadcastInDim(BroadcastInDim { dims: dims.to_vec(), out_dims: out_dims.to_vec() }), &[x])
    }

    /// NumPy-style broadcast of `x` to `out_dims` (trailing dimensions align).
    pub fn broadcast_to(&mut self, x: Tensor, out_dims: &[i64]) -> Result<Tensor> {
        self.check("broadcast_to", x)?;
        let rank = self.dims(x).len();
        if rank > out_dims.len() {
            return shape_err("broadcast_to", &[self.shape(x)], format!("cannot broadcast to the lower-rank shape {out_dims:?}"));
        }
        let offset = (out_dims.len() - rank) as i64;
        let dims: Vec<i64> = (0..rank as i64).map(|i| i + offset).collect();
        self.broadcast_in_dim(x, out_dims, &dims)
    }
}
