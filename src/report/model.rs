//! What the report says, computed from the records before anything is
//! rendered: the scan of a runs directory, groups of repeats with their
//! statistics, speedups and comparisons with the paper. The same values feed
//! `report.md`, the charts and `report.json`, so they cannot disagree.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ReportError;
use super::paper::{self, PAPER_SETUPS};
use crate::records::{self, Backend, HierarchyEval, MetricPoint, ModelKind, Observed, Precision, RunRecord, RunStatus};

/// One run directory found by the scan.
#[derive(Clone, Debug)]
pub struct RunEntry {
    /// The run directory, relative to the runs directory.
    pub dir: PathBuf,
    pub record: RunRecord,
    /// The training curve (empty when there is no `metrics.jsonl`).
    pub curve: Vec<MetricPoint>,
    /// A problem with the curve worth telling the reader.
    pub curve_note: Option<String>,
}

/// One `hierarchy.json`.
#[derive(Clone, Debug)]
pub struct HierarchyEntry {
    /// Relative to the runs directory.
    pub path: PathBuf,
    pub eval: HierarchyEval,
}

/// One TPU prediction file (`tpu-prediction-TYPE.json`, written by the
/// cloud preflight or `emotionet compile --out`): the TPU compiler's figures
/// for an experiment's programs. A prediction, never a measurement.
#[derive(Clone, Debug)]
pub struct PredictionEntry {
    /// Relative to the runs directory.
    pub path: PathBuf,
    pub report: crate::tpu::CompileReport,
}

/// A file left out of the report, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Skipped {
    pub path: PathBuf,
    pub reason: String,
}

/// Everything found under a runs directory.
#[derive(Clone, Debug)]
pub struct Scan {
    pub runs_dir: PathBuf,
    pub runs: Vec<RunEntry>,
    pub hierarchies: Vec<HierarchyEntry>,
    pub predictions: Vec<PredictionEntry>,
    pub skipped: Vec<Skipped>,
}

/// Walks `runs_dir` recursively for `record.json` (with the `metrics.jsonl`
/// beside it) and `hierarchy.json` files, in path order. Symbolic links to
/// directories are not followed. An invalid file is an error naming it,
/// unless `skip_invalid`, in which case it is listed in [`Scan::skipped`]
/// (and the report says so).
pub fn scan(runs_dir: &Path, skip_invalid: bool) -> Result<Scan, ReportError> {
    let meta = fs::metadata(runs_dir).map_err(|source| ReportError::RunsDir { path: runs_dir.to_path_buf(), source })?;
    if !meta.is_dir() {
        return Err(ReportError::NotADirectory { path: runs_dir.to_path_buf() });
    }
    let mut found = Vec::new();
    walk(runs_dir, &mut found)?;
    found.sort();
    let mut out = Scan { runs_dir: runs_dir.to_path_buf(), runs: Vec::new(), hierarchies: Vec::new(), predictions: Vec::new(), skipped: Vec::new() };
    let mut ids: BTreeMap<String, PathBuf> = BTreeMap::new();
    for path in found {
        let rel = path.strip_prefix(runs_dir).unwrap_or(&path).to_path_buf();
        let is_record = path.file_name().is_some_and(|n| n == records::RECORD_FILE);
        let is_prediction = path.file_name().is_some_and(|n| crate::tpu::is_prediction_file(&n.to_string_lossy()));
        let outcome = if is_record {
            load_run(&path, &rel, &mut ids, skip_invalid).map(|run| out.runs.push(run))
        } else if is_prediction {
            load_prediction(&path).map(|report| out.predictions.push(PredictionEntry { path: rel.clone(), report }))
        } else {
            HierarchyEval::load(&path).map_err(ReportError::from).map(|eval| out.hierarchies.push(HierarchyEntry { path: rel.clone(), eval }))
        };
        match outcome {
            Ok(()) => {}
            Err(e) if skip_invalid => {
                tracing::warn!("skipping {}: {e}", path.display());
                out.skipped.push(Skipped { path: rel, reason: e.to_string() });
            }
            Err(e) => return Err(e),
        }
    }
    if out.runs.is_empty() && out.hierarchies.is_empty() && out.predictions.is_empty() {
        return Err(ReportError::NothingFound { path: runs_dir.to_path_buf(), skipped: out.skipped.len() });
    }
    Ok(out)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), ReportError> {
    let walk_err = |source| ReportError::Walk { path: dir.to_path_buf(), source };
    for entry in fs::read_dir(dir).map_err(walk_err)? {
        let entry = entry.map_err(walk_err)?;
        let kind = entry.file_type().map_err(walk_err)?;
        let path = entry.path();
        if kind.is_dir() {
            walk(&path, found)?;
        } else if entry.file_name() == records::RECORD_FILE
            || entry.file_name() == records::HIERARCHY_FILE
            || crate::tpu::is_prediction_file(&entry.file_name().to_string_lossy())
        {
            found.push(path);
        }
    }
    Ok(())
}

