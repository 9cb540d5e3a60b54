//! Compiling for Cloud TPU on any machine, and what the compiler says.
//!
//! This module owns: the table of accelerator types ([`targets`]), the
//! programs an experiment would run on one ([`plan`]), the child process
//! that compiles them with the pinned libtpu ([`worker`]), and the
//! per-program figures and the roofline prediction built from its answer
//! ([`CompileReport`]). It needs no TPU and no Google Cloud account.
//!
//! It must not touch the cloud API, run programs or write run records: the
//! `compile` command, the cloud preflight and the report use what it returns.
//! A prediction is a model of the hardware (peak FLOP/s and HBM bandwidth
//! from Google's published figures, flops and bytes from the compiler's cost
//! analysis), never a measurement.

pub mod cache;
pub mod targets;
pub mod worker;

use std::path::{Path, PathBuf};

use crate::experiment::Experiment;
use crate::models::{ModelKind, Precision, ProgramSpec};
pub use targets::{Generation, TARGETS, Target, TargetError, known_types, target};
pub use worker::{ProgramRequest, ProgramResult, Request, Response, WorkerError};

/// A suffix that makes scratch file names unique within this process.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{n}-{nanos}")
}

/// What a program is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    TrainStep,
    EvalStep,
    Predict,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::TrainStep => "train_step",
            Role::EvalStep => "eval_step",
            Role::Predict => "predict",
        }
    }
}

/// One program an experiment runs, ready to compile.
#[derive(Clone, Debug)]
pub struct PlannedProgram {
    pub model: ModelKind,
    pub role: Role,
    pub image_size: i64,
    /// Global batch (over all replicas).
    pub batch: i64,
    pub replicas: usize,
    pub precision: Precision,
    /// How many times the experiment runs it (training steps), if known.
    pub runs: Option<u64>,
    pub text: String,
}

impl PlannedProgram {
    /// `face train_step`.
    pub fn name(&self) -> String {
        format!("{} {}", self.model, self.role.as_str())
    }

    /// SHA-256 of the program text and how it is compiled (the replicas):
    /// the part of a cache key that depends on the program.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.text.as_bytes());
        h.update(format!("\nreplicas={}", self.replicas).as_bytes());
        hex(&h.finalize())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Errors of planning and reporting a compile.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("experiment {experiment}: {message}")]
    Experiment { experiment: String, message: String },
    #[error("building the {model} {role} program: {source}")]
    Graph { model: ModelKind, role: &'static str, source: crate::graph::GraphError },
}

/// The programs `experiment` runs on `target`: per model, the training step
/// on the experiment's device count (`backend.devices`, `all` = every device
/// of the target), and the eval step and predict program on one device at
/// the training batch, as the trainer and the hierarchy compile them.
pub fn plan(experiment: &Experiment, target: &Target, only: Option<ModelKind>) -> Result<Vec<PlannedProgram>, PlanError> {
    let bad = |message: String| PlanError::Experiment { experiment: experiment.name.clone(), message };
    let replicas = experiment.backend.devices.resolve(target.devices);
    if replicas == 0 || replicas > target.devices {
        return Err(bad(format!("backend.devices asks for {replicas} devices; a {} has {}", target.accelerator_type, target.devices)));
    }
    let mut out = Vec::new();
    for (kind, training) in experiment.trainings() {
        if only.is_some_and(|m| m != kind) {
            continue;
        }
        if training.batch % replicas as i64 != 0 {
            return Err(bad(format!("models.{kind}.batch {} does not split over {replicas} devices of a {}", training.batch, target.accelerator_type)));
        }
        let arch = experiment.architecture(kind);
        arch.validate().map_err(|e| bad(format!("models.{kind}: {e}")))?;
        let spec = ProgramSpec {
            kind,
            arch: arch.clone(),
            optimizer: training.optimizer.clone(),
            replica_batch: training.batch / replicas as i64,
            replicas,
            precision: training.precision,
            conv: Default::default(),
            // TPU programs stay pure StableHLO: no host kernels.
            cpu_kernels: Default::default(),
            normalize: experiment.data.normalize,
        };
        let single = ProgramSpec { replicas: 1, replica_batch: training.batch, ..spec.clone() };
        let graph = |role: &'static str| move |source| PlanError::Graph { model: kind, role, source };
        let base = PlannedProgram {
            model: kind,
            role: Role::TrainStep,
            image_size: arch.input_size,
            batch: training.batch,
            replicas,
            precision: training.precision,
            runs: Some(training.total_steps()),
            text: spec.train_step().map_err(graph("train_step"))?.text,
        };
        let eval = PlannedProgram { role: Role::EvalStep, replicas: 1, runs: None, text: single.eval_step().map_err(graph("eval_step"))?.text, ..base.clone() };
        let predict = PlannedProgram { role: Role::Predict, replicas: 1, runs: None, text: single.predict().map_err(graph("predict"))?.text, ..base.clone() };
        out.extend([base, eval, predict]);
    }
    if out.is_empty() {
        return Err(bad(format!("has no model to compile{}", only.map(|m| format!(" (asked for {m})")).unwrap_or_default())));
    }
    Ok(out)
}

