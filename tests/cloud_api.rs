//! The Cloud TPU API through Google's client against the local fake: the
//! node lifecycle, operations, paging, queued resources, stop and start,
//! zones, retries that really happen, every credential source that can be
//! faked here, and authentication failures that never show a token.

mod cloud_fake;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cloud_fake::{FakeTpu, GOOD_TOKEN, REFRESH_TOKEN, temp_dir, write_script};
use emotionet::cloud::{
    AuthConfig, AuthMode, Capacity, ClientConfig, CloudError, CloudEvent, Health, Location, NodeExt, NodeState, RetryPolicy, TpuClient, VmManager, VmRequest,
    WaitOptions,
};
use google_cloud_auth::credentials::{Credentials, mds, service_account, user_account};

const WAIT: WaitOptions = WaitOptions { poll: Duration::from_millis(20), timeout: Duration::from_secs(10) };

fn fast_retry(max_attempts: u32) -> RetryPolicy {
    RetryPolicy { max_attempts, initial_backoff: Duration::from_millis(10), max_backoff: Duration::from_millis(50) }
}

/// Tokens from the fake's metadata server, through the official metadata-server credentials.
fn metadata(fake: &FakeTpu) -> Credentials {
    emotionet::google::tls::install_crypto_provider();
    mds::Builder::default().with_endpoint(fake.url.clone()).with_scopes(["https://www.googleapis.com/auth/cloud-platform"]).build().unwrap()
}

/// A gcloud stand-in that prints `token`.
fn gcloud_printing(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("gcloud");
    write_script(&path, &format!("#!/bin/sh\n[ \"$1 $2\" = 'auth print-access-token' ] || exit 9\necho {token}\n"));
    path
}