fn load_prediction(path: &Path) -> Result<crate::tpu::CompileReport, ReportError> {
    let bytes = fs::read(path).map_err(|source| ReportError::Prediction { path: path.to_path_buf(), message: source.to_string() })?;
    serde_json::from_slice(&bytes).map_err(|e| ReportError::Prediction { path: path.to_path_buf(), message: e.to_string() })
}

fn load_run(path: &Path, rel: &Path, ids: &mut BTreeMap<String, PathBuf>, skip_invalid: bool) -> Result<RunEntry, ReportError> {
    let record = RunRecord::load(path)?;
    if let Some(first) = ids.get(&record.run_id) {
        return Err(ReportError::DuplicateRun { run_id: record.run_id.clone(), first: first.clone(), second: path.to_path_buf() });
    }
    ids.insert(record.run_id.clone(), path.to_path_buf());
    let dir = rel.parent().map(Path::to_path_buf).unwrap_or_default();
    let metrics_path = path.with_file_name(records::METRICS_FILE);
    let rel_metrics = rel.with_file_name(records::METRICS_FILE);
    let (curve, curve_note) = if metrics_path.exists() {
        match records::read_metrics(&metrics_path) {
            Ok(file) => {
                let note =
                    file.truncated_tail.then(|| format!("`{}`: the last line was cut off (an interrupted write) and was left out.", rel_metrics.display()));
                (file.points, note)
            }
            // A bad curve should not hide the run's record: keep the run, say why the curve is missing.
            Err(e) if skip_invalid => (Vec::new(), Some(format!("Skipped the curve `{}`: {e}", rel_metrics.display()))),
            Err(e) => return Err(e.into()),
        }
    } else {
        (Vec::new(), None)
    };
    Ok(RunEntry { dir, record, curve, curve_note })
}

/// Median and range of one figure over a group's finished repeats.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Stat {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Stat {
    /// `None` when no value is finite.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
        let v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        let median = records::median(&v)?;
        let min = v.iter().copied().fold(f64::INFINITY, f64::min);
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some(Stat { median, min, max, n: v.len() })
    }
}

/// Where a run really ran: the backend family of the platform in its record
/// (never the backend it asked for), and, for a run through a declared
/// stand-in (`pjrt::StandIn`, tests only), the backend it played.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RanOn {
    pub backend: Backend,
    pub stand_in_for: Option<Backend>,
}

impl RanOn {
    /// A record whose platform is not its backend's is a stand-in: it ran on
    /// its platform's family (the backend asked for when the platform is
    /// unknown, which then stays labelled a stand-in and counts for nothing).
    pub fn of(r: &RunRecord) -> RanOn {
        if r.backend.accepts_platform(&r.platform.name) {
            RanOn { backend: r.backend, stand_in_for: None }
        } else {
            RanOn { backend: Backend::of_platform(&r.platform.name).unwrap_or(r.backend), stand_in_for: Some(r.backend) }
        }
    }

