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
    /// else the first experiment's): a folder, or gs://BUCKET/PREFIX (staged
    /// locally, uploaded as written, restored from the bucket on a fresh machine).
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
    let mut plan = Plan::load(&args.campaign, args.out.as_deref(), args.backend)?;
    let target = crate::storage::Location::from_path(&plan.output)?;
    outln!("campaign {}: {} runs -> {target}", plan.name, plan.runs.len())?;
    for key in &plan.runs {
        outln!("  {key}")?;
    }
    if args.dry_run {
        return Ok(());
    }
    // A bucket output: the campaign runs in a local staging folder, uploaded
    // to the bucket as it is written, under the bucket's lease.
    let purpose = format!("running the campaign {}", plan.name);
    let staged = super::output::Output::for_writing(&plan.output, &purpose, args.wait.into())?;
    plan.output = staged.local.clone();
    // One campaign per output folder. Its `train` and `eval` children lock
    // their own folders inside it, so this does not block them.
    let lock = OutputLock::acquire(&plan.output, &purpose, args.wait.into());
    let halt = staged.halt();
    let result = lock.map_err(anyhow::Error::from).and_then(|_lock| run_plan(plan, &args, halt));
    let uploaded = staged.finish();
    result.and(uploaded)
}

fn run_plan(plan: Plan, args: &RunArgs, halt: Option<crate::train::Halt>) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    // The first signal: the campaign's children checkpoint and stop (within
    // the grace). A second: no more waiting, every child group is killed
    // before this process exits, so nothing of the campaign is left.
    let groups = crate::orchestrator::ChildGroups::default();
    let escalate = {
        let groups = groups.clone();
        move || {
            let killed = groups.kill_all();
            eprintln!("second stop signal: killed {killed} process group(s) of this campaign (SIGKILL); exiting");
        }
    };
    super::train::install_stop_handler(stop.clone(), escalate);
    // A bucket output whose lease another writer took over: the campaign
    // stops its runs as on Ctrl-C (they checkpoint here, in the staging
    // folder) and ends with the reason.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = halt.clone().map(|halt| {
        let (stop, done) = (stop.clone(), done.clone());
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if (halt.0)().is_some() {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
        })
    });
    let options = RunOptions {
        exe: std::env::current_exe().context("locating the emotionet binary")?,
        plugin: args.plugin.clone(),
        progress: !args.quiet,
        stop: stop.clone(),
        grace: crate::orchestrator::STOP_GRACE,
        groups,
    };
    let output = plan.output.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the async runtime")?;
    let summary = runtime.block_on(run_campaign(plan, options));
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(watcher) = watcher {
        let _ = watcher.join();
    }
    if let Some(reason) = halt.and_then(|halt| (halt.0)()) {
        anyhow::bail!("{reason}; the campaign stopped its runs (their checkpoints stay in {})", output.display());
    }
    let summary = summary?;
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
