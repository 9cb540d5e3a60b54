//! Run records: the files that trainer, orchestrator, evaluator and report
//! agree on. Every number in a report is read from one of these.
//!
//! Where each file lives is [`RunLayout`]'s business (`layout.rs`). A run
//! directory holds (see [`RunPaths`]):
//! - `record.json`: one [`RunRecord`], rewritten atomically as the run goes
//!   (`running`, then `finished` or `failed`);
//! - `metrics.jsonl`: the training curve, one [`MetricPoint`] per line;
//! - `checkpoints/` and `tensorboard/`, owned by `train`.
//!
//! An evaluation directory holds `hierarchy.json`, one [`HierarchyEval`].
//!
//! Every JSON file carries `schema` ([`SCHEMA_VERSION`]); readers refuse
//! other versions and unknown fields with an error naming the file. This
//! module owns the formats and their validation; it never decides how runs
//! are scheduled or what goes into a report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

pub use crate::backend::Backend;
use crate::fsutil::{self, FsError};

mod confusion;
mod hierarchy;
mod layout;
mod metrics;
mod sources;

pub use confusion::Confusion;
pub use hierarchy::{EMOTION_ALONE, FACE_FILTER_AND_EMOTION, FACE_LEVEL_LABELS, HierarchyEval, SourceTable, TableRow};
pub use layout::{
    CAMPAIGN_STATE_FILE, CHECKPOINT_DIR, EVAL_LOG, HIERARCHY_FILE, METRICS_FILE, PREDICTIONS_FILE, RECORD_FILE, REPORT_DIR, RunLayout, RunPaths,
    TENSORBOARD_DIR, TRAIN_LOG,
};
pub use metrics::{MetricPoint, MetricsFile, MetricsLog, Split, read_metrics};
pub use sources::{SourceEval, per_source};

/// The version of every record format in this module.
pub const SCHEMA_VERSION: u32 = 1;

/// Why a record could not be read, validated or written. Every variant names
/// the file (or the matrix) at fault.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid record: {source}")]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("cannot encode {path}: {source}")]
    Serialize { path: PathBuf, source: serde_json::Error },
    #[error("{path}: schema {found} is not supported (this emotionet reads schema {supported})")]
    Schema { path: PathBuf, found: u32, supported: u32 },
    #[error("{path}: field `{field}`: {reason}")]
    Invalid { path: PathBuf, field: String, reason: String },
    #[error("{path}: {what} is not a finite number")]
    NonFinite { path: PathBuf, what: String },
    #[error("{path} line {line}: {source}")]
    MetricsLine { path: PathBuf, line: usize, source: serde_json::Error },
    #[error("confusion matrix of {context}: {reason}")]
    Confusion { context: String, reason: String },
    #[error("class index out of range: truth {truth}, predicted {predicted}, {classes} classes")]
    ClassIndex { truth: usize, predicted: usize, classes: usize },
    #[error(transparent)]
    Fs(#[from] FsError),
}

pub use crate::models::{ModelKind, Precision};
use crate::tensor::DType;

/// Where a run is in its life, as its trainer last wrote it. A reader that
/// wants to know whether a `running` run is really still running asks
/// [`RunStatus::observed`], which looks at the writing process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase", deny_unknown_fields)]
pub enum RunStatus {
    /// A trainer is training it; `process` says which (absent in records
    /// written before it was kept).
    Running {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        process: Option<RunProcess>,
    },
    Finished,
    /// The trainer stopped with this error.
    Failed {
        error: String,
    },
    /// Stopped on request (Ctrl-C, SIGTERM) after a checkpoint at `step`;
    /// `resume` is the command line that continues it.
    Stopped {
        step: u64,
        resume: String,
    },
}

impl RunStatus {
    /// `running` for this process.
    pub fn running_here() -> Self {
        RunStatus::Running { process: Some(RunProcess::current()) }
    }

