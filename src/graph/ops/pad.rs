//! Padding with a scalar value: `low` before, `high` after (negative values
//! crop) and `interior` between elements, per dimension.

use super::{Op, Operand, Primitive, ReduceKind, i64_array, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, attr_err, shape_err};

#[derive(Clone, Debug)]
pub(crate) struct Pad {
    pub low: Vec<i64>,
    pub high: Vec<i64>,
    pub interior: Vec<i64>,
}

impl Primitive for Pad {
    fn name(&self) -> &'static str {
        "pad"
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        let (x, v) = (inputs[0], inputs[1]);
        let r = x.rank();
        if !v.dims.is_empty() || v.dtype != x.dtype {
            return shape_err(self.name(), inputs, "the padding value must be a scalar of the operand's type");
        }
        if self.low.len() != r || self.high.len() != r || self.interior.len() != r {
            return shape_err(self.name(), inputs, "low, high and interior need one entry per dimension");
        }
        let mut dims = Vec::with_capacity(r);
        for i in 0..r {
            if self.interior[i] < 0 {
                return attr_err(self.name(), format!("negative interior padding {} in dimension {i}", self.interior[i]));
            }
            let n = x.dims[i];
            let d = self.low[i] + self.high[i] + n + (n - 1).max(0) * self.interior[i];
            if d < 0 {
                return attr_err(self.name(), format!("dimension {i} would have negative size {d}"));
            }
            dims.push(d);
        }
        Ok(Shape::new(x.dtype, &dims))
    }

    /// The operand's cotangent is the cotangent with the padding cut away
    /// (a negative pad, then a strided slice that skips interior padding);
    /// the padding value's cotangent is everything that was cut away.
    fn vjp(&self, g: &mut Graph, _inputs: &[Tensor], _y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        let r = self.low.len();
        let zero = g.scalar(0.0, g.dtype(cot))?;
        let neg_low: Vec<i64> = self.low.iter().map(|v| -v).collect();
        let neg_high: Vec<i64> = self.high.iter().map(|v| -v).collect();
        let unpadded = g.pad(cot, zero, &neg_low, &neg_high, &vec![0; r])?;
        let dims = g.dims(unpadded).to_vec();
        let strides: Vec<i64> = self.interior.iter().map(|i| i + 1).collect();
        let dx = g.slice(unpadded, &vec![0; r], &dims, &strides)?;
        let all: Vec<i64> = (0..r as i64).collect();
        let total = g.reduce(cot, ReduceKind::Sum, &all)?;
        let kept = g.reduce(dx, ReduceKind::Sum, &all)?;
        let dv = g.sub(total, kept)?;
        Ok(vec![Some(dx), Some(dv)])
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        format!(
            "{result} = \"stablehlo.pad\"({}, {}) {{edge_padding_high = {}, edge_padding_low = {}, interior_padding = {}}} : {} {loc}",
            args[0].name,
            args[1].name,
            i64_array(&self.high),
            i64_array(&self.low),
            i64_array(&self.interior),
            signature(args, out)
        )
    }
}

impl Graph {
    pub fn pad(&mut self, x: Tensor, value: Tensor, low: &[i64], high: &[i64], interior: &[i64]) -> Result<Tensor> {
        self.check("pad", x)?;
        if low.iter().chain(high).chain(interior).all(|&v| v == 0) && low.len() == self.dims(x).len() {
            return Ok(x);
        }
        self.push(Op::Pad(Pad { low: low.to_vec(), high: high.to_vec(), interior: interior.to_vec() }), &[x, value])
    }
}
