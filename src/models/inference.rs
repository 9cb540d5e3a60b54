//! A trained model ready to answer: its `predict` program compiled for one
//! device and its parameters uploaded there once, loaded from the newest
//! checkpoint of a run folder.
//!
//! This module owns inference only: it reads checkpoints (through
//! [`crate::checkpoint`], which owns their format) but never writes
//! them (a load checks every tensor against its checksum), and it takes images as the u8 `[n, H, W, 1]` grey levels the input
//! pipeline makes (decoding stays in [`crate::data`]); the predict program
//! normalizes them as [`InferenceOptions::normalize`] says, which must be
//! the normalization the model trained with.
//!
//! The compiled program has a fixed batch; [`InferenceModel::probabilities`]
//! accepts any number of images by cutting them into batches and padding the
//! last one with zero images, whose rows are dropped. The predict program
//! has no batch statistics (no batch norm, no dropout), so an image's answer
//! does not depend on the other images of its batch.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::checkpoint::{Checkpoint, CheckpointDir, CheckpointError};
use crate::data::Normalization;
use crate::graph::optim::Optimizer;
use crate::pjrt::{Buffer, Client, CompileOptions, LoadedExecutable, OptionOverride, PjrtError};
use crate::records::CHECKPOINT_DIR;
use crate::tensor::{DType, HostTensor, TensorError};

use super::architecture::{Architecture, ConvChoice, ModelKind};
use super::programs::{Precision, ProgramSpec};

/// Why a model could not be loaded or run. Variants name the folder, file
/// or tensor at fault.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    #[error("no run folder {dir} for the {kind} model: train it first (`emotionet train EXPERIMENT --model {kind}`), or check --backend/--repeat/--out")]
    NoRunDir { kind: ModelKind, dir: PathBuf },
    #[error("no checkpoint (checkpoints/ckpt-*.safetensors) in {dir} for the {kind} model: its training never saved one; train it (again)")]
    NoCheckpoint { kind: ModelKind, dir: PathBuf },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{path}: the {kind} model needs tensor `{name}` (f32{expected:?}), which the checkpoint lacks; it was written by another model or architecture")]
    MissingTensor { kind: ModelKind, path: PathBuf, name: String, expected: Vec<i64> },
    #[error(
        "{path}: tensor `{name}` is {got}, but the {kind} model of this experiment needs f32{expected:?}; was the architecture or image size changed since training?"
    )]
    WrongShape { kind: ModelKind, path: PathBuf, name: String, expected: Vec<i64>, got: String },
    #[error("parameter `{name}` of the {kind} model: expected f32{expected:?}, got {got}")]
    ParamShape { kind: ModelKind, name: String, expected: Vec<i64>, got: String },
    #[error("the {kind} predict program returned no output")]
    NoOutput { kind: ModelKind },
    #[error("invalid {kind} architecture: {reason}")]
    Architecture { kind: ModelKind, reason: String },
    #[error("the inference batch must be at least 1, got {0}")]
    Batch(i64),
    #[error("building the {kind} predict program: {source}")]
    Graph { kind: ModelKind, source: crate::graph::GraphError },
    #[error("compiling the {kind} predict program: {source}")]
    Compile { kind: ModelKind, source: PjrtError },
    #[error("images for the {kind} model: expected ui8[n, {size}, {size}, 1] (grey levels), got {got}")]
    Images { kind: ModelKind, size: i64, got: String },
    #[error(transparent)]
    Pjrt(#[from] PjrtError),
    #[error(transparent)]
    Tensor(#[from] TensorError),
}

pub type Result<T, E = InferenceError> = std::result::Result<T, E>;

/// How to put a model on a device.
#[derive(Clone, Debug, PartialEq)]
pub struct InferenceOptions {
    /// Images per execution of the compiled program (at least 1).
    pub batch: i64,
    /// Global id of the device to run on.
    pub device: i32,
    /// XLA debug options for the compilation.
    pub xla_options: Vec<(String, OptionOverride)>,
    /// How the program normalizes the grey levels: the experiment's
    /// `data.normalize`, as in training.
    pub normalize: Normalization,
}

impl InferenceOptions {
    pub fn new(batch: i64, normalize: Normalization) -> Self {
        InferenceOptions { batch, device: 0, xla_options: Vec::new(), normalize }
    }
}

/// Where a model's parameters came from.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointSource {
    /// The checkpoint file.
    pub path: PathBuf,
    /// The training step it holds.
    pub step: u64,
    /// Its metadata (experiment hash, epoch, ...).
    pub metadata: BTreeMap<String, String>,
}