    pub fn label(&self) -> &'static str {
        match self {
            RunStatus::Running { .. } => "running",
            RunStatus::Finished => "finished",
            RunStatus::Failed { .. } => "failed",
            RunStatus::Stopped { .. } => "stopped",
        }
    }

    /// What the status means now: a `running` record whose process is gone
    /// (killed, crashed, machine rebooted) is [`Observed::Interrupted`].
    pub fn observed(&self) -> Observed {
        match self {
            RunStatus::Running { process: Some(p) } => match p.is_alive() {
                Some(false) => Observed::Interrupted,
                Some(true) => Observed::Running,
                None => Observed::RunningElsewhere,
            },
            RunStatus::Running { process: None } => Observed::RunningElsewhere,
            RunStatus::Finished => Observed::Finished,
            RunStatus::Failed { .. } => Observed::Failed,
            RunStatus::Stopped { .. } => Observed::Stopped,
        }
    }
}

/// A run's state as seen by a reader now (see [`RunStatus::observed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Observed {
    /// Its process is alive on this machine.
    Running,
    /// Written as running by a process we cannot check (another machine,
    /// or a record that names none).
    RunningElsewhere,
    /// Written as running by a process that is gone: it died without a word.
    Interrupted,
    Finished,
    Failed,
    Stopped,
}

impl Observed {
    pub fn label(self) -> &'static str {
        match self {
            Observed::Running => "running",
            Observed::RunningElsewhere => "running (elsewhere)",
            Observed::Interrupted => "interrupted",
            Observed::Finished => "finished",
            Observed::Failed => "failed",
            Observed::Stopped => "stopped",
        }
    }
}

/// The process writing a run: enough to tell later whether it still lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunProcess {
    pub pid: u32,
    pub host: String,
    /// The process's start time in clock ticks since boot (Linux
    /// `/proc/<pid>/stat` field 22), so a reused PID is not taken for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
}

impl RunProcess {
    pub fn current() -> Self {
        let pid = std::process::id();
        RunProcess { pid, host: host_name(), start_ticks: process_start_ticks(pid) }
    }

    /// `Some(alive)` when the process ran on this machine and we can look;
    /// `None` for another host, or a system without `/proc`.
    pub fn is_alive(&self) -> Option<bool> {
        if self.host != host_name() || !Path::new("/proc/self/stat").exists() {
            return None;
        }
        match process_start_ticks(self.pid) {
            None => Some(false),
            Some(now) => Some(self.start_ticks.is_none_or(|then| then == now)),
        }
    }
}

/// Field 22 of `/proc/<pid>/stat`; `None` when there is no such process.
fn process_start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// What ran the program, as plain facts (the trainer fills it from its
/// PJRT client: `train::platform_of`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Platform {
    /// PJRT platform name, e.g. "cpu", "cuda", "tpu".
    pub name: String,
    /// PJRT platform version string.
    pub version: String,
    /// Device kind of the devices used, e.g. "cpu", "NVIDIA H200", "TPU v3".
    pub device_kind: String,
    /// Devices the step was spread over (data parallel).
    pub device_count: u32,
    /// Path of the plugin library loaded.
    pub plugin: String,
    /// PJRT C API version the plugin reported, "major.minor".
    pub pjrt_api_version: String,
    /// Host name of the machine that drove the run.
    pub host: String,
}

/// Input height and width in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSize {
    pub height: u32,
    pub width: u32,
}

impl std::fmt::Display for ImageSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

/// The schedule a run was asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    pub image_size: ImageSize,
    /// Global batch (over all devices).
    pub batch: u32,
    pub steps_per_epoch: u64,
    pub epochs: u64,
    /// Steps planned: normally `steps_per_epoch * epochs`.
    pub total_steps: u64,
    /// e.g. "sgd", "momentum", "adam".
    pub optimizer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    /// What the network computed in (`models.<kind>.precision`). Absent in
    /// records written before precision was recorded: unknown, never
    /// assumed to be f32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// The proof of `precision`: the element types of the operands of the
    /// train step's convolutions and dots, read from the program the run
    /// compiled. Absent until the run compiled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compute_types: Option<ComputeTypes>,
    /// What the compiler that ran the train step says one step costs, from
    /// the executable's cost analysis on the platform it ran on. Absent in
    /// older records and where the plugin gives no cost analysis (the run's
    /// notes then say why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_step_cost: Option<StepCost>,
    /// Who computed each part of each conv layer on a CPU (XLA's op or
    /// oneDNN's kernel) and why: forced, measured, cached or kept from the
    /// checkpoint. Absent in records written before the choice existed
    /// (those runs used XLA's ops) and until the run chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_kernels: Option<crate::models::KernelChoice>,
}

