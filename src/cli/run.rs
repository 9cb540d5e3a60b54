//! `emotionet run`: a campaign (or one experiment file) from start to report.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Args;

use crate::lock::OutputLock;
use crate::orchestrator::{Plan, RunOptions, run_campaign};
use crate::pjrt::Backend;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// A campaign file, or an experiment file (run as a campaign of itself).
    pub campaign: PathBuf,
    /// Where runs, state and the report go (default: the campaign's `output`,
    /// else the first experiment's).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Run everything on this backend instead of the campaign's backends.
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// A PJRT plugin library for the one backend this campaign runs here (two local backends and one plugin is an error).
    #[arg(long, env = "EMOTIONET_PJRT_PLUGIN")]
    pub plugin: Option<PathBuf>,
    /// Plan only: print the runs and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// If another emotionet command is writing the same folder, wait for
    /// it to end instead of stopping with an error.
    #[arg(long)]
    pub wait: bool,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let plan = Plan::load(&args.campaign, args.out.as_deref(), args.backend)?;
    outln!("campaign {}: {} runs -> {}", plan.name, plan.runs.len(), plan.output.display())?;
    for key in &plan.runs {
        outln!("  {key}")?;
    }
    if args.dry_run {
        return Ok(());
    }
    // One campaign per output folder. Its `train` and `eval` children lock
    // their own folders inside it, so this does not block them.
    let _lock = OutputLock::acquire(&plan.output, &format!("running the campaign {}", plan.name), args.wait.into())?;
    let stop = Arc::new(AtomicBool::new(false));
    super::train::install_stop_handler(stop.clone());
    let options = RunOptions {
        exe: std::env::current_exe().context("locating the emotionet binary")?,
        plugin: args.plugin.clone(),
        progress: !args.quiet,
        stop: stop.clone(),
    };
    let output = plan.output.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the async runtime")?;
    let summary = runtime.block_on(run_campaign(plan, options))?;
    outln!("finished: {}", summary.finished.len())?;
    for (name, error) in &summary.failed {
        outln!("FAILED {name}: {error}")?;
    }
    if let Some(report) = &summary.report {
        outln!("report: {}", report.display())?;
    }
    if let Some(error) = &summary.report_error {
        outln!("REPORT FAILED: {error}")?;
    }
    if summary.interrupted {
        return Err(crate::train::Interrupted::Campaign { state: output.join(crate::orchestrator::STATE_FILE) }.into());
    }
    if !summary.failed.is_empty() {
        anyhow::bail!("{} run(s) failed; see their train.log (the campaign state is in campaign-state.json)", summary.failed.len());
    }
    if let Some(error) = summary.report_error {
        anyhow::bail!("the campaign's runs are done, but its report could not be written: {error}; fix that and run `emotionet report {}`", output.display());
    }
    Ok(())
}
