//! One training run: one model of one experiment on one backend.
//!
//! The loop: prepared data -> background batch pipeline -> upload ->
//! fused train step (params stay on the devices) -> every `every_steps` the
//! metrics are read back and logged, the eval split is run at the
//! configured cadence, and checkpoints are written with everything a resumed
//! run needs. What is written, and how, is the [`RunWriter`]'s business; this
//! file only decides when. A stop request (Ctrl-C, SIGTERM) checkpoints and
//! returns; a killed process resumes from its last checkpoint and reaches
//! the same parameters as an uninterrupted run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};

use super::run_writer::{Opened, RunStart, RunWriter};
use super::step_clock::{Fetch, PendingStep, StepClock};
use crate::checkpoint::{Checkpoint, META_CPU_KERNELS, META_INPUT_PIPELINE};
use crate::data::{EvalBatches, PipelineState, PrepOptions, PreparedSet, TrainPipeline, prepare};
use crate::experiment::{BackendConfig, Experiment, ModelTraining};
use crate::models::kernel_choice::{self, ChoiceRequest};
use crate::models::{
    BatchUploader, ChoiceSource, CpuKernelMode, CpuKernels, DeviceBatch, KernelCache, KernelChoice, ModelKind, Precision, SessionConfig, StepMetrics,
    TrainSession,
};
use crate::pjrt::Client;
use crate::records::{
    self, Confusion, ImageSize, MetricPoint, Platform, RunConfig, RunRecord, RunStatus, SCHEMA_VERSION, SourceEval, Split, SplitMetrics, now_rfc3339,
};
use crate::tensor::HostTensor;

/// How a run is launched (what the experiment file does not say).
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Where the programs run: the experiment's `backend:` section with the
    /// command line's overrides ([`BackendConfig::with_overrides`]).
    pub backend: BackendConfig,
    /// Continue from the newest checkpoint of the run folder, if any.
    pub resume: bool,
    /// Repeat index within a campaign.
    pub repeat: u32,
    /// Progress bars on stderr.
    pub progress: bool,
    /// Set to request a clean stop (checkpoint, then return).
    pub stop: Arc<AtomicBool>,
    /// The experiment file, for the record and for the resume command line.
    pub experiment_file: Option<PathBuf>,
    /// Free-form notes copied into the record.
    pub notes: BTreeMap<String, String>,
    /// The output as the user named it, for the resume command line, when
    /// it differs from `experiment.output` (a gs:// output trained in its
    /// local staging folder).
    pub out_label: Option<String>,
    /// Called after each checkpoint and each flush of the run's files (a
    /// bucket output uploads them then; see [`RunStart::after_flush`]).
    pub after_flush: Option<super::run_writer::AfterFlush>,
    /// Asked before every step: a reason here ends the run with that error
    /// (a bucket output whose lease another writer took over).
    pub halt: Option<Halt>,
    /// Who computes the conv layers on a CPU (`--cpu-kernels`); a resumed
    /// `auto` run keeps its checkpoint's choice.
    pub cpu_kernels: CpuKernelMode,
}

/// Why the run must stop now, if it must: see [`TrainOptions::halt`].
#[derive(Clone)]
pub struct Halt(pub Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl std::fmt::Debug for Halt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Halt(..)")
    }
}

impl TrainOptions {
    /// Runs `experiment` where its own `backend:` section says.
    pub fn new(experiment: &Experiment) -> Self {
        TrainOptions {
            backend: experiment.backend.clone(),
            resume: false,
            repeat: 0,
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            experiment_file: None,
            notes: BTreeMap::new(),
            out_label: None,
            after_flush: None,
            halt: None,
            cpu_kernels: CpuKernelMode::default(),
        }
    }
}

/// Why a run or a campaign ended without finishing: a stop was requested
/// (Ctrl-C, SIGTERM) and everything needed to continue was saved.
#[derive(Debug, thiserror::Error)]
pub enum Interrupted {
    #[error("stopped on request at step {step} of {total}; the checkpoint in {dir} resumes it (--resume)")]
    Run { step: u64, total: u64, dir: PathBuf },
    #[error("the campaign stopped on request; its state is in {state}: run the same command again to resume it")]
    Campaign { state: PathBuf },
}