/// One train step's cost per device (replica), as the compiler that ran it
/// counts it: the whole step runs once on every device at the same time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepCost {
    pub flops: f64,
    pub bytes_accessed: f64,
}

/// The element types a compiled train step's convolutions and dots take
/// (the operands of every `stablehlo.convolution`, oneDNN conv custom call
/// and `stablehlo.dot_general` in the program handed to the compiler).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComputeTypes {
    pub convolution: Vec<DType>,
    pub dot: Vec<DType>,
}

impl ComputeTypes {
    /// e.g. "conv bf16, dot bf16"; "conv bf16/f32" when they are mixed.
    pub fn label(&self) -> String {
        let list = |v: &[DType]| if v.is_empty() { "none".to_string() } else { v.iter().map(|d| d.mlir_name()).collect::<Vec<_>>().join("/") };
        format!("conv {}, dot {}", list(&self.convolution), list(&self.dot))
    }
}

/// Where the time went, in seconds. Definitions (used identically by every
/// trainer so runs compare):
/// - `compile_s`: compiling every program (train and eval step) before step 1;
/// - a step's *device time* runs from launching the training step to its
///   outputs being ready on every replica; uploading the next batch is not
///   part of it, on a synchronous plugin (CPU) or an asynchronous one;
/// - a step's *input time* is what the host spent getting the batch of that
///   step onto the devices while no step was running (the input pipeline
///   and the upload, minus whatever overlapped the previous step);
/// - `first_step_s`: device time of step 1 (one-time transfers, autotuning);
/// - `steady_step_s`: median device time of steps 2..N;
/// - `train_wall_s`: sum of every step's device time, step 1 included;
/// - `input_wait_s`: sum of every step's input time;
/// - `input_step_s`: median input time of steps 2..N;
/// - `total_wall_s`: start to end of the run: compile, steps, input, evals
///   and checkpoints;
/// - `images_per_s`: global batch / `steady_step_s`.
///
/// For a resumed run, each figure covers every attempt (compile time adds up).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    pub compile_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_step_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steady_step_s: Option<f64>,
    pub train_wall_s: f64,
    /// Absent in records written before input time was measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_wait_s: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_step_s: Option<f64>,
    pub total_wall_s: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_per_s: Option<f64>,
}

/// A run is input-bound when its devices waited for input at least this
/// share of the training loop (device time + input time).
pub const INPUT_BOUND_SHARE: f64 = 0.2;

impl Timing {
    /// Derives the step figures from each step's device and input time, in
    /// step order, so that every trainer computes them the same way.
    pub fn from_steps(compile_s: f64, device_s: &[f64], input_s: &[f64], batch: u32, total_wall_s: f64) -> Timing {
        let steady_step_s = median(device_s.get(1..).unwrap_or(&[]));
        Timing {
            compile_s,
            first_step_s: device_s.first().copied(),
            steady_step_s,
            train_wall_s: device_s.iter().sum(),
            input_wait_s: Some(input_s.iter().sum()),
            input_step_s: median(input_s.get(1..).unwrap_or(&[])),
            total_wall_s,
            images_per_s: steady_step_s.filter(|&s| s > 0.0).map(|s| f64::from(batch) / s),
        }
    }

    /// Time outside compilation, training steps and input (evals,
    /// checkpoints); never negative.
    pub fn other_s(&self) -> f64 {
        (self.total_wall_s - self.compile_s - self.train_wall_s - self.input_wait_s.unwrap_or(0.0)).max(0.0)
    }

    /// The share of the training loop the devices spent waiting for input;
    /// `None` when it was not measured or nothing ran.
    pub fn input_share(&self) -> Option<f64> {
        let input = self.input_wait_s?;
        let looped = input + self.train_wall_s;
        (looped > 0.0).then(|| input / looped)
    }

    /// Whether the devices waited for input at least [`INPUT_BOUND_SHARE`] of the time.
    pub fn input_bound(&self) -> bool {
        self.input_share().is_some_and(|s| s >= INPUT_BOUND_SHARE)
    }

