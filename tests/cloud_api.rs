//! The Cloud TPU API client against the local fake: the node lifecycle,
//! operations, paging, queued resources, retries that really happen, and
//! authentication failures that say what to do without ever showing a token.

mod cloud_fake;

use std::time::{Duration, Instant};

use cloud_fake::{FakeTpu, GOOD_TOKEN, temp_dir, write_script};
use emotionet::cloud::{
    AuthConfig, AuthMode, Capacity, ClientConfig, CloudError, CloudEvent, Location, NodeState, RetryPolicy, TokenProvider, TpuClient, VmManager, VmRequest,
    WaitOptions,
};

const WAIT: WaitOptions = WaitOptions { poll: Duration::from_millis(20), timeout: Duration::from_secs(10) };

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy { max_attempts, initial_backoff: Duration::from_millis(10), max_backoff: Duration::from_millis(50), max_retry_after: Duration::from_secs(5) }
}

/// Tokens from the fake's metadata server. (The environment-variable source
/// is tested through the binary, which gets its own environment.)
fn metadata_auth(fake: &FakeTpu) -> TokenProvider {
    TokenProvider::new(AuthConfig { mode: AuthMode::Metadata, metadata_url: fake.url.clone(), ..AuthConfig::default() }).unwrap()
}

/// A gcloud stand-in that prints `token`.
fn gcloud_printing(dir: &std::path::Path, token: &str) -> std::path::PathBuf {
    let path = dir.join("gcloud");
    write_script(&path, &format!("#!/bin/sh\n[ \"$1 $2\" = 'auth print-access-token' ] || exit 9\necho {token}\n"));
    path
}

fn client(fake: &FakeTpu, auth: TokenProvider, retry: RetryPolicy) -> TpuClient {
    TpuClient::new(ClientConfig { base_url: fake.url.clone(), retry, ..ClientConfig::default() }, auth).unwrap()
}

fn spec(node_id: &str, capacity: Capacity, queued: bool) -> emotionet::cloud::VmSpec {
    VmRequest {
        project: Some("emotionet-test".into()),
        zone: Some("europe-west4-a".into()),
        accelerator_type: Some("v3-8".into()),
        node_id: node_id.into(),
        capacity: Some(capacity),
        queued,
        external_ips: true,
        ..Default::default()
    }
    .validate()
    .unwrap()
}

#[tokio::test]
async fn create_poll_ready_list_page_by_page_and_delete() {
    let fake = FakeTpu::start();
    fake.set_op_polls(2);
    let client = client(&fake, metadata_auth(&fake), fast_retry(3));
    let location = Location::new("emotionet-test", "europe-west4-a").unwrap();
    let vms = VmManager::new(&client, WAIT);
    let mut events = Vec::new();
    for id in ["tpu-a", "tpu-b", "tpu-c"] {
        let node = vms.create(&spec(id, Capacity::Spot, false), &mut |e| events.push(e)).await.unwrap();
        assert_eq!(node.state(), NodeState::Ready);
        assert_eq!(node.accelerator_type.as_deref(), Some("v3-8"));
        assert_eq!(node.external_ips(), vec!["127.0.0.1"]);
    }
    // The create body on the wire: spot in schedulingConfig, our label, the image.
    let create = fake.requests().into_iter().find(|r| r.method == "POST" && r.path.ends_with("/nodes")).unwrap();
    assert_eq!(create.query, "nodeId=tpu-a");
    assert_eq!(create.body["schedulingConfig"], serde_json::json!({"spot": true}));
    assert_eq!(create.body["labels"]["managed-by"], "emotionet");
    assert_eq!(create.body["runtimeVersion"], "tpu-ubuntu2204-base");
    assert_eq!(create.body["networkConfig"]["enableExternalIps"], true);
    // Operations were polled until done, and progress was reported.
    assert!(fake.count("GET", "") > 3);
    assert!(events.iter().any(|e| matches!(e, CloudEvent::OperationPending { verb, .. } if verb == "create")));
    // The fake serves two per page: three nodes take two pages.
    let nodes = client.list_nodes(&location).await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.node_id().to_string()).collect::<Vec<_>>(), ["tpu-a", "tpu-b", "tpu-c"]);
    assert!(fake.requests().iter().any(|r| r.path.ends_with("/nodes") && r.query.contains("pageToken=2")));

    assert!(vms.delete(&spec("tpu-b", Capacity::Spot, false), &mut |_| {}).await.unwrap());
    let gone = client.get_node(&location.node_name("tpu-b")).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
    assert!(gone.to_string().contains("projects/emotionet-test/locations/europe-west4-a/nodes/tpu-b"), "{gone}");
    // Deleting what is gone is not an error, and says so.
    assert!(!vms.delete(&spec("tpu-b", Capacity::Spot, false), &mut |_| {}).await.unwrap());
}

