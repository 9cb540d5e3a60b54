//! A fake Cloud TPU API v2 (and GCE metadata server) on 127.0.0.1, for tests.
//!
//! It speaks the real wire format, written here from the REST reference and
//! independently of the client (Google's `google-cloud-tpu-v2`): nodes with
//! their states (CREATING, READY, STOPPED, DELETING, PREEMPTED, ...), `:start`,
//! long-running operations with `name`/`done`/`metadata`/`response`/`error`,
//! queued resources (ACCEPTED, PROVISIONING, ACTIVE, SUSPENDING, SUSPENDED,
//! FAILED), accelerator types per zone, Google's error body
//! `{"error": {"code", "message", "status"}}`, paging with `pageToken`, and
//! enums as numbers when the request asks `$alt=json;enum-encoding=int` (as
//! Google's clients do). It serves plain HTTP/1.1 (one request per
//! connection, `Connection: close`) on its own thread, so sync tests that
//! drive the real binary can use it as well as async ones.
//!
//! Credentials it accepts, as Google does: an OAuth access token it issued
//! (from its metadata-server path, or from its OAuth token endpoint `/token`
//! for an authorized-user refresh token), or a service account's
//! self-signed JWT, whose RS256 signature it checks against the public key
//! the test registered.
//!
//! Test controls: inject 429/5xx answers, fail the next operation, preempt a
//! node, put a node or a queued resource into any state, make a node vanish,
//! wipe a folder when a node is created (a new VM has a fresh disk), and read
//! the log of every request with its body and headers.

#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub const GOOD_TOKEN: &str = "ya29.fake-good-token-0123456789";
/// The refresh token an authorized-user file must carry for `/token` to answer.
pub const REFRESH_TOKEN: &str = "1//fake-refresh-token";

#[derive(Clone, Debug)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub body: Value,
    /// Request headers, lowercase names, `authorization` left out.
    pub headers: BTreeMap<String, String>,
}

struct Fault {
    status: u16,
    retry_after: Option<String>,
}

enum OnDone {
    NodeReady(String),
    NodeDeleted(String),
    QueuedAccepted,
    QueuedDeleted(String),
}

struct Op {
    value: Value,
    polls_left: u32,
    on_done: Option<OnDone>,
    error: Option<(i32, String)>,
}

#[derive(Default)]
struct World {
    nodes: BTreeMap<String, Value>,
    queued: BTreeMap<String, Value>,
    ops: BTreeMap<String, Op>,
    faults: VecDeque<Fault>,
    fail_next_op: Option<(i32, String)>,
    log: Vec<Logged>,
    next_id: u64,
    creations: u32,
    op_polls: u32,
    page_size_max: usize,
    vm_disk: Option<PathBuf>,
    /// (client email, key id, public key as DER RSAPublicKey) of service accounts whose JWTs are accepted.
    service_accounts: Vec<(String, String, Vec<u8>)>,
    /// Accelerator types per zone, as the API lists them.
    zones: BTreeMap<String, Vec<String>>,
}

pub struct FakeTpu {
    pub url: String,
    world: Arc<Mutex<World>>,
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    // Use the crate's formatter only for output: the fake's own logic never parses it.
    emotionet::cloud::timestamp::format_rfc3339(secs - 5)
}