async fn client(fake: &FakeTpu, credentials: Credentials, retry: RetryPolicy) -> TpuClient {
    TpuClient::connect(ClientConfig { base_url: fake.url.clone(), retry, ..ClientConfig::default() }, credentials).await.unwrap()
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

fn location() -> Location {
    Location::new("emotionet-test", "europe-west4-a").unwrap()
}

#[tokio::test]
async fn create_poll_ready_list_page_by_page_and_delete() {
    let fake = FakeTpu::start();
    fake.set_op_polls(2);
    let client = client(&fake, metadata(&fake), fast_retry(3)).await;
    let vms = VmManager::new(&client, WAIT);
    let mut events = Vec::new();
    for id in ["tpu-a", "tpu-b", "tpu-c"] {
        let node = vms.create(&spec(id, Capacity::Spot, false), &mut |e| events.push(e)).await.unwrap();
        assert_eq!(node.state(), NodeState::Ready);
        assert_eq!(node.accelerator_type, "v3-8");
        assert_eq!(node.external_ips(), vec!["127.0.0.1"]);
        assert!(node.created_unix().is_some());
    }
    // The create body on the wire: spot in schedulingConfig, our label, the image.
    let create = fake.requests().into_iter().find(|r| r.method == "POST" && r.path.ends_with("/nodes")).unwrap();
    assert!(create.query.contains("nodeId=tpu-a"), "{}", create.query);
    assert_eq!(create.body["schedulingConfig"], serde_json::json!({"spot": true}));
    assert_eq!(create.body["labels"]["managed-by"], "emotionet");
    assert_eq!(create.body["runtimeVersion"], "tpu-ubuntu2204-base");
    assert_eq!(create.body["networkConfig"]["enableExternalIps"], true);
    // Google's client asks for numeric enums, and the fake answers so (the states above decoded from numbers).
    assert!(create.query.contains("enum-encoding"), "{}", create.query);
    // Operations were polled until done, and progress was reported.
    assert!(fake.count("GET", "") > 3);
    assert!(events.iter().any(|e| matches!(e, CloudEvent::OperationPending { verb, .. } if verb == "create")));
    // The fake serves two per page: three nodes take two pages.
    let nodes = client.list_nodes(&location()).await.unwrap();
    assert_eq!(nodes.iter().map(|n| n.node_id().to_string()).collect::<Vec<_>>(), ["tpu-a", "tpu-b", "tpu-c"]);
    assert!(fake.requests().iter().any(|r| r.path.ends_with("/nodes") && r.query.contains("pageToken=2")));

    assert!(vms.delete(&spec("tpu-b", Capacity::Spot, false), &mut |_| {}).await.unwrap());
    let gone = client.get_node(&location().node_name("tpu-b")).await.unwrap_err();
    assert!(gone.is_not_found(), "{gone}");
    assert!(gone.to_string().contains("projects/emotionet-test/locations/europe-west4-a/nodes/tpu-b"), "{gone}");
    // Deleting what is gone is not an error, and says so.
    assert!(!vms.delete(&spec("tpu-b", Capacity::Spot, false), &mut |_| {}).await.unwrap());
}

#[tokio::test]
async fn retries_on_429_and_5xx_really_happen() {
    let fake = FakeTpu::start();
    let client = client(&fake, metadata(&fake), fast_retry(5)).await;
    let vms = VmManager::new(&client, WAIT);
    let spec = spec("tpu-retry", Capacity::OnDemand, false);
    vms.create(&spec, &mut |_| {}).await.unwrap();
    let before = fake.count("GET", "/nodes/tpu-retry");

    fake.fail_next(429, 1, None);
    fake.fail_next(500, 1, None);
    fake.fail_next(503, 1, None);
    let node = vms.get(&spec).await.unwrap();
    assert_eq!(node.state(), NodeState::Ready);
    assert_eq!(fake.count("GET", "/nodes/tpu-retry") - before, 4, "three failures, then the answer");
    let statuses: Vec<u16> = fake.requests().iter().rev().take(4).map(|r| r.status).collect();
    assert_eq!(statuses, [200, 503, 500, 429]);
}

#[tokio::test]
async fn retries_stop_after_the_last_attempt_and_4xx_are_not_retried() {
    let fake = FakeTpu::start();
    let client = client(&fake, metadata(&fake), fast_retry(3)).await;
    let name = location().node_name("missing");

    fake.fail_next(500, 5, None);
    let err = client.get_node(&name).await.unwrap_err();
    assert_eq!(err.http_status(), Some(500), "{err:?}");
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
    let config = AuthConfig { mode: AuthMode::Gcloud, gcloud: gcloud_printing(dir.path(), secret), ..AuthConfig::default() };
    let client = client(&fake, emotionet::google::auth::credentials(&config).unwrap(), fast_retry(5)).await;
    let err = client.list_nodes(&location()).await.unwrap_err();
    assert!(matches!(err, CloudError::Unauthenticated { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("HTTP 401 UNAUTHENTICATED"), "{text}");
    assert!(text.contains("gcloud auth application-default login") && text.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{text}");
    assert!(!text.contains(secret) && !format!("{err:?}").contains(secret), "the token leaked: {text}");
    assert_eq!(fake.requests().len(), 1, "a 401 is not retried");
}

#[tokio::test]
async fn a_failed_operation_and_a_permission_error_are_reported_as_such() {
    let fake = FakeTpu::start();
    let client = client(&fake, metadata(&fake), fast_retry(2)).await;
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
    let client = client(&fake, metadata(&fake), fast_retry(3)).await;
    let vms = VmManager::new(&client, WAIT);
    let spec = spec("tpu-queued", Capacity::Spot, true);
    let mut seen = Vec::new();
    let node = vms.create(&spec, &mut |e| seen.push(e)).await.unwrap();
    assert_eq!(node.state(), NodeState::Ready);
    assert_eq!(node.queued_resource, "projects/emotionet-test/locations/europe-west4-a/queuedResources/tpu-queued");
    let request = fake.requests().into_iter().find(|r| r.method == "POST" && r.path.ends_with("/queuedResources")).unwrap();
    assert!(request.query.contains("queuedResourceId=tpu-queued"), "{}", request.query);
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
    assert_eq!(client.list_queued_resources(&spec.location()).await.unwrap().len(), 1);

    assert!(vms.delete(&spec, &mut |_| {}).await.unwrap());
    assert!(fake.requests().iter().any(|r| r.method == "DELETE" && r.path.ends_with("/queuedResources/tpu-queued") && r.query.contains("force=true")));
    assert!(fake.node_state("tpu-queued").is_none(), "the node went with its queued resource");
    assert!(client.list_queued_resources(&spec.location()).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_stopped_vm_is_started_again() {
    let fake = FakeTpu::start();
    let client = client(&fake, metadata(&fake), fast_retry(3)).await;
    let vms = VmManager::new(&client, WAIT);
    let spec = spec("tpu-stop", Capacity::OnDemand, false);
    vms.create(&spec, &mut |_| {}).await.unwrap();
    fake.set_node_state("tpu-stop", "STOPPED");
    assert_eq!(vms.check(&spec, true).await.unwrap(), Health::Stopped(NodeState::Stopped));
    let node = vms.revive(&spec, &mut |_| {}).await.unwrap();
    assert_eq!(node.state(), NodeState::Ready);
    assert_eq!(fake.count("POST", "/nodes/tpu-stop:start"), 1);
    assert_eq!(fake.creations(), 1, "started, not recreated: its disk is kept");
}

#[tokio::test]
async fn zones_are_asked_for_the_accelerator_type() {
    let fake = FakeTpu::start();
    let client = client(&fake, metadata(&fake), fast_retry(2)).await;
    let offered = Location::new("emotionet-test", "us-central1-b").unwrap();
    assert_eq!(client.get_accelerator_type(&offered, "v3-8").await.unwrap().r#type, "v3-8");
    let not_offered = Location::new("emotionet-test", "us-central1-f").unwrap();
    assert!(client.get_accelerator_type(&not_offered, "v3-8").await.unwrap_err().is_not_found());
    assert_eq!(client.list_accelerator_types(&Location::new("emotionet-test", "us-east1-d").unwrap()).await.unwrap(), ["v2-8"]);
}

/// A throwaway RSA key made by openssl: (PKCS#8 PEM, public key as DER RSAPublicKey).
fn rsa_key(dir: &Path) -> (String, Vec<u8>) {
    let pem = dir.join("key.pem");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl").args(args).output().expect("openssl (Debian's openssl package) makes the test key");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    };
    run(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", pem.to_str().unwrap()]);
    let der = run(&["rsa", "-in", pem.to_str().unwrap(), "-RSAPublicKey_out", "-outform", "DER"]);
    (std::fs::read_to_string(&pem).unwrap(), der)
}

#[tokio::test]
async fn every_fakeable_credential_source_reaches_the_api() {
    emotionet::google::tls::install_crypto_provider();
    let fake = FakeTpu::start();
    let dir = temp_dir("creds");

    // The metadata server (ADC's last step), through the official credentials.
    client(&fake, metadata(&fake), fast_retry(1)).await.list_nodes(&location()).await.unwrap();

    // An authorized-user file (what `gcloud auth application-default login` writes),
    // refreshed at the fake's OAuth endpoint; its quota project goes out with every call.
    let user = serde_json::json!({
        "type": "authorized_user", "client_id": "fake-client.apps.googleusercontent.com", "client_secret": "fake-secret",
        "refresh_token": REFRESH_TOKEN, "quota_project_id": "billing-project", "token_uri": format!("{}/token", fake.url)
    });
    let creds = user_account::Builder::new(user).with_scopes(["https://www.googleapis.com/auth/cloud-platform"]).build().unwrap();
    client(&fake, creds, fast_retry(1)).await.list_nodes(&location()).await.unwrap();
    assert_eq!(fake.count("POST", "/token"), 1);
    let call = fake.requests().into_iter().rev().find(|r| r.path.ends_with("/nodes")).unwrap();
    assert_eq!(call.headers.get("x-goog-user-project").map(String::as_str), Some("billing-project"));

    // A service-account key: a self-signed JWT, whose signature the fake checks.
    let (pem, public) = rsa_key(dir.path());
    let key = |private_key_id: &str| {
        serde_json::json!({
            "type": "service_account", "project_id": "emotionet-test", "private_key_id": private_key_id, "private_key": pem,
            "client_email": "trainer@emotionet-test.iam.gserviceaccount.com", "client_id": "1", "token_uri": format!("{}/token", fake.url)
        })
    };
    fake.accept_service_account("trainer@emotionet-test.iam.gserviceaccount.com", "key-1", public);
    let sa = |id: &str| service_account::Builder::new(key(id)).build().unwrap();
    client(&fake, sa("key-1"), fast_retry(1)).await.list_nodes(&location()).await.unwrap();
    // The same key under an id the fake does not know is refused, as Google would.
    let err = client(&fake, sa("key-2"), fast_retry(1)).await.list_nodes(&location()).await.unwrap_err();
    assert!(matches!(err, CloudError::Unauthenticated { .. }), "{err:?}");

    // gcloud, for a workstation with `gcloud auth login` only.
    let config = AuthConfig { mode: AuthMode::Gcloud, gcloud: gcloud_printing(dir.path(), GOOD_TOKEN), ..AuthConfig::default() };
    client(&fake, emotionet::google::auth::credentials(&config).unwrap(), fast_retry(1)).await.list_nodes(&location()).await.unwrap();
}
