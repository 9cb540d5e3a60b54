//! The one error type of the PJRT layer. Every `PJRT_Error*` returned by a
//! plugin is turned into [`PjrtError::Plugin`] (and freed) at a single choke
//! point, `Api::check`; everything we reject before crossing the FFI boundary
//! is one of the other variants, naming what was wrong.

use std::path::PathBuf;

use crate::tensor::TensorError;

/// `PJRT_Error_Code`: the status codes of the C API (the absl codes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
    /// A code this header does not know (a newer plugin); the raw value.
    Other(u32),
}

impl ErrorCode {
    pub(crate) fn from_raw(code: u32) -> Self {
        match code {
            1 => ErrorCode::Cancelled,
            2 => ErrorCode::Unknown,
            3 => ErrorCode::InvalidArgument,
            4 => ErrorCode::DeadlineExceeded,
            5 => ErrorCode::NotFound,
            6 => ErrorCode::AlreadyExists,
            7 => ErrorCode::PermissionDenied,
            8 => ErrorCode::ResourceExhausted,
            9 => ErrorCode::FailedPrecondition,
            10 => ErrorCode::Aborted,
            11 => ErrorCode::OutOfRange,
            12 => ErrorCode::Unimplemented,
            13 => ErrorCode::Internal,
            14 => ErrorCode::Unavailable,
            15 => ErrorCode::DataLoss,
            16 => ErrorCode::Unauthenticated,
            other => ErrorCode::Other(other),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PjrtError {
    #[error("no PJRT plugin at {path}: {hint}")]
    PluginNotFound { path: PathBuf, hint: String },

    #[error("cannot load {path} as a shared library: {reason}")]
    PluginLoad { path: PathBuf, reason: String },

    #[error("{path} is a shared library but not a PJRT plugin (it exports no `GetPjrtApi`)")]
    NotAPlugin { path: PathBuf },

    #[error("{path} speaks PJRT C API {plugin_major}.{plugin_minor}, but emotionet is built on API {ours_major}.{ours_minor}: {advice}")]
    IncompatibleVersion { path: PathBuf, plugin_major: i32, plugin_minor: i32, ours_major: u32, ours_minor: u32, advice: String },

    /// The plugin runs another platform than the backend asked for.
    #[error("asked for the {backend} backend, but the plugin {plugin} runs platform {platform:?} (a {backend} plugin reports {expected}): {advice}")]
    PlatformMismatch { backend: super::Backend, platform: String, plugin: PathBuf, expected: String, advice: String },

    /// A stand-in description without the test switch that allows it.
    #[error(
        "{path} is a stand-in description: it has the {platform} plugin ({library}) play the {stands_in_for} backend. \
         Stand-ins exist only so that tests can walk the {stands_in_for} code paths on a machine without one, and a run \
         through one is no {stands_in_for} run; they are refused unless EMOTIONET_ALLOW_STAND_IN=1 is set (the tests set it). {advice}"
    )]
    StandInRefused { path: PathBuf, platform: String, stands_in_for: super::Backend, library: PathBuf, advice: String },

    #[error("the plugin {path} does not provide {function}")]
    MissingFunction { path: PathBuf, function: &'static str },

    #[error("{op} failed in the PJRT plugin ({code:?}): {message}")]
    Plugin { op: &'static str, code: ErrorCode, message: String },

    #[error("{op}: {message}")]
    InvalidArgument { op: &'static str, message: String },

    #[error("{op}: buffer {name} was donated to an earlier execution and no longer holds data")]
    BufferDonated { op: &'static str, name: String },

    #[error("{op}: PJRT element type code {raw} has no emotionet DType (supported: f32, f64, bf16, s32, u32, pred)")]
    UnsupportedType { op: &'static str, raw: u32 },

    #[error("CUDA plugin {plugin}: {problem}")]
    Gpu { plugin: PathBuf, problem: Box<super::cuda::GpuProblem> },

    #[error(transparent)]
    Tensor(#[from] TensorError),
}

pub type Result<T, E = PjrtError> = std::result::Result<T, E>;