    /// "TPU", or "CPU standing in for TPU".
    pub fn label(self) -> String {
        let ran = self.backend.to_string().to_uppercase();
        match self.stand_in_for {
            None => ran,
            Some(played) => format!("{ran} standing in for {}", played.to_string().to_uppercase()),
        }
    }
}

/// Repeats of one (experiment, model, platform that ran, stand-in or not).
#[derive(Clone, Debug, Serialize)]
pub struct Group {
    pub experiment: String,
    pub model: ModelKind,
    /// The backend family of the platform that ran the runs: `cpu` for a
    /// CPU standing in for a TPU. Never the backend asked for.
    pub backend: Backend,
    /// Set for a stand-in group: the backend its runs asked for and are filed
    /// under. Such groups live in [`Analysis::stand_ins`], never in
    /// [`Analysis::groups`], so no figure, speedup or comparison meets them.
    pub stand_in_for: Option<Backend>,
    /// What the runs computed in (`None`: records from before precision
    /// was recorded). bf16 and f32 runs of one experiment are separate groups.
    pub precision: Option<Precision>,
    /// The precision with its proof, e.g. "bf16 (conv bf16, dot bf16)".
    pub precision_text: String,
    /// Run ids of every run in the group, and of those that finished.
    pub run_ids: Vec<String>,
    pub finished_ids: Vec<String>,
    /// Distinct values over the group's runs, joined with " / ".
    pub platform: String,
    pub device: String,
    pub image_size: String,
    pub batch: String,
    pub total_steps: String,
    /// Set when every run agrees (for like-for-like checks).
    pub uniform_image_size: Option<u32>,
    pub uniform_total_steps: Option<u64>,
    pub compile_s: Option<Stat>,
    pub first_step_s: Option<Stat>,
    pub steady_step_s: Option<Stat>,
    pub images_per_s: Option<Stat>,
    pub train_wall_s: Option<Stat>,
    /// Total input wait of a run.
    pub input_wait_s: Option<Stat>,
    /// Median input wait per step (host time the devices waited for a batch).
    pub input_step_s: Option<Stat>,
    /// Share of the training loop spent waiting for input (see `Timing::input_share`).
    pub input_share: Option<Stat>,
    pub other_s: Option<Stat>,
    pub total_wall_s: Option<Stat>,
    /// Flops of one train step per device, from the cost analysis of the
    /// compiler that ran it (the records' `config.train_step_cost`).
    pub train_step_flops: Option<Stat>,
    /// Flops per step x devices / steady step: what the run achieved.
    pub achieved_flops_per_s: Option<Stat>,
    /// Achieved FLOP/s over the peak of the devices that ran it (TPUs of
    /// the peak table only; no GPU table, and a CPU's measured peak is in
    /// `emotionet bench`, not in the record).
    pub mfu: Option<Stat>,
    pub train_accuracy: Option<Stat>,
    pub eval_accuracy: Option<Stat>,
    /// Final eval accuracy per data source over the finished runs, where
    /// their eval split mixes sources; in the order the sources appear.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub source_eval_accuracy: Vec<SourceAccuracy>,
    /// Index (into the scan's runs) of the run whose confusion matrix is
    /// shown: the last finished one with a matrix.
    #[serde(skip)]
    pub confusion_run: Option<usize>,
    #[serde(skip)]
    pub run_indices: Vec<usize>,
}

impl Group {
    /// e.g. "CPU (cpu ×1)"; a stand-in says so: "CPU standing in for TPU
    /// (cpu ×1)"; a precision other than f32 is named: "CPU (cpu ×1) · bf16".
    pub fn platform_label(&self) -> String {
        let precision = match self.precision {
            Some(Precision::F32) => String::new(),
            Some(p) => format!(" · {p}"),
            None => " · precision not recorded".into(),
        };
        format!("{} ({}){precision}", self.ran_on().label(), self.device)
    }

    pub fn ran_on(&self) -> RanOn {
        RanOn { backend: self.backend, stand_in_for: self.stand_in_for }
    }
}

