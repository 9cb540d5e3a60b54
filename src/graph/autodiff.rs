//! Reverse-mode differentiation that writes the backward pass as more graph.
//!
//! `grad(loss, wrt)` walks the nodes between `wrt` and `loss` in reverse
//! order, asks each primitive for its VJP and sums cotangents where a value
//! feeds several consumers. Only nodes that both depend on some `wrt` and
//! feed `loss` are visited, so e.g. no cotangent is computed for the input
//! images. Gradient nodes are scoped `grad.<forward scope>`.

use std::collections::HashMap;

use super::ir::{Graph, Tensor};
use super::shape::{GraphError, Result};

impl Graph {
    /// Gradients of the scalar float `loss` with respect to each of `wrt`
    /// (zeros for any that `loss` does not depend on).
    pub fn grad(&mut self, loss: Tensor, wrt: &[Tensor]) -> Result<Vec<Tensor>> {
        self.check("grad", loss)?;
        for &w in wrt {
            self.check("grad", w)?;
        }
        let loss_shape = self.shape(loss).clone();
        if !loss_shape.dims.is_empty() || !loss_shape.dtype.is_float() {
            return Err(GraphError::NonScalarLoss { shape: loss_shape.to_string() });
        }
        let end = loss.index();

        // Forward: which nodes depend on something we differentiate for.
        let mut depends = vec![false; end + 1];
        for &w in wrt {
            if w.index() <= end {
                depends[w.index()] = true;
            }
        }
        for i in 0..=end {
            if !depends[i] {
                depends[i] = self.nodes[i].inputs.iter().any(|t| depends[t.index()]) && self.nodes[i].shape.dtype.is_float();
            }
        }

        let mut cotangents: HashMap<usize, Tensor> = HashMap::new();
        let one = self.scoped("grad", |g| g.scalar(1.0, loss_shape.dtype))?;
        cotangents.insert(end, one);

        for i in (0..=end).rev() {
            let Some(cot) = cotangents.get(&i).copied() else { continue };
            if !depends[i] {
                continue;
            }
            let node = self.nodes[i].clone();
            if node.inputs.is_empty() {
                continue; // a leaf: parameter, constant or iota
            }
            let output = Tensor { graph: loss.graph, id: i as u32 };
            let scope = if node.scope.is_empty() { "grad".to_string() } else { format!("grad.{}", node.scope) };
            let input_cots = self.scoped(&scope, |g| node.op.prim().vjp(g, &node.inputs, output, cot))?;
            for (input, c) in node.inputs.iter().zip(input_cots) {
                let (Some(c), true) = (c, depends[input.index()]) else { continue };
                let total = match cotangents.get(&input.index()) {
                    Some(&prev) => self.scoped(&scope, |g| g.add(prev, c))?,
                    None => c,
                };
                cotangents.insert(input.index(), total);
            }
        }

        wrt.iter()
            .map(|&w| match cotangents.get(&w.index()) {
                Some(&c) if w.index() <= end => Ok(c),
                _ => {
                    let s = self.shape(w).clone();
                    self.full(0.0, s.dtype, &s.dims)
                }
            })
            .collect()
    }
}
