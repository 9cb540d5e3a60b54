//! A model living on its devices: compiled programs, parameters and
//! optimizer state as device buffers, and the host-side glue of a training
//! run.
//!
//! Parameters and optimizer state never leave the devices between steps:
//! each step donates them to the training program, which writes the updated
//! values into the same memory. A step only enqueues work; the host goes on
//! to upload the next batch while the devices compute, and metrics are read
//! back (a synchronization) only when asked for.

use std::time::Instant;

use crate::data::Normalization;
use crate::graph::optim::Optimizer;
use crate::pjrt::{Buffer, Client, CompileOptions, LoadedExecutable, PjrtError, ReadyEvent};
use crate::tensor::{DType, HostTensor};

use super::architecture::{Architecture, ConvChoice, CpuKernels, ModelKind};
use super::init::init_params;
use super::programs::{BuiltProgram, Precision, ProgramSpec};
use crate::graph::ParamSpec;

/// Errors of a model session, naming what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("invalid architecture: {0}")]
    Architecture(String),
    #[error("building the {program} program: {source}")]
    Graph { program: &'static str, source: crate::graph::GraphError },
    #[error("compiling the {program} program: {source}")]
    Compile { program: &'static str, source: PjrtError },
    #[error(transparent)]
    Pjrt(#[from] PjrtError),
    #[error(transparent)]
    Tensor(#[from] crate::tensor::TensorError),
    #[error("{what}: expected {expected}, got {got}")]
    Mismatch { what: String, expected: String, got: String },
}

pub type Result<T, E = SessionError> = std::result::Result<T, E>;

/// Everything needed to put a model on devices.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub kind: ModelKind,
    pub arch: Architecture,
    pub optimizer: Optimizer,
    /// Examples per step over all devices; divisible by `devices.len()`.
    pub global_batch: i64,
    /// Global ids of the devices to train on (data-parallel replicas).
    pub devices: Vec<i32>,
    /// XLA debug options applied to every compilation.
    pub xla_options: Vec<(String, crate::pjrt::OptionOverride)>,
    /// What the network computes in (parameters and optimizer state are
    /// f32 either way, so checkpoints do not depend on it).
    pub precision: Precision,
    /// How the conv layers are computed (the parameters are the same).
    pub conv: ConvChoice,
    /// Which conv parts run as oneDNN host kernels (CPU only; empty: XLA's
    /// ops everywhere). The session registers the kernels before compiling.
    pub cpu_kernels: CpuKernels,
    /// How the programs normalize the u8 images they are given (the
    /// experiment's `data.normalize`).
    pub normalize: Normalization,
}

impl SessionConfig {
    pub fn validate(&self) -> Result<()> {
        self.arch.validate().map_err(SessionError::Architecture)?;
        self.optimizer.validate().map_err(SessionError::Architecture)?;
        let n = self.devices.len() as i64;
        if n == 0 || self.global_batch < 1 || self.global_batch % n != 0 {
            return Err(SessionError::Mismatch {
                what: "batch".into(),
                expected: format!("a positive multiple of the device count {n}"),
                got: self.global_batch.to_string(),
            });
        }
        Ok(())
    }

    fn spec(&self, replicas: usize, replica_batch: i64) -> ProgramSpec {
        ProgramSpec {
            kind: self.kind,
            arch: self.arch.clone(),
            optimizer: self.optimizer.clone(),
            replica_batch,
            replicas,
            precision: self.precision,
            conv: self.conv,
            cpu_kernels: self.cpu_kernels.clone(),
            normalize: self.normalize,
        }
    }

    fn compile_options(&self, devices: &[i32]) -> CompileOptions {
        let mut options = if devices.len() == 1 { CompileOptions::single_device(devices[0]) } else { CompileOptions::replicated(devices) };
        options.xla_options = self.xla_options.clone();
        options
    }
}

/// Loss and accuracy of one training step.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    pub loss: f32,
    /// Correct answers over the global batch.
    pub correct: f32,
    pub batch: i64,
}

impl StepMetrics {
    pub fn accuracy(&self) -> f32 {
        self.correct / self.batch as f32
    }
}

/// Sums of an evaluation pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvalTotals {
    pub loss_sum: f64,
    pub correct: f64,
    pub examples: u64,
    /// Row-major `[examples, classes]` logits, if asked for.
    pub logits: Vec<f32>,
}