/// A compiled `predict` program and its parameters on one device.
pub struct InferenceModel {
    kind: ModelKind,
    arch: Architecture,
    batch: i64,
    device: i32,
    client: Client,
    predict: LoadedExecutable,
    params: Vec<Buffer>,
    source: Option<CheckpointSource>,
}

impl std::fmt::Debug for InferenceModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferenceModel")
            .field("kind", &self.kind)
            .field("arch", &self.arch)
            .field("batch", &self.batch)
            .field("device", &self.device)
            .field("source", &self.source)
            .finish()
    }
}

impl InferenceModel {
    /// Loads the newest intact checkpoint of the run folder `run_dir`
    /// (`run_dir/checkpoints/ckpt-*.safetensors`) for a model of
    /// architecture `arch`.
    pub fn from_run_dir(client: &Client, kind: ModelKind, arch: Architecture, run_dir: &Path, options: &InferenceOptions) -> Result<Self> {
        if !run_dir.is_dir() {
            return Err(InferenceError::NoRunDir { kind, dir: run_dir.to_path_buf() });
        }
        // Checked like a resume: damaged newer files are skipped with a
        // warning, and if none is intact that is the error.
        let checkpoints = CheckpointDir::new(run_dir.join(CHECKPOINT_DIR), 1)?;
        let found = checkpoints.latest_checked()?.ok_or_else(|| InferenceError::NoCheckpoint { kind, dir: run_dir.to_path_buf() })?;
        Self::from_checkpoint(client, kind, arch, &found.checkpoint, &found.path, options)
    }

    /// Takes the parameters of `arch` from `checkpoint` (read from `path`,
    /// which names it in errors). Tensors the model does not use, such as
    /// optimizer state, are ignored.
    pub fn from_checkpoint(
        client: &Client,
        kind: ModelKind,
        arch: Architecture,
        checkpoint: &Checkpoint,
        path: &Path,
        options: &InferenceOptions,
    ) -> Result<Self> {
        let mut params = Vec::new();
        for spec in arch.params().map_err(|reason| InferenceError::Architecture { kind, reason })? {
            let tensor = checkpoint.tensor(&spec.name).ok_or_else(|| InferenceError::MissingTensor {
                kind,
                path: path.to_path_buf(),
                name: spec.name.clone(),
                expected: spec.dims.clone(),
            })?;
            if tensor.dtype() != DType::F32 || tensor.dims() != spec.dims.as_slice() {
                return Err(InferenceError::WrongShape {
                    kind,
                    path: path.to_path_buf(),
                    name: spec.name.clone(),
                    expected: spec.dims.clone(),
                    got: format!("{}{:?}", tensor.dtype(), tensor.dims()),
                });
            }
            params.push(tensor.clone());
        }
        let mut model = Self::with_params(client, kind, arch, &params, options)?;
        model.source = Some(CheckpointSource { path: path.to_path_buf(), step: checkpoint.step, metadata: checkpoint.metadata.clone() });
        Ok(model)
    }

