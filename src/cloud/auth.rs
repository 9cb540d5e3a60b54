//! Google Cloud access tokens: where they come from, and how they are kept
//! out of logs.
//!
//! Sources, tried in this order by [`AuthMode::Auto`]:
//! 1. the environment variable `EMOTIONET_GCP_ACCESS_TOKEN`: explicit wins,
//!    and it is how CI or a wrapper script hands over a token;
//! 2. `gcloud auth print-access-token`: the usual workstation setup, and
//!    gcloud refreshes its own credentials;
//! 3. the GCE metadata server (`http://metadata.google.internal/computeMetadata/v1/
//!    instance/service-accounts/default/token`, header `Metadata-Flavor: Google`):
//!    on a Google Cloud VM without gcloud, the VM's service account.
//!
//! The first source that yields a token is kept for the rest of the process.
//! A token is an [`AccessToken`], whose `Debug` prints `<redacted>` and which
//! has no `Display`: the only way to the text is [`AccessToken::secret`], used
//! once, to build the `Authorization` header (itself marked sensitive).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::error::{CloudError, Result};

/// The environment variable read by [`AuthMode::Env`] and first by `Auto`.
pub const TOKEN_ENV: &str = "EMOTIONET_GCP_ACCESS_TOKEN";
/// The GCE metadata server's base URL (overridable for tests).
pub const METADATA_URL: &str = "http://metadata.google.internal";
const METADATA_TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

/// An OAuth 2 access token. Never printed: `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    /// Wraps a token; surrounding whitespace (gcloud's newline) is dropped.
    pub fn new(text: impl Into<String>) -> Self {
        AccessToken(text.into().trim().to_string())
    }

    /// The token text, for the `Authorization` header only.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// Which source to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Environment variable, then gcloud, then the metadata server.
    Auto,
    /// Only `EMOTIONET_GCP_ACCESS_TOKEN`.
    Env,
    /// Only `gcloud auth print-access-token`.
    Gcloud,
    /// Only the GCE metadata server.
    Metadata,
}

/// A concrete source, once chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    Env,
    Gcloud,
    Metadata,
}

impl std::fmt::Display for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenSource::Env => "the environment variable EMOTIONET_GCP_ACCESS_TOKEN",
            TokenSource::Gcloud => "`gcloud auth print-access-token`",
            TokenSource::Metadata => "the GCE metadata server",
        })
    }
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The variable holding a token for [`TokenSource::Env`].
    pub env_var: String,
    /// The gcloud executable.
    pub gcloud: PathBuf,
    /// Base URL of the metadata server.
    pub metadata_url: String,
    /// Limit for one token request (gcloud, or the metadata server).
    pub timeout: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            mode: AuthMode::Auto,
            env_var: TOKEN_ENV.to_string(),
            gcloud: PathBuf::from("gcloud"),
            metadata_url: METADATA_URL.to_string(),
            timeout: Duration::from_secs(30),
        }
    }
}

struct Cached {
    token: AccessToken,
    source: TokenSource,
    /// When to ask the source again; `None` for a token that cannot be renewed.
    refresh_at: Option<Instant>,
}

/// Hands out a token, asking its source again when it is about to expire or
/// after the API refused it ([`TokenProvider::invalidate`]).
pub struct TokenProvider {
    config: AuthConfig,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Option<Cached>>,
    /// Set once a source is chosen, so `Auto` does not wander between them.
    chosen: std::sync::Mutex<Option<TokenSource>>,
}

impl std::fmt::Debug for TokenProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenProvider").field("mode", &self.config.mode).finish_non_exhaustive()
    }
}

/// gcloud refreshes its own tokens; asking it every 10 minutes keeps ours fresh.
const GCLOUD_REFRESH: Duration = Duration::from_secs(600);
/// Renew a metadata-server token this long before it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(300);

