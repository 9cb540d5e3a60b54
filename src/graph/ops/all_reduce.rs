//! Cross-replica sum (`all_reduce`): every replica gets the sum over its
//! replica group. The data-parallel training step averages gradients with it.

use super::{Op, Operand, Primitive, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, attr_err};

#[derive(Clone, Debug)]
pub(crate) struct AllReduce {
    /// Replica groups, e.g. `[[0, 1, 2, 3]]`: all groups the same size.
    pub groups: Vec<Vec<i64>>,
}

impl Primitive for AllReduce {
    fn name(&self) -> &'static str {
        "all_reduce"
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        let size = self.groups.first().map_or(0, |g| g.len());
        if size == 0 || self.groups.iter().any(|g| g.len() != size) {
            return attr_err(self.name(), format!("replica groups {:?} must be non-empty and of equal size", self.groups));
        }
        Ok(inputs[0].clone())
    }

    /// The sum is linear and every replica's output depends on every
    /// replica's input, so the cotangent is itself summed across replicas.
    fn vjp(&self, g: &mut Graph, _inputs: &[Tensor], _y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.all_reduce_sum(cot, &self.groups)?)])
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        let scalar = Shape::scalar(args[0].shape.dtype);
        let tag = super::helper_name(result, "r");
        let tag = tag.trim_start_matches('%');
        let region = super::binary_region(tag, "stablehlo.add", &scalar, &scalar);
        let rows = self.groups.iter().map(|g| format!("[{}]", g.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "))).collect::<Vec<_>>().join(", ");
        format!(
            "{result} = \"stablehlo.all_reduce\"({}) ({region}) {{replica_groups = dense<[{rows}]> : tensor<{}x{}xi64>}} : {} {loc}",
            args[0].name,
            self.groups.len(),
            self.groups[0].len(),
            signature(args, out)
        )
    }
}

impl Graph {
    /// Sum of `x` over the replicas of each group.
    pub fn all_reduce_sum(&mut self, x: Tensor, groups: &[Vec<i64>]) -> Result<Tensor> {
        self.push(Op::AllReduce(AllReduce { groups: groups.to_vec() }), &[x])
    }
}