/// Prepares the data of a task (from the cache when it is there).
pub fn prepare_data(experiment: &Experiment, kind: ModelKind, progress: bool) -> anyhow::Result<PreparedSet> {
    let options = PrepOptions { task: experiment.task(kind), strict: false, progress };
    let outcome = prepare(&experiment.data, &options).with_context(|| format!("preparing the {kind} data"))?;
    tracing::info!(
        "{kind} data: {} train / {} eval images of {}x{} ({})",
        outcome.set.train.len(),
        outcome.set.eval.len(),
        outcome.set.image_size,
        outcome.set.image_size,
        if outcome.cache_hit { "cache hit" } else { "decoded" }
    );
    Ok(outcome.set)
}

/// Trains `kind` as `experiment` says. Returns the finished record (also
/// when the run had finished before), or an [`Interrupted`] error after a
/// clean stop. A run that fails after its folder was opened says so in its
/// record.
pub fn train(experiment: &Experiment, kind: ModelKind, options: &TrainOptions) -> anyhow::Result<RunRecord> {
    let training = experiment.training(kind).with_context(|| format!("the experiment {} has no `models.{kind}` section", experiment.name))?.clone();
    let client = options.backend.connect()?;
    let devices = device_ids(&options.backend, &client, &training, kind)?;
    let start = RunStart {
        fresh: new_record(experiment, kind, options, &client, devices.len(), &training),
        hash: experiment.content_hash(kind)?,
        keep_checkpoints: experiment.logging.keep_checkpoints,
        resume: options.resume,
        steps_per_epoch: training.steps_per_epoch,
        resume_command: resume_command(experiment, kind, options),
        after_flush: options.after_flush.clone(),
    };
    let paths = experiment.run_paths(kind, options.backend.kind, options.repeat);
    let (mut writer, checkpoint) = match RunWriter::open(paths, start)? {
        Opened::Finished(record) => {
            tracing::info!("{kind}: the run in {} has finished already", experiment.run_paths(kind, options.backend.kind, options.repeat).dir.display());
            return Ok(*record);
        }
        Opened::Train { writer, checkpoint } => (writer, checkpoint),
    };
    let mut config = SessionConfig {
        kind,
        arch: experiment.architecture(kind),
        optimizer: training.optimizer.clone(),
        global_batch: training.batch,
        devices,
        xla_options: options.backend.xla_options(),
        precision: training.precision,
        conv: Default::default(),
        cpu_kernels: Default::default(),
        normalize: experiment.data.normalize,
    };
    let choice = match cpu_kernels(options.cpu_kernels, &client, &config, checkpoint.as_deref()) {
        Ok(choice) => choice,
        Err(error) => return Err(writer.fail(error)),
    };
    config.cpu_kernels = choice.kernels.clone();
    writer.set_cpu_kernels(choice)?;
    match run(experiment, kind, &training, options, &client, config, checkpoint.as_deref(), &mut writer) {
        Ok(Outcome::Finished { eval, confusion, per_source }) => writer.finish(eval, confusion, per_source),
        Ok(Outcome::Stopped { step }) => Err(writer.stop(step)),
        Err(error) => Err(writer.fail(error)),
    }
}

/// The CPU kernels of this run: those its checkpoint was trained with when
/// it resumes under `auto` (a checkpoint from before the choice was kept
/// trained on XLA's ops), else forced or measured
/// ([`kernel_choice::choose`]).
fn cpu_kernels(mode: CpuKernelMode, client: &Client, config: &SessionConfig, checkpoint: Option<&Checkpoint>) -> anyhow::Result<KernelChoice> {
    if let Some(ck) = checkpoint {
        let kept = match ck.metadata.get(META_CPU_KERNELS) {
            Some(text) => {
                serde_json::from_str::<KernelChoice>(text).with_context(|| format!("the checkpoint at step {} has unreadable cpu kernels", ck.step))?
            }
            None => KernelChoice { mode: CpuKernelMode::Xla, kernels: CpuKernels::default(), source: ChoiceSource::Checkpoint, parts: vec![] },
        };
        if mode == CpuKernelMode::Auto || mode == kept.mode {
            tracing::info!("cpu kernels kept from the checkpoint at step {}: {}", ck.step, kept.kernels.describe());
            return Ok(KernelChoice { source: ChoiceSource::Checkpoint, ..kept });
        }
        tracing::warn!(
            "the checkpoint at step {} trained with cpu kernels {}; resuming with --cpu-kernels {} as asked, so the run is not bit-identical to an uninterrupted one",
            ck.step,
            kept.kernels.describe(),
            serde_json::to_string(&mode)?.trim_matches('"')
        );
    }
    let request = ChoiceRequest {
        mode,
        arch: &config.arch,
        replica_batch: config.global_batch / config.devices.len().max(1) as i64,
        precision: config.precision,
        conv: config.conv,
        repeats: 5,
    };
    kernel_choice::choose(client, &request, &KernelCache::default_location()).context("choosing the CPU kernels (--cpu-kernels)")
}

