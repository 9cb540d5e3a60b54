//! Everything a training run writes into its folder, owned by one value.
//!
//! A [`RunWriter`] holds the run's `record.json`, its `metrics.jsonl`, its
//! TensorBoard event file, its checkpoints and its clock, and is the only
//! code that writes them. The trainer hands it facts (a metric point, the
//! tensors at a step, an error) and it keeps the files consistent with each
//! other:
//! - a checkpoint is written together with everything a resume needs (the
//!   input pipeline's position, the experiment's hash, the time so far), and
//!   then the record, the metrics log and the event file are flushed, so a
//!   crash right after it loses nothing that the checkpoint claims;
//! - on resume, points logged after the checkpoint are cut from the metrics
//!   log and TensorBoard is told to drop them, because they will be logged
//!   again;
//! - the run ends in exactly one of [`RunWriter::finish`], [`RunWriter::stop`]
//!   or [`RunWriter::fail`], which write the record's final state.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, bail};

use super::tensorboard::EventWriter;
use super::trainer::Interrupted;
use crate::checkpoint::{Checkpoint, CheckpointDir, META_CPU_KERNELS, META_EPOCH, META_EXPERIMENT_HASH, META_INPUT_PIPELINE};
use crate::data::PipelineState;
use crate::records::{Confusion, MetricPoint, MetricsLog, RunPaths, RunRecord, RunStatus, SourceEval, SplitMetrics, Timing, now_rfc3339};

/// Checkpoint metadata: device time of every step so far (JSON array, seconds).
const META_STEP_TIMES: &str = "step_times";
/// Checkpoint metadata: input time of every step so far (JSON array, seconds).
const META_INPUT_TIMES: &str = "input_times";
/// Checkpoint metadata: compile seconds and wall seconds of earlier attempts.
const META_COMPILE_S: &str = "compile_s";
/// The record's note saying why it has no train step cost.
pub const NOTE_NO_STEP_COST: &str = "train_step_cost";
const META_WALL_S: &str = "wall_s";

/// The time a run has taken, over all its attempts (see [`Timing`] for the
/// definitions).
#[derive(Clone, Debug)]
pub struct RunClock {
    started: Instant,
    /// Wall seconds of the attempts before this one.
    earlier_wall_s: f64,
    pub compile_s: f64,
    /// Device time of each step, in order.
    pub device_s: Vec<f64>,
    /// Input time of each step, in order.
    pub input_s: Vec<f64>,
}

impl RunClock {
    fn new() -> Self {
        RunClock { started: Instant::now(), earlier_wall_s: 0.0, compile_s: 0.0, device_s: Vec::new(), input_s: Vec::new() }
    }

    /// The clock as a checkpoint left it; an attempt's time goes on from there.
    fn from_checkpoint(ck: &Checkpoint) -> anyhow::Result<Self> {
        let list = |key: &str| -> anyhow::Result<Vec<f64>> {
            match ck.metadata.get(key) {
                Some(text) => {
                    serde_json::from_str(text).with_context(|| format!("the checkpoint at step {}: metadata `{key}` is not a list of seconds", ck.step))
                }
                // Written before this key existed.
                None => Ok(Vec::new()),
            }
        };
        let seconds = |key: &str| -> anyhow::Result<f64> {
            match ck.metadata.get(key) {
                Some(text) => {
                    text.parse().with_context(|| format!("the checkpoint at step {}: metadata `{key}` = {text:?} is not a number of seconds", ck.step))
                }
                None => Ok(0.0),
            }
        };
        let device_s = list(META_STEP_TIMES)?;
        let mut input_s = list(META_INPUT_TIMES)?;
        // Checkpoints from before input time was measured: count it as zero
        // for those steps rather than misalign the two lists.
        if input_s.len() != device_s.len() {
            input_s = vec![0.0; device_s.len()];
        }
        Ok(RunClock { started: Instant::now(), earlier_wall_s: seconds(META_WALL_S)?, compile_s: seconds(META_COMPILE_S)?, device_s, input_s })
    }

    /// Seconds since the run first started, over every attempt.
    pub fn wall_s(&self) -> f64 {
        self.earlier_wall_s + self.started.elapsed().as_secs_f64()
    }

    pub fn timing(&self, batch: u32) -> Timing {
        Timing::from_steps(self.compile_s, &self.device_s, &self.input_s, batch, self.wall_s())
    }

