//! The cloud preflight: before `cloud up` or `cloud run` sends any request
//! that creates or bills something, compile the campaign's TPU programs for
//! the VM's accelerator type with the pinned libtpu, here (no TPU needed),
//! and refuse a program that does not fit a core or that the TPU compiler
//! rejects, with the figures. Answers come from the compile cache
//! (`tpu::cache`) when the same program was compiled with the same libtpu
//! for the same topology, so a second `cloud run` compiles nothing.
//!
//! It touches no cloud API; the cloud commands call it before their first
//! request. `--skip-preflight` turns it off.

use std::path::Path;

use anyhow::Context;

use super::compile::compile_planned;
use crate::models::ModelKind;
use crate::orchestrator::Plan;
use crate::pjrt::Backend;
use crate::tpu::{self, CompileReport, cache::CompileCache};

/// What to tell the user who cannot or will not wait for the preflight.
const SKIP: &str = "--skip-preflight starts without this check";

/// Which runs of a campaign go to the TPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TpuRuns {
    /// Every run: the campaign `cloud run` ships, which the VM runs with
    /// `--backend tpu`.
    All,
    /// The runs the campaign itself puts on the TPU (`backends`, `also_on`,
    /// an experiment's own backend): the campaign `cloud up --campaign`
    /// names, whose other runs stay on this machine.
    OnTpu,
}

/// Compiles the TPU programs of `file` (a campaign, or an experiment as a
/// campaign of itself) for `accelerator_type`. Returns one report per
/// experiment with TPU runs, each of which fits; any refusal is an error
/// carrying the figures.
pub fn preflight(file: &Path, accelerator_type: &str, runs: TpuRuns, cache_path: &Path) -> anyhow::Result<Vec<CompileReport>> {
    let target = tpu::target(accelerator_type).with_context(|| format!("the preflight cannot compile for {accelerator_type}; {SKIP}"))?;
    let backend = (runs == TpuRuns::All).then_some(Backend::Tpu);
    let plan = Plan::load(file, None, backend).with_context(|| format!("the preflight cannot read the campaign {}; {SKIP}", file.display()))?;
    if !plan.runs.iter().any(|r| r.backend == Backend::Tpu) {
        eprintln!("preflight: {} has no TPU runs; nothing to compile for {accelerator_type}", file.display());
        return Ok(Vec::new());
    }
    let libtpu = tpu::default_libtpu();
    anyhow::ensure!(
        libtpu.is_file(),
        "the preflight needs libtpu to compile for {accelerator_type} and there is none at {}: `make tpu-plugin` fetches the pinned one \
         (or set TPU_LIBRARY_PATH); {SKIP}",
        libtpu.display()
    );
    let mut items = Vec::new();
    for (_, experiment) in &plan.experiments {
        let models: Vec<ModelKind> = plan.runs.iter().filter(|r| r.experiment == experiment.name && r.backend == Backend::Tpu).map(|r| r.model).collect();
        if models.is_empty() {
            continue;
        }
        let planned = tpu::plan(experiment, target, None).with_context(|| format!("the preflight of {} for {accelerator_type}", experiment.name))?;
        items.push((experiment, planned.into_iter().filter(|p| models.contains(&p.model)).collect::<Vec<_>>()));
    }
    let count: usize = items.iter().map(|(_, p)| p.len()).sum();
    eprintln!("preflight: compiling {count} TPU program(s) of {} for {} ({}) with {}", file.display(), accelerator_type, target.topology, libtpu.display());
    let mut cache = CompileCache::load(cache_path);
    let compiled = compile_planned(&items, target, &libtpu, 2, None, &mut cache, true)?;
    eprintln!("preflight: {} compiled now, {} answered from the compile cache {}", compiled.compiled, compiled.cached, cache.path().display());
    let mut refusals = Vec::new();
    for report in &compiled.reports {
        if report.refusals.is_empty() {
            eprintln!("preflight: {}", summary(report));
        }
        refusals.extend(report.refusals.iter().map(|r| format!("{}: {r}", report.experiment)));
    }
    if !refusals.is_empty() {
        anyhow::bail!(
            "the preflight refused {} on a {accelerator_type}: {}. Nothing was created or started; `emotionet compile EXPERIMENT --target {accelerator_type}` \
             shows every figure; {SKIP}",
            file.display(),
            refusals.join("; ")
        );
    }
    Ok(compiled.reports)
}

/// One line per experiment: the largest program against a core's HBM, and
/// the predicted training time.
fn summary(r: &CompileReport) -> String {
    let largest = r.programs.iter().filter_map(|p| p.memory_total_bytes.map(|m| (m, &p.name))).max_by_key(|(m, _)| *m);
    let memory = largest.map_or(String::new(), |(m, name)| format!("largest {name} {} of {} per core; ", tpu::gib(m as f64), tpu::gib(r.hbm_bytes)));
    let time = r.predicted_train_s.map_or("no prediction".to_string(), |s| format!("predicted training {s:.1} s (roofline, not measured)"));
    format!("{} fits a {} ({} programs): {memory}{time}", r.experiment, r.accelerator_type, r.programs.len())
}
