//! The Cloud TPU API v2 wire format (`https://tpu.googleapis.com/v2/...`),
//! as documented in the REST reference for `projects.locations.nodes`,
//! `projects.locations.operations` and `projects.locations.queuedResources`.
//!
//! Field names are the JSON (camelCase) names of the API. Answers are read
//! leniently (unknown fields are ignored, enums we do not know are kept as
//! text) because Google adds fields and states over time; requests carry only
//! the fields we set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A TPU VM: `projects/{project}/locations/{zone}/nodes/{node_id}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    /// Output only: the full resource name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// E.g. `v3-8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accelerator_type: Option<String>,
    /// The VM image, e.g. `tpu-ubuntu2204-base`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_version: Option<String>,
    /// Output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<NodeState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_config: Option<NetworkConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccount>,
    /// Output only: RFC 3339 UTC, e.g. `2026-11-28T20:31:07.123456789Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling_config: Option<SchedulingConfig>,
    /// Output only: one entry per worker (host) of the slice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_endpoints: Vec<NetworkEndpoint>,
    /// `HEALTHY`, `TIMEOUT`, `UNHEALTHY_TENSORFLOW`, `UNHEALTHY_MAINTENANCE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Instance metadata; `startup-script` runs as root at every boot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Output only: an int64 in a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Output only: the queued resource that created this node, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued_resource: Option<String>,
}

impl Node {
    /// The state, `STATE_UNSPECIFIED` when the answer had none.
    pub fn state(&self) -> NodeState {
        self.state.clone().unwrap_or(NodeState::Unspecified)
    }

    /// The last path segment of `name` (the node id).
    pub fn node_id(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }

    /// External IP addresses of the workers, in worker order, where they have one.
    pub fn external_ips(&self) -> Vec<&str> {
        self.network_endpoints.iter().filter_map(|e| e.access_config.as_ref().and_then(|a| a.external_ip.as_deref())).collect()
    }
}

/// `Node.State`. Unknown values are kept verbatim in [`NodeState::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum NodeState {
    Unspecified,
    Creating,
    Ready,
    Restarting,
    Reimaging,
    Deleting,
    Repairing,
    Stopped,
    Stopping,
    Starting,
    /// A spot or preemptible node that Google took back. Billing stops; the
    /// VM's disk is gone. The node must be deleted and created again.
    Preempted,
    /// Ended by maintenance or, for preemptible nodes, the end of its life.
    Terminated,
    Hiding,
    Hidden,
    Unhiding,
    Unknown,
    Other(String),
}

const NODE_STATES: &[(&str, NodeState)] = &[
    ("STATE_UNSPECIFIED", NodeState::Unspecified),
    ("CREATING", NodeState::Creating),
    ("READY", NodeState::Ready),
    ("RESTARTING", NodeState::Restarting),
    ("REIMAGING", NodeState::Reimaging),
    ("DELETING", NodeState::Deleting),
    ("REPAIRING", NodeState::Repairing),
    ("STOPPED", NodeState::Stopped),
    ("STOPPING", NodeState::Stopping),
    ("STARTING", NodeState::Starting),
    ("PREEMPTED", NodeState::Preempted),
    ("TERMINATED", NodeState::Terminated),
    ("HIDING", NodeState::Hiding),
    ("HIDDEN", NodeState::Hidden),
    ("UNHIDING", NodeState::Unhiding),
    ("UNKNOWN", NodeState::Unknown),
];

impl NodeState {
    pub fn as_str(&self) -> &str {
        if let NodeState::Other(text) = self {
            return text;
        }
        NODE_STATES.iter().find(|(_, s)| s == self).map(|(t, _)| *t).unwrap_or("STATE_UNSPECIFIED")
    }

    /// The VM is gone for good and must be deleted and created again.
    pub fn is_lost(&self) -> bool {
        matches!(self, NodeState::Preempted | NodeState::Terminated)
    }

