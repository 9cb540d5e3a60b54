//! The training-step benchmark behind `emotionet bench` and `make bench`.
//!
//! For each case: build and compile the fused training step, run warm-up
//! steps, then time steady-state steps (each waited for) on a batch already
//! on the devices, so the figure is the device's step time. Reported:
//! compile seconds, first-step seconds, median step, images/s, achieved
//! GFLOP/s (model FLOPs, `Network::train_flops`, per second) and the
//! process's peak resident memory.
//!
//! A figure means little without the machine: [`Machine`] names the CPU,
//! its vector features and core count, and [`matmul_peak`] times a plain
//! matrix product compiled by the same plugin, the machine's practical peak,
//! against which every case's GFLOP/s is given as a share.
//!
//! [`run_input`] times the input pipeline alone (`bench --input`): the
//! batches a trainer would receive, made on the host with no device, so
//! that the host's side of a step can be set against the device's.

use std::time::Instant;

use crate::data::{Augmentation, Normalization, PipelineConfig, PreparedSplit, Split, TrainPipeline};
use crate::graph::nn::ConvFormulation;
use crate::graph::optim::Optimizer;
use crate::graph::{ConvKernels, EmitOptions, Graph, Kernel};
use crate::models::kernel_choice::{LayerFn, LayerPart, layer_part_graph};
use crate::models::{Architecture, ConvChoice, CpuKernels, ModelKind, Precision, SessionConfig, TrainSession};
use crate::pjrt::{Client, CompileOptions, OptionOverride};
use crate::tensor::{DType, HostTensor};

/// One benchmark configuration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchCase {
    pub model: ModelKind,
    pub size: i64,
    pub batch: i64,
    pub devices: usize,
    pub steps: usize,
    pub warmup: usize,
    pub precision: Precision,
    pub conv: ConvChoice,
    /// Which conv parts run on oneDNN (CPU).
    pub cpu_kernels: CpuKernels,
    #[serde(skip)]
    pub optimizer: Optimizer,
    #[serde(skip)]
    pub xla_options: Vec<(String, OptionOverride)>,
}

/// What one case measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchResult {
    pub model: ModelKind,
    pub size: i64,
    pub batch: i64,
    pub devices: usize,
    pub precision: Precision,
    pub conv: ConvChoice,
    pub cpu_kernels: CpuKernels,
    pub platform: String,
    pub device_kind: String,
    pub optimizer: String,
    pub compile_s: f64,
    pub first_step_s: f64,
    pub step_ms_median: f64,
    pub step_ms_min: f64,
    pub step_ms_max: f64,
    pub images_per_s: f64,
    pub gflops_per_s: f64,
    pub train_gflop_per_image: f64,
    pub params_millions: f64,
    pub peak_rss_mib: f64,
    pub steps_timed: usize,
}

pub use crate::machine::Machine;

/// The machine's practical peak: a square `n x n` matrix product of
/// `dtype` (f32 or bf16) compiled by the same plugin, best of `repeats`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MatmulPeak {
    pub n: i64,
    pub dtype: String,
    pub best_ms: f64,
    pub gflops_per_s: f64,
}

