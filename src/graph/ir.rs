//! The graph itself: an append-only list of nodes in topological order.
//!
//! A [`Tensor`] is a handle to one node's value. Nodes are only ever added,
//! never changed, so node order is a valid evaluation order and everything
//! derived from a graph (gradients, the StableHLO text) is deterministic.

use std::sync::atomic::{AtomicU32, Ordering};

use super::ops::Op;
use super::shape::{GraphError, Result, Shape};
use crate::tensor::DType;

/// A value in a [`Graph`]: cheap to copy, meaningful only with its graph.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tensor {
    pub(crate) graph: u32,
    pub(crate) id: u32,
}

impl Tensor {
    pub fn index(self) -> usize {
        self.id as usize
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub op: Op,
    pub inputs: Vec<Tensor>,
    pub shape: Shape,
    /// Dotted scope of the layer that made the node (`block1.conv`), used
    /// for `loc(...)` in the StableHLO text.
    pub scope: String,
}

/// A tensor program under construction.
#[derive(Clone, Debug)]
pub struct Graph {
    name: String,
    uid: u32,
    pub(crate) nodes: Vec<Node>,
    pub(crate) parameters: Vec<Tensor>,
    scope: Vec<String>,
}

fn next_graph_uid() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Graph {
    /// A new, empty graph; `name` becomes the StableHLO module name.
    pub fn new(name: impl Into<String>) -> Self {
        Graph { name: name.into(), uid: next_graph_uid(), nodes: Vec::new(), parameters: Vec::new(), scope: Vec::new() }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Number of nodes so far.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The program's inputs, in order.
    pub fn parameters(&self) -> &[Tensor] {
        &self.parameters
    }

    /// Shape of a tensor of this graph.
    pub fn shape(&self, t: Tensor) -> &Shape {
        &self.nodes[t.index()].shape
    }

    pub fn dims(&self, t: Tensor) -> &[i64] {
        &self.nodes[t.index()].shape.dims
    }

    pub fn dtype(&self, t: Tensor) -> DType {
        self.nodes[t.index()].shape.dtype
    }

    /// Runs `f` with `name` pushed on the scope stack: every node made inside
    /// is tagged `outer.name` for `loc(...)` and error messages.
    pub fn scoped<T>(&mut self, name: &str, f: impl FnOnce(&mut Graph) -> T) -> T {
        self.scope.push(name.to_string());
        let out = f(self);
        self.scope.pop();
        out
    }

    pub(crate) fn current_scope(&self) -> String {
        self.scope.join(".")
    }

    /// Checks that `t` is a tensor of this graph.
    pub(crate) fn check(&self, what: &'static str, t: Tensor) -> Result<()> {
        if t.graph != self.uid || t.index() >= self.nodes.len() {
            return Err(GraphError::ForeignTensor { what, id: t.index(), graph: self.name.clone() });
        }
        Ok(())
    }

    /// Adds a node after inferring (and so validating) its shape.
    pub(crate) fn push(&mut self, op: Op, inputs: &[Tensor]) -> Result<Tensor> {
        for &t in inputs {
            self.check(op.prim().name(), t)?;
        }
        let shapes: Vec<&Shape> = inputs.iter().map(|t| self.shape(*t)).collect();
        let shape = op.prim().shape(&shapes)?;
        Ok(self.push_unchecked(op, inputs.to_vec(), shape))
    }

    pub(crate) fn push_unchecked(&mut self, op: Op, inputs: Vec<Tensor>, shape: Shape) -> Tensor {
        let id = self.nodes.len() as u32;
        let scope = self.current_scope();
        self.nodes.push(Node { op, inputs, shape, scope });
        Tensor { graph: self.uid, id }
    }

    /// The FLOPs of every contraction in the graph (see
    /// `Primitive::flops`), in node order, each with the scope of the layer
    /// that made it: a network's cost, read off the network itself.
    pub fn flops_by_scope(&self) -> Vec<(String, f64)> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let inputs: Vec<&Shape> = n.inputs.iter().map(|t| self.shape(*t)).collect();
                let flops = n.op.prim().flops(&inputs, &n.shape);
                (flops > 0.0).then(|| (n.scope.clone(), flops))
            })
            .collect()
    }

    pub(crate) fn node(&self, t: Tensor) -> &Node {
        &self.nodes[t.index()]
    }

    pub(crate) fn register_parameter(&mut self, t: Tensor) {
        self.parameters.push(t);
    }
}
