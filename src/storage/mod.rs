//! Output in a Cloud Storage bucket: `gs://BUCKET/PREFIX` next to the local
//! folder that stays the default.
//!
//! - [`Location`]: a local folder or a bucket prefix, parsed from what the
//!   user wrote;
//! - [`Bucket`]: atomic put (an object appears whole or not at all: Cloud
//!   Storage publishes an object only when its upload completes), get, list,
//!   and a whole folder up or down;
//! - [`Mirror`]: the "mirror after an atomic local write" design: training
//!   keeps writing its local files (each written whole, then renamed), and
//!   every finished file is uploaded as one object;
//! - [`Uploader`]: a thread that runs the mirror while a command writes,
//!   when asked ([`SyncHandle`], after each file the run writer finishes) and
//!   on a short poll, and holds the lease;
//! - [`Lease`]: a lock object taken with a generation precondition, so two
//!   writers never share one output prefix (the bucket side of
//!   [`crate::lock`], naming its holder the same way).
//!
//! Reads and writes go through Google's `google-cloud-storage` client (JSON
//! API uploads and media downloads) with tokens from `google-cloud-auth`.
//! Listing is the one hand-written call, see [`Bucket::list`] for why.
//!
//! This module moves bytes. It knows nothing of runs, checkpoints or
//! campaigns: callers decide which files matter.

mod bucket;
mod lease;
mod location;
mod mirror;
mod uploader;

use std::path::PathBuf;

pub use bucket::{Bucket, ObjectInfo, Precondition, StorageConfig};
pub use lease::{Lease, LeaseBody};
pub use location::{GcsPath, Location};
pub use mirror::{MANIFEST, Mirror, SyncReport, is_local_only, is_temporary};
pub use uploader::{LeaseWatch, SyncHandle, Uploader};

/// The environment variable Google's client libraries read for a Cloud
/// Storage emulator (`host:port` or a URL); set, it also means anonymous access.
pub const EMULATOR_ENV: &str = "STORAGE_EMULATOR_HOST";
/// The lock object at the root of a bucket output; never mirrored to a local folder.
pub const LOCK_KEY: &str = ".emotionet-lock";
/// The real endpoint.
pub const GCS_ENDPOINT: &str = "https://storage.googleapis.com";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid output location {text:?}: {rule}")]
    InvalidLocation { text: String, rule: String },

    #[error("cannot set up the Cloud Storage client for {endpoint}: {message}")]
    Setup { endpoint: String, message: String },

    #[error("no Google Cloud credentials for Cloud Storage: {message}; {}", crate::cloud::error::AUTH_HELP)]
    Credentials { message: String },

    #[error("Cloud Storage refused {action} {url}{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Service { action: &'static str, url: String, status: Option<u16>, message: String },

    #[error("{url} was changed by someone else while we held it (precondition failed): {message}")]
    PreconditionFailed { url: String, message: String },

    /// Our lease was taken over (it ran out while we could not renew it: a
    /// paused machine, a lost network): this writer must stop writing.
    #[error("{url}: this writer's lease was taken over by {holder}; it stopped writing there so that two writers never mix their files in one output")]
    LeaseLost { url: String, holder: Box<crate::lock::HolderInfo> },

    /// The lease could not be confirmed in time for an upload (the line to
    /// the bucket is slow or cut): nothing was uploaded past the point where
    /// it could be vouched for; the next round tries again.
    #[error("{url}: this writer could not vouch for its lease in time ({message}); the upload was dropped and is tried again once the lease is confirmed")]
    LeaseUnsure { url: String, message: String },

    #[error("{url} does not exist")]
    NotFound { url: String },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Worded as [`crate::lock::LockError::Held`]: one story for local and bucket outputs.
    #[error(
        "{url} is in use by {holder} (its lease runs to {until} unless renewed); only one emotionet command may write it at a time. \
         Wait for that one to end (or stop it), or pass --wait to start when it does"
    )]
    Locked { url: String, holder: Box<crate::lock::HolderInfo>, until: String },
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

impl StorageError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        StorageError::Io { path: path.into(), source }
    }
}
