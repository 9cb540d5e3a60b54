//! The primitives. Each file holds one primitive's shape rule, derivative
//! rule (VJP) and StableHLO emission side by side, plus the typed builder
//! method(s) on [`Graph`] that create it. Adding a primitive means adding a
//! file and one line to the `primitives!` list below; the trait makes a
//! missing rule a compile error (`shape`, `vjp` and `emit` have no default
//! bodies; an op without a derivative says so with `non_differentiable`).
//!
//! Derivative rules build more graph out of primitives (a convolution's
//! gradients are convolutions), so backward passes are StableHLO as well.

use super::ir::{Graph, Tensor};
use super::shape::{GraphError, Result, Shape};

mod all_reduce;
mod binary;
mod broadcast;
mod compare;
mod concatenate;
mod constant;
mod conv;
mod convert;
mod dot;
mod host_conv;
mod iota;
mod pad;
mod parameter;
mod reduce;
mod reduce_window;
mod reshape;
mod reverse;
mod select;
mod select_and_scatter;
mod slice;
mod transpose;
mod unary;

pub use binary::BinaryKind;
pub use compare::Direction;
pub use constant::Literal;
pub use conv::{ConvDims, ConvSpec};
pub use dot::DotDims;
pub use host_conv::{ConvKernels, Kernel};
pub use reduce::ReduceKind;
pub use reduce_window::{PoolKind, WindowSpec};
pub use unary::UnaryKind;

/// One operand as the emitter sees it: its SSA name and shape.
pub(crate) struct Operand<'a> {
    pub name: &'a str,
    pub shape: &'a Shape,
}

/// The three rules every primitive provides.
pub(crate) trait Primitive: std::fmt::Debug {
    /// The op's name in errors and `loc(...)`, e.g. `convolution`.
    fn name(&self) -> &'static str;

    /// The output shape, or an error naming the op and the input shapes.
    fn shape(&self, inputs: &[&Shape]) -> Result<Shape>;

    /// Cotangents of the inputs, given the output's cotangent `cot`. `None`
    /// means "zero" (or an input that is not differentiable). Required, with
    /// no default: an op without a rule says so with
    /// [`non_differentiable`].
    fn vjp(&self, g: &mut Graph, inputs: &[Tensor], output: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>>;

    /// Floating-point operations (multiply-adds x 2) of the op on these
    /// shapes. Only contractions (dot, convolution) count: a model's FLOPs
    /// are, by convention, its matrix work; elementwise ops are left out.
    /// A cost, not a rule, so it has a default (zero).
    fn flops(&self, inputs: &[&Shape], out: &Shape) -> f64 {
        let _ = (inputs, out);
        0.0
    }

    /// StableHLO text defining `result` (one op, possibly preceded by helper
    /// constants named `{result}_...`). `loc` is appended to each top-level op.
    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String;
}

macro_rules! primitives {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        /// Every primitive, as stored in a graph node.
        #[derive(Clone, Debug)]
        pub(crate) enum Op { $($variant($ty)),* }

        impl Op {
            pub(crate) fn prim(&self) -> &dyn Primitive {
                match self { $(Op::$variant(p) => p),* }
            }
        }
    };
}

primitives! {
    Parameter(parameter::Parameter),
    Constant(constant::Constant),
    Iota(iota::Iota),
    Unary(unary::Unary),
    Binary(binary::Binary),
    Compare(compare::Compare),
    Select(select::Select),
    Convert(convert::Convert),
    BroadcastInDim(broadcast::BroadcastInDim),
    Reshape(reshape::Reshape),
    Transpose(transpose::Transpose),
    Reverse(reverse::Reverse),
    Concatenate(concatenate::Concatenate),
    Slice(slice::Slice),
    Pad(pad::Pad),
    Reduce(reduce::Reduce),
    DotGeneral(dot::DotGeneral),
    Convolution(conv::Convolution),
    HostConv(host_conv::HostConv),
    ReduceWindow(reduce_window::ReduceWindow),
    SelectAndScatter(select_and_scatter::SelectAndScatter),
    AllReduce(all_reduce::AllReduce),
}

/// The VJP of an op that has no derivative rule, stated explicitly in its
/// file: `Graph::grad` fails with an error naming the op if it lies on the
/// path from the loss to a differentiated input.
pub(crate) fn non_differentiable(op: &'static str) -> Result<Vec<Option<Tensor>>> {
    Err(GraphError::BackwardNotSupported { op })
}

/// `array<i64: 1, 2>` (the StableHLO spelling of an i64 list attribute).
pub(crate) fn i64_array(values: &[i64]) -> String {
    let body = values.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ");
    if body.is_empty() { "array<i64>".to_string() } else { format!("array<i64: {body}>") }
}

/// `dense<[[lo, hi], ...]> : tensor<Nx2xi64>` for padding attributes.
pub(crate) fn padding_attr(padding: &[(i64, i64)]) -> String {
    let body = padding.iter().map(|(lo, hi)| format!("[{lo}, {hi}]")).collect::<Vec<_>>().join(", ");
    format!("dense<[{body}]> : tensor<{}x2xi64>", padding.len())
}

/// `(tensor<a>, tensor<b>) -> tensor<c>`: the generic op type signature.
pub(crate) fn signature(args: &[Operand], out: &Shape) -> String {
    let ins = args.iter().map(|a| a.shape.mlir()).collect::<Vec<_>>().join(", ");
    format!("({ins}) -> {}", out.mlir())
}

/// The name of a helper value of the op defining `result` (`%12` ->
/// `%init12`): SSA names that start with a digit must be all digits.
pub(crate) fn helper_name(result: &str, what: &str) -> String {
    format!("%{what}{}", result.trim_start_matches('%'))
}

/// A scalar region `^bb0(%a, %b): %r = <op> %a, %b; return %r` used by
/// reductions, with block argument names made unique by `tag`.
pub(crate) fn binary_region(tag: &str, op: &str, scalar: &Shape, result: &Shape) -> String {
    let (t, r) = (scalar.mlir(), result.mlir());
    format!("{{\n  ^bb0(%{tag}_a: {t}, %{tag}_b: {t}):\n    %{tag}_r = {op} %{tag}_a, %{tag}_b : {r}\n    stablehlo.return %{tag}_r : {r}\n}}")
}
