//! An async client for the Cloud TPU API v2: nodes, long-running operations
//! and queued resources, one method per REST call.
//!
//! Every call goes through [`TpuClient::request`], the one place that adds
//! the token, applies the timeout, retries (see [`super::retry`]) and turns
//! an error answer into a [`CloudError`] carrying the HTTP status, Google's
//! status text, its message and the resource name.

use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use serde::de::DeserializeOwned;

use super::api::{ErrorBody, ListNodesResponse, ListQueuedResourcesResponse, Node, Operation, QueuedResource};
use super::auth::TokenProvider;
use super::error::{CloudError, Result};
use super::retry::{RetryPolicy, is_retryable_status, parse_retry_after};
use super::spec::Location;

/// The real endpoint.
pub const TPU_API_URL: &str = "https://tpu.googleapis.com";

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Scheme and host (and port); `/v2/...` is appended. Tests point it at a fake.
    pub base_url: String,
    /// Limit for one HTTP exchange, body included.
    pub call_timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            base_url: TPU_API_URL.to_string(),
            call_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
        }
    }
}

/// How often to look, and for how long, while waiting on an operation or state.
#[derive(Clone, Copy, Debug)]
pub struct WaitOptions {
    pub poll: Duration,
    pub timeout: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions { poll: Duration::from_secs(10), timeout: Duration::from_secs(30 * 60) }
    }
}

#[derive(Debug)]
pub struct TpuClient {
    http: reqwest::Client,
    base: String,
    auth: TokenProvider,
    retry: RetryPolicy,
}