impl TokenProvider {
    pub fn new(config: AuthConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|e| CloudError::TokenSource { source_name: "the HTTP client".into(), message: e.to_string() })?;
        Ok(TokenProvider { config, http, cached: tokio::sync::Mutex::new(None), chosen: std::sync::Mutex::new(None) })
    }

    /// The source in use, once a token has been fetched.
    pub fn source(&self) -> Option<TokenSource> {
        self.chosen.lock().ok().and_then(|c| *c)
    }

    /// A valid token, from the cache when it is still fresh.
    pub async fn token(&self) -> Result<AccessToken> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref() {
            if c.refresh_at.is_none_or(|at| Instant::now() < at) {
                return Ok(c.token.clone());
            }
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        if let Ok(mut chosen) = self.chosen.lock() {
            *chosen = Some(fresh.source);
        }
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forgets the cached token; returns whether asking again can help
    /// (false for an environment token, which only the user can renew).
    pub async fn invalidate(&self) -> bool {
        let mut cached = self.cached.lock().await;
        let renewable = cached.as_ref().is_none_or(|c| c.source != TokenSource::Env);
        *cached = None;
        renewable
    }

    /// What to tell the user when the API refuses the token.
    pub fn refusal_hint(&self) -> String {
        match self.source() {
            Some(TokenSource::Env) => format!(
                "the token in {} was refused (tokens expire after about an hour): export a fresh one, or unset it to use gcloud; {}",
                self.config.env_var,
                super::error::AUTH_HELP
            ),
            Some(source) => format!("the token from {source} was refused; {}", super::error::AUTH_HELP),
            None => super::error::AUTH_HELP.to_string(),
        }
    }

    async fn fetch(&self) -> Result<Cached> {
        let fixed = self.chosen.lock().ok().and_then(|c| *c);
        let order: &[TokenSource] = match (fixed, self.config.mode) {
            (Some(TokenSource::Env), _) | (None, AuthMode::Env) => &[TokenSource::Env],
            (Some(TokenSource::Gcloud), _) | (None, AuthMode::Gcloud) => &[TokenSource::Gcloud],
            (Some(TokenSource::Metadata), _) | (None, AuthMode::Metadata) => &[TokenSource::Metadata],
            (None, AuthMode::Auto) => &[TokenSource::Env, TokenSource::Gcloud, TokenSource::Metadata],
        };
        let mut tried = Vec::new();
        for &source in order {
            match self.fetch_from(source).await {
                Ok(cached) => {
                    tracing::debug!("access token from {source}");
                    return Ok(cached);
                }
                Err(e) if order.len() == 1 => return Err(e),
                Err(e) => tried.push(e.to_string()),
            }
        }
        Err(CloudError::NoCredentials { tried: tried.join("; ") })
    }

    async fn fetch_from(&self, source: TokenSource) -> Result<Cached> {
        let fail = |message: String| CloudError::TokenSource { source_name: source.to_string(), message };
        match source {
            TokenSource::Env => {
                let text = std::env::var(&self.config.env_var).unwrap_or_default();
                if text.trim().is_empty() {
                    return Err(fail("not set".into()));
                }
                Ok(Cached { token: AccessToken::new(text), source, refresh_at: None })
            }
            TokenSource::Gcloud => {
                let mut command = tokio::process::Command::new(&self.config.gcloud);
                command.args(["auth", "print-access-token"]).stdin(std::process::Stdio::null()).kill_on_drop(true);
                let output = tokio::time::timeout(self.config.timeout, command.output())
                    .await
                    .map_err(|_| fail(format!("no answer within {}s", self.config.timeout.as_secs())))?
                    .map_err(|e| fail(format!("cannot run {}: {e}", self.config.gcloud.display())))?;
                if !output.status.success() {
                    // gcloud's stderr explains (e.g. "You do not currently have an active account");
                    // it never contains a token.
                    let stderr = String::from_utf8_lossy(&output.stderr);
                    return Err(fail(format!("{}: {}", output.status, last_lines(&stderr, 3))));
                }
                let token = AccessToken::new(String::from_utf8_lossy(&output.stdout));
                if token.secret().is_empty() || token.secret().contains(char::is_whitespace) {
                    return Err(fail("printed no single token".into()));
                }
                Ok(Cached { token, source, refresh_at: Some(Instant::now() + GCLOUD_REFRESH) })
            }
            TokenSource::Metadata => {
                #[derive(serde::Deserialize)]
                struct MetadataToken {
                    access_token: String,
                    #[serde(default)]
                    expires_in: u64,
                }
                let url = format!("{}{METADATA_TOKEN_PATH}", self.config.metadata_url.trim_end_matches('/'));
                let response = self
                    .http
                    .get(&url)
                    .header("Metadata-Flavor", "Google")
                    .send()
                    .await
                    .map_err(|e| fail(format!("{url}: {e} (not on a Google Cloud VM?)")))?;
                let status = response.status();
                if !status.is_success() {
                    return Err(fail(format!("{url} answered HTTP {status}")));
                }
                let body: MetadataToken = response.json().await.map_err(|e| fail(format!("{url}: unreadable answer: {e}")))?;
                let lifetime = Duration::from_secs(body.expires_in.max(60));
                let refresh_at = Instant::now() + lifetime.saturating_sub(EXPIRY_MARGIN).max(Duration::from_secs(30));
                Ok(Cached { token: AccessToken::new(body.access_token), source, refresh_at: Some(refresh_at) })
            }
        }
    }
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_token() {
        let token = AccessToken::new("ya29.secret-value\n");
        assert_eq!(token.secret(), "ya29.secret-value");
        assert_eq!(format!("{token:?}"), "AccessToken(<redacted>)");
        assert!(!format!("{:?}", Some(&token)).contains("secret"));
    }
}
