//! The Cloud TPU API v2 types, from Google's `google-cloud-tpu-v2` crate,
//! and what this project reads from them.
//!
//! The wire format (JSON field names, enums, int64s as strings) is the
//! official client's business. Here: [`NodeState`] and [`QueuedState`], the
//! states as a closed list we can match on (what counts as lost, what is on
//! its way to READY), and small readers ([`NodeExt`], [`QueuedResourceExt`],
//! [`OperationExt`]) over the official structs.

pub use google_cloud_longrunning::model::Operation;
pub use google_cloud_tpu_v2::model::{
    AcceleratorType, NetworkConfig, NetworkEndpoint, Node, QueuedResource, QueuedResourceState, SchedulingConfig, ServiceAccount, queued_resource,
};

/// What we read from a [`Node`].
pub trait NodeExt {
    /// The state, as our closed list.
    fn state(&self) -> NodeState;
    /// The last path segment of `name` (the node id).
    fn node_id(&self) -> &str;
    /// External IP addresses of the workers, in worker order, where they have one.
    fn external_ips(&self) -> Vec<&str>;
    /// `createTime` in Unix seconds, when the answer had one.
    fn created_unix(&self) -> Option<i64>;
}

impl NodeExt for Node {
    fn state(&self) -> NodeState {
        match self.state.name() {
            Some(name) => NodeState::from(name.to_string()),
            None => NodeState::Other(format!("state {}", self.state.value().unwrap_or(-1))),
        }
    }

    fn node_id(&self) -> &str {
        self.name.rsplit('/').next().unwrap_or(&self.name)
    }

    fn external_ips(&self) -> Vec<&str> {
        self.network_endpoints.iter().filter_map(|e| e.access_config.as_ref().map(|a| a.external_ip.as_str())).filter(|ip| !ip.is_empty()).collect()
    }

    fn created_unix(&self) -> Option<i64> {
        self.create_time.as_ref().map(|t| t.seconds())
    }
}

/// What we read from a [`QueuedResource`].
pub trait QueuedResourceExt {
    fn state(&self) -> QueuedState;
    /// Why it failed, when it did and the API said.
    fn failure(&self) -> Option<String>;
    /// The node it asks for.
    fn node(&self) -> Option<&Node>;
}

impl QueuedResourceExt for QueuedResource {
    fn state(&self) -> QueuedState {
        let Some(state) = self.state.as_ref() else { return QueuedState::Unspecified };
        match state.state.name() {
            Some(name) => QueuedState::from(name.to_string()),
            None => QueuedState::Other(format!("state {}", state.state.value().unwrap_or(-1))),
        }
    }

    fn failure(&self) -> Option<String> {
        let data = self.state.as_ref()?.state_data.as_ref()?;
        match data {
            google_cloud_tpu_v2::model::queued_resource_state::StateData::FailedData(failed) => failed.error.as_ref().map(|e| e.message.clone()),
            _ => None,
        }
    }

    fn node(&self) -> Option<&Node> {
        match self.resource.as_ref()? {
            queued_resource::Resource::Tpu(tpu) => tpu.node_spec.first()?.node.as_ref(),
            _ => None,
        }
    }
}

/// What we read from a long-running [`Operation`]'s TPU metadata.
pub trait OperationExt {
    /// `metadata.verb` (`create`, `delete`, ...), if present.
    fn verb(&self) -> Option<String>;
    /// `metadata.statusDetail`, a human-readable progress note, if present.
    fn status_detail(&self) -> Option<String>;
}

fn tpu_metadata(op: &Operation) -> Option<google_cloud_tpu_v2::model::OperationMetadata> {
    op.metadata.as_ref()?.to_msg::<google_cloud_tpu_v2::model::OperationMetadata>().ok()
}

impl OperationExt for Operation {
    fn verb(&self) -> Option<String> {
        tpu_metadata(self).map(|m| m.verb).filter(|v| !v.is_empty())
    }

    fn status_detail(&self) -> Option<String> {
        tpu_metadata(self).map(|m| m.status_detail).filter(|v| !v.is_empty())
    }
}

/// `Node.State`. Unknown values are kept verbatim in [`NodeState::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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

/// `QueuedResourceState.State`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
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
        // As the API answers with `$alt=json;enum-encoding=int`: enums as numbers.
        let text = r#"{
            "name": "projects/p/locations/europe-west4-a/nodes/n1",
            "acceleratorType": "v3-8", "state": 11, "createTime": "2026-11-28T20:31:07.5Z",
            "networkEndpoints": [{"ipAddress": "10.0.0.2", "port": 8470, "accessConfig": {"externalIp": "34.1.2.3"}}],
            "schedulingConfig": {"spot": true}, "apiVersion": 4, "symptoms": [], "somethingNew": 1
        }"#;
        let node: Node = serde_json::from_str(text).unwrap();
        assert_eq!(node.state(), NodeState::Preempted);
        assert!(node.state().is_lost());
        assert_eq!(node.node_id(), "n1");
        assert_eq!(node.external_ips(), vec!["34.1.2.3"]);
        assert_eq!(node.created_unix(), Some(1_795_897_867));
        let named: Node = serde_json::from_str(r#"{"state": "READY"}"#).unwrap();
        assert_eq!(named.state(), NodeState::Ready);
        let odd: Node = serde_json::from_str(r#"{"state": 99}"#).unwrap();
        assert!(matches!(odd.state(), NodeState::Other(_)));
    }

    #[test]
    fn queued_states_and_failures_read() {
        let text =
            r#"{"name": "projects/p/locations/z/queuedResources/q", "state": {"state": 4, "failedData": {"error": {"code": 8, "message": "no capacity"}}}}"#;
        let qr: QueuedResource = serde_json::from_str(text).unwrap();
        assert_eq!(qr.state(), QueuedState::Failed);
        assert_eq!(qr.failure().as_deref(), Some("no capacity"));
    }
}
