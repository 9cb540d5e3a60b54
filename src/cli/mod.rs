//! The command line. Each subcommand lives in its own file with its
//! arguments and its `run` function; this file only dispatches.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::experiment::{BackendConfig, BackendOverrides};
use crate::pjrt::{self, Backend};

/// `println!` that returns an `io::Error` instead of panicking, so that a
/// closed pipe (`emotionet ... | head`) ends the command quietly.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)
    }};
}

mod bench;
mod cloud;
mod compile;
mod data;
mod devices;
mod eval;
mod hlo;
mod output;
mod predict;
mod preflight;
mod report;
mod run;
mod train;
mod trained;

#[derive(Parser, Debug)]
#[command(name = "emotionet", version, about = "Train and run the EMOTIONET face/emotion CNN hierarchy on XLA (CPU, GPU, Cloud TPU)")]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show the PJRT plugin, its API version and its devices.
    Devices(devices::DevicesArgs),
    /// Write a model's programs (train step, eval step, predict) as StableHLO.
    Hlo(hlo::HloArgs),
    /// Time the training step per model, image size and device count.
    Bench(bench::BenchArgs),
    /// Datasets: generate the synthetic set, prepare a task's data, download LFW/SUN397.
    Data(data::DataArgs),
    /// Write the Markdown + SVG report of the run records under a directory.
    Report(report::ReportArgs),
    /// Train the models of an experiment file (checkpoints, TensorBoard, run record).
    Train(train::TrainArgs),
    /// Run a campaign (experiments x backends x repeats), evaluate and report.
    Run(run::RunArgs),
    /// Evaluate the trained hierarchy on the mixed eval set: Table I and confusion matrices (hierarchy.json).
    Eval(eval::EvalArgs),
    /// Face probability and, for a face, the emotion of image files, with the trained models.
    Predict(predict::PredictArgs),
    /// Cloud TPU VMs: up, status, run a campaign, fetch its output, down.
    Cloud(Box<cloud::CloudArgs>),
    /// Compile an experiment's programs for a Cloud TPU type here (no TPU needed): memory, flops, predicted time.
    Compile(compile::CompileArgs),
    /// The child process `compile` and the cloud preflight run libtpu in (internal).
    #[command(name = "tpu-compile-worker", hide = true)]
    TpuCompileWorker {
        /// The compile request the parent wrote (JSON).
        request: PathBuf,
        /// Where to write the compile response for the parent.
        response: PathBuf,
    },
}

/// How to reach XLA: shared by every subcommand that runs programs. Each is
/// an override of an experiment's `backend:` section (or of the default
/// section, cpu, for commands without an experiment); the two meet in
/// [`BackendConfig::with_overrides`] and nowhere else.
#[derive(Args, Debug, Clone, Default)]
pub struct BackendArgs {
    /// Accelerator family (default: the experiment's, else cpu); picks the pinned plugin for it.
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Path to a PJRT plugin library; overrides the backend's default plugin. A `.json` stand-in
    /// description (tests: one platform playing another) is refused unless EMOTIONET_ALLOW_STAND_IN=1.
    #[arg(long, env = "EMOTIONET_PJRT_PLUGIN")]
    pub plugin: Option<PathBuf>,
    /// Client create option NAME=VALUE (e.g. cpu_device_count=8); repeatable.
    #[arg(long = "client-option", value_name = "NAME=VALUE")]
    pub client_options: Vec<String>,
}

impl BackendArgs {
    /// `section` (an experiment's `backend:`) with these overrides applied.
    pub fn resolve(&self, section: &BackendConfig) -> BackendConfig {
        section.with_overrides(&BackendOverrides { kind: self.backend, plugin: self.plugin.clone(), client_options: self.client_options.clone() })
    }

    /// Connects where these arguments say, for commands without an experiment.
    pub fn connect(&self) -> anyhow::Result<pjrt::Client> {
        self.resolve(&BackendConfig::default()).connect()
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Devices(args) => devices::run(args),
        Command::Hlo(args) => hlo::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Data(args) => data::run(args),
        Command::Report(args) => report::run(args),
        Command::Train(args) => train::run(args),
        Command::Run(args) => run::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Predict(args) => predict::run(args),
        Command::Cloud(args) => cloud::run(*args),
        Command::Compile(args) => compile::run(args),
        Command::TpuCompileWorker { request, response } => crate::tpu::worker::serve(&request, &response),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if is_broken_pipe(&e) {
                return ExitCode::SUCCESS;
            }
            if e.chain().any(|c| c.downcast_ref::<crate::train::Interrupted>().is_some()) {
                eprintln!("{}", crate::errors::chain_text(&*e));
                return ExitCode::from(130);
            }
            eprintln!("error: {}", crate::errors::chain_text(&*e));
            ExitCode::from(1)
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}
