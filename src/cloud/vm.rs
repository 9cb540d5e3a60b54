//! The life of one TPU VM: create (directly or through a queued resource),
//! wait until READY, delete, start a stopped one, recreate a lost one, and
//! the rules for when a VM counts as lost ([`classify`]).

use std::time::Instant;

use super::api::{Node, NodeExt, NodeState, Operation, OperationExt, QueuedResourceExt, QueuedState};
use super::client::{TpuClient, WaitOptions};
use super::error::{CloudError, Result};
use super::events::{CloudEvent, Events};
use super::spec::{MANAGED_LABEL, VmSpec};

/// Created by emotionet (our label) with the type asked for.
fn is_ours(node: &Node, spec: &VmSpec) -> bool {
    node.labels.get(MANAGED_LABEL.0).map(String::as_str) == Some(MANAGED_LABEL.1) && node.accelerator_type == spec.accelerator_type
}

/// What a look at the VM found.
#[derive(Clone, Debug, PartialEq)]
pub enum Health {
    Ready,
    /// On its way to READY: wait.
    Waiting(NodeState),
    /// STOPPED (or STOPPING): start it again; its disk is still there.
    Stopped(NodeState),
    /// Gone, or never coming back: delete what is left and create it again.
    Lost(Loss),
}

/// Why a VM counts as lost, in words for the user and the event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loss(pub String);

impl Loss {
    /// As a node state for [`CloudEvent::Preempted`]: the real state where
    /// there is one, else the reason.
    pub fn as_state(&self) -> NodeState {
        NodeState::from(self.0.clone())
    }
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The one place that decides whether a VM is lost.
///
/// - `node`: the node's state, or `None` when the API answered 404;
/// - `queued`: the state of the queued resource that created it, if it came
///   through one;
/// - `session_died`: the ssh session to the VM ended without the campaign
///   finishing. A node that is then neither READY nor on its way to READY is
///   lost, whatever its capacity: on-demand TPUs are taken back too
///   (maintenance, host failures).
///
/// Rules, in order:
/// 1. a queued resource in SUSPENDING, SUSPENDED or FAILED: lost (its node
///    is being or has been taken away);
/// 2. no node (404): lost when a queued resource created it (Google deletes
///    the node of a suspended request), and when we had a session on it;
/// 3. PREEMPTED or TERMINATED: lost;
/// 4. STOPPED or STOPPING: stopped, to be started again;
/// 5. READY: ready (a session that died on a READY node is the campaign's
///    own failure, reported as such);
/// 6. on its way to READY (CREATING, STARTING, RESTARTING, REPAIRING, ...): waiting;
/// 7. anything else (DELETING, HIDING, HIDDEN, UNKNOWN, a state we do not
///    know): lost when the session died, else waiting.
pub fn classify(node: Option<NodeState>, queued: Option<QueuedState>, session_died: bool) -> Health {
    if let Some(q @ (QueuedState::Suspending | QueuedState::Suspended | QueuedState::Failed)) = &queued {
        return Health::Lost(Loss(format!("queued resource {q}")));
    }
    let Some(state) = node else {
        return if queued.is_some() {
            Health::Lost(Loss("deleted (404) after its queued resource created it".into()))
        } else if session_died {
            Health::Lost(Loss("deleted (404) while the campaign ran".into()))
        } else {
            Health::Waiting(NodeState::Unspecified)
        };
    };
    match state {
        NodeState::Preempted | NodeState::Terminated => Health::Lost(Loss(state.to_string())),
        NodeState::Stopped | NodeState::Stopping => Health::Stopped(state),
        NodeState::Ready => Health::Ready,
        s if s.is_transitional() => Health::Waiting(s),
        s if session_died => Health::Lost(Loss(format!("{s} after the ssh session died"))),
        s => Health::Waiting(s),
    }
}

pub struct VmManager<'c> {
    client: &'c TpuClient,
    wait: WaitOptions,
}

impl<'c> VmManager<'c> {
    pub fn new(client: &'c TpuClient, wait: WaitOptions) -> Self {
        VmManager { client, wait }
    }

    pub fn client(&self) -> &TpuClient {
        self.client
    }

    /// The node as the API sees it now.
    pub async fn get(&self, spec: &VmSpec) -> Result<Node> {
        self.client.get_node(&spec.node_name()).await
    }

