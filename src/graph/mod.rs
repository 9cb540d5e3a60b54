//! A small typed tensor graph with reverse-mode autodiff, written out as
//! StableHLO.
//!
//! - [`ir`]: the graph (append-only nodes, [`Tensor`] handles, scopes);
//! - `ops/`: the primitives, one file each with shape rule, VJP and emission;
//! - [`autodiff`]: `Graph::grad`, producing the backward pass as more graph;
//! - [`emit`]: the deterministic StableHLO writer;
//! - [`nn`]: compositions with no gradient code of their own (ReLU,
//!   softmax cross-entropy, dense and conv blocks, dropout, accuracy);
//! - [`optim`]: SGD, momentum and Adam as graph functions;
//! - `params`: where layers get their parameters ([`Params`]): declared
//!   once to list them, then bound to program inputs by name.
//!
//! This module knows nothing about PJRT: it produces a `crate::program::Program`, and
//! nothing about models, data or training.

mod autodiff;
mod emit;
mod ir;
pub mod nn;
mod ops;
pub mod optim;
mod params;
mod shape;

pub use emit::EmitOptions;
pub use ir::{Graph, Tensor};
pub use ops::{BinaryKind, ConvDims, ConvKernels, ConvSpec, Direction, DotDims, Kernel, Literal, PoolKind, ReduceKind, UnaryKind, WindowSpec};
pub use params::{BoundParams, CastParams, DeclareParams, Init, ParamSpec, Params};
pub use shape::{GraphError, Result, Shape};
