//! Reductions over a set of dimensions (sum, max, min).

use super::{Direction, Op, Operand, Primitive, constant::float_literal, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{GraphError, Result, Shape, check_dims};
use crate::tensor::DType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceKind {
    Sum,
    Max,
    Min,
}

impl ReduceKind {
    pub(crate) fn combiner(self) -> &'static str {
        match self {
            ReduceKind::Sum => "stablehlo.add",
            ReduceKind::Max => "stablehlo.maximum",
            ReduceKind::Min => "stablehlo.minimum",
        }
    }

    /// The identity element, as a literal of `dtype`.
    pub(crate) fn init_literal(self, dtype: DType) -> String {
        match (self, dtype) {
            (ReduceKind::Sum, d) if d.is_float() => float_literal(0.0, d),
            (ReduceKind::Sum, _) => "0".into(),
            (ReduceKind::Max, d) if d.is_float() => float_literal(f64::NEG_INFINITY, d),
            (ReduceKind::Min, d) if d.is_float() => float_literal(f64::INFINITY, d),
            (ReduceKind::Max, DType::I32) => i32::MIN.to_string(),
            (ReduceKind::Min, DType::I32) => i32::MAX.to_string(),
            (ReduceKind::Max, _) => "0".into(),
            (ReduceKind::Min, _) => u32::MAX.to_string(),
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Reduce {
    pub kind: ReduceKind,
    pub dims: Vec<i64>,
}

impl Primitive for Reduce {
    fn name(&self) -> &'static str {
        match self.kind {
            ReduceKind::Sum => "reduce_sum",
            ReduceKind::Max => "reduce_max",
            ReduceKind::Min => "reduce_min",
        }
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        let x = inputs[0];
        check_dims(self.name(), "dimensions", &self.dims, x.rank())?;
        if x.dtype == DType::Pred {
            return Err(GraphError::DType { op: self.name(), got: x.dtype, expected: "a number type" });
        }
        let dims: Vec<i64> = (0..x.rank()).filter(|d| !self.dims.contains(&(*d as i64))).map(|d| x.dims[d]).collect();
        Ok(Shape::new(x.dtype, &dims))
    }

    /// Sum: broadcast the cotangent back. Max/min trap: with ties the
    /// cotangent is shared equally by all elements equal to the result (as
    /// JAX does), so the rule is symmetric and the total is preserved.
    fn vjp(&self, g: &mut Graph, inputs: &[Tensor], y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = inputs[0];
        let in_dims = g.dims(x).to_vec();
        let kept: Vec<i64> = (0..in_dims.len() as i64).filter(|d| !self.dims.contains(d)).collect();
        let cot_b = g.broadcast_in_dim(cot, &in_dims, &kept)?;
        if self.kind == ReduceKind::Sum {
            return Ok(vec![Some(cot_b)]);
        }
        let y_b = g.broadcast_in_dim(y, &in_dims, &kept)?;
        let hit = g.compare(x, y_b, Direction::Eq)?;
        let hit = g.convert(hit, g.dtype(x))?;
        let count = g.reduce(hit, ReduceKind::Sum, &self.dims)?;
        let count_b = g.broadcast_in_dim(count, &in_dims, &kept)?;
        let share = g.div(hit, count_b)?;
        Ok(vec![Some(g.mul(cot_b, share)?)])
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        let dtype = args[0].shape.dtype;
        let scalar = Shape::scalar(dtype);
        let dims = self.dims.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        let init = super::helper_name(result, "init");
        let init_op = format!("{init} = stablehlo.constant dense<{}> : {} {loc}", self.kind.init_literal(dtype), scalar.mlir());
        let sig = signature(&[Operand { name: args[0].name, shape: args[0].shape }, Operand { name: &init, shape: &scalar }], out);
        format!(
            "{init_op}\n{result} = stablehlo.reduce({} init: {init}) applies {} across dimensions = [{dims}] : {sig} {loc}",
            args[0].name,
            self.kind.combiner()
        )
    }
}

impl Graph {
    pub fn reduce(&mut self, x: Tensor, kind: ReduceKind, dims: &[i64]) -> Result<Tensor> {
        self.check("reduce", x)?;
        if dims.is_empty() {
            return Ok(x);
        }
        self.push(Op::Reduce(Reduce { kind, dims: dims.to_vec() }), &[x])
    }

    pub fn sum(&mut self, x: Tensor, dims: &[i64]) -> Result<Tensor> {
        self.reduce(x, ReduceKind::Sum, dims)
    }

    /// Sum over every dimension, to a scalar.
    pub fn sum_all(&mut self, x: Tensor) -> Result<Tensor> {
        self.check("reduce", x)?;
        let all: Vec<i64> = (0..self.dims(x).len() as i64).collect();
        self.reduce(x, ReduceKind::Sum, &all)
    }
}