/// One data source's eval accuracy over a group's finished runs.
#[derive(Clone, Debug, Serialize)]
pub struct SourceAccuracy {
    pub source: String,
    /// `synthetic` or `real`.
    pub kind: String,
    /// Eval examples of this source in one run (the largest, if runs differ).
    pub examples: u64,
    pub accuracy: Stat,
}

/// A platform against CPU, same experiment and model.
#[derive(Clone, Debug, Serialize)]
pub struct Speedup {
    pub model: ModelKind,
    pub experiment: String,
    pub backend: Backend,
    /// Both sides computed in it.
    pub precision: Option<Precision>,
    /// CPU median total time / this platform's.
    pub total_time: Option<f64>,
    /// CPU median steady step / this platform's.
    pub step_time: Option<f64>,
}

/// One of our groups against one of the paper's set-ups.
#[derive(Clone, Debug, Serialize)]
pub struct PaperComparison {
    pub model: ModelKind,
    pub experiment: String,
    pub backend: Backend,
    pub precision: Option<Precision>,
    pub our_total_s: f64,
    pub paper: &'static str,
    pub paper_s: f64,
    /// Paper time / our time: above 1 means we were faster.
    pub paper_over_ours: f64,
    /// Same image size and step count as the paper's run.
    pub like_for_like: bool,
}

/// Everything the report shows.
#[derive(Clone, Debug)]
pub struct Analysis {
    /// Groups of runs on the platform they asked for: the only ones any
    /// figure, speedup, paper comparison or "present" check is made of.
    pub groups: Vec<Group>,
    /// Groups of stand-in runs (a CPU playing a TPU in tests): shown in
    /// their own labelled rows, counted as nothing.
    pub stand_ins: Vec<Group>,
    pub speedups: Vec<Speedup>,
    /// (model, experiment) pairs with a non-CPU platform but no CPU run.
    pub no_cpu_baseline: Vec<(ModelKind, String)>,
    pub paper_comparisons: Vec<PaperComparison>,
    /// Predicted TPU training, one per (prediction file, model): never a
    /// group, a bar or a speedup.
    pub predictions: Vec<PredictedRow>,
    /// Statements of what is missing, for the report's last section.
    pub missing: Vec<String>,
}

/// What the TPU compiler's cost analysis and the roofline predict for one
/// model of one experiment on one accelerator type, and the measured TPU
/// group of the same experiment, model and precision when there is one.
#[derive(Clone, Debug, Serialize)]
pub struct PredictedRow {
    /// Always `prediction`: the JSON says what it is, too.
    pub kind: &'static str,
    /// e.g. "predicted on TPU v3-8 (compiler cost analysis, roofline)".
    pub label: String,
    pub experiment: String,
    pub model: ModelKind,
    pub accelerator_type: String,
    pub image_size: i64,
    /// Global batch, and the replicas it is split over.
    pub batch: i64,
    pub replicas: usize,
    pub precision: Precision,
    pub steps: u64,
    /// Roofline time of one training step (per device; all run at once).
    pub step_s: f64,
    /// `compute` or `memory`.
    pub bound: Option<String>,
    /// steps x step_s.
    pub train_s: f64,
    /// The train step's memory per core, and the core's HBM.
    pub memory_bytes: Option<i64>,
    pub hbm_bytes: f64,
    pub flops_per_step: Option<f64>,
    pub file: PathBuf,
    /// The measured TPU group's median steady step and training time, with
    /// measured / predicted for each.
    pub measured: Option<MeasuredAgainstPrediction>,
}

/// A measured TPU group set against its prediction.
#[derive(Clone, Debug, Serialize)]
pub struct MeasuredAgainstPrediction {
    pub platform: String,
    pub steady_step_s: Option<f64>,
    pub train_wall_s: Option<f64>,
    pub step_ratio: Option<f64>,
    pub train_ratio: Option<f64>,
}