/// Times `a @ b` for two `n x n` matrices of `dtype` on the client's first
/// device: one untimed run, then the best of `repeats`.
pub fn matmul_peak(client: &Client, n: i64, dtype: DType, repeats: usize) -> anyhow::Result<MatmulPeak> {
    let mut g = Graph::new(format!("matmul_peak_{n}"));
    let a = g.parameter("a", dtype, &[n, n])?;
    let b = g.parameter("b", dtype, &[n, n])?;
    let c = g.matmul(a, b)?;
    let program = g.to_program(&[c], &EmitOptions::default())?;
    let device = client.device_ids()[0];
    let exe = client.compile(&program, &CompileOptions::single_device(device))?;
    let values: Vec<f32> = (0..n * n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    let host = HostTensor::from_f32(&[n, n], &values)?;
    let host = if dtype == DType::BF16 { HostTensor::from_bf16(&[n, n], &values.iter().map(|v| half::bf16::from_f32(*v)).collect::<Vec<_>>())? } else { host };
    let (da, db) = (client.upload(&host, device)?, client.upload(&host, device)?);
    let mut best = f64::INFINITY;
    for i in 0..=repeats.max(1) {
        let t = Instant::now();
        let out = exe.execute(&[&da, &db], &[])?;
        out[0].wait_ready()?;
        if i > 0 {
            best = best.min(t.elapsed().as_secs_f64());
        }
    }
    Ok(MatmulPeak { n, dtype: dtype.to_string(), best_ms: best * 1e3, gflops_per_s: 2.0 * (n as f64).powi(3) / best / 1e9 })
}

/// The default suite: both models at 100x100 batch 100 on one device and on
/// all devices, and at 256x256 on one device at a batch that fits.
pub fn default_cases(devices: usize, steps: usize) -> Vec<BenchCase> {
    let case = |model, size, batch, devices| BenchCase {
        model,
        size,
        batch,
        devices,
        steps,
        warmup: 1,
        precision: Precision::F32,
        conv: ConvChoice::Convolution,
        cpu_kernels: Default::default(),
        optimizer: Optimizer::Sgd,
        xla_options: vec![],
    };
    let mut cases = vec![case(ModelKind::Face, 100, 100, 1), case(ModelKind::Emotion, 100, 100, 1)];
    if devices > 1 {
        // The global batch must split evenly across devices.
        let batch = 100 / devices as i64 * devices as i64;
        cases.push(case(ModelKind::Face, 100, batch, devices));
        cases.push(case(ModelKind::Emotion, 100, batch, devices));
    }
    cases.push(case(ModelKind::Face, 256, 16, 1));
    cases.push(case(ModelKind::Emotion, 256, 16, 1));
    cases
}

/// Peak resident set of this process, from /proc (Linux); 0 elsewhere.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Deterministic inputs: a smooth pattern in [0, 1) and alternating labels.
fn inputs(case: &BenchCase, classes: i64) -> (HostTensor, HostTensor) {
    let n = (case.batch * case.size * case.size) as usize;
    let pixels: Vec<f32> = (0..n).map(|i| ((i as u64 * 2_654_435_761) % 1000) as f32 / 1000.0).collect();
    let labels: Vec<i32> = (0..case.batch).map(|i| (i % classes) as i32).collect();
    (
        HostTensor::from_f32(&[case.batch, case.size, case.size, 1], &pixels).expect("consistent sizes"),
        HostTensor::from_i32(&[case.batch], &labels).expect("consistent sizes"),
    )
}

/// Runs one case on `client`.
pub fn run_case(client: &Client, case: &BenchCase) -> anyhow::Result<BenchResult> {
    let ids = client.device_ids();
    anyhow::ensure!(case.devices >= 1 && case.devices <= ids.len(), "the case wants {} devices, the client has {}", case.devices, ids.len());
    let arch = Architecture::for_kind(case.model, case.size);
    let network = arch.network().map_err(anyhow::Error::msg)?;
    let config = SessionConfig {
        kind: case.model,
        arch: arch.clone(),
        optimizer: case.optimizer.clone(),
        global_batch: case.batch,
        devices: ids[..case.devices].to_vec(),
        xla_options: case.xla_options.clone(),
        precision: case.precision,
        conv: case.conv,
        cpu_kernels: case.cpu_kernels.clone(),
    };
    let mut session = TrainSession::new(client, config, 0)?;
    let (images, labels) = inputs(case, arch.classes);
    let batch = session.uploader().upload(&images, &labels)?;
    let t = Instant::now();
    session.train_step_on(&batch, 0.001)?;
    session.wait()?;
    let first_step_s = t.elapsed().as_secs_f64();
    for _ in 1..case.warmup {
        session.train_step_on(&batch, 0.001)?;
        session.wait()?;
    }
    let mut times = Vec::with_capacity(case.steps);
    for _ in 0..case.steps {
        let t = Instant::now();
        session.train_step_on(&batch, 0.001)?;
        session.wait()?;
        times.push(t.elapsed().as_secs_f64());
    }
    let metrics = session.drain_metrics()?;
    anyhow::ensure!(metrics.iter().all(|m| m.loss.is_finite()), "the loss diverged during the benchmark: {metrics:?}");
    times.sort_by(f64::total_cmp);
    let median = if times.is_empty() { first_step_s } else { times[times.len() / 2] };
    let devices = client.devices();
    Ok(BenchResult {
        model: case.model,
        size: case.size,
        batch: case.batch,
        devices: case.devices,
        precision: case.precision,
        conv: case.conv,
        cpu_kernels: case.cpu_kernels.clone(),
        platform: client.platform_name().to_string(),
        device_kind: devices.first().map(|d| d.kind.clone()).unwrap_or_default(),
        optimizer: case.optimizer.name().to_string(),
        compile_s: session.compile_times.train_s,
        first_step_s,
        step_ms_median: median * 1e3,
        step_ms_min: times.first().copied().unwrap_or(median) * 1e3,
        step_ms_max: times.last().copied().unwrap_or(median) * 1e3,
        images_per_s: case.batch as f64 / median,
        gflops_per_s: network.train_flops() * case.batch as f64 / median / 1e9,
        train_gflop_per_image: network.train_flops() / 1e9,
        params_millions: network.parameter_count() as f64 / 1e6,
        peak_rss_mib: peak_rss_mib(),
        steps_timed: times.len(),
    })
}

/// A fixed-width table of results.
/// `peak` is the matmul peak's GFLOP/s; each case's share of it is shown.
pub fn table(results: &[BenchResult], peak: Option<f64>) -> String {
    let mut out = String::from("model    size  prec  batch  dev  compile s  first s  step ms (min-max)        img/s  GFLOP/s  of peak  peak RSS MiB\n");
    for r in results {
        let share = peak.map_or("-".to_string(), |p| format!("{:.0}%", 100.0 * r.gflops_per_s / p));
        out.push_str(&format!(
            "{:<8} {:>4}  {:<4}  {:>5}  {:>3}  {:>9.2}  {:>7.2}  {:>8.1} ({:.1}-{:.1})  {:>8.1}  {:>7.1}  {share:>7}  {:>12.0}\n",
            r.model.to_string(),
            r.size,
            r.precision.as_str(),
            r.batch,
            r.devices,
            r.compile_s,
            r.first_step_s,
            r.step_ms_median,
            r.step_ms_min,
            r.step_ms_max,
            r.images_per_s,
            r.gflops_per_s,
            r.peak_rss_mib
        ));
    }
    out
}

/// One part of the training step, compiled and timed alone.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ProfileRow {
    /// `block2.conv weight gradient`, `dense forward`, `train step`, ...
    pub part: String,
    pub ms_median: f64,
    pub ms_min: f64,
    /// Model FLOPs of the part (matmul / conv work only).
    pub gflop: f64,
    pub gflops_per_s: f64,
}

