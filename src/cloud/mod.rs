//! Cloud TPU VMs: create one, run a campaign on it, bring the results back,
//! delete it, and survive its preemption along the way.
//!
//! - [`client`]: the Cloud TPU API v2 (nodes, operations, queued resources,
//!   accelerator types) through Google's `google-cloud-tpu-v2`, with our
//!   timeouts and retries ([`retry`]); the types and what we read from them in [`api`];
//! - credentials come from [`crate::google`] (shared with `storage`);
//! - [`cost`]: the price table (an estimate, with date and source) and known zones;
//! - [`spec`]: what to create, and the cost guard; [`vm`]: create, wait, delete,
//!   start, recreate, and when a VM counts as lost; [`state`]: the local record of the VMs we created;
//! - [`remote`]: running scripts and moving files on the VM (through gcloud ssh,
//!   or a local folder standing in for it); [`campaign`]: the `run` steps,
//!   with the campaign detached on the VM (`deploy/vm-campaign.sh`);
//! - [`elf`]: what the shipped binary needs from the VM (glibc, architecture).
//!
//! This module talks to Google Cloud and to the VM. It must not know how
//! training or the orchestrator work: it runs a command line (a template) and
//! treats the output folder as opaque, durable state.

pub mod api;
pub mod campaign;
pub mod client;
pub mod cost;
pub mod elf;
pub mod error;
pub mod events;
pub mod remote;
pub mod retry;
pub mod spec;
pub mod state;
pub mod timestamp;
pub mod vm;

pub use crate::google::{AuthConfig, AuthMode};
pub use api::{Node, NodeExt, NodeState, Operation, QueuedResource, QueuedResourceExt, QueuedState};
pub use campaign::{CampaignPlan, CampaignReport, LogEnd, fetch, logs, run_campaign};
pub use client::{ClientConfig, TpuClient, WaitOptions};
pub use error::{CloudError, Result};
pub use events::CloudEvent;
pub use remote::{GcloudTpuHost, LocalHost, RemoteHost, Worker};
pub use retry::RetryPolicy;
pub use spec::{Capacity, Location, VmRequest, VmSpec};
pub use state::{StateStore, VmRecord};
pub use vm::{Health, Loss, VmManager, classify};
