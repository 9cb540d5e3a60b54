//! Shapes and the graph layer's errors.

use std::fmt;

use crate::tensor::DType;

/// Element type and dimensions of a tensor value in a graph. Static shapes
/// only: every dimension is known when the graph is built.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    pub dtype: DType,
    pub dims: Vec<i64>,
}

impl Shape {
    pub fn new(dtype: DType, dims: &[i64]) -> Self {
        Shape { dtype, dims: dims.to_vec() }
    }

    pub fn scalar(dtype: DType) -> Self {
        Shape { dtype, dims: vec![] }
    }

    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    pub fn element_count(&self) -> i64 {
        self.dims.iter().product()
    }

    /// Same dimensions, another element type.
    pub fn with_dtype(&self, dtype: DType) -> Self {
        Shape { dtype, dims: self.dims.clone() }
    }

    /// The StableHLO type, e.g. `tensor<2x3xf32>` or `tensor<f32>`.
    pub fn mlir(&self) -> String {
        let mut s = String::from("tensor<");
        for d in &self.dims {
            s.push_str(&d.to_string());
            s.push('x');
        }
        s.push_str(self.dtype.mlir_name());
        s.push('>');
        s
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:?}", self.dtype, self.dims)
    }
}

/// Everything that can go wrong while building, differentiating or writing
/// out a graph. Each variant names the op and the shapes involved.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum GraphError {
    #[error("{op}: shapes do not fit: {detail} (inputs: {inputs})")]
    Shape { op: &'static str, detail: String, inputs: String },

    #[error("{op}: element type {got} is not allowed here; expected {expected}")]
    DType { op: &'static str, got: DType, expected: &'static str },

    #[error("{op}: invalid attribute: {detail}")]
    Attribute { op: &'static str, detail: String },

    #[error("{op} has no derivative rule; it cannot be on the path from a differentiated output to a parameter")]
    BackwardNotSupported { op: &'static str },

    #[error("{what}: tensor {id} does not belong to graph {graph}")]
    ForeignTensor { what: &'static str, id: usize, graph: String },

    #[error("gradient of a non-scalar or non-float output {shape}; differentiate a scalar float loss")]
    NonScalarLoss { shape: String },
}

pub type Result<T, E = GraphError> = std::result::Result<T, E>;

/// Formats the inputs' shapes for an error message.
pub(crate) fn describe(shapes: &[&Shape]) -> String {
    shapes.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
}

/// Shorthand for a shape error.
pub(crate) fn shape_err<T>(op: &'static str, inputs: &[&Shape], detail: impl Into<String>) -> Result<T> {
    Err(GraphError::Shape { op, detail: detail.into(), inputs: describe(inputs) })
}

pub(crate) fn attr_err<T>(op: &'static str, detail: impl Into<String>) -> Result<T> {
    Err(GraphError::Attribute { op, detail: detail.into() })
}

/// Checks a list of dimension indices: in range, no repeats.
pub(crate) fn check_dims(op: &'static str, what: &str, dims: &[i64], rank: usize) -> Result<()> {
    let mut seen = vec![false; rank];
    for &d in dims {
        if d < 0 || d as usize >= rank {
            return attr_err(op, format!("{what} {dims:?}: dimension {d} out of range for rank {rank}"));
        }
        if seen[d as usize] {
            return attr_err(op, format!("{what} {dims:?}: dimension {d} repeated"));
        }
        seen[d as usize] = true;
    }
    Ok(())
}