    /// Looks at the node (and its queued resource) and [`classify`]s it.
    pub async fn check(&self, spec: &VmSpec, session_died: bool) -> Result<Health> {
        let node = match self.get(spec).await {
            Ok(node) => Some(node.state()),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let queued = if spec.queued {
            match self.client.get_queued_resource(&spec.queued_resource_name()).await {
                Ok(resource) => Some(resource.state()),
                // The request itself is gone: nothing will bring the node back.
                Err(e) if e.is_not_found() => Some(QueuedState::Other("gone (404)".into())),
                Err(e) => return Err(e),
            }
        } else {
            None
        };
        Ok(classify(node, queued, session_died))
    }

    /// Creates the VM and returns it once READY. A VM of that name that we
    /// created before (our label, same accelerator type) is adopted instead
    /// of failing, so `up` can be run again after an interruption.
    pub async fn create(&self, spec: &VmSpec, events: Events<'_>) -> Result<Node> {
        let location = spec.location();
        if spec.queued {
            let name = spec.queued_resource_name();
            match self.client.create_queued_resource(&location, &spec.node_id, spec.to_queued_resource()).await {
                Ok(operation) => {
                    self.wait_operation(operation, events).await?;
                }
                Err(e) if e.http_status() == Some(409) => {
                    let existing = self.client.get_queued_resource(&name).await?;
                    if !existing.node().is_some_and(|n| is_ours(n, spec)) {
                        return Err(e);
                    }
                    events(CloudEvent::Adopted { node: name.clone() });
                }
                Err(e) => return Err(e),
            }
            self.wait_queued_active(&name, events).await?;
        } else {
            match self.client.create_node(&location, &spec.node_id, spec.to_node()).await {
                Ok(operation) => {
                    self.wait_operation(operation, events).await?;
                }
                Err(e) if e.http_status() == Some(409) => {
                    if !is_ours(&self.get(spec).await?, spec) {
                        return Err(e);
                    }
                    events(CloudEvent::Adopted { node: spec.node_name() });
                }
                Err(e) => return Err(e),
            }
        }
        self.wait_ready(spec, events).await
    }

    /// Polls the node until it is READY; a lost or stopped node is an error.
    pub async fn wait_ready(&self, spec: &VmSpec, events: Events<'_>) -> Result<Node> {
        let started = Instant::now();
        let name = spec.node_name();
        loop {
            let node = self.client.get_node(&name).await?;
            let state = node.state();
            events(CloudEvent::NodeState { node: spec.node_id.clone(), state: state.clone(), waited: started.elapsed() });
            if state == NodeState::Ready {
                return Ok(node);
            }
            if !state.is_transitional() {
                return Err(CloudError::UnexpectedState { name, state: state.to_string(), expected: "READY (or on its way there)" });
            }
            if started.elapsed() >= self.wait.timeout {
                return Err(CloudError::Timeout { what: format!("{name} to become READY (last seen {state})"), waited: started.elapsed() });
            }
            tokio::time::sleep(self.wait.poll).await;
        }
    }

    async fn wait_queued_active(&self, name: &str, events: Events<'_>) -> Result<()> {
        let started = Instant::now();
        loop {
            let resource = self.client.get_queued_resource(name).await?;
            let state = resource.state();
            events(CloudEvent::QueuedState { name: name.to_string(), state: state.clone(), waited: started.elapsed() });
            match state {
                QueuedState::Active => return Ok(()),
                QueuedState::Failed => {
                    let message = resource.failure().unwrap_or_else(|| "no reason given".into());
                    return Err(CloudError::QueuedResourceFailed { name: name.to_string(), message });
                }
                QueuedState::Deleting | QueuedState::Suspending | QueuedState::Suspended => {
                    return Err(CloudError::UnexpectedState { name: name.to_string(), state: state.to_string(), expected: "ACTIVE (or on its way there)" });
                }
                _ => {}
            }
            if started.elapsed() >= self.wait.timeout {
                return Err(CloudError::Timeout { what: format!("queued resource {name} to become ACTIVE (last seen {state})"), waited: started.elapsed() });
            }
            tokio::time::sleep(self.wait.poll).await;
        }
    }

    /// Deletes the VM (and its queued resource) and waits until it is gone.
    /// Returns false when there was nothing to delete.
    pub async fn delete(&self, spec: &VmSpec, events: Events<'_>) -> Result<bool> {
        let mut deleted = false;
        if spec.queued {
            // `force` deletes the node with its queued resource.
            match self.client.delete_queued_resource(&spec.queued_resource_name(), true).await {
                Ok(operation) => {
                    self.wait_operation(operation, events).await?;
                    deleted = true;
                }
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        // Also for a queued VM: a node left behind still bills, so make sure it is gone.
        let started = Instant::now();
        let mut delete_calls = 0;
        loop {
            let node = match self.get(spec).await {
                Ok(node) => node,
                Err(e) if e.is_not_found() => break,
                Err(e) => return Err(e),
            };
            if node.state() != NodeState::Deleting {
                delete_calls += 1;
                if delete_calls > 3 {
                    return Err(CloudError::UnexpectedState {
                        name: spec.node_name(),
                        state: node.state().to_string(),
                        expected: "gone after its delete operation finished",
                    });
                }
                match self.client.delete_node(&spec.node_name()).await {
                    Ok(operation) => {
                        self.wait_operation(operation, events).await?;
                        deleted = true;
                    }
                    Err(e) if e.is_not_found() => break,
                    Err(e) => return Err(e),
                }
                continue;
            }
            if started.elapsed() >= self.wait.timeout {
                return Err(CloudError::Timeout { what: format!("{} to be deleted", spec.node_name()), waited: started.elapsed() });
            }
            tokio::time::sleep(self.wait.poll).await;
        }
        if deleted {
            events(CloudEvent::Deleted { node: spec.node_name() });
        }
        Ok(deleted)
    }

    /// Starts a STOPPED node (waiting out STOPPING first) and waits for READY.
    pub async fn start(&self, spec: &VmSpec, events: Events<'_>) -> Result<Node> {
        let started = Instant::now();
        let name = spec.node_name();
        loop {
            let state = self.get(spec).await?.state();
            events(CloudEvent::NodeState { node: spec.node_id.clone(), state: state.clone(), waited: started.elapsed() });
            match state {
                NodeState::Stopped => break,
                NodeState::Stopping => {}
                _ => return self.wait_ready(spec, events).await,
            }
            if started.elapsed() >= self.wait.timeout {
                return Err(CloudError::Timeout { what: format!("{name} to finish stopping"), waited: started.elapsed() });
            }
            tokio::time::sleep(self.wait.poll).await;
        }
        let operation = self.client.start_node(&name).await?;
        self.wait_operation(operation, events).await?;
        self.wait_ready(spec, events).await
    }

    /// A lost VM is deleted and created again from the same spec.
    pub async fn recreate(&self, spec: &VmSpec, events: Events<'_>) -> Result<Node> {
        self.delete(spec, events).await?;
        self.create(spec, events).await
    }

    /// Brings the VM back: a stopped one is started (its disk is kept), and
    /// if that fails, or it is lost, it is recreated.
    pub async fn revive(&self, spec: &VmSpec, events: Events<'_>) -> Result<Node> {
        if let Health::Stopped(_) = self.check(spec, false).await? {
            match self.start(spec, events).await {
                Ok(node) => return Ok(node),
                Err(e) => tracing::warn!("starting {} failed ({e}); creating it again", spec.node_id),
            }
        }
        self.recreate(spec, events).await
    }

    async fn wait_operation(&self, operation: Operation, events: Events<'_>) -> Result<()> {
        let mut on_poll = |op: &Operation, waited| {
            if !op.done {
                events(CloudEvent::OperationPending {
                    operation: op.name.clone(),
                    verb: op.verb().unwrap_or_else(|| "the".into()),
                    detail: op.status_detail(),
                    waited,
                });
            }
        };
        self.client.wait_operation(operation, self.wait, &mut on_poll).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost(h: &Health) -> bool {
        matches!(h, Health::Lost(_))
    }

    #[test]
    fn every_kind_of_loss() {
        use NodeState as N;
        use QueuedState as Q;
        for q in [Q::Suspending, Q::Suspended, Q::Failed] {
            assert!(lost(&classify(Some(N::Ready), Some(q.clone()), false)), "{q}");
        }
        assert!(lost(&classify(None, Some(Q::Active), false)), "404 after a queued create");
        assert_eq!(classify(None, None, false), Health::Waiting(N::Unspecified));
        assert!(lost(&classify(None, None, true)));
        for s in [N::Preempted, N::Terminated] {
            assert!(lost(&classify(Some(s.clone()), None, false)), "{s}");
        }
        assert_eq!(classify(Some(N::Stopped), None, true), Health::Stopped(N::Stopped));
        for s in [N::Deleting, N::Hidden, N::Hiding, N::Unknown, N::Other("NEW".into())] {
            assert!(lost(&classify(Some(s.clone()), None, true)), "{s} after the session died");
            assert!(!lost(&classify(Some(s.clone()), None, false)), "{s} while the session lives");
        }
        for s in [N::Creating, N::Starting, N::Restarting, N::Repairing] {
            assert_eq!(classify(Some(s.clone()), None, true), Health::Waiting(s));
        }
        assert_eq!(classify(Some(N::Ready), Some(Q::Active), true), Health::Ready);
    }
}