/// Where a training step's time goes: the whole step, then each conv and
/// dense layer's forward, input gradient and weight gradient as programs of
/// their own (built with the same layer code and derivative rules as the
/// step, so they take the same kernels), each timed `steps` times after one
/// untimed run. Parts are timed round-robin, so that a burst of load on a
/// shared machine spreads over all of them rather than landing on one.
pub fn profile(client: &Client, case: &BenchCase) -> anyhow::Result<Vec<ProfileRow>> {
    let arch = Architecture::for_kind(case.model, case.size);
    arch.validate().map_err(anyhow::Error::msg)?;
    let dtype = case.precision.compute_dtype();
    let device = client.device_ids()[0];
    let mut parts: Vec<(String, f64, crate::pjrt::LoadedExecutable, Vec<crate::pjrt::Buffer>)> = Vec::new();
    // Whether each part is the form the step itself uses (what "rest of
    // the step" subtracts: one form per part).
    let mut in_step: Vec<bool> = Vec::new();

    // Each layer as its own graph: inputs x (and the output's cotangent),
    // the layer's parameters, and one chosen output.
    let b = case.batch;
    // (name, input dims, is a conv layer, layer)
    let mut layers: Vec<(String, Vec<i64>, bool, Box<LayerFn>)> = Vec::new();
    let (mut s, mut cin) = (arch.input_size, 1);
    for (i, &f) in arch.conv_filters.iter().enumerate() {
        let k = arch.kernel_size;
        let formulation = case.conv.for_input_channels(cin);
        let layer = move |g: &mut Graph, p: &mut dyn crate::graph::Params, x, kernel| match kernel {
            Kernel::Xla => g.conv2d(p, x, f, k, formulation),
            Kernel::Onednn => g.conv2d(p, x, f, k, ConvFormulation::Kernels(ConvKernels::all(Kernel::Onednn))),
        };
        layers.push((format!("block{}.conv", i + 1), vec![b, s, s, cin], true, Box::new(layer)));
        s /= arch.pool;
        cin = f;
    }
    let flat = s * s * cin;
    let (units, classes) = (arch.dense_units, arch.classes);
    layers.push(("dense".into(), vec![b, flat], false, Box::new(move |g, p, x, _| g.linear(p, x, units))));
    layers.push(("logits".into(), vec![b, units], false, Box::new(move |g, p, x, _| g.linear(p, x, classes))));

    // Conv parts are timed with XLA's op and, where oneDNN loads on a CPU
    // (f32), with oneDNN's kernel, side by side.
    let onednn = dtype == DType::F32 && client.platform_name().eq_ignore_ascii_case("cpu") && crate::pjrt::onednn_version().is_some();
    if onednn {
        crate::pjrt::register_host_kernels(client.api())?;
    }
    for (li, (name, in_dims, is_conv, layer)) in layers.iter().enumerate() {
        for (what, kernel) in ["forward", "input gradient", "weight gradient"]
            .into_iter()
            .flat_map(|w| [(w, Kernel::Xla), (w, Kernel::Onednn)])
            .filter(|(_, k)| *k == Kernel::Xla || (*is_conv && onednn))
        {
            if li == 0 && what == "input gradient" {
                continue; // the images need no gradient
            }
            let part = match what {
                "forward" => LayerPart::Forward,
                "input gradient" => LayerPart::InputGradient,
                _ => LayerPart::WeightGradient,
            };
            let (g, out) = layer_part_graph(name, in_dims, dtype, part, layer.as_ref(), kernel)?;
            // Each gradient of a contraction is a contraction of the same
            // size as its forward.
            let gflop = flops_of_layer(&g, name) / 1e9;
            let program = g.to_program(&[out], &EmitOptions::default())?;
            let mut options = CompileOptions::single_device(device);
            options.xla_options = case.xla_options.clone();
            let exe = client.compile(&program, &options)?;
            let inputs = g.parameters().iter().map(|p| fill(g.dtype(*p), g.dims(*p))).collect::<anyhow::Result<Vec<_>>>()?;
            let buffers = inputs.iter().map(|t| client.upload(t, device)).collect::<Result<Vec<_>, _>>()?;
            let label = if kernel == Kernel::Onednn { format!("{name} {what} [onednn]") } else { format!("{name} {what}") };
            let step_kernel = match (*is_conv, what) {
                (false, _) => Kernel::Xla,
                (true, "forward") => case.cpu_kernels.block(li).forward,
                (true, "input gradient") => case.cpu_kernels.block(li).input_gradient,
                (true, _) => case.cpu_kernels.block(li).kernel_gradient,
            };
            in_step.push(kernel == step_kernel);
            parts.push((label, gflop, exe, buffers));
        }
    }

    // The whole step, for reference, through the real session.
    let config = SessionConfig {
        kind: case.model,
        arch: arch.clone(),
        optimizer: case.optimizer.clone(),
        global_batch: case.batch,
        devices: vec![device],
        xla_options: case.xla_options.clone(),
        precision: case.precision,
        conv: case.conv,
        cpu_kernels: case.cpu_kernels.clone(),
    };
    let network = arch.network().map_err(anyhow::Error::msg)?;
    let mut session = TrainSession::new(client, config, 0)?;
    let (images, labels) = inputs(case, arch.classes);
    let batch = session.uploader().upload(&images, &labels)?;
    session.train_step_on(&batch, 0.001)?;
    session.wait()?;

    let mut times: Vec<Vec<f64>> = vec![Vec::new(); parts.len() + 1];
    for (exe, buffers) in parts.iter().map(|(_, _, e, b)| (e, b)) {
        let args: Vec<&crate::pjrt::Buffer> = buffers.iter().collect();
        exe.execute(&args, &[])?[0].wait_ready()?;
    }
    for _ in 0..case.steps.max(1) {
        for (i, (_, _, exe, buffers)) in parts.iter().enumerate() {
            let args: Vec<&crate::pjrt::Buffer> = buffers.iter().collect();
            let t = Instant::now();
            exe.execute(&args, &[])?[0].wait_ready()?;
            times[i].push(t.elapsed().as_secs_f64());
        }
        let t = Instant::now();
        session.train_step_on(&batch, 0.001)?;
        session.wait()?;
        times[parts.len()].push(t.elapsed().as_secs_f64());
    }
    let row = |part: String, gflop: f64, t: &mut Vec<f64>| {
        t.sort_by(f64::total_cmp);
        let median = t[t.len() / 2];
        ProfileRow { part, ms_median: median * 1e3, ms_min: t[0] * 1e3, gflop, gflops_per_s: gflop / median }
    };
    let mut rows: Vec<ProfileRow> = Vec::new();
    let step_times = times.pop().unwrap_or_default();
    for ((name, gflop, _, _), mut t) in parts.into_iter().zip(times) {
        rows.push(row(name, gflop, &mut t));
    }
    let listed: f64 = rows.iter().zip(&in_step).filter(|(_, used)| **used).map(|(r, _)| r.ms_median).sum();
    let mut t = step_times;
    let step = row("train step".into(), network.train_flops() * case.batch as f64 / 1e9, &mut t);
    rows.push(ProfileRow {
        part: "rest of the step (step - parts)".into(),
        ms_median: step.ms_median - listed,
        ms_min: f64::NAN,
        gflop: 0.0,
        gflops_per_s: 0.0,
    });
    rows.push(step);
    Ok(rows)
}