impl FakeTpu {
    pub fn start() -> FakeTpu {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        // The zones Google's TPU regions page lists for v3-8, and one more type elsewhere.
        let zones = [("us-central1-a", "v3-8"), ("us-central1-b", "v3-8"), ("europe-west4-a", "v3-8"), ("us-east1-d", "v2-8")].into_iter().fold(
            BTreeMap::<String, Vec<String>>::new(),
            |mut m, (z, t)| {
                m.entry(z.to_string()).or_default().push(t.to_string());
                m
            },
        );
        let world = Arc::new(Mutex::new(World { op_polls: 1, page_size_max: 2, zones, ..Default::default() }));
        let shared = Arc::clone(&world);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let world = Arc::clone(&shared);
                std::thread::spawn(move || serve(stream, &world));
            }
        });
        FakeTpu { url, world }
    }

    fn with<T>(&self, f: impl FnOnce(&mut World) -> T) -> T {
        f(&mut self.world.lock().expect("fake world"))
    }

    /// The next `count` API requests answer `status` (with `Retry-After` if given).
    pub fn fail_next(&self, status: u16, count: usize, retry_after: Option<&str>) {
        self.with(|w| {
            for _ in 0..count {
                w.faults.push_back(Fault { status, retry_after: retry_after.map(str::to_string) });
            }
        })
    }

    /// The next operation started ends `done` with this error.
    pub fn fail_next_operation(&self, code: i32, message: &str) {
        self.with(|w| w.fail_next_op = Some((code, message.to_string())))
    }

    /// How many polls an operation needs before it is done.
    pub fn set_op_polls(&self, polls: u32) {
        self.with(|w| w.op_polls = polls)
    }

    /// This folder is emptied whenever a node is created: a new VM, a new disk.
    pub fn set_vm_disk(&self, dir: impl Into<PathBuf>) {
        self.with(|w| w.vm_disk = Some(dir.into()))
    }

    /// A READY node that someone else created (no emotionet label).
    pub fn add_foreign_node(&self, parent: &str, node_id: &str) {
        self.with(|w| {
            let body = json!({"acceleratorType": "v3-8", "runtimeVersion": "tpu-ubuntu2204-base", "labels": {"owner": "someone-else"}});
            let node = new_node(w, parent, node_id, &body, "READY");
            w.nodes.insert(format!("{parent}/nodes/{node_id}"), node);
        })
    }

    /// Accept self-signed JWTs from this service account (public key: DER RSAPublicKey).
    pub fn accept_service_account(&self, email: &str, key_id: &str, public_key_der: Vec<u8>) {
        self.with(|w| w.service_accounts.push((email.to_string(), key_id.to_string(), public_key_der)))
    }

    /// Puts the node into `state` (e.g. STOPPED, HIDDEN, UNKNOWN, TERMINATED).
    pub fn set_node_state(&self, node_id: &str, state: &str) {
        self.with(|w| {
            for (name, node) in w.nodes.iter_mut() {
                if name.ends_with(&format!("/nodes/{node_id}")) {
                    node["state"] = json!(state);
                }
            }
        })
    }

    /// Puts the queued resource named `id` into `state` (SUSPENDING, SUSPENDED, FAILED, ...).
    pub fn set_queued_state(&self, id: &str, state: &str) {
        self.with(|w| {
            for (name, qr) in w.queued.iter_mut() {
                if name.ends_with(&format!("/queuedResources/{id}")) {
                    qr["state"] = if state == "FAILED" {
                        json!({"state": state, "stateInitiator": "SERVICE", "failedData": {"error": {"code": 8, "message": "capacity was reclaimed"}}})
                    } else {
                        json!({"state": state, "stateInitiator": "SERVICE"})
                    };
                }
            }
        })
    }

    /// The node's createTime (RFC 3339), as if it had been created then.
    pub fn set_create_time(&self, node_id: &str, rfc3339: &str) {
        self.with(|w| {
            for (name, node) in w.nodes.iter_mut() {
                if name.ends_with(&format!("/nodes/{node_id}")) {
                    node["createTime"] = json!(rfc3339);
                }
            }
        })
    }

    /// The node disappears (answers 404), as when Google deletes the node of a suspended queued resource.
    pub fn remove_node(&self, node_id: &str) {
        self.with(|w| w.nodes.retain(|name, _| !name.ends_with(&format!("/nodes/{node_id}"))))
    }

    /// Google takes the VM back.
    pub fn preempt(&self, node_id: &str) {
        self.with(|w| {
            for (name, node) in w.nodes.iter_mut() {
                if name.ends_with(&format!("/nodes/{node_id}")) {
                    node["state"] = json!("PREEMPTED");
                }
            }
            for qr in w.queued.values_mut() {
                if qr["tpu"]["nodeSpec"][0]["nodeId"] == json!(node_id) {
                    qr["state"] = json!({"state": "SUSPENDED", "stateInitiator": "SERVICE"});
                }
            }
        })
    }

    pub fn node_state(&self, node_id: &str) -> Option<String> {
        self.with(|w| w.nodes.iter().find(|(n, _)| n.ends_with(&format!("/nodes/{node_id}"))).and_then(|(_, v)| v["state"].as_str().map(str::to_string)))
    }

    /// Nodes created so far (recreations included).
    pub fn creations(&self) -> u32 {
        self.with(|w| w.creations)
    }

    pub fn requests(&self) -> Vec<Logged> {
        self.with(|w| w.log.clone())
    }

    /// Requests whose method is `method` and whose path ends with `suffix`.
    pub fn count(&self, method: &str, suffix: &str) -> usize {
        self.requests().iter().filter(|r| r.method == method && r.path.ends_with(suffix)).count()
    }
}

