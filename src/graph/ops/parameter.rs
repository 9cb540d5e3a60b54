//! Program inputs. Emitted as the arguments of `@main`, not as ops.

use super::{Op, Operand, Primitive};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, attr_err};
use crate::tensor::DType;

#[derive(Clone, Debug)]
pub(crate) struct Parameter {
    pub name: String,
}

impl Primitive for Parameter {
    fn name(&self) -> &'static str {
        "parameter"
    }

    fn shape(&self, _inputs: &[&Shape]) -> Result<Shape> {
        unreachable!("parameters are created with their shape, never inferred")
    }

    /// A leaf: gradients stop here (and are collected by `Graph::grad`).
    fn vjp(&self, _g: &mut Graph, _inputs: &[Tensor], _output: Tensor, _cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![])
    }

    fn emit(&self, _result: &str, _args: &[Operand], _out: &Shape, _loc: &str) -> String {
        String::new()
    }
}

impl Graph {
    /// A new program input named `name` (a dotted name such as
    /// `block1.conv.weight`; it appears in `loc(...)`).
    pub fn parameter(&mut self, name: &str, dtype: DType, dims: &[i64]) -> Result<Tensor> {
        if let Some(d) = dims.iter().find(|&&d| d < 0) {
            return attr_err("parameter", format!("{name}: negative dimension {d} in {dims:?}"));
        }
        let op = Op::Parameter(Parameter { name: name.to_string() });
        let t = self.push_unchecked(op, vec![], Shape::new(dtype, dims));
        self.register_parameter(t);
        Ok(t)
    }
}
