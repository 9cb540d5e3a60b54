//! The orchestrator behind `emotionet run`: campaigns of experiments x
//! backends x repeats, scheduled one run per backend at a time, with state
//! kept in the output folder so that a restart skips what finished and
//! resumes what did not.
//!
//! It owns scheduling, retries and the campaign state file; training itself
//! is `emotionet train` in a child process, so this module never touches a
//! device.

mod campaign;
mod runner;

pub use campaign::{Campaign, CloudTarget, Plan, RunKey};
pub use runner::{CampaignState, ChildGroups, RunOptions, STATE_FILE, STOP_GRACE, Status, Summary, TaskState, run_campaign};
