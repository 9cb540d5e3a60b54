//! One training run: one model of one experiment on one backend.
//!
//! The loop: prepared data -> background batch pipeline -> upload ->
//! fused train step (params stay on the devices) -> every `every_steps` the
//! metrics are read back and logged (TensorBoard + metrics.jsonl), the eval
//! split is run at the configured cadence, and checkpoints are written
//! atomically with everything a resumed run needs (parameters, optimizer
//! state, step, input-pipeline position, the step times so far). A stop
//! request (Ctrl-C, SIGTERM) checkpoints and returns; a killed process
//! resumes from its last checkpoint and reaches the same parameters as an
//! uninterrupted run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};

use crate::data::{EvalBatches, PipelineConfig, PipelineState, PrepOptions, PreparedSet, TrainPipeline, prepare};
use crate::experiment::{Experiment, ModelTraining};
use crate::models::{BatchUploader, DeviceBatch, ModelKind, SessionConfig, StepMetrics, TrainSession};
use crate::pjrt::{self, Backend, Client, ClientOptions};
use crate::records::{
    self, Confusion, ImageSize, MetricPoint, MetricsLog, Platform, RunConfig, RunPaths, RunRecord, RunStatus, SourceEval, Split, SplitMetrics, Timing,
    now_rfc3339,
};
use crate::tensor::HostTensor;

use super::checkpoint::{Checkpoint, CheckpointDir, META_EPOCH, META_EXPERIMENT_HASH, META_INPUT_PIPELINE};
use super::tensorboard::EventWriter;

/// Checkpoint metadata: step times of the attempts so far (JSON array).
const META_STEP_TIMES: &str = "step_times";
/// Checkpoint metadata: compile seconds and wall seconds of earlier attempts.
const META_COMPILE_S: &str = "compile_s";
const META_WALL_S: &str = "wall_s";

/// How a run is launched (what the experiment file does not say).
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// The run's folder (record, curve, event files, checkpoints).
    pub run_dir: PathBuf,
    /// Overrides the experiment's backend.
    pub backend: Option<Backend>,
    pub plugin: Option<PathBuf>,
    /// Continue from the newest checkpoint in `run_dir`, if any.
    pub resume: bool,
    /// Repeat index within a campaign.
    pub repeat: u32,
    /// Progress bars on stderr.
    pub progress: bool,
    /// Set to request a clean stop (checkpoint, then return).
    pub stop: Arc<AtomicBool>,
    /// Free-form notes copied into the record.
    pub notes: BTreeMap<String, String>,
}