/// FLOPs of the contractions made under the layer scope `name` (its
/// forward), not those of its gradient.
fn flops_of_layer(g: &Graph, name: &str) -> f64 {
    g.flops_by_scope().iter().filter(|(scope, _)| scope == name).map(|(_, f)| f).sum()
}

/// A deterministic tensor of `dtype` (f32 or bf16) with values in [-0.5, 0.5).
fn fill(dtype: DType, dims: &[i64]) -> anyhow::Result<HostTensor> {
    Ok(crate::models::kernel_choice::fill(dtype, dims)?)
}

/// The profile as a table.
pub fn profile_table(rows: &[ProfileRow], peak: Option<f64>) -> String {
    let mut out = String::from("part                                  ms (median)   ms (min)   GFLOP   GFLOP/s  of peak\n");
    for r in rows {
        let share = match peak {
            Some(p) if r.gflop > 0.0 => format!("{:.0}%", 100.0 * r.gflops_per_s / p),
            _ => "-".into(),
        };
        let gflops = if r.gflop > 0.0 { format!("{:.1}", r.gflops_per_s) } else { "-".into() };
        out.push_str(&format!("{:<36} {:>12.1} {:>10.1} {:>7.2} {:>9} {:>8}\n", r.part, r.ms_median, r.ms_min, r.gflop, gflops, share));
    }
    out
}

