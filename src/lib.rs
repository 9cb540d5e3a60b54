//! emotionet: the EMOTIONET two-CNN hierarchy (a face filter, then an emotion
//! classifier) built as XLA programs in Rust and run through PJRT.
//!
//! The modules follow the pipeline:
//! - [`pjrt`]: the only `unsafe` code; plugins, clients, buffers, executables;
//! - [`tensor`]: host arrays and element types shared by every layer;
//! - [`records`]: run records, training curves, hierarchy evaluations;
//! - [`train`]: TensorBoard event files and checkpoints;
//! - [`report`]: the Markdown + SVG report built from records;
//! - [`fsutil`]: crash-safe file and directory replacement;
//! - [`cli`]: the `emotionet` command line (one file per subcommand).

#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod pjrt;

pub mod cli;
pub mod fsutil;
pub mod records;
pub mod report;
pub mod tensor;
pub mod train;
