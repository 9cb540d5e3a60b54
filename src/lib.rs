//! emotionet: the EMOTIONET two-CNN hierarchy (a face filter, then an emotion
//! classifier) built as XLA programs in Rust and run through PJRT.
//!
//! The modules follow the pipeline:
//! - [`pjrt`]: the only `unsafe` code; plugins, clients, buffers, executables;
//! - [`tensor`]: host arrays and element types shared by every layer;
//! - [`cloud`]: Cloud TPU VMs (create, run a campaign, fetch, delete, preemption);
//! - [`cli`]: the `emotionet` command line (one file per subcommand).

#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod pjrt;

pub mod cli;
pub mod cloud;
pub mod tensor;