impl EvalTotals {
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.examples.max(1) as f64
    }
    pub fn accuracy(&self) -> f64 {
        self.correct / self.examples.max(1) as f64
    }
}

/// Timing of the compilations, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CompileTimes {
    pub build_s: f64,
    pub train_s: f64,
    pub eval_s: f64,
}

/// A model's compiled programs with its parameters and optimizer state on
/// the devices.
pub struct TrainSession {
    client: Client,
    config: SessionConfig,
    specs: Vec<ParamSpec>,
    state_names: Vec<String>,
    train: LoadedExecutable,
    eval: LoadedExecutable,
    eval_batch: i64,
    /// `params[replica][i]`, `state[replica][j]`.
    params: Vec<Vec<Buffer>>,
    state: Vec<Vec<Buffer>>,
    seeds: Vec<Buffer>,
    offsets: Vec<Buffer>,
    pending: Vec<(u64, Buffer, Buffer)>,
    /// Inputs of the training program that it aliases to outputs (params
    /// and optimizer state): exactly these are donated at each step. On
    /// XLA:GPU an aliased input that is not donated costs a copy, and a
    /// donated one that is not aliased is freed without reuse.
    donated: Vec<usize>,
    /// The training program as compiled (its text says what it computes in).
    train_program: crate::program::Program,
    step: u64,
    pub compile_times: CompileTimes,
}

impl TrainSession {
    /// Compiles the programs and uploads freshly initialized parameters.
    pub fn new(client: &Client, config: SessionConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let specs = config.arch.params().map_err(SessionError::Architecture)?;
        let values = init_params(&specs, seed);
        let state = Self::zero_state(&config, &specs);
        Self::with_values(client, config, seed, values, state, 0)
    }

    fn zero_state(config: &SessionConfig, specs: &[ParamSpec]) -> Vec<HostTensor> {
        specs
            .iter()
            .flat_map(|p| config.optimizer.state_names(&p.name).into_iter().map(move |_| HostTensor::zeros(DType::F32, &p.dims).expect("valid dims")))
            .collect()
    }

    /// Compiles the programs and uploads the given parameters and optimizer
    /// state (e.g. from a checkpoint), continuing at `step`.
    pub fn with_values(client: &Client, config: SessionConfig, seed: u64, params: Vec<HostTensor>, state: Vec<HostTensor>, step: u64) -> Result<Self> {
        config.validate()?;
        let specs = config.arch.params().map_err(SessionError::Architecture)?;
        let state_names: Vec<String> = specs.iter().flat_map(|p| config.optimizer.state_names(&p.name)).collect();
        check_values("parameters", &specs.iter().map(|s| (s.name.clone(), s.dims.clone())).collect::<Vec<_>>(), &params)?;
        let state_dims: Vec<(String, Vec<i64>)> =
            specs.iter().flat_map(|p| config.optimizer.state_names(&p.name).into_iter().map(move |n| (n, p.dims.clone()))).collect();
        check_values("optimizer state", &state_dims, &state)?;

        if !config.cpu_kernels.is_xla() {
            let platform = client.platform_name().to_ascii_lowercase();
            let kernels = if platform == "cpu" { crate::pjrt::register_host_kernels(client.api())? } else { vec![] };
            if !kernels.contains(&"emotionet_onednn_conv_fwd") {
                return Err(SessionError::Mismatch {
                    what: "cpu kernels".into(),
                    expected: "a CPU client with oneDNN (libdnnl.so.2) loadable, or the XLA kernels (--cpu-kernels xla)".into(),
                    got: format!("{} on platform {platform}", config.cpu_kernels.describe()),
                });
            }
        }
        let replicas = config.devices.len();
        let replica_batch = config.global_batch / replicas as i64;
        let t0 = Instant::now();
        let train_program = config.spec(replicas, replica_batch).train_step().map_err(|source| SessionError::Graph { program: "train_step", source })?;
        let eval_spec = config.spec(1, config.global_batch);
        let eval_program = eval_spec.eval_step().map_err(|source| SessionError::Graph { program: "eval_step", source })?;
        let build_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let train = compile(client, &train_program, &config.compile_options(&config.devices), "train_step")?;
        let train_s = t1.elapsed().as_secs_f64();
        let t2 = Instant::now();
        let eval = compile(client, &eval_program, &config.compile_options(&config.devices[..1]), "eval_step")?;
        let eval_s = t2.elapsed().as_secs_f64();
        tracing::info!("compiled {} train step in {train_s:.2} s, eval step in {eval_s:.2} s (graph build {build_s:.2} s)", config.kind);

        let mut session = TrainSession {
            client: client.clone(),
            specs,
            state_names,
            train,
            eval,
            eval_batch: config.global_batch,
            params: vec![],
            state: vec![],
            seeds: vec![],
            offsets: vec![],
            pending: vec![],
            donated: train_program.aliases.iter().map(|&(input, _)| input).collect(),
            train_program: train_program.program.clone(),
            step,
            compile_times: CompileTimes { build_s, train_s, eval_s },
            config,
        };
        session.upload_values(&params, &state, seed)?;
        Ok(session)
    }