/// What the oneDNN reproduction found: the same SGD step of a dense layer
/// compiled with and without XLA's oneDNN dot rewrite, against the step in
/// f64 (a reference XLA does not route to oneDNN).
#[derive(Clone, Debug, serde::Serialize)]
pub struct OnednnRepro {
    /// Largest |updated weight - f64 reference| without oneDNN.
    pub default_max_error: f64,
    /// The same with `xla_cpu_use_onednn=true`.
    pub onednn_max_error: f64,
    /// The largest reference weight update, for scale.
    pub update_scale: f64,
    pub expected: Vec<f64>,
    pub got_default: Vec<f64>,
    pub got_onednn: Vec<f64>,
}

/// The smallest program that shows the oneDNN finding of docs/speed.md
/// ("What XLA needed"): a fused training step whose dots XLA may hand to oneDNN.
/// `x [32, 64] -> dense 16 (+bias, ReLU) -> dense 4 -> softmax
/// cross-entropy`, gradients, and one SGD update of both weights; the
/// outputs are the updated first-layer weights.
pub fn onednn_repro(client: &Client) -> anyhow::Result<OnednnRepro> {
    let device = client.device_ids()[0];
    let build = |dtype: DType| -> anyhow::Result<crate::pjrt::Program> {
        let mut g = Graph::new(format!("onednn_repro_{dtype}"));
        let x = g.parameter("x", dtype, &[32, 64])?;
        let labels = g.parameter("labels", DType::I32, &[32])?;
        let w1 = g.parameter("w1", dtype, &[16, 64])?;
        let b1 = g.parameter("b1", dtype, &[16])?;
        let w2 = g.parameter("w2", dtype, &[4, 16])?;
        let b2 = g.parameter("b2", dtype, &[4])?;
        let h = g.dense(x, w1, b1)?;
        let h = g.relu(h)?;
        let logits = g.dense(h, w2, b2)?;
        let loss = g.softmax_cross_entropy(logits, labels)?.mean;
        let grads = g.grad(loss, &[w1, w2])?;
        let step = g.mul_scalar(grads[0], 0.5)?;
        let w1_new = g.sub(w1, step)?;
        Ok(g.to_program(&[w1_new], &EmitOptions::default())?)
    };
    let values = |n: i64, seed: i64| -> Vec<f64> { (0..n).map(|i| (((i + seed) * 7919 % 1000) as f64 / 1000.0 - 0.5) * 0.5).collect() };
    let host = |dtype: DType, dims: &[i64], v: &[f64]| -> anyhow::Result<HostTensor> {
        Ok(if dtype == DType::F64 { HostTensor::from_f64(dims, v)? } else { HostTensor::from_f32(dims, &v.iter().map(|x| *x as f32).collect::<Vec<_>>())? })
    };
    let run = |dtype: DType, onednn: bool| -> anyhow::Result<Vec<f64>> {
        let mut options = CompileOptions::single_device(device);
        if onednn {
            options = options.with_xla_option("xla_cpu_use_onednn", OptionOverride::Bool(true));
        }
        let exe = client.compile(&build(dtype)?, &options)?;
        let labels: Vec<i32> = (0..32).map(|i| i % 4).collect();
        let inputs = [
            host(dtype, &[32, 64], &values(32 * 64, 1))?,
            HostTensor::from_i32(&[32], &labels)?,
            host(dtype, &[16, 64], &values(16 * 64, 2))?,
            host(dtype, &[16], &values(16, 3))?,
            host(dtype, &[4, 16], &values(4 * 16, 4))?,
            host(dtype, &[4], &values(4, 5))?,
        ];
        let buffers = inputs.iter().map(|t| client.upload(t, device)).collect::<Result<Vec<_>, _>>()?;
        let args: Vec<&crate::pjrt::Buffer> = buffers.iter().collect();
        Ok(exe.execute(&args, &[])?[0].to_host()?.to_f64()?)
    };
    let expected = run(DType::F64, false)?;
    let got_default = run(DType::F32, false)?;
    let got_onednn = run(DType::F32, true)?;
    let w1 = values(16 * 64, 2);
    let max_diff = |a: &[f64]| a.iter().zip(&expected).map(|(x, y)| (x - y).abs()).fold(0.0, f64::max);
    Ok(OnednnRepro {
        default_max_error: max_diff(&got_default),
        onednn_max_error: max_diff(&got_onednn),
        update_scale: w1.iter().zip(&expected).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max),
        expected: expected[..8].to_vec(),
        got_default: got_default[..8].to_vec(),
        got_onednn: got_onednn[..8].to_vec(),
    })
}

