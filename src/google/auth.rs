//! Google Cloud credentials: Application Default Credentials from Google's
//! `google-cloud-auth`, with `gcloud auth print-access-token` as a fallback.
//!
//! ADC, in its usual order (AIP-4110):
//! 1. `GOOGLE_APPLICATION_CREDENTIALS`: a service-account key or an
//!    authorized-user file;
//! 2. the file `gcloud auth application-default login` writes
//!    (`~/.config/gcloud/application_default_credentials.json`);
//! 3. the metadata server of a Google Cloud VM (`GCE_METADATA_HOST` moves it).
//!
//! [`AuthMode::Auto`] adds one step: when neither file exists and no metadata
//! server answers, ask `gcloud auth print-access-token` (a workstation with
//! `gcloud auth login` but no application-default login). A credentials file
//! that is named but broken is an error, never a reason to try another source.
//!
//! The quota project goes out as `x-goog-user-project` when the credentials
//! name one (`quota_project_id` in the file), or `--quota-project` /
//! `GOOGLE_CLOUD_QUOTA_PROJECT` says so.
//!
//! Tokens never leave the `Authorization` header: nothing here prints, logs
//! or stores one, the header is marked sensitive (redacted in `Debug`), and
//! gcloud's output is read into that header and dropped.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use google_cloud_auth::credentials::{CacheableResource, Credentials, CredentialsProvider, EntityTag};
use google_cloud_auth::errors::CredentialsError;
use http::header::{AUTHORIZATION, HeaderName, HeaderValue};
use http::{Extensions, HeaderMap};

/// A token source that was asked for and failed. The cloud and storage
/// errors wrap it with their own advice.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("could not get an access token from {source_name}: {message}")]
    TokenSource { source_name: String, message: String },
}

type Result<T> = std::result::Result<T, AuthError>;

/// The scope every call needs: the TPU API and Cloud Storage both accept it.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";
/// Where ADC looks first.
pub const CREDENTIALS_ENV: &str = "GOOGLE_APPLICATION_CREDENTIALS";
const QUOTA_PROJECT_HEADER: &str = "x-goog-user-project";

/// Which sources to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Application Default Credentials, then `gcloud auth print-access-token`.
    Auto,
    /// Application Default Credentials only.
    Adc,
    /// Only `gcloud auth print-access-token`.
    Gcloud,
}

#[derive(Clone, Debug)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// The gcloud executable, for the fallback.
    pub gcloud: PathBuf,
    /// Bill quota to this project (`x-goog-user-project`).
    pub quota_project: Option<String>,
    /// Limit for one `gcloud` call.
    pub timeout: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig { mode: AuthMode::Auto, gcloud: PathBuf::from("gcloud"), quota_project: None, timeout: Duration::from_secs(30) }
    }
}

/// The ADC file in use, if any: the environment's, else gcloud's well-known one.
pub fn adc_file() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(CREDENTIALS_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let home = std::env::var_os("HOME")?;
    Some(PathBuf::from(home).join(".config/gcloud/application_default_credentials.json")).filter(|p| p.exists())
}

/// Application Default Credentials, with the cloud-platform scope.
pub fn adc_credentials(config: &AuthConfig) -> Result<Credentials> {
    super::tls::install_crypto_provider();
    let mut builder = google_cloud_auth::credentials::Builder::default().with_scopes([CLOUD_PLATFORM_SCOPE]);
    if let Some(project) = &config.quota_project {
        builder = builder.with_quota_project_id(project);
    }
    builder.build().map_err(|e| AuthError::TokenSource {
        source_name: match adc_file() {
            Some(path) => format!("the credentials file {}", path.display()),
            None => "Application Default Credentials".into(),
        },
        message: e.to_string(),
    })
}

/// The credentials `config` asks for.
pub fn credentials(config: &AuthConfig) -> Result<Credentials> {
    super::tls::install_crypto_provider();
    match config.mode {
        AuthMode::Adc => adc_credentials(config),
        AuthMode::Gcloud => Ok(Credentials::from(GcloudToken::new(config))),
        // A named file is the user's choice: its errors are theirs to see.
        AuthMode::Auto if adc_file().is_some() => adc_credentials(config),
        AuthMode::Auto => {
            Ok(Credentials::from(MetadataThenGcloud { metadata: adc_credentials(config)?, gcloud: GcloudToken::new(config), chosen: Mutex::new(None) }))
        }
    }
}

/// Where `config`'s credentials will come from, in words (never the token).
pub fn describe(config: &AuthConfig) -> String {
    let file = |path: PathBuf| {
        let kind = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_string))
            .unwrap_or_else(|| "unreadable".into());
        format!("{} ({kind})", path.display())
    };
    match (config.mode, adc_file()) {
        (AuthMode::Gcloud, _) => format!("`{} auth print-access-token`", config.gcloud.display()),
        (_, Some(path)) => file(path),
        (AuthMode::Adc, None) => "the metadata server".into(),
        (AuthMode::Auto, None) => format!("the metadata server, else `{} auth print-access-token`", config.gcloud.display()),
    }
}

