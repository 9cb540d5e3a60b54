//! Google credentials and TLS, shared by the Cloud TPU client (`cloud`) and
//! the bucket (`storage`): one place decides where a token comes from.
//!
//! - [`auth`]: Application Default Credentials through `google-cloud-auth`,
//!   `gcloud` as a fallback, never logged;
//! - [`tls`]: the crypto provider Google's clients need.
//!
//! It must not know about VMs, buckets or campaigns: it hands out
//! credentials and says where they came from.

pub mod auth;
pub mod tls;

pub use auth::{AuthConfig, AuthError, AuthMode};