/// The augmentation of the demo's face model (`experiments/smoke.yaml`,
/// `models.face.augment`): what `bench --input --augment demo` times. A
/// test checks that it still equals the experiment file's.
pub fn demo_augmentation() -> Augmentation {
    Augmentation { flip: true, max_shift_px: 2, blur_sigma: 0.8, contrast: 0.2, brightness: 0.1, ..Augmentation::default() }
}

/// One input-pipeline benchmark: the training stream of a split held in
/// memory, with no device and no disk, so the figure is the host's cost of
/// shuffling, augmenting, normalizing and packing batches.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InputCase {
    pub size: u32,
    pub batch: usize,
    /// `off`, `demo` or `custom`.
    pub augment_name: String,
    pub augment: Augmentation,
    /// Threads making each batch (the pipeline's `threads`).
    pub threads: usize,
    /// Batches timed.
    pub batches: usize,
}

/// What one input case measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InputResult {
    /// Always `input` (tells these lines from the step benchmark's).
    pub bench: &'static str,
    pub size: u32,
    pub batch: usize,
    pub augment: String,
    pub augmentation: Augmentation,
    pub threads: usize,
    pub machine: Machine,
    pub batches_timed: usize,
    /// From starting the pipeline to receiving the last timed batch.
    pub seconds: f64,
    pub images_per_s: f64,
    /// `images_per_s` over the cores the threads could use (`min(threads, cores)`).
    pub images_per_s_per_core: f64,
    /// Bytes of one batch's images as handed to the device.
    pub image_bytes_per_batch: usize,
    /// Bytes per pixel of those images (4: f32).
    pub bytes_per_pixel: usize,
    /// Image bytes produced per second, MB (10^6).
    pub mb_per_s: f64,
    /// The host's load average (1 minute) when the case ended: other work
    /// on the machine lowers every figure.
    pub load_1m: Option<f64>,
}

