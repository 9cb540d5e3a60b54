//! The Cloud TPU API v2 through Google's `google-cloud-tpu-v2` client:
//! nodes, long-running operations, queued resources, accelerator types.
//!
//! [`TpuClient`] adds what this project needs around the official client:
//! the endpoint (tests point it at a local fake), the credentials of
//! [`crate::google::auth`], the retry policy of [`super::retry`], waiting on an
//! operation with progress, and errors that name the call and the resource
//! ([`CloudError`]). It holds no request or JSON code of its own.

use std::time::{Duration, Instant};

use google_cloud_auth::credentials::Credentials;
use google_cloud_gax::options::RequestOptionsBuilder;
use google_cloud_tpu_v2::client::Tpu;

use super::api::{AcceleratorType, Node, Operation, QueuedResource};
use super::error::{CloudError, Result};
use super::retry::RetryPolicy;
use super::spec::Location;

/// The real endpoint.
pub const TPU_API_URL: &str = "https://tpu.googleapis.com";

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Scheme and host (and port). Tests point it at a fake.
    pub base_url: String,
    /// Limit for one HTTP exchange, body included.
    pub call_timeout: Duration,
    pub retry: RetryPolicy,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig { base_url: TPU_API_URL.to_string(), call_timeout: Duration::from_secs(60), retry: RetryPolicy::default() }
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

#[derive(Clone, Debug)]
pub struct TpuClient {
    tpu: Tpu,
    base: String,
    credentials: Credentials,
}