fn reason(status: u16) -> (&'static str, &'static str) {
    match status {
        200 => ("OK", ""),
        400 => ("Bad Request", "INVALID_ARGUMENT"),
        401 => ("Unauthorized", "UNAUTHENTICATED"),
        403 => ("Forbidden", "PERMISSION_DENIED"),
        404 => ("Not Found", "NOT_FOUND"),
        409 => ("Conflict", "ALREADY_EXISTS"),
        429 => ("Too Many Requests", "RESOURCE_EXHAUSTED"),
        500 => ("Internal Server Error", "INTERNAL"),
        503 => ("Service Unavailable", "UNAVAILABLE"),
        _ => ("Error", "UNKNOWN"),
    }
}

struct Answer {
    status: u16,
    body: Value,
    headers: Vec<(String, String)>,
}

fn ok(body: Value) -> Answer {
    Answer { status: 200, body, headers: vec![] }
}

fn google_error(status: u16, message: &str) -> Answer {
    Answer { status, body: json!({"error": {"code": status, "message": message, "status": reason(status).1}}), headers: vec![] }
}

fn serve(mut stream: TcpStream, world: &Mutex<World>) {
    let Some((method, target, headers, body)) = read_request(&mut stream) else { return };
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let body_value: Value = serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let mut answer = {
        let mut w = world.lock().expect("fake world");
        let answer = route(&mut w, &method, &path, &query, &headers, &body_value);
        let logged_headers = headers.iter().filter(|(k, _)| *k != "authorization").map(|(k, v)| (k.clone(), v.clone())).collect();
        w.log.push(Logged {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            status: answer.status,
            body: body_value,
            headers: logged_headers,
        });
        answer
    };
    // Google's clients ask for enums as numbers; the API then answers so.
    if (query.contains("enum-encoding=int") || query.contains("enum-encoding%3Dint")) && answer.status == 200 {
        intify(&mut answer.body, false);
    }
    let text = answer.body.to_string();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: application/json; charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n",
        answer.status,
        reason(answer.status).0,
        text.len()
    );
    for (k, v) in &answer.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(text.as_bytes());
    let _ = stream.flush();
}

/// Method, target, headers (lowercase names), body.
type Request = (String, String, BTreeMap<String, String>, Vec<u8>);

fn read_request(stream: &mut TcpStream) -> Option<Request> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers: BTreeMap<String, String> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    let length: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = data[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some((method, target, headers, body))
}

fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v.to_string())
}

const NODE_STATES: &[&str] = &[
    "STATE_UNSPECIFIED",
    "CREATING",
    "READY",
    "RESTARTING",
    "REIMAGING",
    "DELETING",
    "REPAIRING",
    "",
    "STOPPED",
    "STOPPING",
    "STARTING",
    "PREEMPTED",
    "TERMINATED",
    "HIDING",
    "HIDDEN",
    "UNHIDING",
    "UNKNOWN",
];
const QUEUED_STATES: &[&str] =
    &["STATE_UNSPECIFIED", "CREATING", "ACCEPTED", "PROVISIONING", "FAILED", "DELETING", "ACTIVE", "SUSPENDING", "SUSPENDED", "WAITING_FOR_RESOURCES"];
const HEALTH: &[&str] = &["HEALTH_UNSPECIFIED", "HEALTHY", "", "TIMEOUT", "UNHEALTHY_TENSORFLOW", "UNHEALTHY_MAINTENANCE"];
const API_VERSIONS: &[&str] = &["API_VERSION_UNSPECIFIED", "V1_ALPHA1", "V1", "V2_ALPHA1", "V2"];
const INITIATORS: &[&str] = &["STATE_INITIATOR_UNSPECIFIED", "USER", "SERVICE"];