    /// Still on its way to READY (or back to it); worth waiting for.
    pub fn is_transitional(&self) -> bool {
        matches!(
            self,
            NodeState::Unspecified
                | NodeState::Creating
                | NodeState::Restarting
                | NodeState::Reimaging
                | NodeState::Repairing
                | NodeState::Starting
                | NodeState::Unhiding
        )
    }
}

impl From<String> for NodeState {
    fn from(text: String) -> Self {
        NODE_STATES.iter().find(|(t, _)| *t == text).map(|(_, s)| s.clone()).unwrap_or(NodeState::Other(text))
    }
}

impl From<NodeState> for String {
    fn from(state: NodeState) -> String {
        state.as_str().to_string()
    }
}

impl std::fmt::Display for NodeState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkConfig {
    /// E.g. `default` or `projects/p/global/networks/n`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnetwork: Option<String>,
    /// Give each worker an external IP (needed for ssh without IAP or a NAT).
    #[serde(default)]
    pub enable_external_ips: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub can_ip_forward: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingConfig {
    /// The older kind of interruptible capacity (at most 24 h).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preemptible: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reserved: bool,
    /// Spot capacity: the price of preemptible, no 24 h limit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub spot: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_config: Option<AccessConfig>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_ip: Option<String>,
}

/// `google.longrunning.Operation`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// `projects/{p}/locations/{z}/operations/{id}`.
    #[serde(default)]
    pub name: String,
    /// `OperationMetadata` (`@type`, `createTime`, `target`, `verb`, `statusDetail`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub done: bool,
    /// Set when `done` and the operation failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Status>,
    /// Set when `done` and it succeeded: the resource (with `@type`) or `Empty`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<serde_json::Value>,
}

impl Operation {
    /// `metadata.verb` (`create`, `delete`, ...), if present.
    pub fn verb(&self) -> Option<&str> {
        self.metadata.as_ref()?.get("verb")?.as_str()
    }

    /// `metadata.statusDetail`, a human-readable progress note, if present.
    pub fn status_detail(&self) -> Option<&str> {
        self.metadata.as_ref()?.get("statusDetail")?.as_str()
    }

    /// `metadata.target`: the resource the operation acts on.
    pub fn target(&self) -> Option<&str> {
        self.metadata.as_ref()?.get("target")?.as_str()
    }
}

/// `google.rpc.Status`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default)]
    pub code: i32,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<serde_json::Value>,
}

/// The body of every Google API error: `{"error": {"code", "message", "status"}}`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(default)]
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub code: u16,
    #[serde(default)]
    pub message: String,
    /// `NOT_FOUND`, `RESOURCE_EXHAUSTED`, `UNAUTHENTICATED`, ...
    #[serde(default)]
    pub status: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListNodesResponse {
    #[serde(default)]
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub next_page_token: Option<String>,
    #[serde(default)]
    pub unreachable: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListQueuedResourcesResponse {
    #[serde(default)]
    pub queued_resources: Vec<QueuedResource>,
    #[serde(default)]
    pub next_page_token: Option<String>,
    #[serde(default)]
    pub unreachable: Vec<String>,
}

/// A request for capacity that Google fulfils when it can:
/// `projects/{p}/locations/{z}/queuedResources/{id}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedResource {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpu: Option<QueuedTpu>,
    /// Present (as `{}`) to ask for spot capacity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spot: Option<Spot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guaranteed: Option<Guaranteed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queueing_policy: Option<QueueingPolicy>,
    /// Output only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<QueuedResourceState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_name: Option<String>,
}

