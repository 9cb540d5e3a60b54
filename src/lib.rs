//! emotionet: the EMOTIONET two-CNN hierarchy (a face filter, then an emotion
//! classifier) built as XLA programs in Rust and run through PJRT.
//!
//! The modules follow the pipeline:
//! - [`pjrt`]: the only `unsafe` code; plugins, clients, buffers, executables;
//! - [`tensor`]: host arrays and element types shared by every layer;
//! - [`data`]: dataset loaders, the synthetic set, the prep cache and the input pipeline;
//! - [`cli`]: the `emotionet` command line (one file per subcommand).

#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod pjrt;

pub mod bench;
pub mod cli;
pub mod data;
pub mod experiment;
pub mod fsutil;
pub mod graph;
pub mod models;
pub mod rng;
pub mod tensor;