    /// Compiles the predict program and uploads `params`, given in
    /// [`Architecture::params`] order and checked against its shapes.
    pub fn with_params(client: &Client, kind: ModelKind, arch: Architecture, params: &[HostTensor], options: &InferenceOptions) -> Result<Self> {
        arch.validate().map_err(|reason| InferenceError::Architecture { kind, reason })?;
        if options.batch < 1 {
            return Err(InferenceError::Batch(options.batch));
        }
        let specs = arch.params().map_err(|reason| InferenceError::Architecture { kind, reason })?;
        if specs.len() != params.len() {
            return Err(InferenceError::Architecture { kind, reason: format!("{} parameters given, the architecture has {}", params.len(), specs.len()) });
        }
        for (spec, t) in specs.iter().zip(params) {
            if t.dtype() != DType::F32 || t.dims() != spec.dims.as_slice() {
                return Err(InferenceError::ParamShape {
                    kind,
                    name: spec.name.clone(),
                    expected: spec.dims.clone(),
                    got: format!("{}{:?}", t.dtype(), t.dims()),
                });
            }
        }
        // f32 whatever precision the model trained in: its weights are f32.
        let spec = ProgramSpec {
            kind,
            arch: arch.clone(),
            optimizer: Optimizer::Sgd,
            replica_batch: options.batch,
            replicas: 1,
            precision: Precision::F32,
            conv: ConvChoice::Convolution,
            cpu_kernels: Default::default(),
            normalize: options.normalize,
        };
        let built = spec.predict().map_err(|source| InferenceError::Graph { kind, source })?;
        let mut compile_options = CompileOptions::single_device(options.device);
        compile_options.xla_options = options.xla_options.clone();
        let started = std::time::Instant::now();
        let predict = client.compile(&built.program, &compile_options).map_err(|source| InferenceError::Compile { kind, source })?;
        tracing::info!("compiled the {kind} predict program (batch {}) in {:.2} s", options.batch, started.elapsed().as_secs_f64());
        let params = params.iter().map(|t| client.upload(t, options.device)).collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(InferenceModel { kind, arch, batch: options.batch, device: options.device, client: client.clone(), predict, params, source: None })
    }

    pub fn kind(&self) -> ModelKind {
        self.kind
    }

    pub fn architecture(&self) -> &Architecture {
        &self.arch
    }

    /// Images per execution of the compiled program.
    pub fn batch(&self) -> i64 {
        self.batch
    }

    /// Number of classes of each answer.
    pub fn classes(&self) -> usize {
        self.arch.classes as usize
    }

    /// The checkpoint the parameters came from (`None` for [`InferenceModel::with_params`]).
    pub fn source(&self) -> Option<&CheckpointSource> {
        self.source.as_ref()
    }

    /// Class probabilities of each image of `images: u8[n, H, W, 1]`, in
    /// order: `n` rows of [`InferenceModel::classes`] values. `n` may be
    /// anything, 0 included.
    pub fn probabilities(&self, images: &HostTensor) -> Result<Vec<Vec<f32>>> {
        let size = self.arch.input_size;
        let dims = images.dims();
        if images.dtype() != DType::U8 || dims.len() != 4 || dims[1..] != [size, size, 1] {
            return Err(InferenceError::Images { kind: self.kind, size, got: format!("{}{:?}", images.dtype(), dims) });
        }
        let n = dims[0] as usize;
        let batch = self.batch as usize;
        let row_bytes = (size * size) as usize * DType::U8.size_bytes();
        let k = self.classes();
        let mut out = Vec::with_capacity(n);
        for start in (0..n).step_by(batch) {
            let rows = batch.min(n - start);
            let mut bytes = images.bytes()[start * row_bytes..(start + rows) * row_bytes].to_vec();
            // Zero images fill the last batch; their rows are dropped below.
            bytes.resize(batch * row_bytes, 0);
            let chunk = HostTensor::from_bytes(DType::U8, &[self.batch, size, size, 1], bytes)?;
            let x = self.client.upload(&chunk, self.device)?;
            let mut args: Vec<&Buffer> = self.params.iter().collect();
            args.push(&x);
            let result = self.predict.execute(&args, &[])?;
            let probs = result.first().ok_or(InferenceError::NoOutput { kind: self.kind })?.to_host()?.to_f32()?;
            out.extend(probs.chunks(k).take(rows).map(<[f32]>::to_vec));
        }
        Ok(out)
    }
}