/// Times the training stream of `case`: a split of `max(2 x batch, 256)`
/// seeded random images, the clock started before the pipeline so nothing
/// is prefetched before it runs.
pub fn run_input(case: &InputCase) -> anyhow::Result<InputResult> {
    let side = case.size as usize;
    let count = (2 * case.batch).max(256);
    let mut rng = crate::rng::Rng::new(7);
    let pixels: Vec<u8> = (0..count * side * side).map(|_| rng.next_u64() as u8).collect();
    let split = PreparedSplit { split: Split::Train, image_size: case.size, pixels, labels: (0..count as i32).map(|i| i % 2).collect(), info: Vec::new() };
    let config = PipelineConfig { augment: case.augment, normalize: Normalization::MinusOneOne, threads: case.threads, ..PipelineConfig::new(case.batch, 1) };
    let t = Instant::now();
    let mut pipeline = TrainPipeline::new(std::sync::Arc::new(split), config)?;
    let mut image_bytes = 0;
    for _ in 0..case.batches.max(1) {
        let batch = pipeline.next_batch()?;
        image_bytes = batch.images.bytes().len();
    }
    let seconds = t.elapsed().as_secs_f64();
    let machine = Machine::detect();
    let images = (case.batches.max(1) * case.batch) as f64;
    let images_per_s = images / seconds;
    let load_1m = std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()));
    Ok(InputResult {
        bench: "input",
        size: case.size,
        batch: case.batch,
        augment: case.augment_name.clone(),
        augmentation: case.augment,
        threads: case.threads,
        images_per_s_per_core: images_per_s / case.threads.min(machine.cores).max(1) as f64,
        machine,
        batches_timed: case.batches.max(1),
        seconds,
        images_per_s,
        image_bytes_per_batch: image_bytes,
        bytes_per_pixel: image_bytes / (case.batch * side * side),
        mb_per_s: image_bytes as f64 * case.batches.max(1) as f64 / seconds / 1e6,
        load_1m,
    })
}

/// The input results as a table.
pub fn input_table(results: &[InputResult]) -> String {
    let mut out = String::from("size  batch  augment  threads  batches  seconds     img/s  img/s/core    MB/s  load\n");
    for r in results {
        out.push_str(&format!(
            "{:>4}  {:>5}  {:<7}  {:>7}  {:>7}  {:>7.2}  {:>8.0}  {:>10.0}  {:>6.0}  {}\n",
            r.size,
            r.batch,
            r.augment,
            r.threads,
            r.batches_timed,
            r.seconds,
            r.images_per_s,
            r.images_per_s_per_core,
            r.mb_per_s,
            r.load_1m.map_or("-".into(), |l| format!("{l:.1}"))
        ));
    }
    out
}