impl TrainOptions {
    pub fn new(run_dir: impl Into<PathBuf>) -> Self {
        TrainOptions {
            run_dir: run_dir.into(),
            backend: None,
            plugin: None,
            resume: false,
            repeat: 0,
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            notes: BTreeMap::new(),
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

/// The folder of a run: `<output>/<experiment>/<model>/<backend>-r<repeat>`.
pub fn default_run_dir(experiment: &Experiment, kind: ModelKind, backend: Backend, repeat: u32) -> PathBuf {
    experiment.output.join(&experiment.name).join(kind.as_str()).join(format!("{backend}-r{repeat}"))
}

/// A short hash of the experiment's content, so that a checkpoint is never
/// resumed under a different experiment. Where runs are written (`output`,
/// `--out`) and the description are not part of what is trained, so they do
/// not enter the hash.
pub fn experiment_hash(experiment: &Experiment, kind: ModelKind) -> String {
    use sha2::{Digest, Sha256};
    let mut what = experiment.clone();
    what.output = PathBuf::new();
    what.description.clear();
    let text = serde_json::to_string(&(what, kind)).unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// Connects to the backend an experiment (or its override) asks for.
pub fn connect(experiment: &Experiment, backend: Backend, plugin: Option<&Path>) -> anyhow::Result<Client> {
    let mut options = ClientOptions::new();
    for text in &experiment.backend.client_options {
        options = options.parse_assignment(text)?;
    }
    let plugin = plugin.or(experiment.backend.plugin.as_deref());
    pjrt::connect(backend, plugin, &options).with_context(|| format!("cannot open the {backend} backend"))
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

/// Trains `kind` as `experiment` says. Returns the finished record, or an
/// [`Interrupted`] error after a clean stop.
pub fn train(experiment: &Experiment, kind: ModelKind, options: &TrainOptions) -> anyhow::Result<RunRecord> {
    let started = Instant::now();
    let training = experiment.training(kind).with_context(|| format!("the experiment {} has no `models.{kind}` section", experiment.name))?.clone();
    let backend = options.backend.unwrap_or(experiment.backend.kind);
    let paths = RunPaths::new(&options.run_dir);
    std::fs::create_dir_all(&options.run_dir).with_context(|| format!("creating {}", options.run_dir.display()))?;
    let hash = experiment_hash(experiment, kind);

    let data = prepare_data(experiment, kind, options.progress)?;
    let client = connect(experiment, backend, options.plugin.as_deref())?;
    let available = client.device_ids().len();
    let devices = experiment.backend.devices.resolve(available);
    if devices > available {
        bail!("the experiment asks for {devices} devices; the {backend} plugin offers {available}");
    }
    if training.batch % devices as i64 != 0 {
        bail!("models.{kind}.batch {} does not split over {devices} devices; use a multiple of {devices}", training.batch);
    }
    let arch = experiment.architecture(kind);
    let config = SessionConfig {
        kind,
        arch: arch.clone(),
        optimizer: training.optimizer.clone(),
        global_batch: training.batch,
        devices: client.device_ids()[..devices].to_vec(),
        xla_options: experiment.xla_options(),
    };

    let checkpoints = CheckpointDir::new(paths.checkpoints(), experiment.logging.keep_checkpoints.max(1))?;
    let resume_from = if options.resume { checkpoints.latest()? } else { None };
    if let Some(ck) = &resume_from {
        let theirs = ck.metadata.get(META_EXPERIMENT_HASH).map(String::as_str).unwrap_or("");
        if theirs != hash {
            bail!(
                "the checkpoint at step {} in {} belongs to a different experiment (hash {theirs}, now {hash}); move it away or train into a new folder",
                ck.step,
                checkpoints.dir().display()
            );
        }
    } else if !options.resume && paths.record().exists() {
        bail!("{} already holds a run; pass --resume to continue it or choose another --out", options.run_dir.display());
    }

    let pipeline_config = PipelineConfig::from_data_config(&experiment.data, training.batch as usize, experiment.seed);
    let train_split = Arc::new(data.train.clone());
    let mut pipeline = TrainPipeline::new(train_split, pipeline_config).context("starting the input pipeline")?;

    let (mut session, mut step_times, earlier_compile_s, earlier_wall_s, mut record) = match &resume_from {
        Some(ck) => {
            let params = take_tensors(ck, &arch.params().iter().map(|p| p.name.clone()).collect::<Vec<_>>())?;
            let state_names: Vec<String> = arch.params().iter().flat_map(|p| training.optimizer.state_names(&p.name)).collect();
            let state = take_tensors(ck, &state_names)?;
            let pipeline_state: PipelineState = serde_json::from_str(ck.metadata.get(META_INPUT_PIPELINE).map(String::as_str).unwrap_or("null"))
                .context("the checkpoint's input-pipeline state is unreadable")?;
            pipeline.restore(pipeline_state).context("restoring the input pipeline")?;
            let session = TrainSession::with_values(&client, config, experiment.seed, params, state, ck.step)?;
            let times: Vec<f64> = serde_json::from_str(ck.metadata.get(META_STEP_TIMES).map(String::as_str).unwrap_or("[]")).unwrap_or_default();
            let compile_s = ck.metadata.get(META_COMPILE_S).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let wall_s = ck.metadata.get(META_WALL_S).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            let mut record =
                RunRecord::load(&paths.record()).unwrap_or_else(|_| new_record(experiment, kind, backend, options, &client, devices, &training, &data));
            record.resumes += 1;
            record.status = RunStatus::Running;
            tracing::info!("resuming {kind} at step {} of {}", ck.step, training.total_steps());
            (session, times, compile_s, wall_s, record)
        }
        None => {
            let session = TrainSession::new(&client, config, experiment.seed)?;
            (session, Vec::new(), 0.0, 0.0, new_record(experiment, kind, backend, options, &client, devices, &training, &data))
        }
    };
    record.platform = Platform::from_client(&client, devices as u32);
    record.notes.extend(options.notes.clone());
    record.notes.insert("experiment_hash".into(), hash.clone());
    record.save(&paths.record())?;

    let compile_s = earlier_compile_s + session.compile_times.train_s + session.compile_times.eval_s;
    let mut metrics_log = match &resume_from {
        Some(ck) => MetricsLog::open_resumed(&paths.metrics(), ck.step)?,
        None => MetricsLog::open(&paths.metrics())?,
    };
    let mut events = EventWriter::create(&paths.tensorboard())?;
    if let Some(ck) = &resume_from {
        events.mark_restart(ck.step)?;
    }

    let total = training.total_steps();
    let per_epoch = training.steps_per_epoch;
    let logging = &experiment.logging;
    let bar = progress_bar(options.progress, total, session.step(), kind);
    let uploader = session.uploader();
    let mut window: Vec<StepMetrics> = Vec::new();
    let mut prefetched: Option<(DeviceBatch, PipelineState)> = None;
    let mut trained_state = pipeline.state();
    let wall = |started: &Instant| earlier_wall_s + started.elapsed().as_secs_f64();

    while session.step() < total {
        if options.stop.load(Ordering::SeqCst) {
            save_checkpoint(&checkpoints, &session, &trained_state, &hash, &step_times, compile_s, wall(&started), per_epoch)?;
            record.steps_done = session.step();
            record.timing = Some(Timing::from_step_times(compile_s, &step_times, training.batch as u32, wall(&started)));
            record.save(&paths.record())?;
            events.flush()?;
            metrics_log.sync()?;
            bar.abandon_with_message("stopped");
            return Err(Interrupted::Run { step: session.step(), total, dir: checkpoints.dir().to_path_buf() }.into());
        }
        let (device_batch, state_after) = match prefetched.take() {
            Some(b) => b,
            None => upload_next(&mut pipeline, &uploader)?,
        };
        // Checkpoints record the pipeline as of the batches trained on, not
        // of the one prefetched beyond them.
        trained_state = state_after;
        let lr = training.learning_rate.at(session.step(), total) as f32;
        let t = Instant::now();
        session.train_step_on(&device_batch, lr)?;
        // On an asynchronous plugin the step is only enqueued: upload the
        // next batch while the devices compute, then wait for the step.
        if session.step() < total {
            prefetched = Some(upload_next(&mut pipeline, &uploader)?);
        }
        session.wait()?;
        step_times.push(t.elapsed().as_secs_f64());
        let step = session.step();
        bar.set_position(step);

        let epoch_end = step % per_epoch == 0;
        if step % logging.every_steps.max(1) == 0 || epoch_end || step == total {
            window.extend(session.drain_metrics()?);
            if let Some(point) = train_point(&window, step, per_epoch, wall(&started)) {
                if !point.loss.is_finite() {
                    record.status = RunStatus::Failed { error: format!("the training loss diverged at step {step} (lower the learning rate)") };
                    record.steps_done = step;
                    record.save(&paths.record())?;
                    bail!("the {kind} model's training loss diverged at step {step}; lower models.{kind}.learning_rate");
                }
                bar.set_message(format!("loss {:.3} acc {:.3}", point.loss, point.accuracy));
                metrics_log.append(&point)?;
                events.add_metric_point(&point, &[("train/learning_rate", lr)])?;
                record.final_train = Some(SplitMetrics { step, loss: point.loss, accuracy: point.accuracy });
                window.clear();
            }
        }
        let eval_due = (logging.eval_every_steps > 0 && step % logging.eval_every_steps == 0) || (logging.eval_every_epoch && epoch_end);
        if eval_due && step < total {
            let (loss, accuracy, _, _) = evaluate(&session, &data, training.batch as usize, experiment, false)?;
            let point = MetricPoint { step, epoch: step.div_ceil(per_epoch), wall_s: wall(&started), split: Split::Eval, loss, accuracy };
            metrics_log.append(&point)?;
            events.add_metric_point(&point, &[])?;
        }
        let checkpoint_due = if logging.checkpoint_every_steps > 0 { step % logging.checkpoint_every_steps == 0 } else { epoch_end };
        if checkpoint_due && step < total {
            save_checkpoint(&checkpoints, &session, &trained_state, &hash, &step_times, compile_s, wall(&started), per_epoch)?;
            record.steps_done = step;
            record.timing = Some(Timing::from_step_times(compile_s, &step_times, training.batch as u32, wall(&started)));
            record.save(&paths.record())?;
            events.flush()?;
            metrics_log.sync()?;
        }
    }

    // The final evaluation, with the confusion matrix of the eval split.
    let (loss, accuracy, confusion, per_source) = evaluate(&session, &data, training.batch as usize, experiment, true)?;
    let step = session.step();
    let point = MetricPoint { step, epoch: step.div_ceil(per_epoch), wall_s: wall(&started), split: Split::Eval, loss, accuracy };
    metrics_log.append(&point)?;
    events.add_metric_point(&point, &[])?;
    save_checkpoint(&checkpoints, &session, &trained_state, &hash, &step_times, compile_s, wall(&started), per_epoch)?;
    bar.finish_with_message(format!("eval acc {accuracy:.3}"));

    record.final_eval = Some(SplitMetrics { step, loss, accuracy });
    record.confusion = confusion;
    record.per_source = per_source;
    record.steps_done = step;
    record.timing = Some(Timing::from_step_times(compile_s, &step_times, training.batch as u32, wall(&started)));
    record.finished_at = Some(now_rfc3339());
    record.status = RunStatus::Finished;
    record.save(&paths.record())?;
    events.flush()?;
    metrics_log.sync()?;
    Ok(record)
}

#[allow(clippy::too_many_arguments)]
fn new_record(
    experiment: &Experiment,
    kind: ModelKind,
    backend: Backend,
    options: &TrainOptions,
    client: &Client,
    devices: usize,
    training: &ModelTraining,
    data: &PreparedSet,
) -> RunRecord {
    let size = experiment.data.image_size;
    RunRecord {
        schema: crate::records::SCHEMA_VERSION,
        run_id: format!("{}/{kind}/{backend}/r{}", experiment.name, options.repeat),
        experiment: experiment.name.clone(),
        model: kind,
        backend,
        repeat: options.repeat,
        platform: Platform::from_client(client, devices as u32),
        started_at: now_rfc3339(),
        finished_at: None,
        status: RunStatus::Running,
        config: RunConfig {
            image_size: ImageSize { height: size, width: size },
            batch: training.batch as u32,
            steps_per_epoch: training.steps_per_epoch,
            epochs: training.epochs,
            total_steps: training.total_steps(),
            optimizer: training.optimizer.name().to_string(),
            learning_rate: Some(training.learning_rate.at(0, training.total_steps())),
            seed: Some(experiment.seed),
        },
        steps_done: 0,
        resumes: 0,
        timing: None,
        final_train: None,
        final_eval: None,
        class_names: data.class_names.clone(),
        confusion: None,
        per_source: Vec::new(),
        notes: BTreeMap::new(),
    }
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
fn evaluate(
    session: &TrainSession,
    data: &PreparedSet,
    batch: usize,
    experiment: &Experiment,
    confusion: bool,
) -> anyhow::Result<(f64, f64, Option<Confusion>, Vec<SourceEval>)> {
    let batches: Vec<_> = EvalBatches::new(&data.eval, batch, experiment.data.normalize)?.collect::<Result<_, _>>()?;
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

#[allow(clippy::too_many_arguments)]
fn save_checkpoint(
    dir: &CheckpointDir,
    session: &TrainSession,
    pipeline: &PipelineState,
    hash: &str,
    step_times: &[f64],
    compile_s: f64,
    wall_s: f64,
    per_epoch: u64,
) -> anyhow::Result<()> {
    let mut tensors = session.params_to_host()?;
    tensors.extend(session.state_to_host()?);
    let step = session.step();
    let mut metadata = BTreeMap::new();
    metadata.insert(META_EPOCH.to_string(), step.div_ceil(per_epoch).to_string());
    metadata.insert(META_INPUT_PIPELINE.to_string(), serde_json::to_string(pipeline)?);
    metadata.insert(META_EXPERIMENT_HASH.to_string(), hash.to_string());
    metadata.insert(META_STEP_TIMES.to_string(), serde_json::to_string(step_times)?);
    metadata.insert(META_COMPILE_S.to_string(), compile_s.to_string());
    metadata.insert(META_WALL_S.to_string(), wall_s.to_string());
    let path = dir.save(&Checkpoint { step, tensors, metadata })?;
    tracing::debug!("checkpoint {}", path.display());
    Ok(())
}

/// Takes the next batch from the pipeline and uploads it; returns it with
/// the pipeline's state after it.
fn upload_next(pipeline: &mut TrainPipeline, uploader: &BatchUploader) -> anyhow::Result<(DeviceBatch, PipelineState)> {
    let batch = pipeline.next_batch().context("reading the next training batch")?;
    Ok((uploader.upload(&batch.images, &batch.labels)?, pipeline.state()))
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