    fn fields(&self) -> [(&'static str, Option<f64>); 8] {
        [
            ("compile_s", Some(self.compile_s)),
            ("first_step_s", self.first_step_s),
            ("steady_step_s", self.steady_step_s),
            ("train_wall_s", Some(self.train_wall_s)),
            ("input_wait_s", self.input_wait_s),
            ("input_step_s", self.input_step_s),
            ("total_wall_s", Some(self.total_wall_s)),
            ("images_per_s", self.images_per_s),
        ]
    }
}

/// Loss and accuracy on one split at one step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitMetrics {
    pub step: u64,
    /// NaN (stored as `null`) when training diverged.
    #[serde(deserialize_with = "null_as_nan")]
    pub loss: f64,
    pub accuracy: f64,
}

/// One training run of one model on one backend: `record.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRecord {
    pub schema: u32,
    /// Unique within a runs directory, e.g. "paper-cpu/face/cpu/r0".
    pub run_id: String,
    /// Experiment name (the experiment file's stem).
    pub experiment: String,
    pub model: ModelKind,
    pub backend: Backend,
    /// Repeat index when a campaign runs the same thing several times.
    #[serde(default)]
    pub repeat: u32,
    pub platform: Platform,
    /// RFC 3339 UTC, see [`now_rfc3339`].
    pub started_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    pub status: RunStatus,
    pub config: RunConfig,
    /// Optimizer steps completed so far.
    #[serde(default)]
    pub steps_done: u64,
    /// How many times the run was resumed from a checkpoint.
    #[serde(default)]
    pub resumes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
    /// Last logged training metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_train: Option<SplitMetrics>,
    /// Metrics of the final evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_eval: Option<SplitMetrics>,
    /// Class names in logit order.
    pub class_names: Vec<String>,
    /// Confusion matrix of the final evaluation, over `class_names`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confusion: Option<Confusion>,
    /// The final evaluation per data source, when the eval split mixes
    /// several (e.g. the synthetic set and real photographs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_source: Vec<SourceEval>,
    /// Free-form key/values (experiment hash, git commit, dataset ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, String>,
}

impl RunRecord {
    /// Checks everything a reader relies on; `path` is used in errors.
    pub fn validate(&self, path: &Path) -> Result<(), RecordError> {
        check_schema(path, self.schema)?;
        let invalid = |field: &str, reason: String| RecordError::Invalid { path: path.to_path_buf(), field: field.to_string(), reason };
        if self.run_id.trim().is_empty() {
            return Err(invalid("run_id", "must not be empty".into()));
        }
        check_timestamp(path, "started_at", &self.started_at)?;
        if let Some(t) = &self.finished_at {
            check_timestamp(path, "finished_at", t)?;
        }
        if self.platform.device_count == 0 {
            return Err(invalid("platform.device_count", "must be at least 1".into()));
        }
        let c = &self.config;
        if c.batch == 0 || c.image_size.height == 0 || c.image_size.width == 0 {
            return Err(invalid("config", format!("batch {} and image size {} must be positive", c.batch, c.image_size)));
        }
        if self.steps_done > c.total_steps {
            return Err(invalid("steps_done", format!("{} is more than total_steps {}", self.steps_done, c.total_steps)));
        }
        if self.class_names.is_empty() {
            return Err(invalid("class_names", "must name at least one class".into()));
        }
        if let Some(timing) = &self.timing {
            for (name, value) in timing.fields() {
                if let Some(v) = value
                    && (!v.is_finite() || v < 0.0)
                {
                    return Err(invalid(&format!("timing.{name}"), format!("{v} is not a non-negative number of seconds")));
                }
            }
        }
        for (name, m) in [("final_train", &self.final_train), ("final_eval", &self.final_eval)] {
            if let Some(m) = m
                && !(0.0..=1.0).contains(&m.accuracy)
            {
                return Err(invalid(&format!("{name}.accuracy"), format!("{} is not in [0, 1]", m.accuracy)));
            }
        }
        if let Some(conf) = &self.confusion {
            conf.validate(&path.display().to_string())?;
            if conf.labels != self.class_names {
                return Err(invalid("confusion.labels", format!("{:?} differ from class_names {:?}", conf.labels, self.class_names)));
            }
        }
        for (i, s) in self.per_source.iter().enumerate() {
            s.validate(&format!("{} (per_source[{i}])", path.display()), &self.class_names).map_err(|reason| invalid(&format!("per_source[{i}]"), reason))?;
        }
        if self.status == RunStatus::Finished {
            for (field, present) in
                [("finished_at", self.finished_at.is_some()), ("timing", self.timing.is_some()), ("final_train", self.final_train.is_some())]
            {
                if !present {
                    return Err(invalid(field, "a finished run must have it".into()));
                }
            }
        }
        Ok(())
    }

