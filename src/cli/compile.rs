//! `emotionet compile EXP.yaml --target TYPE`: compile the experiment's
//! programs for a Cloud TPU accelerator type with the pinned libtpu, on this
//! machine (no TPU, no Google Cloud account), and show per-device memory,
//! flops, bytes, the roofline step time and the predicted run time and cost.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;

use crate::experiment::Experiment;
use crate::models::ModelKind;
use crate::tpu::cache::CompileCache;
use crate::tpu::{self, CompileReport, PlannedProgram, Response, Target};

#[derive(Args, Debug)]
pub struct CompileArgs {
    /// The experiment file.
    pub experiment: PathBuf,
    /// Accelerator type to compile for (v2-8, v3-8, v4-8, v5p-8, v5litepod-8, v6e-8, v3-32).
    #[arg(long)]
    pub target: String,
    /// Only this model's programs.
    #[arg(long, value_enum)]
    pub model: Option<ModelKind>,
    /// The libtpu to compile with (default: $TPU_LIBRARY_PATH, else .deps/libtpu/libtpu.so from `make tpu-plugin`).
    #[arg(long)]
    pub libtpu: Option<PathBuf>,
    /// Programs compiled at once.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Also write the serialized executables (PJRT_Executable_Serialize) into this folder.
    #[arg(long)]
    pub serialize_to: Option<PathBuf>,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also keep the prediction in this runs folder (RUNS/EXPERIMENT/tpu-prediction-TYPE.json), where `emotionet report` shows it.
    #[arg(long, value_name = "RUNS")]
    pub out: Option<PathBuf>,
}

/// Compiles `experiment`'s programs for `target` in a worker process (and
/// records the answers in the compile cache for the preflight).
pub fn compile_report(
    experiment: &Experiment,
    target: &Target,
    libtpu: &Path,
    only: Option<ModelKind>,
    threads: usize,
    serialize_to: Option<&Path>,
) -> anyhow::Result<CompileReport> {
    let planned = tpu::plan(experiment, target, only)?;
    let mut cache = CompileCache::load(&tpu::cache::default_path());
    let compiled = compile_planned(&[(experiment, planned)], target, libtpu, threads, serialize_to, &mut cache, false)?;
    Ok(compiled.reports.into_iter().next().expect("one report per experiment"))
}

/// What [`compile_planned`] did.
pub struct Compiled {
    /// One per experiment, in the order given.
    pub reports: Vec<CompileReport>,
    /// Programs the TPU compiler compiled now.
    pub compiled: usize,
    /// Programs answered from the cache.
    pub cached: usize,
}

/// Compiles the planned programs of several experiments for one target in
/// one worker process. With `use_cache`, programs the cache has an answer
/// for (same program, libtpu and topology) are not compiled again, and no
/// worker starts when it has them all. Every new answer goes into the cache
/// either way (a cache that cannot be written is a warning, not an error).
pub fn compile_planned(
    items: &[(&Experiment, Vec<PlannedProgram>)],
    target: &Target,
    libtpu: &Path,
    threads: usize,
    serialize_to: Option<&Path>,
    cache: &mut CompileCache,
    use_cache: bool,
) -> anyhow::Result<Compiled> {
    anyhow::ensure!(libtpu.is_file(), "no libtpu at {}: `make tpu-plugin` fetches the pinned one, or pass --libtpu PATH", libtpu.display());
    let sha = cache.libtpu_sha256(libtpu)?;
    let options: Vec<(String, String)> = target.create_options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let topology_key = tpu::cache::topology_key(&sha, target.topology, &options);
    let key = |p: &PlannedProgram| tpu::cache::program_key(&p.hash(), &sha, target.topology, &options);
    let all: Vec<&PlannedProgram> = items.iter().flat_map(|(_, planned)| planned).collect();
    let known = |p: &PlannedProgram| use_cache && serialize_to.is_none() && cache.topology(&topology_key).is_some() && cache.program(&key(p)).is_some();
    // Each distinct program once, even when two experiments share it.
    let mut missing: Vec<&PlannedProgram> = Vec::new();
    for p in all.iter().copied().filter(|p| !known(p)) {
        if !missing.iter().any(|m| key(m) == key(p)) {
            missing.push(p);
        }
    }
    let fresh = if missing.is_empty() {
        None
    } else {
        let owned: Vec<PlannedProgram> = missing.iter().map(|p| (*p).clone()).collect();
        let request = tpu::request(libtpu, target, &owned, threads, serialize_to);
        let exe = std::env::current_exe().context("finding the emotionet binary to run the compile worker")?;
        let scratch = std::env::temp_dir().join("emotionet-tpu-compile");
        tracing::info!("compiling {} program(s) for {} with {}", owned.len(), target.accelerator_type, libtpu.display());
        let response =
            tpu::worker::run(&exe, &request, &scratch).with_context(|| format!("compiling for {} ({})", target.accelerator_type, target.topology))?;
        anyhow::ensure!(response.programs.len() == owned.len(), "the compile worker answered for {} programs of {}", response.programs.len(), owned.len());
        let keys: Vec<String> = owned.iter().map(key).collect();
        cache.remember(&topology_key, &response, &keys);
        if let Err(e) = cache.save() {
            tracing::warn!("{e}; the next preflight compiles again");
        }
        Some((keys, response))
    };
    let topology = cache.topology(&topology_key).cloned().context("the compile cache lost the topology it was just given")?;
    let mut reports = Vec::new();
    for (experiment, planned) in items {
        let mut programs = Vec::new();
        for p in planned {
            let k = key(p);
            let from_worker = fresh.as_ref().and_then(|(keys, r)| keys.iter().position(|x| *x == k).map(|i| r.programs[i].clone()));
            let result = match from_worker {
                Some(r) => r,
                None => cache.program(&k).cloned().with_context(|| format!("the compile cache has no answer for {}", p.name()))?,
            };
            programs.push(result);
        }
        let response = Response {
            platform_name: topology.platform_name.clone(),
            platform_version: topology.platform_version.clone(),
            plugin_attributes: topology.plugin_attributes.clone(),
            devices: topology.devices.clone(),
            programs,
        };
        reports.push(tpu::report(experiment, target, libtpu, planned, &response));
    }
    Ok(Compiled { reports, compiled: missing.len(), cached: all.len() - all.iter().filter(|p| missing.iter().any(|m| key(m) == key(p))).count() })
}

