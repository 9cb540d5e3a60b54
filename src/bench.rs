//! The training-step benchmark behind `emotionet bench` and `make bench`.
//!
//! For each case: build and compile the fused training step, run warm-up
//! steps, then time steady-state steps (each waited for) on a batch already
//! on the devices, so the figure is the device's step time. Reported:
//! compile seconds, first-step seconds, median step, images/s, achieved
//! GFLOP/s (model FLOPs, `Network::train_flops`, per second) and the
//! process's peak resident memory.

use std::time::Instant;

use crate::graph::optim::Optimizer;
use crate::models::{Architecture, ModelKind, SessionConfig, TrainSession};
use crate::pjrt::{Client, OptionOverride};
use crate::tensor::HostTensor;

/// One benchmark configuration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchCase {
    pub model: ModelKind,
    pub size: i64,
    pub batch: i64,
    pub devices: usize,
    pub steps: usize,
    pub warmup: usize,
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

/// The default suite: both models at 100x100 batch 100 on one device and on
/// all devices, and at 256x256 on one device at a batch that fits.
pub fn default_cases(devices: usize, steps: usize) -> Vec<BenchCase> {
    let case = |model, size, batch, devices| BenchCase { model, size, batch, devices, steps, warmup: 1, optimizer: Optimizer::Sgd, xla_options: vec![] };
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
pub fn table(results: &[BenchResult]) -> String {
    let mut out = String::from("model    size  batch  dev  compile s  first s  step ms (min-max)        img/s  GFLOP/s  peak RSS MiB\n");
    for r in results {
        out.push_str(&format!(
            "{:<8} {:>4}  {:>5}  {:>3}  {:>9.2}  {:>7.2}  {:>8.1} ({:.1}-{:.1})  {:>8.1}  {:>7.1}  {:>12.0}\n",
            r.model.to_string(),
            r.size,
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
