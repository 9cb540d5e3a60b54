//! Elementwise functions of one tensor.

use super::{Op, Operand, Primitive};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{GraphError, Result, Shape};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryKind {
    Neg,
    Exp,
    Log,
    Sqrt,
    Rsqrt,
    Tanh,
}

impl UnaryKind {
    fn op_name(self) -> &'static str {
        match self {
            UnaryKind::Neg => "negate",
            UnaryKind::Exp => "exponential",
            UnaryKind::Log => "log",
            UnaryKind::Sqrt => "sqrt",
            UnaryKind::Rsqrt => "rsqrt",
            UnaryKind::Tanh => "tanh",
        }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Unary {
    pub kind: UnaryKind,
}

impl Primitive for Unary {
    fn name(&self) -> &'static str {
        self.kind.op_name()
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        let x = inputs[0];
        let float_only = self.kind != UnaryKind::Neg;
        if float_only && !x.dtype.is_float() || x.dtype == crate::tensor::DType::Pred {
            return Err(GraphError::DType { op: self.name(), got: x.dtype, expected: if float_only { "f32 or bf16" } else { "a number type" } });
        }
        Ok(x.clone())
    }

    /// d/dx in terms of the output y where that is cheaper:
    /// exp' = y, tanh' = 1 - y², rsqrt' = -y³/2, sqrt' = 1/(2y).
    fn vjp(&self, g: &mut Graph, inputs: &[Tensor], y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        let x = inputs[0];
        let dx = match self.kind {
            UnaryKind::Neg => g.neg(cot)?,
            UnaryKind::Exp => g.mul(cot, y)?,
            UnaryKind::Log => g.div(cot, x)?,
            UnaryKind::Sqrt => {
                let two_y = g.mul_scalar(y, 2.0)?;
                g.div(cot, two_y)?
            }
            UnaryKind::Rsqrt => {
                let y2 = g.mul(y, y)?;
                let y3 = g.mul(y2, y)?;
                let d = g.mul_scalar(y3, -0.5)?;
                g.mul(cot, d)?
            }
            UnaryKind::Tanh => {
                let y2 = g.mul(y, y)?;
                let dims = g.dims(y).to_vec();
                let one = g.full(1.0, g.dtype(y), &dims)?;
                let d = g.sub(one, y2)?;
                g.mul(cot, d)?
            }
        };
        Ok(vec![Some(dx)])
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        format!("{result} = stablehlo.{} {} : {} {loc}", self.kind.op_name(), args[0].name, out.mlir())
    }
}

impl Graph {
    pub fn unary(&mut self, kind: UnaryKind, x: Tensor) -> Result<Tensor> {
        self.push(Op::Unary(Unary { kind }), &[x])
    }
    pub fn neg(&mut self, x: Tensor) -> Result<Tensor> {
        self.unary(UnaryKind::Neg, x)
    }
    pub fn exp(&mut self, x: Tensor) -> Result<Tensor> {
        self.unary(UnaryKind::Exp, x)
    }
    pub fn log(&mut self, x: Tensor) -> Result<Tensor> {
        self.unary(UnaryKind::Log, x)
    }
    pub fn sqrt(&mut self, x: Tensor) -> Result<Tensor> {
        self.unary(UnaryKind::Sqrt, x)
    }
    pub fn rsqrt(&mut self, x: Tensor) -> Result<Tensor> {
        self.unary(UnaryKind::Rsqrt, x)
    }
    pub fn tanh(&mut self, x: Tensor) -> Result<Tensor> {
        self.unary(UnaryKind::Tanh, x)
    }
}
