//! The data layer's one error type. Every variant names the offending path,
//! key or value so a message is actionable without a debugger.

use std::path::PathBuf;

/// Why loading, preparing, caching, batching or fetching data failed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{what} folder {path} does not exist")]
    MissingFolder { what: &'static str, path: PathBuf },

    #[error("{what} {path} does not exist{hint}")]
    MissingFile { what: &'static str, path: PathBuf, hint: String },

    #[error("{what} folder {path} holds no images")]
    NoImages { what: &'static str, path: PathBuf },

    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },

    /// Writing a file (crash-safe replacement) failed.
    #[error(transparent)]
    Write(#[from] crate::fsutil::FsError),

    #[error("invalid data config: `{key}` = {value}: {allowed}")]
    InvalidConfig { key: String, value: String, allowed: String },

    #[error("cannot parse data config {path}: {message}")]
    ConfigSyntax { path: PathBuf, message: String },

    #[error("class `{class}` of task {task} has no {split}samples")]
    EmptyClass { task: String, class: String, split: &'static str },

    #[error("folder {path} is not a known class: {allowed}")]
    UnknownClassFolder { path: PathBuf, allowed: String },

    #[error("{path} is not a valid .npy file: {reason}")]
    BadNpy { path: PathBuf, reason: String },

    #[error("--strict: {path} was skipped: {reason}")]
    StrictSkip { path: String, reason: String },

    #[error("cache file {path} is corrupt: {reason}")]
    CorruptCache { path: PathBuf, reason: String },

    #[error("batch size {batch_size} is larger than the {split} split ({samples} samples)")]
    BatchLargerThanSplit { batch_size: usize, samples: usize, split: &'static str },

    #[error("pipeline state does not fit this pipeline: {field} is {saved} in the state, {current} here")]
    StateMismatch { field: &'static str, saved: String, current: String },

    #[error("the pipeline's batch producer stopped unexpectedly")]
    ProducerStopped,

    #[error("training batch {batch} could not be made: {source}")]
    BatchFailed { batch: u64, source: Box<DataError> },

    #[error("the batch producer panicked: {message}")]
    ProducerPanicked { message: String },

    #[error("cannot start the batch producer thread: {0}")]
    ProducerSpawn(std::io::Error),

    #[error("download of {url} failed: {reason}")]
    Download { url: String, reason: String },

    #[error("cannot copy the data source {url} into {local}: {message}")]
    Remote { url: String, local: PathBuf, message: String },

    #[error("checksum mismatch for {path}: expected sha256 {expected}, got {actual}")]
    ChecksumMismatch { path: PathBuf, expected: String, actual: String },

    #[error("cannot extract {path}: {reason}")]
    Extract { path: PathBuf, reason: String },

    #[error("cannot encode {path}: {reason}")]
    Encode { path: PathBuf, reason: String },

    #[error("tensor: {0}")]
    Tensor(#[from] crate::tensor::TensorError),
}

impl DataError {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io { path: path.into(), source }
    }

    pub(crate) fn config(key: impl Into<String>, value: impl std::fmt::Display, allowed: impl Into<String>) -> Self {
        DataError::InvalidConfig { key: key.into(), value: value.to_string(), allowed: allowed.into() }
    }
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;
