//! Elementwise functions of two tensors of the same shape. Broadcasting is
//! explicit (`broadcast_in_dim`), so these rules never have to undo it.

use super::{Direction, Op, Operand, Primitive};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{GraphError, Result, Shape, shape_err};
use crate::tensor::DType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    /// Bitwise (or logical, on booleans).
    And,
    Or,
    Xor,
    ShiftLeft,
    ShiftRightLogical,
}

impl BinaryKind {
    fn op_name(self) -> &'static str {
        match self {
            BinaryKind::Add => "add",
            BinaryKind::Sub => "subtract",
            BinaryKind::Mul => "multiply",
            BinaryKind::Div => "divide",
            BinaryKind::Max => "maximum",
            BinaryKind::Min => "minimum",
            BinaryKind::And => "and",
            BinaryKind::Or => "or",
            BinaryKind::Xor => "xor",
            BinaryKind::ShiftLeft => "shift_left",
            BinaryKind::ShiftRightLogical => "shift_right_logical",
        }
    }

    fn is_bitwise(self) -> bool {
        matches!(self, BinaryKind::And | BinaryKind::Or | BinaryKind::Xor | BinaryKind::ShiftLeft | BinaryKind::ShiftRightLogical)
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Binary {
    pub kind: BinaryKind,
}

impl Primitive for Binary {
    fn name(&self) -> &'static str {
        self.kind.op_name()
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        let (a, b) = (inputs[0], inputs[1]);
        if a != b {
            return shape_err(self.name(), inputs, "operands must have the same type and shape; broadcast explicitly");
        }
        let ok = if self.kind.is_bitwise() {
            a.dtype.is_integer() || (a.dtype == DType::Pred && !matches!(self.kind, BinaryKind::ShiftLeft | BinaryKind::ShiftRightLogical))
        } else {
            a.dtype != DType::Pred
        };
        if !ok {
            let expected = if self.kind.is_bitwise() { "an integer type (or i1 for and/or/xor)" } else { "a number type" };
            return Err(GraphError::DType { op: self.name(), got: a.dtype, expected });
        }
        Ok(a.clone())
    }

    /// Trap: at ties (a == b) max and min are not differentiable; like JAX we
    /// split the cotangent evenly between the two operands.
    fn vjp(&self, g: &mut Graph, inputs: &[Tensor], y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        let (a, b) = (inputs[0], inputs[1]);
        Ok(match self.kind {
            BinaryKind::Add => vec![Some(cot), Some(cot)],
            BinaryKind::Sub => vec![Some(cot), Some(g.neg(cot)?)],
            BinaryKind::Mul => vec![Some(g.mul(cot, b)?), Some(g.mul(cot, a)?)],
            BinaryKind::Div => {
                // d(a/b)/db = -a/b² = -y/b
                let da = g.div(cot, b)?;
                let y_over_b = g.div(y, b)?;
                let t = g.mul(cot, y_over_b)?;
                vec![Some(da), Some(g.neg(t)?)]
            }
            BinaryKind::Max | BinaryKind::Min => {
                let wins = if self.kind == BinaryKind::Max { Direction::Gt } else { Direction::Lt };
                let dtype = g.dtype(a);
                let a_wins = g.compare(a, b, wins)?;
                let b_wins = g.compare(b, a, wins)?;
                let tie = g.compare(a, b, Direction::Eq)?;
                let a_wins = g.convert(a_wins, dtype)?;
                let b_wins = g.convert(b_wins, dtype)?;
                let tie = g.convert(tie, dtype)?;
                let half_tie = g.mul_scalar(tie, 0.5)?;
                let wa = g.add(a_wins, half_tie)?;
                let wb = g.add(b_wins, half_tie)?;
                vec![Some(g.mul(cot, wa)?), Some(g.mul(cot, wb)?)]
            }
            _ => vec![None, None],
        })
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        format!("{result} = stablehlo.{} {}, {} : {} {loc}", self.kind.op_name(), args[0].name, args[1].name, out.mlir())
    }
}

impl Graph {
    pub fn binary(&mut self, kind: BinaryKind, a: Tensor, b: Tensor) -> Result<Tensor> {
        self.push(Op::Binary(Binary { kind }), &[a, b])
    }
    pub fn add(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        self.binary(BinaryKind::Add, a, b)
    }
    pub fn sub(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        self.binary(BinaryKind::Sub, a, b)
    }
    pub fn mul(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        self.binary(BinaryKind::Mul, a, b)
    }
    pub fn div(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        self.binary(BinaryKind::Div, a, b)
    }
    pub fn max(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        self.binary(BinaryKind::Max, a, b)
    }
    pub fn min(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        self.binary(BinaryKind::Min, a, b)
    }
    pub fn xor(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        self.binary(BinaryKind::Xor, a, b)
    }
    pub fn shift_right_logical(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        self.binary(BinaryKind::ShiftRightLogical, a, b)
    }

    /// `x * s` for a scalar `s` known when the graph is built.
    pub fn mul_scalar(&mut self, x: Tensor, s: f64) -> Result<Tensor> {
        let dims = self.dims(x).to_vec();
        let c = self.full(s, self.dtype(x), &dims)?;
        self.mul(x, c)
    }

    /// `x + s` for a scalar `s` known when the graph is built.
    pub fn add_scalar(&mut self, x: Tensor, s: f64) -> Result<Tensor> {
        let dims = self.dims(x).to_vec();
        let c = self.full(s, self.dtype(x), &dims)?;
        self.add(x, c)
    }
}