/// Enum names to their proto numbers (`$alt=json;enum-encoding=int`).
fn intify(value: &mut Value, in_queued_state: bool) {
    let number = |table: &[&str], v: &Value| v.as_str().and_then(|s| table.iter().position(|t| *t == s)).map(|i| json!(i));
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let table: Option<&[&str]> = match (key.as_str(), in_queued_state) {
                    ("state", true) => Some(QUEUED_STATES),
                    ("state", false) if v.is_string() => Some(NODE_STATES),
                    ("health", _) => Some(HEALTH),
                    ("apiVersion", _) if v.is_string() && v.as_str() != Some("v2") => Some(API_VERSIONS),
                    ("stateInitiator", _) => Some(INITIATORS),
                    _ => None,
                };
                match table.and_then(|t| number(t, v)) {
                    Some(n) => *v = n,
                    None => intify(v, key == "state" && v.is_object()),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| intify(v, in_queued_state)),
        _ => {}
    }
}

fn b64url(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// A service account's self-signed JWT (AIP-4111): RS256, our key id, its
/// email as issuer, the cloud-platform scope, not expired, and a signature
/// that the registered public key verifies.
fn valid_jwt(w: &World, token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    let [head, claims, signature] = parts.as_slice() else { return false };
    let (Some(h), Some(c), Some(sig)) = (b64url(head), b64url(claims), b64url(signature)) else { return false };
    let (Ok(h), Ok(c)) = (serde_json::from_slice::<Value>(&h), serde_json::from_slice::<Value>(&c)) else { return false };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    w.service_accounts.iter().any(|(email, kid, key)| {
        h["alg"] == "RS256"
            && h["kid"] == json!(kid)
            && c["iss"] == json!(email)
            && c["scope"].as_str().is_some_and(|s| s.split(' ').any(|s| s == "https://www.googleapis.com/auth/cloud-platform"))
            && c["exp"].as_i64().is_some_and(|exp| exp > now)
            && ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, key)
                .verify(format!("{head}.{claims}").as_bytes(), &sig)
                .is_ok()
    })
}

/// A field of an OAuth token request: a JSON body or a form-encoded one (both are accepted by Google's endpoint).
fn form_param(body: &Value, key: &str) -> Option<String> {
    if let Some(v) = body.get(key) {
        return v.as_str().map(str::to_string);
    }
    body.as_str()?.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v.replace("%2F", "/").replace("%2f", "/"))
}

