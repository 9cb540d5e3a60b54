//! Elementwise comparison, giving booleans (`i1`).

use super::{Op, Operand, Primitive, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, shape_err};
use crate::tensor::DType;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Direction {
    pub(crate) fn mlir(self) -> &'static str {
        match self {
            Direction::Eq => "EQ",
            Direction::Ne => "NE",
            Direction::Lt => "LT",
            Direction::Le => "LE",
            Direction::Gt => "GT",
            Direction::Ge => "GE",
        }
    }
}

/// The comparison type StableHLO wants for an element type.
pub(crate) fn compare_type(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 | DType::F64 | DType::BF16 => "FLOAT",
        DType::I32 => "SIGNED",
        DType::U32 | DType::U8 | DType::Pred => "UNSIGNED",
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Compare {
    pub direction: Direction,
}

impl Primitive for Compare {
    fn name(&self) -> &'static str {
        "compare"
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        if inputs[0] != inputs[1] {
            return shape_err("compare", inputs, "operands must have the same type and shape");
        }
        Ok(inputs[0].with_dtype(DType::Pred))
    }

    /// Piecewise constant: zero derivative everywhere it exists.
    fn vjp(&self, _g: &mut Graph, _inputs: &[Tensor], _output: Tensor, _cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![None, None])
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        format!(
            "{result} = stablehlo.compare  {}, {}, {},  {} : {} {loc}",
            self.direction.mlir(),
            args[0].name,
            args[1].name,
            compare_type(args[0].shape.dtype),
            signature(args, out)
        )
    }
}

impl Graph {
    pub fn compare(&mut self, a: Tensor, b: Tensor, direction: Direction) -> Result<Tensor> {
        self.push(Op::Compare(Compare { direction }), &[a, b])
    }
}