#[tokio::test]
async fn retries_on_429_and_5xx_really_happen_and_honour_retry_after() {
    let fake = FakeTpu::start();
    let client = client(&fake, metadata_auth(&fake), fast_retry(5));
    let vms = VmManager::new(&client, WAIT);
    let spec = spec("tpu-retry", Capacity::OnDemand, false);
    vms.create(&spec, &mut |_| {}).await.unwrap();
    let before = fake.count("GET", "/nodes/tpu-retry");

    fake.fail_next(429, 1, Some("1"));
    fake.fail_next(500, 1, None);
    fake.fail_next(503, 1, None);
    let started = Instant::now();
    let node = vms.get(&spec).await.unwrap();
    assert_eq!(node.state(), NodeState::Ready);
    assert_eq!(fake.count("GET", "/nodes/tpu-retry") - before, 4, "three failures, then the answer");
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was not honoured ({:?})", started.elapsed());
    let statuses: Vec<u16> = fake.requests().iter().rev().take(4).map(|r| r.status).collect();
    assert_eq!(statuses, [200, 503, 500, 429]);
}

#[tokio::test]
async fn retries_stop_after_the_last_attempt_and_4xx_are_not_retried() {
    let fake = FakeTpu::start();
    let client = client(&fake, metadata_auth(&fake), fast_retry(3));
    let name = Location::new("emotionet-test", "europe-west4-a").unwrap().node_name("missing");

    fake.fail_next(500, 5, None);
    let err = client.get_node(&name).await.unwrap_err();
    assert!(matches!(&err, CloudError::RetriesExhausted { attempts: 3, .. }), "{err:?}");
    assert_eq!(err.http_status(), Some(500));
    assert_eq!(fake.count("GET", "/nodes/missing"), 3);

    // Two injected 500s are left; drain them, then a plain 404 is asked once.
    let _ = client.get_node(&name).await;
    let before = fake.count("GET", "/nodes/missing");
    let err = client.get_node(&name).await.unwrap_err();
    assert_eq!(fake.count("GET", "/nodes/missing") - before, 1, "a 404 must not be retried");
    assert!(matches!(&err, CloudError::Api { status: 404, api_status, .. } if api_status == "NOT_FOUND"), "{err:?}");
}