impl TpuClient {
    pub fn new(config: ClientConfig, auth: TokenProvider) -> Result<Self> {
        let base = config.base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(CloudError::InvalidName { what: "API URL", value: base, rule: "must start with https:// (or http:// for a local fake)" });
        }
        let http = reqwest::Client::builder()
            .timeout(config.call_timeout)
            .connect_timeout(config.connect_timeout)
            .user_agent(concat!("emotionet/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CloudError::Transport { url: base.clone(), resource: "client setup".into(), message: e.to_string(), timed_out: false })?;
        Ok(TpuClient { http, base, auth, retry: config.retry })
    }

    pub fn auth(&self) -> &TokenProvider {
        &self.auth
    }

    /// `POST v2/{parent}/nodes?nodeId=ID`: starts creating a node.
    pub async fn create_node(&self, location: &Location, node_id: &str, node: &Node) -> Result<Operation> {
        let body = serde_json::to_value(node).map_err(|e| decode_error(&location.node_name(node_id), e))?;
        let path = format!("{}/nodes", location.parent());
        self.request(Method::POST, &path, &[("nodeId", node_id.to_string())], Some(&body), &location.node_name(node_id)).await
    }

    /// `GET v2/{name}` of a node.
    pub async fn get_node(&self, name: &str) -> Result<Node> {
        self.request(Method::GET, name, &[], None, name).await
    }

    /// `GET v2/{parent}/nodes`, every page.
    pub async fn list_nodes(&self, location: &Location) -> Result<Vec<Node>> {
        let path = format!("{}/nodes", location.parent());
        self.list_all(&path, |page: ListNodesResponse| (page.nodes, page.next_page_token)).await
    }

    /// `DELETE v2/{name}` of a node.
    pub async fn delete_node(&self, name: &str) -> Result<Operation> {
        self.request(Method::DELETE, name, &[], None, name).await
    }

    /// `GET v2/{name}` of an operation.
    pub async fn get_operation(&self, name: &str) -> Result<Operation> {
        self.request(Method::GET, name, &[], None, name).await
    }

    /// Polls `operation` until it is done; its error becomes [`CloudError::OperationFailed`].
    /// `on_poll` sees every state of the operation and the time waited so far.
    pub async fn wait_operation(&self, operation: Operation, wait: WaitOptions, on_poll: &mut (dyn FnMut(&Operation, Duration) + Send)) -> Result<Operation> {
        let started = Instant::now();
        let mut current = operation;
        loop {
            on_poll(&current, started.elapsed());
            if current.done {
                return match current.error {
                    Some(status) => Err(CloudError::OperationFailed { name: current.name, code: status.code, message: status.message }),
                    None => Ok(current),
                };
            }
            if started.elapsed() >= wait.timeout {
                return Err(CloudError::Timeout { what: format!("operation {}", current.name), waited: started.elapsed() });
            }
            tokio::time::sleep(wait.poll).await;
            if current.name.is_empty() {
                return Err(CloudError::Decode { resource: "operation".into(), message: "an unfinished operation without a name".into() });
            }
            current = self.get_operation(&current.name).await?;
        }
    }

    /// `POST v2/{parent}/queuedResources?queuedResourceId=ID`.
    pub async fn create_queued_resource(&self, location: &Location, id: &str, resource: &QueuedResource) -> Result<Operation> {
        let name = location.queued_resource_name(id);
        let body = serde_json::to_value(resource).map_err(|e| decode_error(&name, e))?;
        let path = format!("{}/queuedResources", location.parent());
        self.request(Method::POST, &path, &[("queuedResourceId", id.to_string())], Some(&body), &name).await
    }

    /// `GET v2/{name}` of a queued resource.
    pub async fn get_queued_resource(&self, name: &str) -> Result<QueuedResource> {
        self.request(Method::GET, name, &[], None, name).await
    }

    /// `GET v2/{parent}/queuedResources`, every page.
    pub async fn list_queued_resources(&self, location: &Location) -> Result<Vec<QueuedResource>> {
        let path = format!("{}/queuedResources", location.parent());
        self.list_all(&path, |page: ListQueuedResourcesResponse| (page.queued_resources, page.next_page_token)).await
    }

    /// Every page of the list call `GET v2/{path}`; `split` takes a page
    /// apart into its items and the next page's token (none or empty: done).
    async fn list_all<P: DeserializeOwned, T>(&self, path: &str, split: impl Fn(P) -> (Vec<T>, Option<String>)) -> Result<Vec<T>> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("pageSize", "100".to_string())];
            if let Some(t) = token.take() {
                query.push(("pageToken", t));
            }
            let (items, next) = split(self.request(Method::GET, path, &query, None, path).await?);
            all.extend(items);
            match next.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(all),
            }
        }
    }

    /// `DELETE v2/{name}?force=...`; `force` also deletes the node it created.
    pub async fn delete_queued_resource(&self, name: &str, force: bool) -> Result<Operation> {
        self.request(Method::DELETE, name, &[("force", force.to_string())], None, name).await
    }

    /// The one door to the API: token, timeout, retries, error mapping.
    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&serde_json::Value>,
        resource: &str,
    ) -> Result<T> {
        let url = format!("{}/v2/{}", self.base, path);
        let mut attempt = 0u32;
        let mut renewed_token = false;
        loop {
            attempt += 1;
            let token = self.auth.token().await?;
            let mut bearer = HeaderValue::from_str(&format!("Bearer {}", token.secret())).map_err(|_| CloudError::TokenSource {
                source_name: self.auth.source().map(|s| s.to_string()).unwrap_or_else(|| "the token source".into()),
                message: "the token has characters an HTTP header cannot carry".into(),
            })?;
            // Keeps the header out of reqwest's and hyper's Debug output.
            bearer.set_sensitive(true);
            let mut builder = self.http.request(method.clone(), &url).header(AUTHORIZATION, bearer).query(query);
            if let Some(body) = body {
                builder = builder.json(body);
            }
            tracing::debug!("{method} {url} (attempt {attempt})");
            let (failure, retry_after) = match builder.send().await {
                Err(e) => {
                    let failure =
                        CloudError::Transport { url: url.clone(), resource: resource.to_string(), message: error_chain(&e), timed_out: e.is_timeout() };
                    (failure, None)
                }
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
                    let text = match response.text().await {
                        Ok(text) => text,
                        Err(e) => {
                            let failure =
                                CloudError::Transport { url: url.clone(), resource: resource.to_string(), message: error_chain(&e), timed_out: e.is_timeout() };
                            self.pause_or_give_up(&method, resource, attempt, failure, None).await?;
                            continue;
                        }
                    };
                    if (200..300).contains(&status) {
                        let text = if text.trim().is_empty() { "{}" } else { text.as_str() };
                        return serde_json::from_str(text).map_err(|e| decode_error(resource, e));
                    }
                    let detail = serde_json::from_str::<ErrorBody>(&text).unwrap_or_default().error;
                    let message = if detail.message.is_empty() { snippet(&text) } else { detail.message };
                    let api_status = if detail.status.is_empty() { reason(status) } else { detail.status };
                    match status {
                        401 => {
                            if !renewed_token && self.auth.invalidate().await {
                                // An expired token from a renewable source: ask once more.
                                renewed_token = true;
                                attempt -= 1;
                                continue;
                            }
                            return Err(CloudError::Unauthenticated { resource: resource.to_string(), api_status, message, hint: self.auth.refusal_hint() });
                        }
                        403 => {
                            return Err(CloudError::PermissionDenied { method: method.to_string(), resource: resource.to_string(), api_status, message });
                        }
                        s if is_retryable_status(s) => {
                            (CloudError::Api { method: method.to_string(), resource: resource.to_string(), status, api_status, message }, retry_after)
                        }
                        _ => return Err(CloudError::Api { method: method.to_string(), resource: resource.to_string(), status, api_status, message }),
                    }
                }
            };
            self.pause_or_give_up(&method, resource, attempt, failure, retry_after).await?;
        }
    }

    /// Sleeps before the next attempt, or returns the error when none is left.
    async fn pause_or_give_up(&self, method: &Method, resource: &str, attempt: u32, failure: CloudError, retry_after: Option<Duration>) -> Result<()> {
        if attempt >= self.retry.max_attempts {
            if attempt == 1 {
                return Err(failure);
            }
            return Err(CloudError::RetriesExhausted {
                method: method.to_string(),
                resource: resource.to_string(),
                attempts: attempt,
                last: Box::new(failure),
            });
        }
        let wait = self.retry.delay(attempt, retry_after);
        tracing::warn!("{failure}; attempt {attempt} of {}, next in {} ms", self.retry.max_attempts, wait.as_millis());
        tokio::time::sleep(wait).await;
        Ok(())
    }
}

fn decode_error(resource: &str, e: serde_json::Error) -> CloudError {
    CloudError::Decode { resource: resource.to_string(), message: e.to_string() }
}

fn snippet(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".into();
    }
    text.chars().take(200).collect()
}

fn reason(status: u16) -> String {
    reqwest::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("").to_uppercase().replace(' ', "_")
}

/// An error with its causes: reqwest's own message is terse ("error sending request").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}
