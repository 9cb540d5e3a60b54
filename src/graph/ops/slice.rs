//! Static strided slice: `x[start:limit:stride]` per dimension.

use super::{Op, Operand, Primitive, i64_array, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, attr_err, shape_err};

#[derive(Clone, Debug)]
pub(crate) struct Slice {
    pub start: Vec<i64>,
    pub limit: Vec<i64>,
    pub strides: Vec<i64>,
}

impl Primitive for Slice {
    fn name(&self) -> &'static str {
        "slice"
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        let x = inputs[0];
        let r = x.rank();
        if self.start.len() != r || self.limit.len() != r || self.strides.len() != r {
            return shape_err(self.name(), inputs, "start, limit and strides need one entry per dimension");
        }
        let mut dims = Vec::with_capacity(r);
        for i in 0..r {
            let (s, l, st) = (self.start[i], self.limit[i], self.strides[i]);
            if st < 1 || s < 0 || l < s || l > x.dims[i] {
                return attr_err(self.name(), format!("dimension {i}: {s}:{l}:{st} does not fit size {}", x.dims[i]));
            }
            dims.push((l - s + st - 1) / st);
        }
        Ok(Shape::new(x.dtype, &dims))
    }

    /// Scatter the cotangent back into zeros: a pad with the slice's offsets,
    /// and `stride - 1` zeros between elements.
    fn vjp(&self, g: &mut Graph, inputs: &[Tensor], y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        let in_dims = g.dims(inputs[0]).to_vec();
        let out_dims = g.dims(y).to_vec();
        let mut low = Vec::new();
        let mut high = Vec::new();
        let mut interior = Vec::new();
        for i in 0..in_dims.len() {
            let last = if out_dims[i] == 0 { self.start[i] - 1 } else { self.start[i] + (out_dims[i] - 1) * self.strides[i] };
            low.push(self.start[i]);
            high.push(in_dims[i] - last - 1);
            interior.push(self.strides[i] - 1);
        }
        let zero = g.scalar(0.0, g.dtype(cot))?;
        Ok(vec![Some(g.pad(cot, zero, &low, &high, &interior)?)])
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        format!(
            "{result} = \"stablehlo.slice\"({}) {{limit_indices = {}, start_indices = {}, strides = {}}} : {} {loc}",
            args[0].name,
            i64_array(&self.limit),
            i64_array(&self.start),
            i64_array(&self.strides),
            signature(args, out)
        )
    }
}

impl Graph {
    pub fn slice(&mut self, x: Tensor, start: &[i64], limit: &[i64], strides: &[i64]) -> Result<Tensor> {
        self.push(Op::Slice(Slice { start: start.to_vec(), limit: limit.to_vec(), strides: strides.to_vec() }), &[x])
    }

    /// `x[start:limit]` along one dimension, everything along the others.
    pub fn slice_dim(&mut self, x: Tensor, dim: usize, start: i64, limit: i64) -> Result<Tensor> {
        self.check("slice", x)?;
        let dims = self.dims(x).to_vec();
        let mut s = vec![0; dims.len()];
        let mut l = dims.clone();
        if dim >= dims.len() {
            return attr_err("slice", format!("dimension {dim} out of range for {dims:?}"));
        }
        s[dim] = start;
        l[dim] = limit;
        self.slice(x, &s, &l, &vec![1; dims.len()])
    }
}