    fn write_metadata(&self, metadata: &mut BTreeMap<String, String>) -> anyhow::Result<()> {
        metadata.insert(META_STEP_TIMES.into(), serde_json::to_string(&self.device_s)?);
        metadata.insert(META_INPUT_TIMES.into(), serde_json::to_string(&self.input_s)?);
        metadata.insert(META_COMPILE_S.into(), self.compile_s.to_string());
        metadata.insert(META_WALL_S.into(), self.wall_s().to_string());
        Ok(())
    }
}

/// A callback run after the writer has brought its files to disk.
#[derive(Clone)]
pub struct AfterFlush(pub std::sync::Arc<dyn Fn() + Send + Sync>);

impl AfterFlush {
    fn call(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for AfterFlush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AfterFlush(..)")
    }
}

/// How a run folder is opened.
pub struct RunStart {
    /// The record a fresh run starts from (status `running`).
    pub fresh: RunRecord,
    /// The experiment's content hash; checkpoints carry it.
    pub hash: String,
    pub keep_checkpoints: usize,
    /// Continue from the newest good checkpoint, if any.
    pub resume: bool,
    /// Steps per epoch, for the epoch of a checkpoint.
    pub steps_per_epoch: u64,
    /// The command line that resumes this run, for a stopped record.
    pub resume_command: String,
    /// Called after every checkpoint and every flush, once the files are
    /// whole on disk: a `gs://` output uploads them then.
    pub after_flush: Option<AfterFlush>,
}

/// What opening a run folder found.
pub enum Opened {
    /// Train, from `checkpoint` if there is one.
    Train { writer: Box<RunWriter>, checkpoint: Option<Box<Checkpoint>> },
    /// The folder holds a finished run of this experiment: nothing to do.
    Finished(Box<RunRecord>),
}

/// The one writer of a run folder (see the module docs).
pub struct RunWriter {
    paths: RunPaths,
    record: RunRecord,
    metrics: MetricsLog,
    events: EventWriter,
    checkpoints: CheckpointDir,
    hash: String,
    steps_per_epoch: u64,
    resume_command: String,
    after_flush: Option<AfterFlush>,
    pub clock: RunClock,
}

impl RunWriter {
    /// Opens `paths` for a run: a fresh one (refusing a folder that already
    /// holds a run, unless resuming), or a resumed one from its newest good
    /// checkpoint. The record is written (`running`, this process) before
    /// this returns.
    pub fn open(paths: RunPaths, start: RunStart) -> anyhow::Result<Opened> {
        std::fs::create_dir_all(&paths.dir).with_context(|| format!("creating {}", paths.dir.display()))?;
        let checkpoints = CheckpointDir::new(paths.checkpoints(), start.keep_checkpoints.max(1))?;
        let existing = if paths.record().exists() { Some(RunRecord::load(&paths.record())?) } else { None };
        if !start.resume && existing.is_some() {
            bail!("{} already holds a run; pass --resume to continue it or choose another --out", paths.dir.display());
        }
        if let Some(record) = &existing {
            if record.notes.get(META_EXPERIMENT_HASH).is_some_and(|then| *then != start.hash) {
                bail!(
                    "{} was trained from a different version of the experiment (hash {} there, {} now); move it away or train into a new folder",
                    paths.dir.display(),
                    record.notes[META_EXPERIMENT_HASH],
                    start.hash
                );
            }
            if record.status == RunStatus::Finished {
                return Ok(Opened::Finished(Box::new(record.clone())));
            }
        }
        let checkpoint = if start.resume { checkpoints.latest()? } else { None };
        let (record, clock, metrics, events) = match (&checkpoint, existing) {
            (Some(ck), existing) => {
                let theirs = ck.metadata.get(META_EXPERIMENT_HASH).map(String::as_str).unwrap_or("");
                if theirs != start.hash {
                    bail!(
                        "the checkpoint at step {} in {} belongs to a different experiment (hash {theirs}, now {}); move it away or train into a new folder",
                        ck.step,
                        checkpoints.dir().display(),
                        start.hash
                    );
                }
                // A checkpoint without its record (deleted by hand, or a
                // crash between the two) resumes under a fresh record.
                let mut record = existing.unwrap_or_else(|| start.fresh.clone());
                record.resumes += 1;
                record.steps_done = ck.step;
                record.finished_at = None;
                tracing::info!("resuming at step {} of {}", ck.step, record.config.total_steps);
                let mut events = EventWriter::create(&paths.tensorboard())?;
                events.mark_restart(ck.step)?;
                (record, RunClock::from_checkpoint(ck)?, MetricsLog::open_resumed(&paths.metrics(), ck.step)?, events)
            }
            // Nothing to resume from: start over (a previous attempt that died
            // before its first checkpoint leaves only a curve to cut).
            (None, existing) => {
                let mut record = start.fresh.clone();
                if let Some(old) = existing {
                    record.resumes = old.resumes + 1;
                }
                (record, RunClock::new(), MetricsLog::open_resumed(&paths.metrics(), 0)?, EventWriter::create(&paths.tensorboard())?)
            }
        };
        let mut writer = RunWriter {
            paths,
            record,
            metrics,
            events,
            checkpoints,
            hash: start.hash,
            steps_per_epoch: start.steps_per_epoch,
            resume_command: start.resume_command,
            after_flush: start.after_flush,
            clock,
        };
        writer.record.status = RunStatus::running_here();
        writer.record.platform = start.fresh.platform;
        // Same experiment hash, same precision; an older record may lack it.
        writer.record.config.precision = start.fresh.config.precision;
        writer.record.notes.extend(start.fresh.notes);
        writer.record.notes.insert(META_EXPERIMENT_HASH.into(), writer.hash.clone());
        writer.save_record()?;
        if let Some(hook) = &writer.after_flush {
            hook.call();
        }
        Ok(Opened::Train { writer: Box::new(writer), checkpoint: checkpoint.map(Box::new) })
    }

