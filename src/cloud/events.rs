//! Progress of long cloud steps, as values: the CLI prints them, tests count them.

use std::path::PathBuf;
use std::time::Duration;

use super::api::{NodeState, QueuedState};
use super::timestamp::human;

#[derive(Clone, Debug, PartialEq)]
pub enum CloudEvent {
    /// A long-running operation is still going.
    OperationPending { operation: String, verb: String, detail: Option<String>, waited: Duration },
    /// A node was seen in this state while waiting for READY.
    NodeState { node: String, state: NodeState, waited: Duration },
    /// A queued resource was seen in this state while waiting for ACTIVE.
    QueuedState { name: String, state: QueuedState, waited: Duration },
    /// A VM of that name already existed with our label and type; we use it.
    Adopted { node: String },
    /// A VM (or its queued resource) is gone.
    Deleted { node: String },
    /// A named step on the VM began.
    Step { step: String },
    /// The campaign command started, for the `attempt`-th time.
    CampaignStarted { attempt: u32, command: String },
    /// The campaign was already running on the VM; we follow it (never a second copy).
    CampaignAttached { id: String },
    /// One line the campaign printed on the VM.
    CampaignOutput { line: String },
    /// The remote output folder was copied to the local one.
    Synced { to: PathBuf, took: Duration },
    /// A copy of the output folder failed; the local folder keeps its last good copy.
    SyncFailed { error: String },
    /// The local copy of the output was pushed to a fresh VM.
    Restored { from: PathBuf },
    /// The VM was taken back by Google.
    Preempted { node: String, state: NodeState },
    /// Creating the VM again after a preemption (the `recreation`-th time).
    Recreating { node: String, recreation: u32 },
    /// The campaign command exited with success.
    Finished { attempts: u32, recreations: u32, took: Duration },
}

impl std::fmt::Display for CloudEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CloudEvent::OperationPending { operation, verb, detail, waited } => {
                let id = operation.rsplit('/').next().unwrap_or(operation);
                write!(f, "waiting for {verb} operation {id} ({})", human(*waited))?;
                if let Some(detail) = detail {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
            CloudEvent::NodeState { node, state, waited } => write!(f, "{node} is {state} ({})", human(*waited)),
            CloudEvent::QueuedState { name, state, waited } => write!(f, "queued resource {name} is {state} ({})", human(*waited)),
            CloudEvent::Adopted { node } => write!(f, "{node} already exists with the emotionet label and this type; using it"),
            CloudEvent::Deleted { node } => write!(f, "{node} deleted"),
            CloudEvent::Step { step } => f.write_str(step),
            CloudEvent::CampaignStarted { attempt, command } => write!(f, "campaign start #{attempt}: {command}"),
            CloudEvent::CampaignAttached { id } => write!(f, "re-attached to campaign {id}, which is running on the VM"),
            CloudEvent::CampaignOutput { line } => write!(f, "[vm] {line}"),
            CloudEvent::SyncFailed { error } => {
                write!(f, "warning: copying the VM's output failed (the local copy is kept as it was; the next copy may work): {error}")
            }
            CloudEvent::Synced { to, took } => write!(f, "synced the VM's output to {} ({})", to.display(), human(*took)),
            CloudEvent::Restored { from } => write!(f, "restored the campaign state from {} onto the new VM", from.display()),
            CloudEvent::Preempted { node, state } => write!(f, "{node} is {state}: the VM and its disk are gone"),
            CloudEvent::Recreating { node, recreation } => write!(f, "recreating {node} (recreation {recreation})"),
            CloudEvent::Finished { attempts, recreations, took } => {
                write!(f, "campaign finished after {attempts} start(s) and {recreations} recreation(s) in {}", human(*took))
            }
        }
    }
}

/// Where progress goes.
pub type Events<'a> = &'a mut (dyn FnMut(CloudEvent) + Send);