/// The prediction rows of the scan's prediction files.
fn predicted_rows(scan: &Scan, groups: &[Group]) -> Vec<PredictedRow> {
    let mut rows = Vec::new();
    for entry in &scan.predictions {
        let r = &entry.report;
        for p in r.programs.iter().filter(|p| p.role == crate::tpu::Role::TrainStep) {
            let (Some(step_s), Some(steps)) = (p.roofline_step_s, p.runs) else { continue };
            let train_s = step_s * steps as f64;
            let measured = groups
                .iter()
                .find(|g| g.backend == Backend::Tpu && g.experiment == r.experiment && g.model == p.model && g.precision.is_none_or(|x| x == p.precision))
                .map(|g| {
                    let steady = g.steady_step_s.map(|s| s.median);
                    let train = g.train_wall_s.map(|s| s.median);
                    MeasuredAgainstPrediction {
                        platform: g.platform_label(),
                        steady_step_s: steady,
                        train_wall_s: train,
                        step_ratio: steady.filter(|_| step_s > 0.0).map(|s| s / step_s),
                        train_ratio: train.filter(|_| train_s > 0.0).map(|s| s / train_s),
                    }
                });
            rows.push(PredictedRow {
                kind: "prediction",
                label: format!("predicted on TPU {} (compiler cost analysis, roofline)", r.accelerator_type),
                experiment: r.experiment.clone(),
                model: p.model,
                accelerator_type: r.accelerator_type.clone(),
                image_size: p.image_size,
                batch: p.batch,
                replicas: p.replicas,
                precision: p.precision,
                steps,
                step_s,
                bound: p.bound.clone(),
                train_s,
                memory_bytes: p.memory_total_bytes,
                hbm_bytes: p.hbm_bytes,
                flops_per_step: p.flops,
                file: entry.path.clone(),
                measured,
            });
        }
    }
    rows
}

fn backend_rank(b: Backend) -> u8 {
    match b {
        Backend::Cpu => 0,
        Backend::Gpu => 1,
        Backend::Tpu => 2,
    }
}

fn precision_rank(p: Option<Precision>) -> u8 {
    match p {
        None => 0,
        Some(Precision::F32) => 1,
        Some(Precision::Bf16) => 2,
    }
}

/// "bf16 (conv bf16, dot bf16)": the precision and, when recorded, the
/// element types the compiled train step takes that prove it.
pub fn precision_text(r: &RunRecord) -> String {
    match (&r.config.precision, &r.config.compute_types) {
        (None, _) => "not recorded".into(),
        (Some(p), None) => p.to_string(),
        (Some(p), Some(types)) => format!("{p} ({})", types.label()),
    }
}

fn distinct<T: Ord + ToString>(values: impl IntoIterator<Item = T>) -> String {
    let set: BTreeSet<T> = values.into_iter().collect();
    set.iter().map(ToString::to_string).collect::<Vec<_>>().join(" / ")
}

/// What makes runs repeats of each other: model, experiment, the platform
/// that ran them, the backend a stand-in played, and the precision.
type GroupKey = (ModelKind, String, u8, Option<u8>, u8);

