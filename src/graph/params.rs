//! Where layers get their trainable parameters (candle's `VarBuilder`,
//! tinygrad's state dict).
//!
//! A layer asks a [`Params`] for `weight` and `bias` with their shape and
//! initializer; the full name is the graph's current scope plus the local
//! name (`block1.conv` + `weight` -> `block1.conv.weight`). Building a
//! network once with [`DeclareParams`] therefore yields its parameter list
//! (names, shapes, initializers, in the order the layers asked), and building
//! it again with [`BoundParams`] over program inputs made from that list
//! wires the same layers to those inputs by name. Nothing outside the layers
//! restates a shape or a position.

use super::ir::{Graph, Tensor};
use super::shape::{GraphError, Result, Shape, attr_err};
use crate::tensor::DType;

/// How a parameter is initialized.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Normal with standard deviation `sqrt(2 / fan_in)` (He et al.).
    HeNormal {
        fan_in: i64,
    },
    Zeros,
}

/// One trainable tensor: its stable dotted name, shape and initializer.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub dims: Vec<i64>,
    pub init: Init,
}

impl ParamSpec {
    pub fn element_count(&self) -> i64 {
        self.dims.iter().product()
    }
}

/// A source of parameters for layers being built.
pub trait Params {
    /// The parameter `name` of the layer being built (under the graph's
    /// current scope), of shape `dims`, initialized by `init`.
    fn get(&mut self, g: &mut Graph, name: &str, dims: &[i64], init: Init) -> Result<Tensor>;
}

/// The full dotted name of `name` under the graph's current scope.
fn scoped_name(g: &Graph, name: &str) -> String {
    let scope = g.current_scope();
    if scope.is_empty() { name.to_string() } else { format!("{scope}.{name}") }
}

/// Declares: each request becomes a new program input of `dtype` and is
/// recorded, so that [`DeclareParams::specs`] lists the network's
/// parameters in the order its layers asked for them.
#[derive(Debug)]
pub struct DeclareParams {
    dtype: DType,
    declared: Vec<(ParamSpec, Tensor)>,
}

impl DeclareParams {
    pub fn new(dtype: DType) -> Self {
        DeclareParams { dtype, declared: Vec::new() }
    }

    /// The declared parameters, in order.
    pub fn specs(&self) -> Vec<ParamSpec> {
        self.declared.iter().map(|(s, _)| s.clone()).collect()
    }

    /// The program inputs made for them, in the same order.
    pub fn tensors(&self) -> Vec<Tensor> {
        self.declared.iter().map(|(_, t)| *t).collect()
    }
}

impl Params for DeclareParams {
    fn get(&mut self, g: &mut Graph, name: &str, dims: &[i64], init: Init) -> Result<Tensor> {
        let full = scoped_name(g, name);
        if self.declared.iter().any(|(s, _)| s.name == full) {
            return attr_err("parameter", format!("{full} is declared twice; give each layer its own scope"));
        }
        let t = g.parameter(&full, self.dtype, dims)?;
        self.declared.push((ParamSpec { name: full, dims: dims.to_vec(), init }, t));
        Ok(t)
    }
}

/// Hands out tensors that already exist (program inputs made from a
/// declared list, or any tensors of the right shapes), by name. A request
/// for a name that is not in the list, or with other dimensions, is an
/// error naming the parameter; [`BoundParams::finish`] checks that every
/// tensor was used.
#[derive(Debug)]
pub struct BoundParams<'a> {
    specs: &'a [ParamSpec],
    tensors: &'a [Tensor],
    taken: Vec<bool>,
}

impl<'a> BoundParams<'a> {
    /// `tensors[i]` is the parameter `specs[i]`.
    pub fn new(specs: &'a [ParamSpec], tensors: &'a [Tensor]) -> Result<Self> {
        if specs.len() != tensors.len() {
            return attr_err("parameter", format!("{} parameter specs for {} tensors", specs.len(), tensors.len()));
        }
        Ok(BoundParams { specs, tensors, taken: vec![false; specs.len()] })
    }

    /// Checks that the layers asked for every parameter.
    pub fn finish(self) -> Result<()> {
        match self.taken.iter().position(|t| !t) {
            Some(i) => attr_err("parameter", format!("{} was given but no layer asked for it", self.specs[i].name)),
            None => Ok(()),
        }
    }
}

impl Params for BoundParams<'_> {
    fn get(&mut self, g: &mut Graph, name: &str, dims: &[i64], _init: Init) -> Result<Tensor> {
        let full = scoped_name(g, name);
        let Some(i) = self.specs.iter().position(|s| s.name == full) else {
            return attr_err("parameter", format!("a layer asked for {full}, which is not among the given parameters"));
        };
        let t = self.tensors[i];
        g.check("parameter", t)?;
        if g.dims(t) != dims || self.specs[i].dims != dims {
            return Err(GraphError::Shape {
                op: "parameter",
                detail: format!("{full}: the layer asks for {dims:?}"),
                inputs: Shape::new(g.dtype(t), g.dims(t)).to_string(),
            });
        }
        self.taken[i] = true;
        Ok(t)
    }
}

/// Hands out another source's parameters converted to `dtype`, for mixed
/// precision: the program's inputs (master weights) keep their type, the
/// layers compute in `dtype`, and the conversion's derivative brings each
/// gradient back to the master type.
pub struct CastParams<'a> {
    inner: &'a mut dyn Params,
    dtype: DType,
}

impl<'a> CastParams<'a> {
    pub fn new(inner: &'a mut dyn Params, dtype: DType) -> Self {
        CastParams { inner, dtype }
    }
}

impl Params for CastParams<'_> {
    fn get(&mut self, g: &mut Graph, name: &str, dims: &[i64], init: Init) -> Result<Tensor> {
        let t = self.inner.get(g, name, dims, init)?;
        g.convert(t, self.dtype)
    }
}