    /// Reads and validates a `record.json`.
    pub fn load(path: &Path) -> Result<Self, RecordError> {
        let record: RunRecord = read_json(path)?;
        record.validate(path)?;
        Ok(record)
    }

    /// Validates, then replaces `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), RecordError> {
        self.validate(path)?;
        write_json(path, self)
    }
}

/// The current time as RFC 3339 UTC with milliseconds, e.g.
/// `2025-01-31T12:00:00.123Z`: the form every record timestamp uses.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// This machine's host name (for records and TensorBoard file names);
/// "localhost" when the system will not say.
pub fn host_name() -> String {
    let from_file = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_string())
}

/// Median of a sample; `None` when empty. NaNs sort last.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

pub(crate) fn check_schema(path: &Path, found: u32) -> Result<(), RecordError> {
    if found == SCHEMA_VERSION { Ok(()) } else { Err(RecordError::Schema { path: path.to_path_buf(), found, supported: SCHEMA_VERSION }) }
}

pub(crate) fn check_timestamp(path: &Path, field: &str, value: &str) -> Result<(), RecordError> {
    humantime::parse_rfc3339_weak(value).map(|_| ()).map_err(|e| RecordError::Invalid {
        path: path.to_path_buf(),
        field: field.to_string(),
        reason: format!("{value:?} is not an RFC 3339 UTC time like 2025-01-31T12:00:00Z ({e})"),
    })
}