/// How the training loop ended.
enum Outcome {
    Finished { eval: SplitMetrics, confusion: Option<Confusion>, per_source: Vec<SourceEval> },
    Stopped { step: u64 },
}

/// The devices a run trains on: the experiment's count of the client's devices.
fn device_ids(backend: &BackendConfig, client: &Client, training: &ModelTraining, kind: ModelKind) -> anyhow::Result<Vec<i32>> {
    let available = client.device_ids();
    let devices = backend.devices.resolve(available.len());
    if devices > available.len() {
        bail!("the experiment asks for {devices} devices; the {} plugin offers {}", backend.kind, available.len());
    }
    if training.batch % devices as i64 != 0 {
        bail!("models.{kind}.batch {} does not split over {devices} devices; use a multiple of {devices}", training.batch);
    }
    Ok(available[..devices].to_vec())
}

/// Prepares the data, puts the model on its devices (from `checkpoint` if
/// given) and trains it to the end or to a stop request.
#[allow(clippy::too_many_arguments)]
fn run(
    experiment: &Experiment,
    kind: ModelKind,
    training: &ModelTraining,
    options: &TrainOptions,
    client: &Client,
    config: SessionConfig,
    checkpoint: Option<&Checkpoint>,
    writer: &mut RunWriter,
) -> anyhow::Result<Outcome> {
    let data = prepare_data(experiment, kind, options.progress)?;
    let pipeline_config = experiment.pipeline_config(training);
    let mut pipeline = TrainPipeline::new(Arc::new(data.train.clone()), pipeline_config).context("starting the input pipeline")?;
    let mut session = match checkpoint {
        Some(ck) => {
            let (param_names, state_names) = session_tensor_names(&config)?;
            let params = take_tensors(ck, &param_names)?;
            let state = take_tensors(ck, &state_names)?;
            let text = ck.metadata.get(META_INPUT_PIPELINE).with_context(|| format!("the checkpoint at step {} has no input-pipeline state", ck.step))?;
            let position: PipelineState = serde_json::from_str(text).context("the checkpoint's input-pipeline state is unreadable")?;
            pipeline.restore(position).context("restoring the input pipeline")?;
            TrainSession::with_values(client, config, experiment.seed, params, state, ck.step)?
        }
        None => TrainSession::new(client, config, experiment.seed)?,
    };
    writer.clock.compile_s += session.compile_times.train_s + session.compile_times.eval_s;
    writer.set_compute_types(compute_types(session.train_program()))?;
    // Flops per step as the compiler that runs it counts them: the report
    // turns them into achieved FLOP/s. XLA's cost analysis does not see
    // inside a custom call, so a step with oneDNN host kernels would be
    // undercounted: it gets no figure, and the note says why.
    let host_kernels = String::from_utf8_lossy(session.train_program().code()).contains("stablehlo.custom_call");
    let cost = if host_kernels {
        Err("the train step calls oneDNN host kernels (stablehlo.custom_call), whose flops XLA's cost analysis does not count".to_string())
    } else {
        session
            .train_cost()
            .map(|c| crate::records::StepCost { flops: c.flops, bytes_accessed: c.bytes_accessed })
            .map_err(|e| format!("the plugin gave no cost analysis of the train step: {e}"))
    };
    writer.set_train_step_cost(cost)?;
    train_loop(experiment, kind, training, options, &mut session, &mut pipeline, &data, writer)
}