/// Groups the runs and computes every derived figure.
pub fn analyse(scan: &Scan) -> Analysis {
    let mut keyed: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
    for (i, run) in scan.runs.iter().enumerate() {
        let r = &run.record;
        let ran = RanOn::of(r);
        let key = (r.model, r.experiment.clone(), backend_rank(ran.backend), ran.stand_in_for.map(backend_rank), precision_rank(r.config.precision));
        keyed.entry(key).or_default().push(i);
    }
    let (stand_ins, groups): (Vec<Group>, Vec<Group>) = keyed.into_values().map(|idx| build_group(scan, idx)).partition(|g| g.stand_in_for.is_some());

    let mut speedups = Vec::new();
    let mut no_cpu_baseline = Vec::new();
    for g in &groups {
        if g.backend == Backend::Cpu || g.total_wall_s.is_none() {
            continue;
        }
        let cpu = groups.iter().find(|c| {
            c.backend == Backend::Cpu && c.model == g.model && c.experiment == g.experiment && c.precision == g.precision && c.total_wall_s.is_some()
        });
        match cpu {
            Some(cpu) => speedups.push(Speedup {
                model: g.model,
                experiment: g.experiment.clone(),
                backend: g.backend,
                precision: g.precision,
                total_time: ratio(cpu.total_wall_s, g.total_wall_s),
                step_time: ratio(cpu.steady_step_s, g.steady_step_s),
            }),
            None => no_cpu_baseline.push((g.model, g.experiment.clone())),
        }
    }

    let mut paper_comparisons = Vec::new();
    for g in &groups {
        let Some(total) = g.total_wall_s.filter(|t| t.median > 0.0) else { continue };
        for setup in PAPER_SETUPS {
            let paper_s = setup.time_s(g.model);
            paper_comparisons.push(PaperComparison {
                model: g.model,
                experiment: g.experiment.clone(),
                backend: g.backend,
                precision: g.precision,
                our_total_s: total.median,
                paper: setup.label,
                paper_s,
                paper_over_ours: paper_s / total.median,
                like_for_like: g.uniform_image_size == Some(setup.image_size) && g.uniform_total_steps == Some(paper::paper_total_steps(g.model)),
            });
        }
    }

    let mut missing = Vec::new();
    for backend in [Backend::Cpu, Backend::Gpu, Backend::Tpu] {
        if !groups.iter().any(|g| g.backend == backend && !g.finished_ids.is_empty()) {
            missing.push(format!(
                "No finished {} runs: the {} rows and bars are absent, not zero.",
                backend.to_string().to_uppercase(),
                backend.to_string().to_uppercase()
            ));
        }
    }
    for g in &stand_ins {
        let played = g.stand_in_for.map_or_else(String::new, |b| b.to_string().to_uppercase());
        missing.push(format!(
            "{} of the {} model in experiment `{}` asked for {played} but ran on {} ({}) through a stand-in description (tests only): shown in rows labelled \"{}\", never counted as {played} runs, in speedups or in comparisons with the paper.",
            match g.run_ids.as_slice() {
                [one] => format!("Run `{one}`"),
                many => format!("{} runs", many.len()),
            },
            g.model,
            g.experiment,
            g.backend.to_string().to_uppercase(),
            g.device,
            g.ran_on().label(),
        ));
    }
    for model in ModelKind::ALL {
        if !groups.iter().any(|g| g.model == model && !g.finished_ids.is_empty()) {
            missing.push(format!("No finished runs of the {model} model."));
        }
    }
    if scan.hierarchies.is_empty() {
        missing.push(format!(
            "No hierarchy evaluation (`{}`): Table I and the hierarchy's confusion matrices show the paper's figures only.",
            records::HIERARCHY_FILE
        ));
    }
    for (model, experiment) in &no_cpu_baseline {
        missing.push(format!("No finished CPU run of the {model} model in experiment `{experiment}`: no speedup against CPU for it."));
    }
    for run in &scan.runs {
        let r = &run.record;
        match &r.status {
            RunStatus::Running { .. } => {
                let (what, why) = match r.status.observed() {
                    Observed::Interrupted => ("was interrupted", "its process died without recording an end; `--resume` continues it"),
                    Observed::Running => ("is still running", "on this machine"),
                    _ => ("is running elsewhere, or was", "its process cannot be checked from here"),
                };
                missing.push(format!("Run `{}` {what} ({why}): {} of {} steps; left out of timing and accuracy.", r.run_id, r.steps_done, r.config.total_steps))
            }
            RunStatus::Stopped { step, resume } => missing.push(format!(
                "Run `{}` was stopped on request at step {step} of {}; left out of timing and accuracy. Resume it with `{resume}`.",
                r.run_id, r.config.total_steps
            )),
            RunStatus::Failed { error } => {
                missing.push(format!("Run `{}` failed after {} of {} steps: {}", r.run_id, r.steps_done, r.config.total_steps, error.trim()))
            }
            RunStatus::Finished => {
                if run.curve.is_empty() {
                    missing.push(format!("Run `{}` has no `{}`: no training curve.", r.run_id, records::METRICS_FILE));
                }
                if r.final_eval.is_none() {
                    missing.push(format!("Run `{}` recorded no final evaluation.", r.run_id));
                }
            }
        }
        if let Some(note) = &run.curve_note {
            missing.push(note.clone());
        }
    }
    for s in &scan.skipped {
        missing.push(format!("Skipped `{}`: {}", s.path.display(), s.reason));
    }
    let predictions = predicted_rows(scan, &groups);
    Analysis { groups, stand_ins, speedups, no_cpu_baseline, paper_comparisons, predictions, missing }
}