fn route(w: &mut World, method: &str, path: &str, query: &str, headers: &BTreeMap<String, String>, body: &Value) -> Answer {
    if path == "/computeMetadata/v1/instance/service-accounts/default/token" {
        if headers.get("metadata-flavor").map(String::as_str) != Some("Google") {
            return google_error(403, "Missing Metadata-Flavor:Google header.");
        }
        return ok(json!({"access_token": GOOD_TOKEN, "expires_in": 3599, "token_type": "Bearer"}));
    }
    // Google's OAuth token endpoint, for an authorized user's refresh token.
    if path == "/token" && method == "POST" {
        if form_param(body, "grant_type").as_deref() != Some("refresh_token") || form_param(body, "refresh_token").as_deref() != Some(REFRESH_TOKEN) {
            return Answer { status: 400, body: json!({"error": "invalid_grant", "error_description": "Bad Request"}), headers: vec![] };
        }
        return ok(json!({"access_token": GOOD_TOKEN, "expires_in": 3599, "token_type": "Bearer", "scope": "https://www.googleapis.com/auth/cloud-platform"}));
    }
    let Some(rest) = path.strip_prefix("/v2/") else {
        return google_error(404, "The requested URL was not found on this server.");
    };
    let bearer = headers.get("authorization").and_then(|h| h.strip_prefix("Bearer ")).unwrap_or_default();
    if bearer != GOOD_TOKEN && !valid_jwt(w, bearer) {
        return google_error(
            401,
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        );
    }
    if let Some(fault) = w.faults.pop_front() {
        let mut answer = google_error(fault.status, "injected failure");
        if let Some(after) = fault.retry_after {
            answer.headers.push(("Retry-After".into(), after));
        }
        return answer;
    }
    let parts: Vec<&str> = rest.split('/').collect();
    // projects/{p}/locations/{z}/{collection}[/{id}]
    if parts.len() < 5 || parts[0] != "projects" || parts[2] != "locations" {
        return google_error(404, "unknown resource");
    }
    let parent = format!("projects/{}/locations/{}", parts[1], parts[3]);
    let zone = parts[3].to_string();
    match (method, parts[4], parts.get(5)) {
        ("GET", "acceleratorTypes", None) => {
            let types: Vec<Value> = w
                .zones
                .get(&zone)
                .into_iter()
                .flatten()
                .map(|t| json!({"name": format!("{parent}/acceleratorTypes/{t}"), "type": t, "acceleratorConfigs": [{"type": "V3", "topology": "2x2"}]}))
                .collect();
            ok(json!({"acceleratorTypes": types}))
        }
        ("GET", "acceleratorTypes", Some(t)) => match w.zones.get(&zone).is_some_and(|types| types.iter().any(|x| x == t)) {
            true => ok(json!({"name": format!("{parent}/acceleratorTypes/{t}"), "type": t})),
            false => google_error(404, &format!("Resource '{parent}/acceleratorTypes/{t}' was not found")),
        },
        ("POST", "nodes", Some(id)) if id.ends_with(":start") => {
            let name = format!("{parent}/nodes/{}", id.trim_end_matches(":start"));
            match w.nodes.get_mut(&name) {
                Some(node) if node["state"] == "STOPPED" => {
                    node["state"] = json!("STARTING");
                    start_op(w, &parent, &name, "start", OnDone::NodeReady(name.clone()))
                }
                Some(node) => {
                    let state = node["state"].as_str().unwrap_or_default().to_string();
                    google_error(400, &format!("Node {name} is {state}; only a STOPPED node can be started"))
                }
                None => google_error(404, &format!("Resource '{name}' was not found")),
            }
        }
        ("POST", "nodes", None) => create_node(w, &parent, query, body),
        ("GET", "nodes", None) => list(&w.nodes, &parent, "nodes", query, w.page_size_max),
        ("GET", "nodes", Some(id)) => match w.nodes.get(&format!("{parent}/nodes/{id}")) {
            Some(node) => ok(node.clone()),
            None => google_error(404, &format!("Resource '{parent}/nodes/{id}' was not found")),
        },
        ("DELETE", "nodes", Some(id)) => {
            let name = format!("{parent}/nodes/{id}");
            match w.nodes.get_mut(&name) {
                Some(node) => {
                    node["state"] = json!("DELETING");
                    start_op(w, &parent, &name, "delete", OnDone::NodeDeleted(name.clone()))
                }
                None => google_error(404, &format!("Resource '{name}' was not found")),
            }
        }
        ("GET", "operations", Some(id)) => poll_op(w, &format!("{parent}/operations/{id}")),
        ("POST", "queuedResources", None) => create_queued(w, &parent, query, body),
        ("GET", "queuedResources", None) => list(&w.queued, &parent, "queuedResources", query, w.page_size_max),
        ("GET", "queuedResources", Some(id)) => get_queued(w, &format!("{parent}/queuedResources/{id}")),
        ("DELETE", "queuedResources", Some(id)) => {
            let name = format!("{parent}/queuedResources/{id}");
            let Some(qr) = w.queued.get_mut(&name) else {
                return google_error(404, &format!("Resource '{name}' was not found"));
            };
            let node_id = qr["tpu"]["nodeSpec"][0]["nodeId"].as_str().unwrap_or_default().to_string();
            let node_name = format!("{parent}/nodes/{node_id}");
            if w.nodes.contains_key(&node_name) && query_param(query, "force").as_deref() != Some("true") {
                return google_error(400, "Cannot delete a queued resource with existing nodes unless force is set");
            }
            if let Some(qr) = w.queued.get_mut(&name) {
                qr["state"] = json!({"state": "DELETING"});
            }
            start_op(w, &parent, &name, "delete", OnDone::QueuedDeleted(name.clone()))
        }
        _ => google_error(404, "unknown method"),
    }
}

fn list(map: &BTreeMap<String, Value>, parent: &str, key: &str, query: &str, page_max: usize) -> Answer {
    let items: Vec<&Value> = map.iter().filter(|(k, _)| k.starts_with(&format!("{parent}/"))).map(|(_, v)| v).collect();
    let size = query_param(query, "pageSize").and_then(|s| s.parse::<usize>().ok()).unwrap_or(page_max).min(page_max).max(1);
    let start = query_param(query, "pageToken").and_then(|s| s.parse::<usize>().ok()).unwrap_or(0);
    let page: Vec<Value> = items.iter().skip(start).take(size).map(|v| (*v).clone()).collect();
    let mut answer = json!({ key: page });
    if start + size < items.len() {
        answer["nextPageToken"] = json!((start + size).to_string());
    }
    ok(answer)
}