    pub fn paths(&self) -> &RunPaths {
        &self.paths
    }

    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// What the compiled train step computes its convolutions and dots in
    /// (the proof of the record's precision), written to the record now.
    pub fn set_compute_types(&mut self, types: crate::records::ComputeTypes) -> anyhow::Result<()> {
        self.record.config.compute_types = Some(types);
        self.save_record()
    }

    /// The train step's cost analysis from the plugin that compiled it, or
    /// why there is none (kept in the record's notes).
    pub fn set_train_step_cost(&mut self, cost: Result<crate::records::StepCost, String>) -> anyhow::Result<()> {
        match cost {
            Ok(cost) => {
                self.record.config.train_step_cost = Some(cost);
                self.record.notes.remove(NOTE_NO_STEP_COST);
            }
            Err(why) => {
                self.record.config.train_step_cost = None;
                self.record.notes.insert(NOTE_NO_STEP_COST.into(), why);
            }
        }
        self.save_record()
    }

    /// The CPU kernels the run trains with, written to the record now and
    /// to every checkpoint from here on.
    pub fn set_cpu_kernels(&mut self, choice: crate::models::KernelChoice) -> anyhow::Result<()> {
        self.record.config.cpu_kernels = Some(choice);
        self.save_record()
    }

    /// Training loss and accuracy over the last window of steps.
    pub fn log_train(&mut self, point: &MetricPoint, learning_rate: f32) -> anyhow::Result<()> {
        self.metrics.append(point)?;
        self.events.add_metric_point(point, &[("train/learning_rate", learning_rate)])?;
        self.record.final_train = Some(SplitMetrics { step: point.step, loss: point.loss, accuracy: point.accuracy });
        Ok(())
    }

    /// Loss and accuracy on the eval split.
    pub fn log_eval(&mut self, point: &MetricPoint) -> anyhow::Result<()> {
        self.metrics.append(point)?;
        self.events.add_metric_point(point, &[])?;
        Ok(())
    }

    /// Saves the training state at `step` (the tensors by name, and the
    /// input pipeline as of the batches trained on), then brings the record,
    /// the metrics log and the event file up to the same step.
    pub fn checkpoint(&mut self, step: u64, tensors: Vec<(String, crate::tensor::HostTensor)>, pipeline: &PipelineState) -> anyhow::Result<()> {
        let mut metadata = BTreeMap::new();
        metadata.insert(META_EPOCH.to_string(), step.div_ceil(self.steps_per_epoch.max(1)).to_string());
        metadata.insert(META_INPUT_PIPELINE.to_string(), serde_json::to_string(pipeline)?);
        metadata.insert(META_EXPERIMENT_HASH.to_string(), self.hash.clone());
        if let Some(choice) = &self.record.config.cpu_kernels {
            metadata.insert(META_CPU_KERNELS.to_string(), serde_json::to_string(choice)?);
        }
        self.clock.write_metadata(&mut metadata)?;
        let path = self.checkpoints.save(&Checkpoint { step, tensors, metadata })?;
        tracing::debug!("checkpoint {}", path.display());
        self.record.steps_done = step;
        self.flush()
    }