#[tokio::test]
async fn a_refused_token_is_a_clear_error_that_never_shows_the_token() {
    let fake = FakeTpu::start();
    let secret = "ya29.this-one-is-expired-SECRET";
    let dir = temp_dir("badtoken");
    let auth = TokenProvider::new(AuthConfig { mode: AuthMode::Gcloud, gcloud: gcloud_printing(dir.path(), secret), ..AuthConfig::default() }).unwrap();
    let client = client(&fake, auth, fast_retry(5));
    let err = client.list_nodes(&Location::new("emotionet-test", "europe-west4-a").unwrap()).await.unwrap_err();
    assert!(matches!(err, CloudError::Unauthenticated { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("HTTP 401 UNAUTHENTICATED"), "{text}");
    assert!(text.contains("gcloud auth print-access-token") && text.contains("gcloud auth login"), "{text}");
    assert!(!text.contains(secret) && !format!("{err:?}").contains(secret), "the token leaked: {text}");
    // A gcloud token may just have expired: asked for once more, then given up (no backoff loop).
    assert_eq!(fake.requests().len(), 2);
    assert_eq!(format!("{:?}", client.auth().token().await.unwrap()), "AccessToken(<redacted>)");
}

#[tokio::test]
async fn a_failed_operation_and_a_permission_error_are_reported_as_such() {
    let fake = FakeTpu::start();
    let client = client(&fake, metadata_auth(&fake), fast_retry(2));
    let vms = VmManager::new(&client, WAIT);
    fake.fail_next_operation(8, "There is no more capacity in the zone \"europe-west4-a\"");
    let err = vms.create(&spec("tpu-full", Capacity::Spot, false), &mut |_| {}).await.unwrap_err();
    assert!(matches!(&err, CloudError::OperationFailed { code: 8, .. }), "{err:?}");
    assert!(err.to_string().contains("no more capacity"), "{err}");

    fake.fail_next(403, 1, None);
    let err = vms.get(&spec("tpu-full", Capacity::Spot, false)).await.unwrap_err();
    assert!(matches!(err, CloudError::PermissionDenied { .. }), "{err:?}");
    assert!(err.to_string().contains("gcloud services enable tpu.googleapis.com"), "{err}");
}

#[tokio::test]
async fn a_spot_vm_through_a_queued_resource() {
    let fake = FakeTpu::start();
    let client = client(&fake, metadata_auth(&fake), fast_retry(3));
    let vms = VmManager::new(&client, WAIT);
    let spec = spec("tpu-queued", Capacity::Spot, true);
    let mut seen = Vec::new();
    let node = vms.create(&spec, &mut |e| seen.push(e)).await.unwrap();
    assert_eq!(node.state(), NodeState::Ready);
    assert_eq!(node.queued_resource.as_deref(), Some("projects/emotionet-test/locations/europe-west4-a/queuedResources/tpu-queued"));
    let request = fake.requests().into_iter().find(|r| r.method == "POST" && r.path.ends_with("/queuedResources")).unwrap();
    assert_eq!(request.query, "queuedResourceId=tpu-queued");
    assert_eq!(request.body["spot"], serde_json::json!({}));
    assert_eq!(request.body["tpu"]["nodeSpec"][0]["nodeId"], "tpu-queued");
    assert!(request.body["tpu"]["nodeSpec"][0]["node"].get("schedulingConfig").is_none());
    let states: Vec<String> = seen
        .iter()
        .filter_map(|e| match e {
            CloudEvent::QueuedState { state, .. } => Some(state.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(states, ["PROVISIONING", "ACTIVE"]);
    let listed = client.list_queued_resources(&spec.location()).await.unwrap();
    assert_eq!(listed.len(), 1);

    assert!(vms.delete(&spec, &mut |_| {}).await.unwrap());
    assert!(fake.requests().iter().any(|r| r.method == "DELETE" && r.path.ends_with("/queuedResources/tpu-queued") && r.query == "force=true"));
    assert!(fake.node_state("tpu-queued").is_none(), "the node went with its queued resource");
    assert!(client.list_queued_resources(&spec.location()).await.unwrap().is_empty());
}

#[tokio::test]
async fn tokens_from_the_metadata_server_and_from_gcloud() {
    let fake = FakeTpu::start();
    let location = Location::new("emotionet-test", "europe-west4-a").unwrap();

    let metadata = TokenProvider::new(AuthConfig { mode: AuthMode::Metadata, metadata_url: fake.url.clone(), ..AuthConfig::default() }).unwrap();
    client(&fake, metadata, fast_retry(2)).list_nodes(&location).await.unwrap();

    let dir = temp_dir("gcloud");
    let good = gcloud_printing(dir.path(), GOOD_TOKEN);
    let from_gcloud = TokenProvider::new(AuthConfig { mode: AuthMode::Gcloud, gcloud: good, ..AuthConfig::default() }).unwrap();
    client(&fake, from_gcloud, fast_retry(2)).list_nodes(&location).await.unwrap();

    // Auto: no env token, gcloud logged out, so the metadata server is used.
    let bad = dir.path().join("gcloud-logged-out");
    write_script(&bad, "#!/bin/sh\necho 'ERROR: (gcloud.auth.print-access-token) You do not currently have an active account selected.' >&2\nexit 1\n");
    let auto = TokenProvider::new(AuthConfig {
        mode: AuthMode::Auto,
        env_var: "EMOTIONET_TEST_TOKEN_UNSET".into(),
        gcloud: bad.clone(),
        metadata_url: fake.url.clone(),
        ..AuthConfig::default()
    })
    .unwrap();
    let auto_client = client(&fake, auto, fast_retry(2));
    auto_client.list_nodes(&location).await.unwrap();
    assert_eq!(auto_client.auth().source(), Some(emotionet::cloud::TokenSource::Metadata));

    // Nothing works: the error lists what was tried and how to log in.
    let none = TokenProvider::new(AuthConfig {
        mode: AuthMode::Auto,
        env_var: "EMOTIONET_TEST_TOKEN_UNSET".into(),
        gcloud: bad,
        metadata_url: "http://127.0.0.1:9".into(),
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let err = client(&fake, none, fast_retry(2)).list_nodes(&location).await.unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CloudError::NoCredentials { .. }), "{text}");
    assert!(text.contains("not set") && text.contains("active account"), "{text}");
    assert!(text.contains("gcloud auth login"), "{text}");
}