impl TpuClient {
    pub async fn connect(config: ClientConfig, credentials: Credentials) -> Result<Self> {
        crate::google::tls::install_crypto_provider();
        let base = config.base_url.trim_end_matches('/').to_string();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(CloudError::InvalidName { what: "API URL", value: base, rule: "must start with https:// (or http:// for a local fake)" });
        }
        let (retry, backoff) = config.retry.policies();
        let tpu = Tpu::builder()
            .with_endpoint(base.clone())
            .with_credentials(credentials.clone())
            .with_retry_policy(retry)
            .with_backoff_policy(backoff)
            .with_attempt_timeout(config.call_timeout)
            .build()
            .await
            .map_err(|e| CloudError::Transport {
                url: base.clone(),
                resource: "client setup".into(),
                message: crate::errors::chain_text(&e),
                timed_out: false,
            })?;
        Ok(TpuClient { tpu, base, credentials })
    }

    pub fn endpoint(&self) -> &str {
        &self.base
    }

    /// Gets a token (or whatever the credentials send) without calling the
    /// API, so a command that must not half-start can stop before its first
    /// request. The headers are dropped here: nothing of them is kept or shown.
    pub async fn check_credentials(&self) -> Result<()> {
        use google_cloud_auth::credentials::CacheableResource;
        match self.credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { .. } | CacheableResource::NotModified) => Ok(()),
            Err(e) => Err(CloudError::TokenSource { source_name: "the credentials".into(), message: crate::errors::chain_text(&e) }),
        }
    }

    fn fail(&self, method: &'static str, resource: &str) -> impl Fn(google_cloud_gax::error::Error) -> CloudError + '_ {
        let resource = resource.to_string();
        move |e| CloudError::from_api(method, &resource, &self.base, e)
    }

    /// Starts creating a node. Marked idempotent, so it is retried: a create
    /// that did land answers 409 on the retry, and [`super::vm`] adopts it.
    pub async fn create_node(&self, location: &Location, node_id: &str, node: Node) -> Result<Operation> {
        self.tpu
            .create_node()
            .set_parent(location.parent())
            .set_node_id(node_id)
            .set_node(node)
            .with_idempotency(true)
            .send()
            .await
            .map_err(self.fail("POST", &location.node_name(node_id)))
    }

    pub async fn get_node(&self, name: &str) -> Result<Node> {
        self.tpu.get_node().set_name(name).send().await.map_err(self.fail("GET", name))
    }

    /// Every node in the zone, all pages.
    pub async fn list_nodes(&self, location: &Location) -> Result<Vec<Node>> {
        let parent = location.parent();
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self.tpu.list_nodes().set_parent(&parent).set_page_size(100).set_page_token(&token).send().await.map_err(self.fail("GET", &parent))?;
            all.extend(page.nodes);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            token = page.next_page_token;
        }
    }

    pub async fn delete_node(&self, name: &str) -> Result<Operation> {
        self.tpu.delete_node().set_name(name).send().await.map_err(self.fail("DELETE", name))
    }

    /// Starts a STOPPED node again.
    pub async fn start_node(&self, name: &str) -> Result<Operation> {
        self.tpu.start_node().set_name(name).with_idempotency(true).send().await.map_err(self.fail("POST", name))
    }

    pub async fn get_operation(&self, name: &str) -> Result<Operation> {
        self.tpu.get_operation().set_name(name).send().await.map_err(self.fail("GET", name))
    }

    /// Polls `operation` until it is done; its error becomes [`CloudError::OperationFailed`].
    /// `on_poll` sees every state of the operation and the time waited so far.
    pub async fn wait_operation(&self, operation: Operation, wait: WaitOptions, on_poll: &mut (dyn FnMut(&Operation, Duration) + Send)) -> Result<Operation> {
        use google_cloud_longrunning::model::operation::Result as OpResult;
        let started = Instant::now();
        let mut current = operation;
        loop {
            on_poll(&current, started.elapsed());
            if current.done {
                return match &current.result {
                    Some(OpResult::Error(status)) => {
                        Err(CloudError::OperationFailed { name: current.name.clone(), code: status.code, message: status.message.clone() })
                    }
                    _ => Ok(current),
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

    pub async fn create_queued_resource(&self, location: &Location, id: &str, resource: QueuedResource) -> Result<Operation> {
        self.tpu
            .create_queued_resource()
            .set_parent(location.parent())
            .set_queued_resource_id(id)
            .set_queued_resource(resource)
            .with_idempotency(true)
            .send()
            .await
            .map_err(self.fail("POST", &location.queued_resource_name(id)))
    }

    pub async fn get_queued_resource(&self, name: &str) -> Result<QueuedResource> {
        self.tpu.get_queued_resource().set_name(name).send().await.map_err(self.fail("GET", name))
    }

    /// Every queued resource in the zone, all pages.
    pub async fn list_queued_resources(&self, location: &Location) -> Result<Vec<QueuedResource>> {
        let parent = location.parent();
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .tpu
                .list_queued_resources()
                .set_parent(&parent)
                .set_page_size(100)
                .set_page_token(&token)
                .send()
                .await
                .map_err(self.fail("GET", &parent))?;
            all.extend(page.queued_resources);
            if page.next_page_token.is_empty() {
                return Ok(all);
            }
            token = page.next_page_token;
        }
    }

    /// `force` also deletes the node it created.
    pub async fn delete_queued_resource(&self, name: &str, force: bool) -> Result<Operation> {
        self.tpu.delete_queued_resource().set_name(name).set_force(force).send().await.map_err(self.fail("DELETE", name))
    }

    /// The accelerator type as the zone offers it; 404 when the zone does not.
    pub async fn get_accelerator_type(&self, location: &Location, accelerator_type: &str) -> Result<AcceleratorType> {
        let name = format!("{}/acceleratorTypes/{accelerator_type}", location.parent());
        self.tpu.get_accelerator_type().set_name(&name).send().await.map_err(self.fail("GET", &name))
    }

    /// The accelerator types the zone offers, by name (`v3-8`, ...).
    pub async fn list_accelerator_types(&self, location: &Location) -> Result<Vec<String>> {
        let parent = location.parent();
        let mut all = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .tpu
                .list_accelerator_types()
                .set_parent(&parent)
                .set_page_size(100)
                .set_page_token(&token)
                .send()
                .await
                .map_err(self.fail("GET", &parent))?;
            all.extend(
                page.accelerator_types
                    .into_iter()
                    .map(|t| if t.r#type.is_empty() { t.name.rsplit('/').next().unwrap_or_default().to_string() } else { t.r#type }),
            );
            if page.next_page_token.is_empty() {
                all.sort();
                return Ok(all);
            }
            token = page.next_page_token;
        }
    }
}