/// The worker request for planned programs on a target.
pub fn request(plugin: &Path, target: &Target, programs: &[PlannedProgram], threads: usize, serialize_dir: Option<&Path>) -> Request {
    Request {
        plugin: plugin.to_path_buf(),
        topology: target.topology.to_string(),
        create_options: target.create_options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        programs: programs
            .iter()
            .map(|p| ProgramRequest {
                name: p.name(),
                text: p.text.clone(),
                device_ids: (0..p.replicas as i32).collect(),
                serialize_to: serialize_dir.map(|d| d.join(format!("{}-{}.pjrt", p.model, p.role.as_str()))),
            })
            .collect(),
        threads,
    }
}

/// The default libtpu: `$TPU_LIBRARY_PATH`, else `.deps/libtpu/libtpu.so`
/// (where `make tpu-plugin` puts the pinned one).
pub fn default_libtpu() -> PathBuf {
    match std::env::var_os("TPU_LIBRARY_PATH") {
        Some(p) => PathBuf::from(p),
        None => crate::pjrt::deps_dir().join("libtpu").join("libtpu.so"),
    }
}

/// One program's figures on a target.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProgramFigures {
    pub name: String,
    pub model: ModelKind,
    pub role: Role,
    pub image_size: i64,
    pub batch: i64,
    pub replicas: usize,
    pub precision: Precision,
    pub program_hash: String,
    pub compile_s: f64,
    /// The compiler's error, if it rejected the program.
    pub error: Option<String>,
    pub memory: Option<crate::pjrt::MemoryStats>,
    /// Per-device memory the program needs while it runs.
    pub memory_total_bytes: Option<i64>,
    pub hbm_bytes: f64,
    pub fits: bool,
    pub flops: Option<f64>,
    pub bytes_accessed: Option<f64>,
    /// max(flops / peak, bytes / bandwidth), per step, in seconds.
    pub roofline_step_s: Option<f64>,
    /// `compute` or `memory`: which side of the roofline bounds the step.
    pub bound: Option<String>,
    pub runs: Option<u64>,
    pub serialized: Option<PathBuf>,
}

impl ProgramFigures {
    /// Why this program cannot run on the target, if it cannot.
    pub fn refusal(&self, target: &Target) -> Option<String> {
        if let Some(e) = &self.error {
            return Some(compiler_refusal(&self.name, e, target));
        }
        match self.memory_total_bytes {
            Some(total) if !self.fits => Some(format!(
                "{} needs {} per device (arguments {}, temp {}); a {} device has {}",
                self.name,
                gib(total as f64),
                gib(self.memory.map_or(0, |m| m.arguments) as f64),
                gib(self.memory.map_or(0, |m| m.temp) as f64),
                target.generation.name,
                gib(self.hbm_bytes)
            )),
            _ => None,
        }
    }
}

/// A compiler error as one readable sentence. libtpu's out-of-memory error
/// runs to pages (the largest allocations); its first paragraph and its
/// total say what is needed. The whole text stays in the JSON's `error`.
fn compiler_refusal(name: &str, error: &str, target: &Target) -> String {
    let first = error.split("\n\n").next().unwrap_or(error).trim();
    let said = first.split_once("permanent error. ").map_or(first, |(_, rest)| rest);
    if error.contains("Ran out of memory in memory space hbm")
        && let Some(total) = error.split("Total hbm usage >= ").nth(1).and_then(|rest| rest.split(':').next())
    {
        return format!(
            "{name} needs {total} of HBM per device; a {} device has {} (the TPU compiler: {said})",
            target.generation.name,
            gib(target.generation.hbm_bytes)
        );
    }
    format!("the TPU compiler rejected the {name}: {said}")
}