fn new_node(w: &mut World, parent: &str, node_id: &str, body: &Value, state: &str) -> Value {
    w.next_id += 1;
    w.creations += 1;
    if let Some(disk) = &w.vm_disk {
        let _ = std::fs::remove_dir_all(disk);
        let _ = std::fs::create_dir_all(disk);
    }
    let mut node = body.clone();
    node["name"] = json!(format!("{parent}/nodes/{node_id}"));
    node["state"] = json!(state);
    node["createTime"] = json!(now_rfc3339());
    node["id"] = json!(format!("{}", 7_000_000_000u64 + w.next_id));
    node["health"] = json!("HEALTHY");
    node["apiVersion"] = json!("V2");
    let external = body["networkConfig"]["enableExternalIps"].as_bool().unwrap_or(false);
    let mut endpoint = json!({"ipAddress": "10.164.0.2", "port": 8470});
    if external {
        endpoint["accessConfig"] = json!({"externalIp": "127.0.0.1"});
    }
    node["networkEndpoints"] = json!([endpoint]);
    node
}

fn create_node(w: &mut World, parent: &str, query: &str, body: &Value) -> Answer {
    let Some(node_id) = query_param(query, "nodeId") else {
        return google_error(400, "nodeId is required");
    };
    if body["acceleratorType"].as_str().is_none() || body["runtimeVersion"].as_str().is_none() {
        return google_error(400, "acceleratorType and runtimeVersion are required");
    }
    let name = format!("{parent}/nodes/{node_id}");
    if w.nodes.contains_key(&name) {
        return google_error(409, &format!("Resource '{name}' already exists"));
    }
    let node = new_node(w, parent, &node_id, body, "CREATING");
    w.nodes.insert(name.clone(), node);
    start_op(w, parent, &name, "create", OnDone::NodeReady(name.clone()))
}

fn start_op(w: &mut World, parent: &str, target: &str, verb: &str, on_done: OnDone) -> Answer {
    w.next_id += 1;
    let name = format!("{parent}/operations/operation-{}-{:x}", w.next_id, 0xfeed_u32 + w.next_id as u32);
    let value = json!({
        "name": name,
        "metadata": {
            "@type": "type.googleapis.com/google.cloud.tpu.v2.OperationMetadata",
            "createTime": now_rfc3339(),
            "target": target,
            "verb": verb,
            "cancelRequested": false,
            "apiVersion": "v2"
        },
        "done": false
    });
    let error = w.fail_next_op.take();
    let polls_left = w.op_polls;
    w.ops.insert(name, Op { value: value.clone(), polls_left, on_done: Some(on_done), error });
    ok(value)
}

fn poll_op(w: &mut World, name: &str) -> Answer {
    let Some(op) = w.ops.get_mut(name) else {
        return google_error(404, &format!("Operation '{name}' was not found"));
    };
    if op.polls_left > 0 {
        op.polls_left -= 1;
    }
    if op.polls_left > 0 || op.value["done"] == json!(true) {
        return ok(op.value.clone());
    }
    op.value["done"] = json!(true);
    let error = op.error.take();
    let on_done = op.on_done.take();
    let mut value = op.value.clone();
    if let Some((code, message)) = error {
        value["error"] = json!({"code": code, "message": message});
        // A failed create leaves nothing behind.
        if let Some(OnDone::NodeReady(node)) = on_done {
            w.nodes.remove(&node);
        }
    } else {
        let response = match on_done {
            Some(OnDone::NodeReady(node)) => {
                let entry = w.nodes.get_mut(&node).expect("created node");
                entry["state"] = json!("READY");
                let mut r = entry.clone();
                r["@type"] = json!("type.googleapis.com/google.cloud.tpu.v2.Node");
                r
            }
            Some(OnDone::NodeDeleted(node)) => {
                w.nodes.remove(&node);
                json!({"@type": "type.googleapis.com/google.protobuf.Empty"})
            }
            Some(OnDone::QueuedAccepted) | None => json!({"@type": "type.googleapis.com/google.protobuf.Empty"}),
            Some(OnDone::QueuedDeleted(qr)) => {
                if let Some(value) = w.queued.remove(&qr) {
                    let parent = value["tpu"]["nodeSpec"][0]["parent"].as_str().unwrap_or_default().to_string();
                    let node_id = value["tpu"]["nodeSpec"][0]["nodeId"].as_str().unwrap_or_default().to_string();
                    w.nodes.remove(&format!("{parent}/nodes/{node_id}"));
                }
                json!({"@type": "type.googleapis.com/google.protobuf.Empty"})
            }
        };
        value["response"] = response;
    }
    if let Some(op) = w.ops.get_mut(name) {
        op.value = value.clone();
    }
    ok(value)
}