impl QueuedResource {
    pub fn state(&self) -> QueuedState {
        self.state.as_ref().and_then(|s| s.state.clone()).unwrap_or(QueuedState::Unspecified)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedTpu {
    #[serde(default)]
    pub node_spec: Vec<QueuedNodeSpec>,
}

/// `QueuedResource.Tpu.NodeSpec`: which node to create, and where.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedNodeSpec {
    /// `projects/{p}/locations/{z}`.
    pub parent: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    pub node: Node,
}

/// The spot tier carries no fields; its presence is the request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Spot {}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Guaranteed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_duration: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueingPolicy {
    /// A duration like `"7200s"`: give up if not provisioned by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_until_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub valid_after_duration: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueuedResourceState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<QueuedState>,
    /// `USER` or `SERVICE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_initiator: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_data: Option<FailedData>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedData {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Status>,
}

/// `QueuedResourceState.State`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum QueuedState {
    Unspecified,
    Creating,
    Accepted,
    Provisioning,
    Failed,
    Deleting,
    Active,
    Suspending,
    Suspended,
    WaitingForResources,
    Other(String),
}

const QUEUED_STATES: &[(&str, QueuedState)] = &[
    ("STATE_UNSPECIFIED", QueuedState::Unspecified),
    ("CREATING", QueuedState::Creating),
    ("ACCEPTED", QueuedState::Accepted),
    ("PROVISIONING", QueuedState::Provisioning),
    ("FAILED", QueuedState::Failed),
    ("DELETING", QueuedState::Deleting),
    ("ACTIVE", QueuedState::Active),
    ("SUSPENDING", QueuedState::Suspending),
    ("SUSPENDED", QueuedState::Suspended),
    ("WAITING_FOR_RESOURCES", QueuedState::WaitingForResources),
];

impl QueuedState {
    pub fn as_str(&self) -> &str {
        if let QueuedState::Other(text) = self {
            return text;
        }
        QUEUED_STATES.iter().find(|(_, s)| s == self).map(|(t, _)| *t).unwrap_or("STATE_UNSPECIFIED")
    }
}

impl From<String> for QueuedState {
    fn from(text: String) -> Self {
        QUEUED_STATES.iter().find(|(t, _)| *t == text).map(|(_, s)| s.clone()).unwrap_or(QueuedState::Other(text))
    }
}

impl From<QueuedState> for String {
    fn from(state: QueuedState) -> String {
        state.as_str().to_string()
    }
}

impl std::fmt::Display for QueuedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_answer_reads_with_unknown_fields_and_states() {
        let text = r#"{
            "name": "projects/p/locations/europe-west4-a/nodes/n1",
            "acceleratorType": "v3-8", "state": "PREEMPTED", "createTime": "2026-11-28T20:31:07.5Z",
            "networkEndpoints": [{"ipAddress": "10.0.0.2", "port": 8470, "accessConfig": {"externalIp": "34.1.2.3"}}],
            "schedulingConfig": {"spot": true}, "apiVersion": "V2", "symptoms": []
        }"#;
        let node: Node = serde_json::from_str(text).unwrap();
        assert_eq!(node.state(), NodeState::Preempted);
        assert!(node.state().is_lost());
        assert_eq!(node.node_id(), "n1");
        assert_eq!(node.external_ips(), vec!["34.1.2.3"]);
        let odd: Node = serde_json::from_str(r#"{"state": "SOMETHING_NEW"}"#).unwrap();
        assert_eq!(odd.state(), NodeState::Other("SOMETHING_NEW".into()));
    }

    #[test]
    fn a_create_body_carries_only_what_was_set() {
        let node = Node {
            accelerator_type: Some("v3-8".into()),
            scheduling_config: Some(SchedulingConfig { spot: true, ..Default::default() }),
            ..Default::default()
        };
        let v = serde_json::to_value(&node).unwrap();
        assert_eq!(v, serde_json::json!({"acceleratorType": "v3-8", "schedulingConfig": {"spot": true}}));
        let qr = QueuedResource { spot: Some(Spot {}), ..Default::default() };
        assert_eq!(serde_json::to_value(&qr).unwrap(), serde_json::json!({"spot": {}}));
    }
}