/// The parameter names and the optimizer-state names of a session, in the
/// order the session takes them.
fn session_tensor_names(config: &SessionConfig) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let params: Vec<String> = config.arch.params().map_err(anyhow::Error::msg)?.into_iter().map(|p| p.name).collect();
    let state = params.iter().flat_map(|p| config.optimizer.state_names(p)).collect();
    Ok((params, state))
}

#[allow(clippy::too_many_arguments)]
fn train_loop(
    experiment: &Experiment,
    kind: ModelKind,
    training: &ModelTraining,
    options: &TrainOptions,
    session: &mut TrainSession,
    pipeline: &mut TrainPipeline,
    data: &PreparedSet,
    writer: &mut RunWriter,
) -> anyhow::Result<Outcome> {
    let (total, per_epoch, logging) = (training.total_steps(), training.steps_per_epoch, &experiment.logging);
    let bar = progress_bar(options.progress, total, session.step(), kind);
    let uploader = session.uploader();
    let mut window: Vec<StepMetrics> = Vec::new();
    let mut clock = StepClock::default();
    let mut prefetched: Option<Prefetched> = None;
    let mut trained_state = pipeline.state();
    let checkpoint = |writer: &mut RunWriter, session: &TrainSession, state: &PipelineState| -> anyhow::Result<()> {
        let mut tensors = session.params_to_host()?;
        tensors.extend(session.state_to_host()?);
        writer.checkpoint(session.step(), tensors, state)
    };

    while session.step() < total {
        if let Some(reason) = options.halt.as_ref().and_then(|halt| (halt.0)()) {
            bar.abandon_with_message("halted");
            bail!("{reason}; training stopped at step {} (its files from here on stay in {})", session.step(), writer.paths().dir.display());
        }
        if options.stop.load(Ordering::SeqCst) {
            checkpoint(writer, session, &trained_state)?;
            bar.abandon_with_message("stopped");
            return Ok(Outcome::Stopped { step: session.step() });
        }
        let next = match prefetched.take() {
            Some(p) => p,
            None => Prefetched::fetch(pipeline, &uploader, None)?,
        };
        // Checkpoints record the pipeline as of the batches trained on, not
        // of the one prefetched beyond them.
        trained_state = next.state_after;
        let lr = training.learning_rate.at(session.step(), total) as f32;
        let launched = clock.launch();
        session.train_step_on(&next.batch, lr)?;
        let pending = PendingStep::watch(launched, session.step_ready_events()?)?;
        // On an asynchronous plugin the step is only enqueued: upload the
        // next batch while the devices compute; the clock counts only the
        // part of that upload that outlasts the step as input time.
        if session.step() < total {
            prefetched = Some(Prefetched::fetch(pipeline, &uploader, Some(&pending))?);
        }
        let ready = pending.ready_at()?;
        let (device_s, input_s) = clock.finish(next.fetch, ready);
        writer.clock.device_s.push(device_s);
        writer.clock.input_s.push(input_s);
        let step = session.step();
        bar.set_position(step);

        let epoch_end = step.is_multiple_of(per_epoch);
        if step.is_multiple_of(logging.every_steps.max(1)) || epoch_end || step == total {
            window.extend(session.drain_metrics()?);
            if let Some(point) = train_point(&window, step, per_epoch, writer.clock.wall_s()) {
                if !point.loss.is_finite() {
                    bail!("the {kind} model's training loss diverged at step {step}; lower models.{kind}.learning_rate");
                }
                bar.set_message(format!("loss {:.3} acc {:.3}", point.loss, point.accuracy));
                writer.log_train(&point, lr)?;
                window.clear();
            }
        }
        let eval_due = (logging.eval_every_steps > 0 && step.is_multiple_of(logging.eval_every_steps)) || (logging.eval_every_epoch && epoch_end);
        if eval_due && step < total {
            let (loss, accuracy, _, _) = evaluate(session, data, training.batch as usize, false)?;
            writer.log_eval(&MetricPoint { step, epoch: step.div_ceil(per_epoch), wall_s: writer.clock.wall_s(), split: Split::Eval, loss, accuracy })?;
        }
        let checkpoint_due = if logging.checkpoint_every_steps > 0 { step.is_multiple_of(logging.checkpoint_every_steps) } else { epoch_end };
        if checkpoint_due && step < total {
            checkpoint(writer, session, &trained_state)?;
        }
    }

    // The final evaluation, with the confusion matrix of the eval split.
    let (loss, accuracy, confusion, per_source) = evaluate(session, data, training.batch as usize, true)?;
    let step = session.step();
    writer.log_eval(&MetricPoint { step, epoch: step.div_ceil(per_epoch), wall_s: writer.clock.wall_s(), split: Split::Eval, loss, accuracy })?;
    checkpoint(writer, session, &trained_state)?;
    bar.finish_with_message(format!("eval acc {accuracy:.3}"));
    Ok(Outcome::Finished { eval: SplitMetrics { step, loss, accuracy }, confusion, per_source })
}

