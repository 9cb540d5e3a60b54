//! `emotionet bench`: training-step speed per model, size and device count.

use std::io::Write;

use anyhow::Context;
use clap::Args;

use super::BackendArgs;
use crate::bench::{self, BenchCase};
use crate::data::Augmentation;
use crate::graph::optim::Optimizer;
use crate::models::kernel_choice::{self, ChoiceRequest};
use crate::models::{Architecture, ConvChoice, CpuKernelMode, KernelCache, ModelKind, Precision};
use crate::pjrt::OptionOverride;
use crate::tensor::DType;

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Only this model (default: both).
    #[arg(long, value_enum)]
    pub model: Option<ModelKind>,
    /// Only this image size (default: the suite's 100 and 256).
    #[arg(long)]
    pub size: Option<i64>,
    /// Global batch (default: 100 at 100x100, 16 at 256x256).
    #[arg(long)]
    pub batch: Option<i64>,
    /// Devices per case: a number or `all` (default: the suite's 1 and all).
    #[arg(long)]
    pub devices: Option<String>,
    /// Timed steps per case (after warm-up).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Untimed steps before timing (the first step is reported separately).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Optimizer of the timed step.
    #[arg(long, value_parser = ["sgd", "momentum", "adam"], default_value = "sgd")]
    pub optimizer: String,
    /// XLA debug option NAME=VALUE for every compilation; repeatable.
    #[arg(long = "xla-option", value_name = "NAME=VALUE")]
    pub xla_options: Vec<String>,
    /// What the network computes in: f32, or bf16 (mixed precision).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// How the conv layers are computed: convolution ops, or patches
    /// (im2col + dot) where a layer has one input channel.
    #[arg(long, value_enum, default_value_t = ConvChoice::Convolution)]
    pub conv: ConvChoice,
    /// Who computes the conv layers on a CPU: per part the faster of the
    /// two measured on this machine (auto, cached), XLA's ops, or oneDNN
    /// (Debian's libdnnl, loaded at run time) through XLA custom calls.
    #[arg(long, value_enum, default_value_t = CpuKernelMode::Auto)]
    pub cpu_kernels: CpuKernelMode,
    /// Side of the square f32 matmul timed as this machine's peak (0: skip).
    #[arg(long, default_value_t = 2048)]
    pub peak_size: i64,
    /// Instead of the step alone, time each layer's forward, input gradient
    /// and weight gradient as programs of their own, next to the step.
    #[arg(long)]
    pub profile: bool,
    /// Instead of timing, run the oneDNN reproduction: one small SGD step
    /// with and without `xla_cpu_use_onednn`, each against f64.
    #[arg(long)]
    pub onednn_repro: bool,
    /// Instead of the training step, time the input pipeline alone (no
    /// device, no plugin): batches of `--size` (default 256) and `--batch`
    /// (default 128) from images held in memory, per augmentation and
    /// thread count.
    #[arg(long)]
    pub input: bool,
    /// With --input: `off`, `demo` (the demo face model's augmentation,
    /// experiments/smoke.yaml), `both`, or a YAML map of augmentation
    /// settings such as `{flip: true, rotate_deg: 10}`.
    #[arg(long, default_value = "both")]
    pub augment: String,
    /// With --input: thread counts to time, comma-separated (default: 1,
    /// and this host's cores when there are more).
    #[arg(long)]
    pub threads: Option<String>,
    /// With --input: batches timed per case.
    #[arg(long, default_value_t = 20)]
    pub input_batches: usize,
    /// Print JSON lines only (the machine, then one line per case or
    /// profile), no text or tables; as `--json` on every command.
    #[arg(long)]
    pub json: bool,
    /// Also append each case's (or profile's) JSON line to this file.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<std::path::PathBuf>,
}

/// Appends one JSON line to `--json-out`'s file.
fn append_line(path: &std::path::Path, line: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("--json-out {}", path.display()))?;
    writeln!(f, "{line}").with_context(|| format!("--json-out {}", path.display()))?;
    Ok(())
}

/// Parses `name=value` into an XLA option (bool, integer, float or string).
pub fn parse_xla_option(text: &str) -> anyhow::Result<(String, OptionOverride)> {
    let (name, value) = text.split_once('=').ok_or_else(|| anyhow::anyhow!("--xla-option {text:?} must be NAME=VALUE"))?;
    let value = match value {
        "true" => OptionOverride::Bool(true),
        "false" => OptionOverride::Bool(false),
        v => v
            .parse::<i64>()
            .map(OptionOverride::Int)
            .or_else(|_| v.parse::<f64>().map(OptionOverride::Double))
            .unwrap_or_else(|_| OptionOverride::String(v.to_string())),
    };
    Ok((name.to_string(), value))
}

pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    if args.input {
        return run_input(&args);
    }
    let client = args.backend.connect()?;
    let all = client.device_ids().len();
    let optimizer = match args.optimizer.as_str() {
        "momentum" => Optimizer::Momentum { momentum: 0.9, nesterov: false },
        "adam" => Optimizer::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8 },
        _ => Optimizer::Sgd,
    };
    let xla_options = args.xla_options.iter().map(|t| parse_xla_option(t)).collect::<anyhow::Result<Vec<_>>>()?;
    let devices = match args.devices.as_deref() {
        None => None,
        Some("all") => Some(all),
        Some(n) => Some(n.parse::<usize>().map_err(|_| anyhow::anyhow!("--devices {n:?}: expected a number or `all`"))?),
    };
    let mut cases: Vec<BenchCase> = bench::default_cases(all, args.steps)
        .into_iter()
        .filter(|c| args.model.is_none_or(|m| m == c.model))
        .filter(|c| args.size.is_none_or(|s| s == c.size))
        .filter(|c| devices.is_none_or(|d| d == c.devices || (d > 1 && c.devices > 1)))
        .collect();
    if cases.is_empty() {
        // A size or device count outside the suite: build the cases asked for.
        for model in args.model.map_or(vec![ModelKind::Face, ModelKind::Emotion], |m| vec![m]) {
            let size = args.size.unwrap_or(100);
            cases.push(BenchCase {
                model,
                size,
                batch: if size >= 200 { 16 } else { 100 },
                devices: devices.unwrap_or(1),
                steps: args.steps,
                warmup: 1,
                precision: args.precision,
                conv: args.conv,
                cpu_kernels: Default::default(),
                optimizer: Optimizer::Sgd,
                xla_options: vec![],
            });
        }
    }
    for c in &mut cases {
        if let Some(d) = devices {
            c.devices = d;
        }
        if let Some(b) = args.batch {
            c.batch = b;
        }
        if c.batch % c.devices as i64 != 0 {
            anyhow::bail!("batch {} does not split across {} devices; pass --batch with a multiple of {}", c.batch, c.devices, c.devices);
        }
        c.warmup = args.warmup;
        c.precision = args.precision;
        c.conv = args.conv;
        let arch = Architecture::for_kind(c.model, c.size);
        let request =
            ChoiceRequest { mode: args.cpu_kernels, arch: &arch, replica_batch: c.batch / c.devices as i64, precision: c.precision, conv: c.conv, repeats: 5 };
        let choice = kernel_choice::choose(&client, &request, &KernelCache::default_location())?;
        if !args.json {
            writeln!(std::io::stdout(), "cpu kernels for {} {}x{}: {}", c.model, c.size, c.size, choice.describe())?;
        }
        c.cpu_kernels = choice.kernels;
        c.optimizer = optimizer.clone();
        c.xla_options = xla_options.clone();
    }
    let mut results = Vec::new();
    let mut stdout = std::io::stdout().lock();
    if args.onednn_repro {
        let r = bench::onednn_repro(&client)?;
        writeln!(stdout, "{}", serde_json::to_string(&r)?)?;
        if args.json {
            return Ok(());
        }
        writeln!(stdout, "updated weights w1[0, :8] after one SGD step (largest update {:.3e}):", r.update_scale)?;
        writeln!(stdout, "  expected (f64)  {:?}", r.expected.iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>())?;
        writeln!(stdout, "  f32             {:?}  max error {:.3e}", r.got_default.iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>(), r.default_max_error)?;
        writeln!(stdout, "  f32 + oneDNN    {:?}  max error {:.3e}", r.got_onednn.iter().map(|v| format!("{v:.6}")).collect::<Vec<_>>(), r.onednn_max_error)?;
        return Ok(());
    }
    let machine = bench::Machine::detect();
    let plugin = serde_json::json!({"platform": client.platform_name(), "version": client.platform_version()});
    if !args.json {
        writeln!(stdout, "machine: {}", machine.summary())?;
        writeln!(stdout, "plugin: {} {}", client.platform_name(), client.platform_version())?;
        let onednn = crate::pjrt::onednn_version().map_or_else(|| "not loaded (libdnnl.so.2 absent)".to_string(), |v| format!("oneDNN {v}"));
        writeln!(stdout, "cpu kernels: {} ({onednn})", serde_json::to_string(&args.cpu_kernels)?.trim_matches('"'))?;
        if args.precision == Precision::Bf16 && client.platform_name().eq_ignore_ascii_case("cpu") {
            writeln!(stdout, "{}", machine.bf16_note())?;
        }
    }
    let peak = if args.peak_size > 0 {
        let p = bench::matmul_peak(&client, args.peak_size, DType::F32, 3)?;
        if !args.json {
            writeln!(stdout, "peak: {n}x{n} f32 matmul {:.1} ms, {:.1} GFLOP/s (best of 3)", p.best_ms, p.gflops_per_s, n = p.n)?;
        }
        writeln!(stdout, "{}", serde_json::to_string(&serde_json::json!({"machine": machine, "plugin": plugin, "matmul_peak": p}))?)?;
        Some(p.gflops_per_s)
    } else {
        if args.json {
            writeln!(stdout, "{}", serde_json::to_string(&serde_json::json!({"machine": machine, "plugin": plugin}))?)?;
        }
        None
    };
    if args.profile {
        // One device: the profile's parts run alone on the first.
        cases.retain(|c| c.devices == 1);
        for case in &cases {
            tracing::info!("profile {} {}x{} batch {} ({})", case.model, case.size, case.size, case.batch, case.precision);
            let rows = bench::profile(&client, case)?;
            let line = serde_json::to_string(&serde_json::json!({"case": case, "profile": rows}))?;
            if args.json {
                writeln!(stdout, "{line}")?;
            } else {
                writeln!(stdout, "\n{} {}x{} batch {} {}, {} rounds:", case.model, case.size, case.size, case.batch, case.precision, case.steps)?;
                write!(stdout, "{}", bench::profile_table(&rows, peak))?;
                let plans = crate::pjrt::onednn_implementations();
                if !plans.is_empty() {
                    writeln!(stdout, "oneDNN implementations:\n  {}", plans.join("\n  "))?;
                }
            }
            if let Some(path) = &args.json_out {
                append_line(path, &line)?;
            }
        }
        return Ok(());
    }
    for case in &cases {
        tracing::info!("bench {} {}x{} batch {} on {} device(s)", case.model, case.size, case.size, case.batch, case.devices);
        let result = bench::run_case(&client, case)?;
        let line = serde_json::to_string(&result)?;
        writeln!(stdout, "{line}")?;
        if let Some(path) = &args.json_out {
            append_line(path, &line)?;
        }
        results.push(result);
    }
    if !args.json {
        write!(stdout, "\n{}", bench::table(&results, peak))?;
    }
    Ok(())
}