/// `21.3 GiB`.
pub fn gib(bytes: f64) -> String {
    format!("{:.2} GiB", bytes / (1024.0 * 1024.0 * 1024.0))
}

/// A predicted cost for the whole experiment in one region.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PredictedCost {
    pub region: String,
    pub on_demand_usd: f64,
    pub spot_usd: Option<f64>,
}

/// Everything `emotionet compile` reports.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct CompileReport {
    pub experiment: String,
    pub accelerator_type: String,
    pub topology: String,
    pub create_options: Vec<(String, String)>,
    pub devices: usize,
    pub device_kind: String,
    pub platform_version: String,
    pub plugin: PathBuf,
    pub plugin_attributes: Vec<(String, String)>,
    pub peak_bf16_flops: f64,
    pub peak_f32_flops: f64,
    pub hbm_bytes: f64,
    pub hbm_bandwidth: f64,
    pub peak_source: String,
    pub f32_peak_note: String,
    pub programs: Vec<ProgramFigures>,
    /// Sum over the models of training steps x roofline train step time.
    pub predicted_train_s: Option<f64>,
    pub predicted_cost: Vec<PredictedCost>,
    pub price_source: String,
    /// What the prediction leaves out.
    pub prediction_note: String,
    /// Why the experiment cannot run on the target (empty: it fits).
    pub refusals: Vec<String>,
}

/// What the prediction is and is not, shown with it.
pub const PREDICTION_NOTE: &str = "predicted, not measured: training steps only (no eval passes, input pipeline, \
compilation or VM start), each step at the roofline bound max(flops / peak FLOP/s, bytes accessed / HBM bandwidth) \
from the TPU compiler's cost analysis; a real step is slower (no kernel reaches peak, and host-side work is left out)";

/// A prediction file's name starts so: `tpu-prediction-v3-8.json`.
pub const PREDICTION_PREFIX: &str = "tpu-prediction-";

/// Where a runs folder keeps the prediction for one experiment on one
/// accelerator type: beside the experiment's model folders
/// (`RUNS/EXPERIMENT/tpu-prediction-TYPE.json`), where `emotionet report`
/// finds it. It holds the [`CompileReport`] as `compile --json` prints it.
pub fn prediction_path(runs_dir: &Path, experiment: &str, accelerator_type: &str) -> PathBuf {
    runs_dir.join(experiment).join(format!("{PREDICTION_PREFIX}{accelerator_type}.json"))
}

/// Whether a file name is a prediction file's.
pub fn is_prediction_file(name: &str) -> bool {
    name.starts_with(PREDICTION_PREFIX) && name.ends_with(".json")
}

/// Writes `report` into `runs_dir` as its experiment's prediction (whole or
/// not at all), returning the path.
pub fn write_prediction(runs_dir: &Path, report: &CompileReport) -> Result<PathBuf, crate::fsutil::FsError> {
    let path = prediction_path(runs_dir, &report.experiment, &report.accelerator_type);
    let mut bytes = serde_json::to_vec_pretty(report).expect("a compile report serializes");
    bytes.push(b'\n');
    crate::fsutil::write_atomic(&path, &bytes)?;
    Ok(path)
}