    fn upload_values(&mut self, params: &[HostTensor], state: &[HostTensor], seed: u64) -> Result<()> {
        let replica_batch = self.replica_batch();
        self.params.clear();
        self.state.clear();
        self.seeds.clear();
        self.offsets.clear();
        for (r, &device) in self.config.devices.iter().enumerate() {
            self.params.push(params.iter().map(|t| self.client.upload(t, device)).collect::<Result<_, _>>()?);
            self.state.push(state.iter().map(|t| self.client.upload(t, device)).collect::<Result<_, _>>()?);
            self.seeds.push(self.client.upload(&HostTensor::scalar_u32(seed as u32 ^ (seed >> 32) as u32), device)?);
            self.offsets.push(self.client.upload(&HostTensor::scalar_u32((r as i64 * replica_batch) as u32), device)?);
        }
        Ok(())
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn replica_batch(&self) -> i64 {
        self.config.global_batch / self.config.devices.len() as i64
    }

    /// Number of training steps taken so far.
    /// The training step's program, as handed to the compiler.
    pub fn train_program(&self) -> &crate::program::Program {
        &self.train_program
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    /// A handle that uploads batches to this session's devices; it can be
    /// moved to another thread to upload the next batch while a step runs.
    pub fn uploader(&self) -> BatchUploader {
        BatchUploader {
            client: self.client.clone(),
            devices: self.config.devices.clone(),
            image_dims: vec![self.config.global_batch, self.config.arch.input_size, self.config.arch.input_size, 1],
        }
    }

    /// Uploads and runs one training step on `images: u8[B,H,W,1]`,
    /// `labels: i32[B]` (the global batch).
    /// The plugin's cost analysis of the compiled train step (per device).
    pub fn train_cost(&self) -> std::result::Result<crate::pjrt::CostAnalysis, crate::pjrt::PjrtError> {
        self.train.cost_analysis()
    }

    pub fn train_step(&mut self, images: &HostTensor, labels: &HostTensor, lr: f32) -> Result<()> {
        let batch = self.uploader().upload(images, labels)?;
        self.train_step_on(&batch, lr)
    }

    /// Runs one training step on a batch already on the devices. It returns
    /// once the step is enqueued: every plugin we use is asynchronous (the
    /// CPU one too: its `execute` returns in microseconds and the outputs
    /// become ready later), so the caller can upload the next batch meanwhile.
    pub fn train_step_on(&mut self, batch: &DeviceBatch, lr: f32) -> Result<()> {
        let replicas = self.config.devices.len();
        if batch.shards.len() != replicas {
            return Err(SessionError::Mismatch { what: "device batch".into(), expected: format!("{replicas} shards"), got: batch.shards.len().to_string() });
        }
        let mut scalars: Vec<[Buffer; 2]> = Vec::with_capacity(replicas);
        for &device in &self.config.devices {
            scalars.push([self.client.upload(&HostTensor::scalar_f32(lr), device)?, self.client.upload(&HostTensor::scalar_i32(self.step as i32), device)?]);
        }
        let args: Vec<Vec<&Buffer>> = (0..replicas)
            .map(|r| {
                let mut a: Vec<&Buffer> = self.params[r].iter().chain(&self.state[r]).collect();
                a.extend([&batch.shards[r].0, &batch.shards[r].1]);
                a.extend(scalars[r].iter());
                a.push(&self.seeds[r]);
                a.push(&self.offsets[r]);
                a
            })
            .collect();
        let outputs = self.train.execute_replicated(&args, &self.donated)?;
        let np = self.specs.len();
        let ns = self.state_names.len();
        let mut metrics = None;
        for (r, mut out) in outputs.into_iter().enumerate() {
            let correct = out.pop().expect("train_step has outputs");
            let loss = out.pop().expect("train_step has outputs");
            let state: Vec<Buffer> = out.drain(np..np + ns).collect();
            self.params[r] = out;
            self.state[r] = state;
            if r == 0 {
                metrics = Some((loss, correct));
            }
        }
        if let Some((loss, correct)) = metrics {
            self.pending.push((self.step, loss, correct));
        }
        self.step += 1;
        Ok(())
    }

    /// Reads back the metrics of every step since the last call (waits for
    /// those steps to finish).
    pub fn drain_metrics(&mut self) -> Result<Vec<StepMetrics>> {
        let batch = self.config.global_batch;
        self.pending
            .drain(..)
            .map(|(step, loss, correct)| Ok(StepMetrics { step, loss: loss.to_host()?.to_f32()?[0], correct: correct.to_host()?.to_f32()?[0], batch }))
            .collect::<Result<Vec<_>, PjrtError>>()
            .map_err(SessionError::from)
    }

    /// Blocks until every enqueued step has finished on every replica.
    pub fn wait(&self) -> Result<()> {
        for event in self.step_ready_events()? {
            event.wait()?;
        }
        Ok(())
    }

    /// One event per output of the last step on every replica (parameters,
    /// optimizer state, and the step's loss and count): the step is done
    /// when all have fired. Taken right after [`Self::train_step_on`].
    pub fn step_ready_events(&self) -> Result<Vec<ReadyEvent>> {
        let metrics = self.pending.last().into_iter().flat_map(|(_, loss, correct)| [loss, correct]);
        let outputs = self.params.iter().chain(&self.state).flatten().chain(metrics);
        Ok(outputs.map(Buffer::ready_event).collect::<Result<_, _>>()?)
    }

    /// Loss, accuracy (and optionally logits) of the current parameters
    /// over `batches` of `(images, labels, valid)`, each padded to the
    /// session's batch; only the first `valid` rows count.
    pub fn evaluate<'a>(&self, batches: impl IntoIterator<Item = (&'a HostTensor, &'a HostTensor, usize)>, keep_logits: bool) -> Result<EvalTotals> {
        let device = self.config.devices[0];
        let n = self.config.arch.input_size;
        let mut totals = EvalTotals::default();
        for (images, labels, valid) in batches {
            expect_shape("eval images", images, DType::U8, &[self.eval_batch, n, n, 1])?;
            expect_shape("eval labels", labels, DType::I32, &[self.eval_batch])?;
            let weights: Vec<f32> = (0..self.eval_batch as usize).map(|i| if i < valid { 1.0 } else { 0.0 }).collect();
            let x = self.client.upload(images, device)?;
            let y = self.client.upload(labels, device)?;
            let w = self.client.upload(&HostTensor::from_f32(&[self.eval_batch], &weights)?, device)?;
            let mut args: Vec<&Buffer> = self.params[0].iter().collect();
            args.extend([&x, &y, &w]);
            let out = self.eval.execute(&args, &[])?;
            totals.loss_sum += out[0].to_host()?.to_f32()?[0] as f64;
            totals.correct += out[1].to_host()?.to_f32()?[0] as f64;
            totals.examples += valid as u64;
            if keep_logits {
                let k = self.config.arch.classes as usize;
                totals.logits.extend_from_slice(&out[2].to_host()?.to_f32()?[..valid * k]);
            }
        }
        Ok(totals)
    }

    /// Parameters, by name, copied from replica 0.
    pub fn params_to_host(&self) -> Result<Vec<(String, HostTensor)>> {
        self.specs.iter().zip(&self.params[0]).map(|(s, b)| Ok((s.name.clone(), b.to_host()?))).collect()
    }

    /// Optimizer state, by name, copied from replica 0.
    pub fn state_to_host(&self) -> Result<Vec<(String, HostTensor)>> {
        self.state_names.iter().zip(&self.state[0]).map(|(n, b)| Ok((n.clone(), b.to_host()?))).collect()
    }

    pub fn train_executable(&self) -> &LoadedExecutable {
        &self.train
    }
}

/// A global batch split into per-device shards, on the devices.
pub struct DeviceBatch {
    /// `(images, labels)` per replica, in device order.
    shards: Vec<(Buffer, Buffer)>,
}

/// Uploads batches for a session; cheap to clone, `Send`.
#[derive(Clone)]
pub struct BatchUploader {
    client: Client,
    devices: Vec<i32>,
    image_dims: Vec<i64>,
}

impl BatchUploader {
    /// Splits `images: u8[B,H,W,1]` and `labels: i32[B]` into one shard per
    /// device (replica r gets rows `r*b .. (r+1)*b`) and uploads them.
    pub fn upload(&self, images: &HostTensor, labels: &HostTensor) -> Result<DeviceBatch> {
        expect_shape("images", images, DType::U8, &self.image_dims)?;
        expect_shape("labels", labels, DType::I32, &self.image_dims[..1])?;
        let b = self.image_dims[0] / self.devices.len() as i64;
        let mut shards = Vec::with_capacity(self.devices.len());
        for (r, &device) in self.devices.iter().enumerate() {
            let x = slice_rows(images, r as i64 * b, b)?;
            let y = slice_rows(labels, r as i64 * b, b)?;
            shards.push((self.client.upload(&x, device)?, self.client.upload(&y, device)?));
        }
        Ok(DeviceBatch { shards })
    }
}

fn compile(client: &Client, built: &BuiltProgram, options: &CompileOptions, program: &'static str) -> Result<LoadedExecutable> {
    client.compile(&built.program, options).map_err(|source| SessionError::Compile { program, source })
}

fn check_values(what: &str, expected: &[(String, Vec<i64>)], values: &[HostTensor]) -> Result<()> {
    if expected.len() != values.len() {
        return Err(SessionError::Mismatch { what: what.into(), expected: format!("{} tensors", expected.len()), got: values.len().to_string() });
    }
    for ((name, dims), v) in expected.iter().zip(values) {
        if v.dims() != dims.as_slice() || v.dtype() != DType::F32 {
            return Err(SessionError::Mismatch { what: name.clone(), expected: format!("f32{dims:?}"), got: format!("{}{:?}", v.dtype(), v.dims()) });
        }
    }
    Ok(())
}

fn expect_shape(what: &str, t: &HostTensor, dtype: DType, dims: &[i64]) -> Result<()> {
    if t.dtype() != dtype || t.dims() != dims {
        return Err(SessionError::Mismatch { what: what.into(), expected: format!("{dtype}{dims:?}"), got: format!("{}{:?}", t.dtype(), t.dims()) });
    }
    Ok(())
}

/// Rows `start .. start + count` of a tensor (along its first dimension).
fn slice_rows(t: &HostTensor, start: i64, count: i64) -> Result<HostTensor> {
    let rows = t.dims()[0];
    if start == 0 && count == rows {
        return Ok(t.clone());
    }
    let row_bytes = t.bytes().len() / rows as usize;
    let bytes = t.bytes()[start as usize * row_bytes..(start + count) as usize * row_bytes].to_vec();
    let mut dims = t.dims().to_vec();
    dims[0] = count;
    Ok(HostTensor::from_bytes(t.dtype(), &dims, bytes)?)
}