/// A batch on the devices, with the pipeline's state after it and how long
/// the host took to get it there.
struct Prefetched {
    batch: DeviceBatch,
    state_after: PipelineState,
    fetch: Fetch,
}

impl Prefetched {
    /// Takes the next batch from the pipeline and uploads it, while the
    /// step `during` (if any) may still be running.
    fn fetch(pipeline: &mut TrainPipeline, uploader: &BatchUploader, during: Option<&PendingStep>) -> anyhow::Result<Self> {
        let fetch = Fetch::begin(during);
        let host = pipeline.next_batch().context("reading the next training batch")?;
        let batch = uploader.upload(&host.images, &host.labels)?;
        Ok(Prefetched { batch, state_after: pipeline.state(), fetch: fetch.end() })
    }
}

/// The record's [`Platform`] for `client` running a step over its first
/// `devices_used` devices (their kind is that of the first device): what
/// fills a record from a live client lives here, beside the one that runs
/// it, so that records stay plain files.
pub fn platform_of(client: &Client, devices_used: u32) -> Platform {
    let api = client.api();
    let (major, minor) = api.version();
    Platform {
        name: client.platform_name().to_string(),
        version: client.platform_version().to_string(),
        device_kind: client.devices().first().map(|d| d.kind.clone()).unwrap_or_default(),
        device_count: devices_used,
        plugin: api.path().display().to_string(),
        pjrt_api_version: format!("{major}.{minor}"),
        host: crate::records::host_name(),
    }
}

/// The element types of `program`'s convolutions and dots, for the record.
pub fn compute_types(program: &crate::program::Program) -> crate::records::ComputeTypes {
    // A conv part on oneDNN is a custom call, not a `stablehlo.convolution`:
    // its operands are what that part computes in.
    let mut convolution = program.operand_types("stablehlo.convolution");
    for target in ["emotionet_onednn_conv_fwd", "emotionet_onednn_conv_bwd_data", "emotionet_onednn_conv_bwd_weights"] {
        convolution.extend(program.operand_types(&format!("stablehlo.custom_call @{target}")));
    }
    crate::records::ComputeTypes { convolution: convolution.into_iter().collect(), dot: program.operand_types("stablehlo.dot_general").into_iter().collect() }
}

fn new_record(experiment: &Experiment, kind: ModelKind, options: &TrainOptions, client: &Client, devices: usize, training: &ModelTraining) -> RunRecord {
    let size = experiment.data.image_size;
    let backend = options.backend.kind;
    let mut notes = options.notes.clone();
    if let Some(file) = &options.experiment_file {
        notes.insert("experiment_file".into(), file.display().to_string());
    }
    // bf16 on a CPU: say what it means on this one (emulated without
    // AMX-BF16), in the log and in the record, so a slow bf16 row is read
    // for what it is.
    if training.precision == Precision::Bf16 && client.platform_name().eq_ignore_ascii_case("cpu") {
        let note = crate::machine::Machine::detect().bf16_note();
        tracing::warn!("{note}");
        notes.insert("cpu_bf16".into(), note);
    }
    RunRecord {
        schema: SCHEMA_VERSION,
        run_id: format!("{}/{kind}/{backend}/r{}", experiment.name, options.repeat),
        experiment: experiment.name.clone(),
        model: kind,
        backend,
        repeat: options.repeat,
        platform: platform_of(client, devices as u32),
        started_at: now_rfc3339(),
        finished_at: None,
        status: RunStatus::running_here(),
        config: RunConfig {
            image_size: ImageSize { height: size, width: size },
            batch: training.batch as u32,
            steps_per_epoch: training.steps_per_epoch,
            epochs: training.epochs,
            total_steps: training.total_steps(),
            optimizer: training.optimizer.name().to_string(),
            precision: Some(training.precision),
            compute_types: None,
            train_step_cost: None,
            cpu_kernels: None,
            learning_rate: Some(training.learning_rate.at(0, training.total_steps())),
            seed: Some(experiment.seed),
        },
        steps_done: 0,
        resumes: 0,
        timing: None,
        final_train: None,
        final_eval: None,
        class_names: experiment.task(kind).class_names().into_iter().map(String::from).collect(),
        confusion: None,
        per_source: Vec::new(),
        notes,
    }
}