/// Builds the report from the plan and the worker's answer.
pub fn report(experiment: &Experiment, target: &Target, plugin: &Path, planned: &[PlannedProgram], response: &Response) -> CompileReport {
    let g = target.generation;
    let programs: Vec<ProgramFigures> = planned
        .iter()
        .zip(&response.programs)
        .map(|(p, r)| {
            let total = r.memory.map(|m| m.total());
            let peak = target.peak_flops(p.precision);
            let (step, bound) = match &r.cost {
                Some(c) if r.error.is_none() => {
                    let compute = c.flops / peak;
                    let memory = c.bytes_accessed / g.hbm_bandwidth;
                    (Some(compute.max(memory)), Some(if compute >= memory { "compute" } else { "memory" }.to_string()))
                }
                _ => (None, None),
            };
            ProgramFigures {
                name: r.name.clone(),
                model: p.model,
                role: p.role,
                image_size: p.image_size,
                batch: p.batch,
                replicas: p.replicas,
                precision: p.precision,
                program_hash: p.hash(),
                compile_s: r.compile_s,
                error: r.error.clone(),
                memory: r.memory,
                memory_total_bytes: total,
                hbm_bytes: g.hbm_bytes,
                fits: r.error.is_none() && total.is_some_and(|t| (t as f64) <= g.hbm_bytes),
                flops: r.cost.as_ref().map(|c| c.flops),
                bytes_accessed: r.cost.as_ref().map(|c| c.bytes_accessed),
                roofline_step_s: step,
                bound,
                runs: p.runs,
                serialized: r.serialized.clone(),
            }
        })
        .collect();
    let refusals: Vec<String> = programs.iter().filter_map(|p| p.refusal(target)).collect();
    let train: Vec<&ProgramFigures> = programs.iter().filter(|p| p.role == Role::TrainStep).collect();
    let predicted_train_s = if refusals.is_empty() && train.iter().all(|p| p.roofline_step_s.is_some()) {
        Some(train.iter().map(|p| p.roofline_step_s.unwrap_or(0.0) * p.runs.unwrap_or(0) as f64).sum())
    } else {
        None
    };
    let predicted_cost = match predicted_train_s {
        Some(s) => crate::cloud::cost::prices(target.accelerator_type)
            .into_iter()
            .map(|(region, on_demand, spot)| PredictedCost {
                region: region.to_string(),
                on_demand_usd: on_demand * s / 3600.0,
                spot_usd: spot.map(|r| r * s / 3600.0),
            })
            .collect(),
        None => vec![],
    };
    CompileReport {
        experiment: experiment.name.clone(),
        accelerator_type: target.accelerator_type.to_string(),
        topology: target.topology.to_string(),
        create_options: target.create_options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        devices: response.devices.len(),
        device_kind: response.devices.first().map(|d| d.kind.clone()).unwrap_or_default(),
        platform_version: response.platform_version.replace('\n', " "),
        plugin: plugin.to_path_buf(),
        plugin_attributes: response.plugin_attributes.clone(),
        peak_bf16_flops: g.peak_bf16_flops,
        peak_f32_flops: g.peak_f32_flops,
        hbm_bytes: g.hbm_bytes,
        hbm_bandwidth: g.hbm_bandwidth,
        peak_source: g.source.to_string(),
        f32_peak_note: targets::f32_peak_note().to_string(),
        programs,
        predicted_train_s,
        predicted_cost,
        price_source: crate::cloud::cost::PRICE_SOURCE.to_string(),
        prediction_note: PREDICTION_NOTE.to_string(),
        refusals,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_that_does_not_fit_is_refused_with_its_figures() {
        let t = target("v3-8").unwrap();
        let p = ProgramFigures {
            name: "face train_step".into(),
            model: ModelKind::Face,
            role: Role::TrainStep,
            image_size: 1024,
            batch: 128,
            replicas: 8,
            precision: Precision::F32,
            program_hash: String::new(),
            compile_s: 1.0,
            error: None,
            memory: Some(crate::pjrt::MemoryStats { arguments: 20 << 30, temp: 3 << 30, ..Default::default() }),
            memory_total_bytes: Some(23 << 30),
            hbm_bytes: t.generation.hbm_bytes,
            fits: false,
            flops: None,
            bytes_accessed: None,
            roofline_step_s: None,
            bound: None,
            runs: None,
            serialized: None,
        };
        let why = p.refusal(t).unwrap();
        assert_eq!(why, "face train_step needs 23.00 GiB per device (arguments 20.00 GiB, temp 3.00 GiB); a v3 device has 16.00 GiB");
    }

    #[test]
    fn the_compilers_out_of_memory_error_becomes_one_sentence() {
        let t = target("v3-8").unwrap();
        let error = "compile failed in the PJRT plugin (ResourceExhausted): face train_step: XLA:TPU compile permanent error. \
Ran out of memory in memory space hbm. Used 36.16G of 15.48G hbm. Exceeded hbm capacity by 20.67G.\n\nTotal hbm usage >= 36.67G:\n    reserved 530.01M\n\n  1. Size: 8.00G";
        assert_eq!(
            compiler_refusal("face train_step", error, t),
            "face train_step needs 36.67G of HBM per device; a v3 device has 16.00 GiB (the TPU compiler: Ran out of memory in memory space hbm. \
Used 36.16G of 15.48G hbm. Exceeded hbm capacity by 20.67G.)"
        );
        assert_eq!(compiler_refusal("x", "compile failed: bad op\n\nmore", t), "the TPU compiler rejected the x: compile failed: bad op");
    }
}
