//! emotionet: the EMOTIONET two-CNN hierarchy (a face filter, then an emotion
//! classifier) built as XLA programs in Rust and run through PJRT.
//!
//! The modules follow the pipeline:
//! - [`pjrt`]: the only `unsafe` code; plugins, clients, buffers, executables;
//! - [`backend`]: the backend a run asks for (cpu, gpu, tpu) and the platforms that answer for it;
//! - [`tensor`]: host arrays and element types shared by every layer;
//! - [`program`]: the emitted program (StableHLO and its signature), a plain value the graph writes and `pjrt` compiles;
//! - [`graph`]: the tensor graph, its autodiff and the StableHLO writer;
//! - [`models`]: the face and emotion CNNs as programs, and their device sessions;
//! - [`data`]: dataset loaders, the synthetic set, the prep cache and the input pipeline;
//! - [`experiment`]: experiment files;
//! - [`orchestrator`]: campaigns behind `emotionet run`;
//! - [`checkpoint`]: atomic, verified safetensors checkpoints, read by training, evaluation and inference alike;
//! - [`train`]: the trainer and TensorBoard event files;
//! - [`hierarchy`]: the face filter + emotion model at inference: predict, and Table I;
//! - [`records`]: run records, training curves, hierarchy evaluations;
//! - [`report`]: the Markdown + SVG report built from records;
//! - [`bench`]: the training-step benchmark;
//! - [`errors`]: an error chain as a person reads it (each cause once);
//! - [`fsutil`], [`lock`], [`rng`]: crash-safe file replacement, one writer per output folder, our deterministic RNG;
//! - [`google`]: Google credentials and TLS, shared by `cloud` and `storage`;
//! - [`cloud`]: Cloud TPU VMs (create, run a campaign, fetch, delete, preemption);
//! - [`storage`]: output in a Cloud Storage bucket (`gs://BUCKET/PREFIX`);
//! - [`cli`]: the `emotionet` command line (one file per subcommand).

#![deny(unsafe_code)]

#[allow(unsafe_code)]
pub mod pjrt;

pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod cloud;
pub mod data;
pub mod errors;
pub mod experiment;
pub mod fsutil;
pub mod google;
pub mod graph;
pub mod hierarchy;
pub mod lock;
pub mod machine;
pub mod models;
pub mod orchestrator;
pub mod program;
pub mod records;
pub mod report;
pub mod rng;
pub mod storage;
pub mod tensor;
pub mod tpu;
pub mod train;
