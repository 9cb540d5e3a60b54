//! The life of one TPU VM: create (directly or through a queued resource),
//! wait until READY, delete, and recreate after a preemption.

use std::time::Instant;

use super::api::{Node, NodeState, QueuedState};
use super::client::{TpuClient, WaitOptions};
use super::error::{CloudError, Result};
use super::events::{CloudEvent, Events};
use super::spec::{MANAGED_LABEL, VmSpec};

/// Created by emotionet (our label) with the type asked for.
fn is_ours(node: &Node, spec: &VmSpec) -> bool {
    node.labels.get(MANAGED_LABEL.0).map(String::as_str) == Some(MANAGED_LABEL.1) && node.accelerator_type.as_deref() == Some(spec.accelerator_type.as_str())
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

    /// Creates the VM and returns it once READY. A VM of that name that we
    /// created before (our label, same accelerator type) is adopted instead
    /// of failing, so `up` can be run again after an interruption.
    pub async fn create(&self, spec: &VmSpec, events: Events<'_>) -> Result<Node> {
        let location = spec.location();
        if spec.queued {
            let name = spec.queued_resource_name();
            match self.client.create_queued_resource(&location, &spec.node_id, &spec.to_queued_resource()).await {
                Ok(operation) => {
                    self.wait_operation(operation, events).await?;
                }
                Err(e) if e.http_status() == Some(409) => {
                    let existing = self.client.get_queued_resource(&name).await?;
                    let node = existing.tpu.as_ref().and_then(|t| t.node_spec.first()).map(|s| &s.node);
                    if !node.is_some_and(|n| is_ours(n, spec)) {
                        return Err(e);
                    }
                    events(CloudEvent::Adopted { node: name.clone() });
                }
                Err(e) => return Err(e),
            }
            self.wait_queued_active(&name, events).await?;
        } else {
            match self.client.create_node(&location, &spec.node_id, &spec.to_node()).await {
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
                    let message =
                        resource.state.and_then(|s| s.failed_data).and_then(|d| d.error).map(|e| e.message).unwrap_or_else(|| "no reason given".into());
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

    /// A preempted VM is deleted and created again from the same spec.
    pub async fn recreate(&self, spec: &VmSpec, events: Events<'_>) -> Result<Node> {
        self.delete(spec, events).await?;
        self.create(spec, events).await
    }

    async fn wait_operation(&self, operation: super::api::Operation, events: Events<'_>) -> Result<()> {
        let mut on_poll = |op: &super::api::Operation, waited| {
            if !op.done {
                events(CloudEvent::OperationPending {
                    operation: op.name.clone(),
                    verb: op.verb().unwrap_or("the").to_string(),
                    detail: op.status_detail().map(str::to_string),
                    waited,
                });
            }
        };
        self.client.wait_operation(operation, self.wait, &mut on_poll).await.map(|_| ())
    }
}