fn create_queued(w: &mut World, parent: &str, query: &str, body: &Value) -> Answer {
    let Some(id) = query_param(query, "queuedResourceId") else {
        return google_error(400, "queuedResourceId is required");
    };
    let spec = &body["tpu"]["nodeSpec"][0];
    if spec["parent"] != json!(parent) || spec["nodeId"].as_str().is_none() || spec["node"]["acceleratorType"].as_str().is_none() {
        return google_error(400, "tpu.nodeSpec[0] needs parent, nodeId and node.acceleratorType");
    }
    let name = format!("{parent}/queuedResources/{id}");
    if w.queued.contains_key(&name) {
        return google_error(409, &format!("Resource '{name}' already exists"));
    }
    let mut value = body.clone();
    value["name"] = json!(name);
    value["createTime"] = json!(now_rfc3339());
    value["state"] = json!({"state": "ACCEPTED"});
    w.queued.insert(name.clone(), value);
    start_op(w, parent, &name, "create", OnDone::QueuedAccepted)
}

/// Each look moves a queued resource one step: ACCEPTED, PROVISIONING, ACTIVE
/// (creating its node, READY, at the last step).
fn get_queued(w: &mut World, name: &str) -> Answer {
    let Some(current) = w.queued.get(name).cloned() else {
        return google_error(404, &format!("Resource '{name}' was not found"));
    };
    let state = current["state"]["state"].as_str().unwrap_or_default().to_string();
    let next = match state.as_str() {
        "ACCEPTED" => Some("PROVISIONING"),
        "PROVISIONING" => Some("ACTIVE"),
        _ => None,
    };
    if let Some(next) = next {
        if next == "ACTIVE" {
            let spec = &current["tpu"]["nodeSpec"][0];
            let parent = spec["parent"].as_str().unwrap_or_default().to_string();
            let node_id = spec["nodeId"].as_str().unwrap_or_default().to_string();
            let mut node_body = spec["node"].clone();
            if current.get("spot").is_some() {
                node_body["schedulingConfig"] = json!({"spot": true});
            }
            let mut node = new_node(w, &parent, &node_id, &node_body, "READY");
            node["queuedResource"] = json!(name);
            w.nodes.insert(format!("{parent}/nodes/{node_id}"), node);
        }
        if let Some(qr) = w.queued.get_mut(name) {
            qr["state"] = json!({"state": next});
        }
    }
    ok(w.queued.get(name).cloned().unwrap_or(Value::Null))
}

impl FakeTpu {
    /// An authorized-user credentials file, as `gcloud auth application-default
    /// login` writes it, whose token endpoint is this fake: with
    /// [`REFRESH_TOKEN`] it yields [`GOOD_TOKEN`]; with anything else, 400.
    pub fn authorized_user_file(&self, dir: &std::path::Path, refresh_token: &str) -> PathBuf {
        let path = dir.join(format!("adc-{}.json", refresh_token.len()));
        let body = json!({
            "type": "authorized_user", "client_id": "fake-client.apps.googleusercontent.com", "client_secret": "fake-secret",
            "refresh_token": refresh_token, "token_uri": format!("{}/token", self.url)
        });
        // Through a temporary name and a rename: a test builds a command (and
        // so rewrites this file) while another process it started may be
        // reading it, and a reader must never see it half written (cloud_cli's
        // re-attach test failed 7 of 11 runs with "EOF while parsing" so).
        let tmp = dir.join(format!("adc-{}.json.{}.tmp", refresh_token.len(), std::process::id()));
        std::fs::write(&tmp, body.to_string()).expect("write the credentials file");
        std::fs::rename(&tmp, &path).expect("rename the credentials file into place");
        path
    }
}

/// A temporary folder that is removed at the end of the test.
pub fn temp_dir(tag: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("emotionet-{tag}-")).tempdir().expect("temp dir")
}

/// Writes an executable script.
pub fn write_script(path: &std::path::Path, text: &str) {
    std::fs::write(path, text).expect("write script");
    let mut perms = std::fs::metadata(path).expect("script metadata").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(path, perms).expect("chmod");
}