fn bearer_headers(token: &str, quota_project: Option<&str>) -> std::result::Result<HeaderMap, CredentialsError> {
    let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
        .map_err(|_| CredentialsError::from_msg(false, "the token has characters an HTTP header cannot carry"))?;
    // Keeps the token out of every Debug print of the headers.
    value.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(AUTHORIZATION, value);
    if let Some(project) = quota_project {
        let project =
            HeaderValue::from_str(project).map_err(|_| CredentialsError::from_msg(false, format!("quota project {project:?} is not a valid header value")))?;
        headers.insert(HeaderName::from_static(QUOTA_PROJECT_HEADER), project);
    }
    Ok(headers)
}

/// `gcloud auth print-access-token`, asked again every 10 minutes (gcloud
/// refreshes its own credentials; its tokens live about an hour).
#[derive(Debug)]
struct GcloudToken {
    gcloud: PathBuf,
    quota_project: Option<String>,
    timeout: Duration,
    cached: tokio::sync::Mutex<Option<(HeaderMap, Instant)>>,
}

const GCLOUD_REFRESH: Duration = Duration::from_secs(600);

impl GcloudToken {
    fn new(config: &AuthConfig) -> Self {
        GcloudToken {
            gcloud: config.gcloud.clone(),
            quota_project: config.quota_project.clone(),
            timeout: config.timeout,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    async fn fetch(&self) -> std::result::Result<HeaderMap, CredentialsError> {
        let mut cached = self.cached.lock().await;
        if let Some((headers, at)) = cached.as_ref()
            && at.elapsed() < GCLOUD_REFRESH
        {
            return Ok(headers.clone());
        }
        let gcloud = self.gcloud.display().to_string();
        let mut command = tokio::process::Command::new(&self.gcloud);
        command.args(["auth", "print-access-token"]).stdin(std::process::Stdio::null()).kill_on_drop(true);
        let output = tokio::time::timeout(self.timeout, command.output())
            .await
            .map_err(|_| CredentialsError::from_msg(true, format!("`{gcloud} auth print-access-token` gave no answer within {}s", self.timeout.as_secs())))?
            .map_err(|e| CredentialsError::from_msg(false, format!("cannot run `{gcloud}`: {e}")))?;
        if !output.status.success() {
            // gcloud's stderr explains (e.g. "You do not currently have an active account"); it never holds a token.
            let stderr = String::from_utf8_lossy(&output.stderr);
            return Err(CredentialsError::from_msg(
                false,
                format!("`{gcloud} auth print-access-token` failed ({}): {}", output.status, last_lines(&stderr, 3)),
            ));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        let token = text.trim();
        if token.is_empty() || token.contains(char::is_whitespace) {
            return Err(CredentialsError::from_msg(false, format!("`{gcloud} auth print-access-token` printed no single token")));
        }
        let headers = bearer_headers(token, self.quota_project.as_deref())?;
        *cached = Some((headers.clone(), Instant::now()));
        Ok(headers)
    }
}

impl CredentialsProvider for GcloudToken {
    async fn headers(&self, _extensions: Extensions) -> std::result::Result<CacheableResource<HeaderMap>, CredentialsError> {
        Ok(CacheableResource::New { entity_tag: EntityTag::new(), data: self.fetch().await? })
    }

    async fn universe_domain(&self) -> Option<String> {
        Some("googleapis.com".into())
    }
}

/// The metadata server (ADC's last step); if it cannot be reached, gcloud.
/// The first source that works is kept for the rest of the process.
#[derive(Debug)]
struct MetadataThenGcloud {
    metadata: Credentials,
    gcloud: GcloudToken,
    chosen: Mutex<Option<bool>>,
}

impl CredentialsProvider for MetadataThenGcloud {
    async fn headers(&self, extensions: Extensions) -> std::result::Result<CacheableResource<HeaderMap>, CredentialsError> {
        let chosen = self.chosen.lock().ok().and_then(|c| *c);
        if chosen == Some(false) {
            return self.gcloud.headers(extensions).await;
        }
        match self.metadata.headers(extensions.clone()).await {
            Ok(headers) => {
                if let Ok(mut c) = self.chosen.lock() {
                    *c = Some(true);
                }
                Ok(headers)
            }
            Err(e) if chosen == Some(true) => Err(e),
            Err(metadata_error) => match self.gcloud.headers(extensions).await {
                Ok(headers) => {
                    tracing::debug!("no metadata server ({metadata_error}); using gcloud's token");
                    if let Ok(mut c) = self.chosen.lock() {
                        *c = Some(false);
                    }
                    Ok(headers)
                }
                Err(gcloud_error) => Err(CredentialsError::from_msg(
                    false,
                    format!(
                        "no Application Default Credentials: {CREDENTIALS_ENV} is not set, there is no \
                         `gcloud auth application-default login` file, the metadata server did not answer ({metadata_error}), \
                         and the gcloud fallback failed ({gcloud_error})"
                    ),
                )),
            },
        }
    }

    async fn universe_domain(&self) -> Option<String> {
        Some("googleapis.com".into())
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
    fn bearer_headers_are_sensitive_and_carry_the_quota_project() {
        let headers = bearer_headers("ya29.secret-value", Some("billing-project")).unwrap();
        assert!(headers[AUTHORIZATION].is_sensitive());
        assert!(!format!("{headers:?}").contains("secret-value"));
        assert_eq!(headers[QUOTA_PROJECT_HEADER], "billing-project");
    }
}