/// JSON has no NaN: serde_json writes non-finite floats as `null`; read
/// `null` back as NaN so a diverged loss survives a round trip.
pub(crate) fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, RecordError> {
    let bytes = std::fs::read(path).map_err(|source| RecordError::Read { path: path.to_path_buf(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| RecordError::Parse { path: path.to_path_buf(), source })
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), RecordError> {
    let mut text = serde_json::to_string_pretty(value).map_err(|source| RecordError::Serialize { path: path.to_path_buf(), source })?;
    text.push('\n');
    fsutil::write_atomic(path, text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_record() -> RunRecord {
        RunRecord {
            schema: SCHEMA_VERSION,
            run_id: "smoke/face/cpu/r0".into(),
            experiment: "smoke".into(),
            model: ModelKind::Face,
            backend: Backend::Cpu,
            repeat: 0,
            platform: Platform {
                name: "cpu".into(),
                version: "0.0.1".into(),
                device_kind: "cpu".into(),
                device_count: 1,
                plugin: ".deps/pjrt/xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so".into(),
                pjrt_api_version: "0.81".into(),
                host: "ci".into(),
            },
            started_at: "2025-01-31T12:00:00.000Z".into(),
            finished_at: Some("2025-01-31T12:03:00.000Z".into()),
            status: RunStatus::Finished,
            config: RunConfig {
                image_size: ImageSize { height: 32, width: 32 },
                batch: 20,
                steps_per_epoch: 5,
                epochs: 4,
                total_steps: 20,
                optimizer: "adam".into(),
                learning_rate: Some(1e-3),
                seed: Some(7),
                precision: Some(Precision::F32),
                compute_types: Some(ComputeTypes { convolution: vec![DType::F32], dot: vec![DType::F32] }),
                train_step_cost: None,
                cpu_kernels: None,
            },
            steps_done: 20,
            resumes: 0,
            timing: Some(Timing::from_steps(2.5, &[1.0, 0.1, 0.3, 0.2], &[0.05, 0.01, 0.01, 0.02], 20, 5.0)),
            final_train: Some(SplitMetrics { step: 20, loss: 0.2, accuracy: 0.95 }),
            final_eval: Some(SplitMetrics { step: 20, loss: f64::NAN, accuracy: 0.9 }),
            class_names: vec!["not a face".into(), "face".into()],
            confusion: Some(Confusion { labels: vec!["not a face".into(), "face".into()], matrix: vec![vec![9, 1], vec![1, 9]] }),
            per_source: Vec::new(),
            notes: BTreeMap::new(),
        }
    }

    #[test]
    fn timing_from_steps() {
        let t = Timing::from_steps(2.5, &[1.0, 0.1, 0.3, 0.2], &[0.05, 0.01, 0.01, 0.03], 20, 5.0);
        assert_eq!(t.first_step_s, Some(1.0));
        assert_eq!(t.steady_step_s, Some(0.2));
        assert!((t.train_wall_s - 1.6).abs() < 1e-12);
        assert!((t.input_wait_s.unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(t.input_step_s, Some(0.01));
        assert!((t.images_per_s.unwrap() - 100.0).abs() < 1e-9);
        assert!((t.other_s() - 0.8).abs() < 1e-12);
        assert!(!t.input_bound());
        // One step: no steady figures, not NaN.
        let one = Timing::from_steps(1.0, &[2.0], &[0.1], 4, 3.0);
        assert_eq!((one.steady_step_s, one.images_per_s, one.input_step_s), (None, None, None));
    }

    #[test]
    fn a_run_that_waits_for_input_is_input_bound() {
        let t = Timing::from_steps(0.0, &[0.1; 10], &[0.05; 10], 8, 2.0);
        assert!((t.input_share().unwrap() - 1.0 / 3.0).abs() < 1e-9);
        assert!(t.input_bound());
        let old = Timing { input_wait_s: None, ..t };
        assert!(!old.input_bound() && old.input_share().is_none());
    }

    #[test]
    fn a_dead_writer_reads_as_interrupted() {
        let alive = RunStatus::running_here();
        assert_eq!(alive.observed(), Observed::Running);
        // A process that has exited: run `true` and keep its pid.
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let _ = child.wait_with_output();
        let dead = RunStatus::Running { process: Some(RunProcess { pid, host: host_name(), start_ticks: Some(1) }) };
        assert_eq!(dead.observed(), Observed::Interrupted);
        let elsewhere = RunStatus::Running { process: Some(RunProcess { pid: 1, host: "another-host".into(), start_ticks: None }) };
        assert_eq!(elsewhere.observed(), Observed::RunningElsewhere);
        let old = RunStatus::Running { process: None };
        assert_eq!(old.observed(), Observed::RunningElsewhere);
        let text = serde_json::to_string(&RunStatus::Stopped { step: 30, resume: "emotionet train x.yaml --resume".into() }).unwrap();
        assert_eq!(text, r#"{"state":"stopped","step":30,"resume":"emotionet train x.yaml --resume"}"#);
        let legacy: RunStatus = serde_json::from_str(r#"{"state":"running"}"#).unwrap();
        assert_eq!(legacy, RunStatus::Running { process: None });
    }

    #[test]
    fn record_round_trips_with_a_nan_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = RunPaths::new(dir.path()).record();
        let record = sample_record();
        record.save(&path).unwrap();
        let back = RunRecord::load(&path).unwrap();
        assert!(back.final_eval.as_ref().unwrap().loss.is_nan());
        assert_eq!(back.timing, record.timing);
        assert_eq!(back.confusion, record.confusion);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"state\": \"finished\""), "{text}");
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORD_FILE);
        let mut record = sample_record();
        record.finished_at = None;
        let err = record.save(&path).unwrap_err().to_string();
        assert!(err.contains("record.json") && err.contains("finished_at"), "{err}");
        assert!(!path.exists());

        let mut value = serde_json::to_value(sample_record()).unwrap();
        value["schema"] = 9.into();
        std::fs::write(&path, value.to_string()).unwrap();
        let err = RunRecord::load(&path).unwrap_err().to_string();
        assert!(err.contains("schema 9"), "{err}");

        value["schema"] = 1.into();
        value["colour"] = "red".into();
        std::fs::write(&path, value.to_string()).unwrap();
        let err = RunRecord::load(&path).unwrap_err().to_string();
        assert!(err.contains("record.json") && err.contains("colour"), "{err}");
    }

    #[test]
    fn failed_status_carries_its_error() {
        let mut record = sample_record();
        record.status = RunStatus::Failed { error: "device lost".into() };
        let text = serde_json::to_string(&record).unwrap();
        assert!(text.contains(r#""status":{"state":"failed","error":"device lost"}"#), "{text}");
        let back: RunRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back.status, record.status);
    }

    #[test]
    fn now_is_a_valid_timestamp() {
        check_timestamp(Path::new("x"), "t", &now_rfc3339()).unwrap();
        assert!(check_timestamp(Path::new("x"), "t", "yesterday").is_err());
        assert!(!host_name().is_empty());
    }
}