fn ratio(num: Option<Stat>, den: Option<Stat>) -> Option<f64> {
    match (num, den) {
        (Some(a), Some(b)) if b.median > 0.0 => Some(a.median / b.median),
        _ => None,
    }
}

/// A finished run's flops per step (per device) x devices / steady step.
fn achieved_flops_per_s(r: &RunRecord) -> Option<f64> {
    let flops = r.config.train_step_cost.as_ref().map(|c| c.flops).filter(|f| *f > 0.0)?;
    let step = r.timing.as_ref()?.steady_step_s.filter(|s| *s > 0.0)?;
    Some(flops * f64::from(r.platform.device_count.max(1)) / step)
}

/// The peak FLOP/s of the devices a run ran on, where the peak table knows
/// them: real TPUs (by the device kind the plugin reported), never a stand-in.
fn peak_flops_per_s(r: &RunRecord) -> Option<f64> {
    let ran = RanOn::of(r);
    if ran.backend != Backend::Tpu || ran.stand_in_for.is_some() {
        return None;
    }
    let target = crate::tpu::TARGETS.iter().find(|t| t.generation.device_kind == r.platform.device_kind)?;
    Some(target.peak_flops(r.config.precision.unwrap_or(Precision::F32)) * f64::from(r.platform.device_count.max(1)))
}

fn build_group(scan: &Scan, idx: Vec<usize>) -> Group {
    let runs: Vec<&RunEntry> = idx.iter().map(|&i| &scan.runs[i]).collect();
    let first = &runs[0].record;
    let finished: Vec<(usize, &RunRecord)> = idx.iter().map(|&i| (i, &scan.runs[i].record)).filter(|(_, r)| r.status == RunStatus::Finished).collect();
    let timing = |f: fn(&records::Timing) -> Option<f64>| Stat::of(finished.iter().filter_map(|(_, r)| r.timing.as_ref().and_then(f)));
    let image_sizes: BTreeSet<records::ImageSize> = runs.iter().map(|r| r.record.config.image_size).collect();
    let steps: BTreeSet<u64> = runs.iter().map(|r| r.record.config.total_steps).collect();
    let confusion_run = finished
        .iter()
        .filter(|(_, r)| r.confusion.is_some())
        .max_by(|(_, a), (_, b)| a.finished_at.cmp(&b.finished_at).then(a.run_id.cmp(&b.run_id)))
        .map(|(i, _)| *i);
    let ran = RanOn::of(first);
    Group {
        experiment: first.experiment.clone(),
        model: first.model,
        backend: ran.backend,
        stand_in_for: ran.stand_in_for,
        precision: first.config.precision,
        precision_text: distinct(runs.iter().map(|r| precision_text(&r.record))),
        run_ids: runs.iter().map(|r| r.record.run_id.clone()).collect(),
        finished_ids: finished.iter().map(|(_, r)| r.run_id.clone()).collect(),
        platform: distinct(runs.iter().map(|r| platform_text(&r.record.platform))),
        device: distinct(runs.iter().map(|r| format!("{} ×{}", r.record.platform.device_kind, r.record.platform.device_count))),
        image_size: distinct(image_sizes.iter().map(ToString::to_string)),
        batch: distinct(runs.iter().map(|r| r.record.config.batch)),
        total_steps: distinct(steps.iter().copied()),
        uniform_image_size: match image_sizes.iter().collect::<Vec<_>>().as_slice() {
            [s] if s.height == s.width => Some(s.height),
            _ => None,
        },
        uniform_total_steps: (steps.len() == 1).then(|| steps.iter().copied().next()).flatten(),
        compile_s: timing(|t| Some(t.compile_s)),
        first_step_s: timing(|t| t.first_step_s),
        steady_step_s: timing(|t| t.steady_step_s),
        images_per_s: timing(|t| t.images_per_s),
        train_wall_s: timing(|t| Some(t.train_wall_s)),
        input_wait_s: timing(|t| t.input_wait_s),
        input_step_s: timing(|t| t.input_step_s),
        input_share: timing(|t| t.input_share()),
        other_s: timing(|t| Some(t.other_s())),
        total_wall_s: timing(|t| Some(t.total_wall_s)),
        train_step_flops: Stat::of(finished.iter().filter_map(|(_, r)| r.config.train_step_cost.as_ref().map(|c| c.flops).filter(|f| *f > 0.0))),
        achieved_flops_per_s: Stat::of(finished.iter().filter_map(|(_, r)| achieved_flops_per_s(r))),
        mfu: Stat::of(finished.iter().filter_map(|(_, r)| Some(achieved_flops_per_s(r)? / peak_flops_per_s(r)?))),
        train_accuracy: Stat::of(finished.iter().filter_map(|(_, r)| r.final_train.as_ref().map(|m| m.accuracy))),
        eval_accuracy: Stat::of(finished.iter().filter_map(|(_, r)| r.final_eval.as_ref().map(|m| m.accuracy))),
        source_eval_accuracy: source_accuracy(&finished),
        confusion_run,
        run_indices: idx,
    }
}