/// The command line that continues a stopped run.
fn resume_command(experiment: &Experiment, kind: ModelKind, options: &TrainOptions) -> String {
    let file = options.experiment_file.as_ref().map_or_else(|| "EXPERIMENT.yaml".to_string(), |p| p.display().to_string());
    let out = options.out_label.clone().unwrap_or_else(|| experiment.output.display().to_string());
    let mut command = format!("emotionet train {file} --model {kind} --resume --out {out}");
    if options.backend.kind != experiment.backend.kind {
        command.push_str(&format!(" --backend {}", options.backend.kind));
    }
    if options.repeat != 0 {
        command.push_str(&format!(" --repeat {}", options.repeat));
    }
    command
}

/// The mean loss and accuracy over a window of steps.
fn train_point(window: &[StepMetrics], step: u64, per_epoch: u64, wall_s: f64) -> Option<MetricPoint> {
    if window.is_empty() {
        return None;
    }
    let n = window.len() as f64;
    let loss = window.iter().map(|m| m.loss as f64).sum::<f64>() / n;
    let examples: f64 = window.iter().map(|m| m.batch as f64).sum();
    let accuracy = window.iter().map(|m| m.correct as f64).sum::<f64>() / examples;
    Some(MetricPoint { step, epoch: step.div_ceil(per_epoch), wall_s, split: Split::Train, loss, accuracy })
}

/// Loss, accuracy and (if asked) the confusion matrix over the eval split,
/// overall and per data source (when the split mixes several).
fn evaluate(session: &TrainSession, data: &PreparedSet, batch: usize, confusion: bool) -> anyhow::Result<(f64, f64, Option<Confusion>, Vec<SourceEval>)> {
    let batches: Vec<_> = EvalBatches::new(&data.eval, batch)?.collect::<Result<_, _>>()?;
    let totals = session.evaluate(batches.iter().map(|b| (&b.images, &b.labels, b.valid)), confusion)?;
    let (matrix, per_source) = if confusion {
        let k = data.class_names.len();
        let predicted: Vec<usize> =
            totals.logits.chunks(k).map(|row| row.iter().enumerate().fold(0, |best, (i, v)| if *v > row[best] { i } else { best })).collect();
        let pairs = data.eval.labels.iter().zip(predicted.iter().copied()).map(|(&t, p)| (t as usize, p));
        let kind = |name: &str| data.source_kind(name).map_or_else(String::new, |k| k.to_string());
        let per_source = records::per_source(&data.class_names, &data.eval.labels, &predicted, &data.eval.source_names(), kind)?;
        (Some(Confusion::from_pairs(data.class_names.clone(), pairs)?), per_source)
    } else {
        (None, Vec::new())
    };
    Ok((totals.loss(), totals.accuracy(), matrix, per_source))
}

/// The named tensors of a checkpoint, in `names` order.
fn take_tensors(ck: &Checkpoint, names: &[String]) -> anyhow::Result<Vec<HostTensor>> {
    names
        .iter()
        .map(|n| {
            ck.tensor(n).cloned().with_context(|| format!("the checkpoint at step {} has no tensor {n}; it was written by another model or optimizer", ck.step))
        })
        .collect()
}

fn progress_bar(enabled: bool, total: u64, position: u64, kind: ModelKind) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} steps {per_sec} {msg} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(kind.to_string());
    bar.set_position(position);
    bar
}
