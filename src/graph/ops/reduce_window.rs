//! Pooling: `reduce_window` with max or sum over sliding windows.
//!
//! Output size per dimension: `(in + pad_lo + pad_hi - window) / stride + 1`.

use super::{Op, Operand, Primitive, ReduceKind, i64_array, padding_attr, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, attr_err, shape_err};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Sum,
}

/// Window geometry, one entry per dimension of the operand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowSpec {
    pub window: Vec<i64>,
    pub strides: Vec<i64>,
    pub padding: Vec<(i64, i64)>,
}

impl WindowSpec {
    /// A `k x k` window with stride `s` over the spatial dims of NHWC, no padding.
    pub fn nhwc(k: i64, s: i64) -> Self {
        WindowSpec { window: vec![1, k, k, 1], strides: vec![1, s, s, 1], padding: vec![(0, 0); 4] }
    }

    pub(crate) fn output_dims(&self, op: &'static str, inputs: &[&Shape]) -> Result<Vec<i64>> {
        let x = inputs[0];
        let r = x.rank();
        if self.window.len() != r || self.strides.len() != r || self.padding.len() != r {
            return shape_err(op, inputs, "window, strides and padding need one entry per dimension");
        }
        (0..r)
            .map(|i| {
                let padded = x.dims[i] + self.padding[i].0 + self.padding[i].1;
                if self.window[i] < 1 || self.strides[i] < 1 {
                    return attr_err(op, format!("dimension {i}: window {} and stride {} must be at least 1", self.window[i], self.strides[i]));
                }
                if padded < self.window[i] {
                    return shape_err(op, inputs, format!("dimension {i}: padded size {padded} is smaller than the window {}", self.window[i]));
                }
                Ok((padded - self.window[i]) / self.strides[i] + 1)
            })
            .collect()
    }

    pub(crate) fn attributes(&self) -> String {
        format!("padding = {}, window_dimensions = {}, window_strides = {}", padding_attr(&self.padding), i64_array(&self.window), i64_array(&self.strides))
    }
}

#[derive(Clone, Debug)]
pub(crate) struct ReduceWindow {
    pub kind: PoolKind,
    pub spec: WindowSpec,
}

impl Primitive for ReduceWindow {
    fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "max_pool",
            PoolKind::Sum => "sum_pool",
        }
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        if !inputs[0].dtype.is_float() {
            return shape_err(self.name(), inputs, "pooling needs a float operand");
        }
        Ok(Shape::new(inputs[0].dtype, &self.spec.output_dims(self.name(), inputs)?))
    }

    /// Max: the cotangent goes to the element each window selected
    /// (`select_and_scatter`). Trap: with ties, the first maximum in the
    /// window (row-major order) takes it all, as in TensorFlow and JAX; where
    /// windows overlap an element collects from every window it won.
    /// Sum: every element of a window receives the window's cotangent, which
    /// is a sum-pool of the cotangent spread out by the strides.
    fn vjp(&self, g: &mut Graph, inputs: &[Tensor], y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = inputs[0];
        match self.kind {
            PoolKind::Max => Ok(vec![Some(g.select_and_scatter(x, cot, self.spec.clone())?)]),
            PoolKind::Sum => {
                let in_dims = g.dims(x).to_vec();
                let out_dims = g.dims(y).to_vec();
                let r = in_dims.len();
                let mut low = Vec::with_capacity(r);
                let mut high = Vec::with_capacity(r);
                let mut interior = Vec::with_capacity(r);
                for i in 0..r {
                    let out_d = if out_dims[i] == 0 { 0 } else { (out_dims[i] - 1) * self.spec.strides[i] + 1 };
                    let before = self.spec.window[i] - self.spec.padding[i].0 - 1;
                    let after = in_dims[i] + self.spec.window[i] - 1 - out_d - before;
                    low.push(before);
                    high.push(after);
                    interior.push(self.spec.strides[i] - 1);
                }
                let zero = g.scalar(0.0, g.dtype(cot))?;
                let spread = g.pad(cot, zero, &low, &high, &interior)?;
                let window = WindowSpec { window: self.spec.window.clone(), strides: vec![1; r], padding: vec![(0, 0); r] };
                Ok(vec![Some(g.reduce_window(spread, PoolKind::Sum, window)?)])
            }
        }
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        let dtype = args[0].shape.dtype;
        let scalar = Shape::scalar(dtype);
        let reduce = match self.kind {
            PoolKind::Max => ReduceKind::Max,
            PoolKind::Sum => ReduceKind::Sum,
        };
        let init = super::helper_name(result, "init");
        let tag = super::helper_name(result, "r");
        let tag = tag.trim_start_matches('%');
        let region = super::binary_region(tag, reduce.combiner(), &scalar, &scalar);
        let sig = signature(&[Operand { name: args[0].name, shape: args[0].shape }, Operand { name: &init, shape: &scalar }], out);
        format!(
            "{init} = stablehlo.constant dense<{}> : {} {loc}\n{result} = \"stablehlo.reduce_window\"({}, {init}) ({region}) {{{}}} : {sig} {loc}",
            reduce.init_literal(dtype),
            scalar.mlir(),
            args[0].name,
            self.spec.attributes()
        )
    }
}

impl Graph {
    pub fn reduce_window(&mut self, x: Tensor, kind: PoolKind, spec: WindowSpec) -> Result<Tensor> {
        self.push(Op::ReduceWindow(ReduceWindow { kind, spec }), &[x])
    }

    /// Max pooling.
    pub fn max_pool(&mut self, x: Tensor, spec: WindowSpec) -> Result<Tensor> {
        self.reduce_window(x, PoolKind::Max, spec)
    }

    /// Average pooling: the window sum divided by the window size (padding
    /// counts as zeros).
    pub fn avg_pool(&mut self, x: Tensor, spec: WindowSpec) -> Result<Tensor> {
        let size: i64 = spec.window.iter().product();
        let sum = self.reduce_window(x, PoolKind::Sum, spec)?;
        self.mul_scalar(sum, 1.0 / size as f64)
    }
}
