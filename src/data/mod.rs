//! Data: everything between image files on disk and the batches a trainer
//! feeds the device. It owns the loaders for the paper's datasets (LFW,
//! SUN397, KDEF, AKDEF), folder-per-class sets and `.npy` arrays; the
//! synthetic face set; mixing several sources in one data set; the tasks
//! and their labels; decoding, splitting by identity and the prepared-set
//! cache; the input pipeline (epoch order in `mix`, augmentation in
//! `augment`); downloads; and copying sources named `gs://...` into the
//! cache folder (`remote`).
//! It knows nothing of PJRT, graphs or models: its output is [`HostTensor`]s.
//!
//! The flow: [`DataConfig`] -> [`prepare`] (loaders -> [`Task`] labels ->
//! [`split_by_identity`] -> decode -> cache) -> [`PreparedSet`] ->
//! [`TrainPipeline`] / [`EvalBatches`] -> [`Batch`].
//!
//! [`HostTensor`]: crate::tensor::HostTensor

pub mod augment;
pub mod cache;
pub mod config;
pub mod decode;
pub mod error;
pub mod fetch;
pub mod kdef;
pub mod loaders;
pub mod mix;
pub mod pipeline;
pub mod prep;
pub mod remote;

pub mod sample;
pub mod split;
pub mod synth;
pub mod task;

pub use config::{
    Augmentation, DataConfig, DecodeLimits, Normalization, NpySource, RealSources, ResizeMode, SourceConfig, SourceKind, SourceMix, SourcePart, SyntheticSource,
};
pub use error::DataError;
pub use kdef::{AkdefCode, Angle, Expression, KdefCode, Session, Sex};
pub use pipeline::{Batch, EvalBatches, PipelineConfig, PipelineState, TrainPipeline};
pub use prep::{PrepOptions, PrepOutcome, PrepReport, PreparedSet, PreparedSplit, SampleInfo, load_catalog, prepare};
pub use sample::{Catalog, DatasetTag, Sample, SampleSource, Skipped, SourceSummary};
pub use split::{Split, split_by_identity};
pub use synth::{SynthConfig, SynthManifest, generate_dataset};
pub use task::{EmotionGrouping, Task};
