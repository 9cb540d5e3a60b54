//! `emotionet hlo`: write a model's programs as StableHLO text files.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::graph::optim::Optimizer;
use crate::models::{Architecture, ConvChoice, ModelKind, Precision, ProgramSpec};

#[derive(Args, Debug)]
pub struct HloArgs {
    /// Which model's programs to write.
    #[arg(long, value_enum)]
    pub model: ModelKind,
    /// Image size (square).
    #[arg(long)]
    pub size: i64,
    /// Global batch (default: 100 for one replica, 16 per replica otherwise).
    #[arg(long)]
    pub batch: Option<i64>,
    /// Data-parallel replicas the training step is built for.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Optimizer of the training step.
    #[arg(long, value_parser = ["sgd", "momentum", "adam"], default_value = "momentum")]
    pub optimizer: String,
    /// What the network computes in: f32, or bf16 (mixed precision).
    #[arg(long, value_enum, default_value_t = Precision::F32)]
    pub precision: Precision,
    /// Output folder; files go to `<out>/<model>_<size>_b<batch>[_r<replicas>][_bf16]/`.
    #[arg(long, default_value = "hlo")]
    pub out: PathBuf,
}

/// The spec `emotionet hlo` builds for these arguments.
pub fn spec_for(args: &HloArgs) -> anyhow::Result<ProgramSpec> {
    anyhow::ensure!(args.replicas >= 1, "--replicas must be at least 1");
    let batch = args.batch.unwrap_or(if args.replicas == 1 { 100 } else { 16 * args.replicas as i64 });
    anyhow::ensure!(batch > 0 && batch % args.replicas as i64 == 0, "--batch {batch} must be a positive multiple of --replicas {}", args.replicas);
    let arch = Architecture::for_kind(args.model, args.size);
    arch.validate().map_err(|e| anyhow::anyhow!("--size {}: {e}", args.size))?;
    let optimizer = match args.optimizer.as_str() {
        "sgd" => Optimizer::Sgd,
        "adam" => Optimizer::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8 },
        _ => Optimizer::Momentum { momentum: 0.9, nesterov: false },
    };
    Ok(ProgramSpec {
        kind: args.model,
        arch,
        optimizer,
        replica_batch: batch / args.replicas as i64,
        replicas: args.replicas,
        precision: args.precision,
        conv: ConvChoice::Convolution,
        cpu_kernels: Default::default(),
        // The data config's default (p / 255); the experiments' minus_one_one
        // adds one elementwise op.
        normalize: Default::default(),
    })
}

/// The folder name for a spec: `face_100_b100`, `emotion_256_b128_r8`.
pub fn folder_name(spec: &ProgramSpec) -> String {
    let mut name = format!("{}_{}_b{}", spec.kind, spec.arch.input_size, spec.global_batch());
    if spec.replicas > 1 {
        name.push_str(&format!("_r{}", spec.replicas));
    }
    if spec.precision != Precision::F32 {
        name.push_str(&format!("_{}", spec.precision));
    }
    name
}

/// The three programs of a spec as (file name, text).
pub fn render(spec: &ProgramSpec) -> anyhow::Result<Vec<(String, String)>> {
    let eval_spec = ProgramSpec { replicas: 1, replica_batch: spec.global_batch(), ..spec.clone() };
    Ok(vec![
        ("train_step.mlir".into(), spec.train_step()?.text),
        ("eval_step.mlir".into(), eval_spec.eval_step()?.text),
        ("predict.mlir".into(), eval_spec.predict()?.text),
    ])
}

pub fn run(args: HloArgs) -> anyhow::Result<()> {
    let spec = spec_for(&args)?;
    let dir = args.out.join(folder_name(&spec));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in render(&spec)? {
        let path = dir.join(name);
        crate::fsutil::write_atomic(&path, text.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
        outln!("{} ({} bytes)", path.display(), text.len())?;
    }
    Ok(())
}