/// `bench --input`: the input pipeline per augmentation and thread count.
fn run_input(args: &BenchArgs) -> anyhow::Result<()> {
    let size = args.size.unwrap_or(256);
    let size = u32::try_from(size).ok().filter(|s| (8..=4096).contains(s)).ok_or_else(|| anyhow::anyhow!("--size {size}: expected 8 to 4096"))?;
    let batch = args.batch.unwrap_or(128);
    let batch = usize::try_from(batch).ok().filter(|b| *b > 0).ok_or_else(|| anyhow::anyhow!("--batch {batch}: expected a positive number"))?;
    let augments: Vec<(String, Augmentation)> = match args.augment.as_str() {
        "off" => vec![("off".into(), Augmentation::default())],
        "demo" => vec![("demo".into(), bench::demo_augmentation())],
        "both" => vec![("off".into(), Augmentation::default()), ("demo".into(), bench::demo_augmentation())],
        yaml => {
            let a: Augmentation = serde_yaml::from_str(yaml).with_context(|| {
                format!("--augment {yaml:?}: expected off, demo, both or a YAML map of augmentation settings (flip, max_shift_px, scale, ...)")
            })?;
            a.validate(size).with_context(|| format!("--augment {yaml:?}"))?;
            vec![("custom".into(), a)]
        }
    };
    let cores = bench::Machine::detect().cores;
    let threads: Vec<usize> = match &args.threads {
        Some(list) => list
            .split(',')
            .map(|t| {
                t.trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| anyhow::anyhow!("--threads {list:?}: expected positive numbers separated by commas"))
            })
            .collect::<anyhow::Result<_>>()?,
        None if cores > 1 => vec![1, cores],
        None => vec![1],
    };
    let mut stdout = std::io::stdout().lock();
    if !args.json {
        writeln!(stdout, "machine: {}", bench::Machine::detect().summary())?;
    }
    let mut results = Vec::new();
    for (name, augment) in &augments {
        for &t in &threads {
            let case = bench::InputCase { size, batch, augment_name: name.clone(), augment: *augment, threads: t, batches: args.input_batches };
            tracing::info!("bench --input {size}x{size} batch {batch} augment {name} threads {t}");
            let result = bench::run_input(&case)?;
            let line = serde_json::to_string(&result)?;
            writeln!(stdout, "{line}")?;
            if let Some(path) = &args.json_out {
                append_line(path, &line)?;
            }
            results.push(result);
        }
    }
    if !args.json {
        write!(stdout, "\n{}", bench::input_table(&results))?;
    }
    Ok(())
}
