//! The one error type of the cloud layer. API failures keep the HTTP status,
//! Google's error status (`NOT_FOUND`, `RESOURCE_EXHAUSTED`, ...), its message
//! and the resource the call was about; nothing here ever holds a token.

use std::path::PathBuf;
use std::time::Duration;

/// What to tell a user whose credentials were refused or missing.
pub const AUTH_HELP: &str = "set up Application Default Credentials: `gcloud auth application-default login`, \
or GOOGLE_APPLICATION_CREDENTIALS=KEY.json (a service-account key or an authorized-user file), \
or run on a Google Cloud VM whose service account may use the Cloud TPU API (roles/tpu.admin); \
with only `gcloud auth login`, emotionet asks `gcloud auth print-access-token`";

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    /// `up` was asked to create a VM without naming where and what it pays for.
    #[error(
        "refusing to create a TPU VM without an explicit {}: a TPU VM bills by the hour while it is up \
         (a v3-8 is about $8/hour on demand), so emotionet never guesses where or what to create; \
         e.g. `emotionet cloud up --project MY-PROJECT --zone europe-west4-a --accelerator-type v3-8 --spot` (prices in deploy/README.md)",
        missing.join(", ")
    )]
    CostGuard { missing: Vec<&'static str> },

    /// A user-given identifier that the API (or our URL building) cannot take.
    #[error("invalid {what} {value:?}: {rule}")]
    InvalidName { what: &'static str, value: String, rule: &'static str },

    /// HTTP 401: the token is missing, expired or not a Google token.
    #[error("the Cloud TPU API refused the credentials (HTTP 401 {api_status}) for {resource}: {message}; {hint}")]
    Unauthenticated { resource: String, api_status: String, message: String, hint: String },

    /// HTTP 403: authenticated, but not allowed (or the API is not enabled).
    #[error(
        "the Cloud TPU API denied {method} {resource} (HTTP 403 {api_status}): {message}; check that the API is enabled \
         (`gcloud services enable tpu.googleapis.com --project PROJECT`) and that the account may manage TPUs (roles/tpu.admin)"
    )]
    PermissionDenied { method: String, resource: String, api_status: String, message: String },

    /// Any other non-success answer from the API.
    #[error("Cloud TPU API {method} {resource} failed with HTTP {status} {api_status}: {message}")]
    Api { method: String, resource: String, status: u16, api_status: String, message: String },

    /// A retryable failure (429, 5xx, connection error) that kept failing.
    #[error("gave up on {method} {resource} after {attempts} attempts; the last one: {last}")]
    RetriesExhausted {
        method: String,
        resource: String,
        attempts: u32,
        #[source]
        last: Box<CloudError>,
    },

    /// The request never got an HTTP answer (DNS, refused connection, timeout).
    #[error("could not reach {url} for {resource}{}: {message}", if *timed_out { " (timed out)" } else { "" })]
    Transport { url: String, resource: String, message: String, timed_out: bool },

    /// A 2xx answer whose body is not what the API documents.
    #[error("unexpected answer from the Cloud TPU API for {resource}: {message}")]
    Decode { resource: String, message: String },

    /// A long-running operation finished with an error.
    #[error("operation {name} failed (code {code}): {message}")]
    OperationFailed { name: String, code: i32, message: String },

    /// A queued resource request ended in FAILED.
    #[error("queued resource {name} failed: {message}")]
    QueuedResourceFailed { name: String, message: String },

    /// Waiting for a state took longer than allowed.
    #[error("timed out after {}s waiting for {what}", waited.as_secs())]
    Timeout { what: String, waited: Duration },

    /// A node is in a state the current step cannot continue from.
    #[error("TPU VM {name} is {state}, expected {expected}")]
    UnexpectedState { name: String, state: String, expected: &'static str },

    /// No token source produced a token.
    #[error("no Google Cloud access token: {tried}; {}", AUTH_HELP)]
    NoCredentials { tried: String },

    /// One token source was asked for and failed.
    #[error("could not get an access token from {source_name}: {message}; {}", AUTH_HELP)]
    TokenSource { source_name: String, message: String },

    /// A step on the TPU VM (or the local stand-in) failed.
    #[error("{step} on {host} failed ({status}): {detail}")]
    Remote { step: String, host: String, status: String, detail: String },

    /// The user stopped a step (Ctrl-C).
    #[error("interrupted during {step}; {advice}")]
    Interrupted { step: String, advice: String },

    /// A local file operation failed.
    #[error("{path}: {message}")]
    Io { path: PathBuf, message: String },

    /// Writing a local file (atomically, synced) failed; names the file.
    #[error(transparent)]
    File(#[from] crate::fsutil::FsError),

    /// The local record of created VMs is unreadable or has no such VM.
    #[error("cloud state {path}: {message}")]
    State { path: PathBuf, message: String },

    /// A command template has an unknown placeholder or an unclosed brace.
    #[error("command template {template:?}: {message}")]
    Template { template: String, message: String },
}

impl CloudError {
    /// The HTTP status of an API answer, if this error is one.
    pub fn http_status(&self) -> Option<u16> {
        match self {
            CloudError::Api { status, .. } => Some(*status),
            CloudError::Unauthenticated { .. } => Some(401),
            CloudError::PermissionDenied { .. } => Some(403),
            CloudError::RetriesExhausted { last, .. } => last.http_status(),
            _ => None,
        }
    }

    /// True for a 404 from the API: the resource does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        self.http_status() == Some(404)
    }

    /// The official client's error for `method resource`, as ours: the HTTP
    /// status, Google's status name and message, and what to do about it.
    pub fn from_api(method: &str, resource: &str, endpoint: &str, e: google_cloud_gax::error::Error) -> Self {
        let message = e.status().map(|s| s.message.clone()).filter(|m| !m.is_empty()).unwrap_or_else(|| crate::errors::chain_text(&e));
        let api_status = e.status().map(|s| s.code.name().to_string()).unwrap_or_default();
        if e.is_authentication() {
            return CloudError::TokenSource { source_name: "the credentials".into(), message };
        }
        match e.http_status_code() {
            Some(401) => CloudError::Unauthenticated { resource: resource.to_string(), api_status, message, hint: AUTH_HELP.to_string() },
            Some(403) => CloudError::PermissionDenied { method: method.to_string(), resource: resource.to_string(), api_status, message },
            Some(status) => CloudError::Api { method: method.to_string(), resource: resource.to_string(), status, api_status, message },
            None if e.is_deserialization() => CloudError::Decode { resource: resource.to_string(), message },
            None => CloudError::Transport { url: endpoint.to_string(), resource: resource.to_string(), message, timed_out: e.is_timeout() },
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Self {
        CloudError::Io { path: path.into(), message: err.to_string() }
    }
}

pub type Result<T, E = CloudError> = std::result::Result<T, E>;

impl From<crate::google::AuthError> for CloudError {
    fn from(e: crate::google::AuthError) -> Self {
        match e {
            crate::google::AuthError::TokenSource { source_name, message } => CloudError::TokenSource { source_name, message },
        }
    }
}