pub fn run(args: CompileArgs) -> anyhow::Result<()> {
    let target = tpu::target(&args.target)?;
    let experiment = Experiment::from_file(&args.experiment).with_context(|| format!("reading {}", args.experiment.display()))?;
    let libtpu = args.libtpu.clone().unwrap_or_else(tpu::default_libtpu);
    let report = compile_report(&experiment, target, &libtpu, args.model, args.threads.max(1), args.serialize_to.as_deref())?;
    if let Some(runs) = &args.out
        && report.refusals.is_empty()
    {
        let path = tpu::write_prediction(runs, &report).with_context(|| format!("keeping the prediction in {}", runs.display()))?;
        eprintln!("the prediction (not a measurement) is in {}", path.display());
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        print_report(&report, target)?;
    }
    if !report.refusals.is_empty() {
        anyhow::bail!("{} cannot run on a {}: {}", report.experiment, report.accelerator_type, report.refusals.join("; "));
    }
    Ok(())
}

fn gb(bytes: f64) -> String {
    format!("{:.2}", bytes / 1e9)
}

fn print_report(r: &CompileReport, target: &Target) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let options = if r.create_options.is_empty() {
        String::new()
    } else {
        format!(" + {}", r.create_options.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","))
    };
    writeln!(
        out,
        "{} on {} (topology {}{options}: {} devices, {}; libtpu {})",
        r.experiment, r.accelerator_type, r.topology, r.devices, r.device_kind, r.platform_version
    )?;
    if target.hosts > 1 {
        writeln!(
            out,
            "note: a {} is {} hosts; emotionet runs on single-host slices only, so this shows what it would compile to",
            r.accelerator_type, target.hosts
        )?;
    }
    writeln!(
        out,
        "per device: peak {:.1} TFLOP/s bf16, {:.1} TFLOP/s f32, HBM {} at {:.0} GB/s ({})",
        r.peak_bf16_flops / 1e12,
        r.peak_f32_flops / 1e12,
        tpu::gib(r.hbm_bytes),
        r.hbm_bandwidth / 1e9,
        r.peak_source
    )?;
    writeln!(out, "  ({})", r.f32_peak_note)?;
    writeln!(out)?;
    writeln!(out, "per device, GB = 1e9 bytes:")?;
    writeln!(
        out,
        "| program | size | batch | replicas | precision | compile s | args GB | outputs GB | aliased GB | temp GB | code GB | total GiB of HBM | flops/step | bytes/step | roofline step | bound |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    for p in &r.programs {
        let (args, outs, alias, temp, code) = match p.memory {
            Some(m) => (gb(m.arguments as f64), gb(m.outputs as f64), gb(m.aliased as f64), gb(m.temp as f64), gb(m.generated_code as f64)),
            None => ("-".into(), "-".into(), "-".into(), "-".into(), "-".into()),
        };
        let total = p.memory_total_bytes.map_or("-".into(), |t| {
            format!("{:.2} / {:.2}{}", t as f64 / (1u64 << 30) as f64, p.hbm_bytes / (1u64 << 30) as f64, if p.fits { "" } else { " (too big)" })
        });
        writeln!(
            out,
            "| {} | {} | {} | {} | {} | {:.1} | {args} | {outs} | {alias} | {temp} | {code} | {total} | {} | {} | {} | {} |",
            p.name,
            p.image_size,
            p.batch,
            p.replicas,
            p.precision,
            p.compile_s,
            p.flops.map_or("-".into(), |f| format!("{f:.3e}")),
            p.bytes_accessed.map_or("-".into(), |b| format!("{b:.3e}")),
            p.roofline_step_s.map_or("-".into(), |s| format!("{:.2} ms", s * 1e3)),
            p.bound.as_deref().unwrap_or("-"),
        )?;
    }
    writeln!(out)?;
    match r.predicted_train_s {
        Some(s) => {
            let steps: Vec<String> =
                r.programs.iter().filter(|p| p.role == tpu::Role::TrainStep).map(|p| format!("{} {} steps", p.model, p.runs.unwrap_or(0))).collect();
            writeln!(out, "predicted TPU time: {:.1} s ({})", s, steps.join(", "))?;
            if r.predicted_cost.is_empty() {
                writeln!(out, "predicted cost: - (the price table has no {})", r.accelerator_type)?;
            }
            for c in &r.predicted_cost {
                let spot = c.spot_usd.map_or("-".into(), |v| format!("${v:.4}"));
                writeln!(out, "predicted cost in {}: ${:.4} on demand, {spot} spot (est.; {})", c.region, c.on_demand_usd, r.price_source)?;
            }
            writeln!(out, "({})", r.prediction_note)?;
        }
        None => writeln!(out, "no prediction: {}", r.refusals.join("; "))?,
    }
    Ok(())
}