/// A platform's name and version, the version only when it says more than
/// the name (the CPU plugin reports version "cpu": "cpu", not "cpu cpu").
fn platform_text(p: &records::Platform) -> String {
    let version = p.version.trim();
    if version.is_empty() || version.eq_ignore_ascii_case(&p.name) { p.name.clone() } else { format!("{} {version}", p.name) }
}

/// Per-source eval accuracy over finished runs, sources in first-seen order.
fn source_accuracy(finished: &[(usize, &RunRecord)]) -> Vec<SourceAccuracy> {
    let mut order: Vec<(String, String)> = Vec::new();
    for (_, r) in finished {
        for s in &r.per_source {
            if !order.iter().any(|(name, _)| *name == s.source) {
                order.push((s.source.clone(), s.kind.clone()));
            }
        }
    }
    order
        .into_iter()
        .filter_map(|(source, kind)| {
            let mine: Vec<&records::SourceEval> = finished.iter().flat_map(|(_, r)| r.per_source.iter().filter(|s| s.source == source)).collect();
            let accuracy = Stat::of(mine.iter().map(|s| s.accuracy))?;
            Some(SourceAccuracy { examples: mine.iter().map(|s| s.examples).max().unwrap_or(0), source, kind, accuracy })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_ignores_non_finite_values() {
        let s = Stat::of([3.0, f64::NAN, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert!(Stat::of([f64::NAN]).is_none());
    }

    #[test]
    fn the_platform_column_says_the_cpu_once() {
        let mut record = crate::records::tests::sample_record();
        record.platform.version = "cpu".into();
        let scan = Scan {
            runs_dir: PathBuf::from("runs"),
            runs: vec![RunEntry { dir: PathBuf::from("smoke/face/cpu/r0"), record, curve: Vec::new(), curve_note: None }],
            hierarchies: Vec::new(),
            predictions: Vec::new(),
            skipped: Vec::new(),
        };
        let analysis = analyse(&scan);
        assert_eq!(analysis.groups[0].platform, "cpu");
        let mut tpu = crate::records::tests::sample_record();
        tpu.platform.name = "tpu".into();
        tpu.platform.version = "libtpu 0.0.30".into();
        assert_eq!(platform_text(&tpu.platform), "tpu libtpu 0.0.30");
    }
}