    /// Ends a run stopped on request at `step` (after its checkpoint): the
    /// record says `stopped` and how to resume; the error says it too.
    pub fn stop(mut self, step: u64) -> anyhow::Error {
        let total = self.record.config.total_steps;
        self.record.status = RunStatus::Stopped { step, resume: self.resume_command.clone() };
        if let Err(e) = self.flush() {
            return e.context("recording the stop");
        }
        Interrupted::Run { step, total, dir: self.checkpoints.dir().to_path_buf() }.into()
    }

    /// Ends a run that failed with `error`: the record says `failed` and
    /// why, so that whoever started the run reads the reason from the record
    /// rather than from a log. Returns `error` for the caller to pass on.
    pub fn fail(mut self, error: anyhow::Error) -> anyhow::Error {
        self.record.status = RunStatus::Failed { error: crate::errors::chain_text(&*error) };
        match self.flush() {
            Ok(()) => error,
            Err(e) => error.context(format!("the record could not say so either: {}", crate::errors::chain_text(&*e))),
        }
    }

    /// Ends a finished run with its final evaluation (overall and, where
    /// the eval split mixes data sources, per source).
    pub fn finish(mut self, eval: SplitMetrics, confusion: Option<Confusion>, per_source: Vec<SourceEval>) -> anyhow::Result<RunRecord> {
        self.record.final_eval = Some(eval);
        self.record.confusion = confusion;
        self.record.per_source = per_source;
        self.record.finished_at = Some(now_rfc3339());
        self.record.status = RunStatus::Finished;
        self.flush()?;
        Ok(self.record)
    }

    fn save_record(&mut self) -> anyhow::Result<()> {
        self.record.timing = Some(self.clock.timing(self.record.config.batch));
        self.record.save(&self.paths.record())?;
        Ok(())
    }

    /// Record, curve and events, all to disk; then the after-flush hook.
    fn flush(&mut self) -> anyhow::Result<()> {
        self.events.flush()?;
        self.metrics.sync()?;
        self.save_record()?;
        if let Some(hook) = &self.after_flush {
            hook.call();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint_with(metadata: &[(&str, &str)]) -> Checkpoint {
        Checkpoint { step: 4, tensors: vec![], metadata: metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }

    #[test]
    fn the_clock_goes_on_from_a_checkpoint() {
        let ck =
            checkpoint_with(&[(META_STEP_TIMES, "[0.5,0.1,0.1,0.1]"), (META_INPUT_TIMES, "[0.2,0.0,0.01,0.0]"), (META_COMPILE_S, "1.5"), (META_WALL_S, "3")]);
        let clock = RunClock::from_checkpoint(&ck).unwrap();
        assert_eq!(clock.device_s.len(), 4);
        assert_eq!(clock.compile_s, 1.5);
        assert!(clock.wall_s() >= 3.0);
        let timing = clock.timing(10);
        assert_eq!(timing.steady_step_s, Some(0.1));
        assert!((timing.input_wait_s.unwrap() - 0.21).abs() < 1e-12);
    }

    #[test]
    fn unreadable_step_times_are_an_error_not_an_empty_list() {
        let err = RunClock::from_checkpoint(&checkpoint_with(&[(META_STEP_TIMES, "[0.5, oops")])).unwrap_err();
        assert!(format!("{err:#}").contains("step_times"), "{err:#}");
        let err = RunClock::from_checkpoint(&checkpoint_with(&[(META_COMPILE_S, "soon")])).unwrap_err();
        assert!(format!("{err:#}").contains("compile_s"), "{err:#}");
        // Older checkpoints without input times still load, with zeros.
        let old = RunClock::from_checkpoint(&checkpoint_with(&[(META_STEP_TIMES, "[0.5,0.1]")])).unwrap();
        assert_eq!(old.input_s, vec![0.0, 0.0]);
    }
}
