//! `emotionet train`: train the models of an experiment file.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use clap::Args;

use super::BackendArgs;
use crate::experiment::Experiment;
use crate::lock::OutputLock;
use crate::models::{CpuKernelMode, ModelKind};
use crate::train::{TrainOptions, train};

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// The experiment file (YAML).
    pub experiment: PathBuf,
    /// Train only this model (default: every model in the file, face first).
    #[arg(long, value_enum)]
    pub model: Option<ModelKind>,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Where runs go (default: the experiment's `output`): a folder, or
    /// gs://BUCKET/PREFIX (staged locally, each file uploaded as soon as it
    /// is written, the newest checkpoint restored from the bucket on --resume).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue from the newest checkpoint of an unfinished run.
    #[arg(long)]
    pub resume: bool,
    /// Repeat index (a campaign runs the same experiment several times).
    #[arg(long, default_value_t = 0)]
    pub repeat: u32,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
    /// If another emotionet command is writing the same folder, wait for
    /// it to end instead of stopping with an error.
    #[arg(long)]
    pub wait: bool,
    /// Who computes the conv layers on a CPU: per part the faster of XLA's
    /// op and oneDNN's kernel, timed here once and cached (auto), or one of
    /// them everywhere. A resumed auto run keeps its checkpoint's choice.
    /// Campaigns (`emotionet run`) pass the variable on to their trainers.
    #[arg(long, value_enum, env = "EMOTIONET_CPU_KERNELS", default_value_t = CpuKernelMode::Auto)]
    pub cpu_kernels: CpuKernelMode,
}

/// Sets `stop` on the first SIGINT or SIGTERM; on the second, runs
/// `escalate` (the orchestrator kills its children's process groups there)
/// and exits with 130.
pub fn install_stop_handler(stop: Arc<AtomicBool>, escalate: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("no signal handling: {e}");
                return;
            }
        };
        runtime.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
                tracing::warn!("cannot install signal handlers");
                return;
            };
            let mut escalate = Some(escalate);
            for round in 0..2 {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                if round == 0 {
                    eprintln!("stopping: writing a checkpoint (signal again to quit at once)");
                    stop.store(true, Ordering::SeqCst);
                } else {
                    if let Some(escalate) = escalate.take() {
                        escalate();
                    }
                    std::process::exit(130);
                }
            }
        });
    });
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let mut experiment = Experiment::from_file(&args.experiment)?;
    if let Some(out) = &args.out {
        experiment.output = out.clone();
    }
    // A bucket output: train in a local staging folder, restored from the
    // bucket first (so --resume finds the newest checkpoint there) and
    // uploaded file by file as the run writer finishes each one.
    let target = experiment.output.clone();
    let staged = super::output::Output::for_writing(&target, "training", args.wait.into())?;
    experiment.output = staged.local.clone();
    let result = train_all(experiment, &args, &target, staged.sync_handle(), staged.halt());
    let uploaded = staged.finish();
    result.and(uploaded)
}

fn train_all(
    experiment: Experiment,
    args: &TrainArgs,
    target: &std::path::Path,
    sync: crate::storage::SyncHandle,
    halt: Option<crate::train::Halt>,
) -> anyhow::Result<()> {
    let kinds: Vec<ModelKind> = match args.model {
        Some(kind) => {
            experiment.training(kind).with_context(|| format!("{} has no `models.{kind}` section", args.experiment.display()))?;
            vec![kind]
        }
        None => experiment.trainings().into_iter().map(|(k, _)| k).collect(),
    };
    // One writer per run folder, held until every model here is trained.
    let _locks = kinds
        .iter()
        .map(|&kind| {
            let run_dir = experiment.run_paths(kind, args.backend.resolve(&experiment.backend).kind, args.repeat).dir;
            OutputLock::acquire(&run_dir, &format!("training the {kind} model"), args.wait.into())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    // A trainer has no children of its own: the second signal just exits.
    install_stop_handler(stop.clone(), || {});
    let mut options = TrainOptions::new(&experiment);
    options.backend = args.backend.resolve(&experiment.backend);
    options.resume = args.resume;
    options.repeat = args.repeat;
    options.progress = !args.quiet;
    options.stop = stop;
    options.experiment_file = Some(args.experiment.clone());
    options.out_label = Some(target.display().to_string());
    options.after_flush = sync.hook().map(crate::train::run_writer::AfterFlush);
    options.halt = halt;
    options.cpu_kernels = args.cpu_kernels;
    // The run's record says where its images came from when that was a
    // prepared set (training fails if the set cannot be read there).
    if let Some(prepared) = &experiment.data.prepared {
        options.notes.insert("data_prepared".into(), prepared.display().to_string());
    }
    for kind in kinds {
        let record = train(&experiment, kind, &options)?;
        let timing = record.timing.as_ref();
        let seconds = |v: Option<f64>, unit: &str| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.3} {unit}"));
        let input = match timing {
            Some(t) if t.input_bound() => format!(", input-bound: {:.0}% of the loop waiting for batches", t.input_share().unwrap_or(0.0) * 100.0),
            _ => String::new(),
        };
        outln!(
            "{kind}: {} steps, eval accuracy {}, steady step {} ({} images/s){input}, total {} -> {}",
            record.steps_done,
            record.final_eval.as_ref().map_or_else(|| "n/a".to_string(), |e| format!("{:.3}", e.accuracy)),
            seconds(timing.and_then(|t| t.steady_step_s), "s"),
            timing.and_then(|t| t.images_per_s).map_or_else(|| "n/a".to_string(), |v| format!("{v:.1}")),
            seconds(timing.map(|t| t.total_wall_s), "s"),
            experiment.run_paths(kind, options.backend.kind, args.repeat).dir.display()
        )?;
    }
    Ok(())
}
