//! oneDNN's convolutions (Debian's libdnnl, loaded at run time) called as
//! XLA custom calls, against XLA's own convolution ops on the shapes of both
//! models: forward, input gradient and kernel gradient each agree within
//! f32 rounding.
//!
//! The bound is the textbook one for a sum of K products computed in any
//! order in f32: each result is within K·u·S of the exact value, where
//! u = 2⁻²⁴ and S is the same sum over absolute values (computed here by
//! running XLA on |x|, |w|, |dy|). Two such results differ by at most
//! 2·K·u·S. K is kh·kw·c (forward), kh·kw·o (input gradient) and n·oh·ow
//! (kernel gradient).

mod common;

use emotionet::graph::Graph;
use emotionet::pjrt::{self, CompileOptions, Program};
use emotionet::tensor::{DType, HostTensor};

/// XLA's convolution (SAME, stride 1) and its two gradients for the
/// cotangent `dy`, through the graph's own autodiff.
fn xla_reference(x: &HostTensor, w: &HostTensor, dy: &HostTensor) -> Vec<Vec<f32>> {
    let mut g = Graph::new("xla_conv");
    let xp = g.parameter("x", DType::F32, x.dims()).unwrap();
    let wp = g.parameter("w", DType::F32, w.dims()).unwrap();
    let dyp = g.parameter("dy", DType::F32, dy.dims()).unwrap();
    let y = g.conv2d_same(xp, wp, 1).unwrap();
    let weighted = g.mul(y, dyp).unwrap();
    let loss = g.sum_all(weighted).unwrap();
    let grads = g.grad(loss, &[xp, wp]).unwrap();
    common::run(&g, &[y, grads[0], grads[1]], &[x.clone(), w.clone(), dy.clone()]).iter().map(|t| t.to_f32().unwrap()).collect()
}

fn ty(d: &[i64]) -> String {
    format!("tensor<{}xf32>", d.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("x"))
}

/// The same three results from the oneDNN kernels, in one program.
fn onednn(x: &HostTensor, w: &HostTensor, dy: &HostTensor, pad: i64) -> Vec<Vec<f32>> {
    let (tx, tw, ty_) = (ty(x.dims()), ty(w.dims()), ty(dy.dims()));
    let cfg = format!("{{pad_hi = array<i64: {pad}, {pad}>, pad_lo = array<i64: {pad}, {pad}>, strides = array<i64: 1, 1>}}");
    let text = format!(
        r#"module @onednn_conv {{
  func.func public @main(%x: {tx}, %w: {tw}, %dy: {ty_}) -> ({ty_}, {tx}, {tw}) {{
    %y = stablehlo.custom_call @emotionet_onednn_conv_fwd(%x, %w) {{api_version = 4 : i32, backend_config = {cfg}}} : ({tx}, {tw}) -> {ty_}
    %dx = stablehlo.custom_call @emotionet_onednn_conv_bwd_data(%dy, %w) {{api_version = 4 : i32, backend_config = {cfg}}} : ({ty_}, {tw}) -> {tx}
    %dw = stablehlo.custom_call @emotionet_onednn_conv_bwd_weights(%x, %dy) {{api_version = 4 : i32, backend_config = {cfg}}} : ({tx}, {ty_}) -> {tw}
    return %y, %dx, %dw : {ty_}, {tx}, {tw}
  }}
}}"#
    );
    let client = common::client();
    let kernels = pjrt::register_host_kernels(client.api()).unwrap();
    assert!(kernels.contains(&"emotionet_onednn_conv_fwd"), "oneDNN kernels not registered ({kernels:?}): is libdnnl-dev installed (make setup)?");
    let exe = client.compile(&Program::stablehlo("onednn_conv", text.as_str()), &CompileOptions::single_device(0)).unwrap();
    let bufs: Vec<_> = [x, w, dy].iter().map(|t| client.upload(t, 0).unwrap()).collect();
    let refs: Vec<_> = bufs.iter().collect();
    exe.execute(&refs, &[]).unwrap().iter().map(|b| b.to_host().unwrap().to_f32().unwrap()).collect()
}

fn abs(t: &HostTensor) -> HostTensor {
    HostTensor::from_f32(t.dims(), &t.to_f32().unwrap().iter().map(|v| v.abs()).collect::<Vec<_>>()).unwrap()
}

/// Runs one convolution shape: batch n, h x h x c input, o filters of k x k.
fn check(name: &str, n: i64, h: i64, c: i64, o: i64, k: i64) {
    assert!(pjrt::onednn_version().is_some(), "oneDNN (libdnnl.so.2) must load here: `make setup` installs libdnnl-dev");
    let mut rng = common::Rng::new(h as u64 * 31 + c as u64);
    let mut f32s = |dims: &[i64]| {
        let v: Vec<f32> = rng.vec(common::count(dims)).iter().map(|u| (*u * 2.0 - 1.0) as f32).collect();
        HostTensor::from_f32(dims, &v).unwrap()
    };
    let (x, w, dy) = (f32s(&[n, h, h, c]), f32s(&[k, k, c, o]), f32s(&[n, h, h, o]));
    let want = xla_reference(&x, &w, &dy);
    let magnitude = xla_reference(&abs(&x), &abs(&w), &abs(&dy));
    let got = onednn(&x, &w, &dy, k / 2);
    let u = 2f64.powi(-24);
    for (part, terms) in [("forward", k * k * c), ("input gradient", k * k * o), ("kernel gradient", n * h * h)].iter().enumerate().map(|(i, p)| (i, *p)) {
        let (what, terms) = terms;
        let mut worst = 0f64;
        for (i, ((a, b), s)) in got[part].iter().zip(&want[part]).zip(&magnitude[part]).enumerate() {
            let bound = 2.0 * terms as f64 * u * *s as f64;
            let diff = (*a as f64 - *b as f64).abs();
            assert!(diff <= bound, "{name} {what}: element {i}: oneDNN {a}, XLA {b}, |diff| {diff:e} > bound {bound:e} (K = {terms})");
            if *s > 0.0 {
                worst = worst.max(diff / bound);
            }
        }
        assert_eq!(got[part].len(), want[part].len(), "{name} {what}: sizes");
        eprintln!("{name} {what}: largest |diff| is {:.3} of the bound", worst);
    }
}

#[test]
fn block1_of_both_models_100x100x1_to_32() {
    check("block1", 2, 100, 1, 32, 5);
}

#[test]
fn block2_of_both_models_50x50x32_to_64() {
    check("block2", 2, 50, 32, 64, 5);
}

#[test]
fn block3_of_the_emotion_model_25x25x64_to_92() {
    check("block3", 2, 25, 64, 92, 5);
}

/// The emotion model's training step (three conv blocks, every part on
/// oneDNN) against the same step with XLA's convolutions: same loss, same
/// updated parameters, within f32 rounding of a whole step (relative 1e-4:
/// the two sum the convolutions in different orders, and the step adds
/// their rounding through ReLU, pooling, the dense layers and the loss).
#[test]
fn a_training_step_on_onednn_matches_the_xla_step() {
    use emotionet::graph::optim::Optimizer;
    use emotionet::models::{Architecture, ConvChoice, CpuKernelMode, ModelKind, Precision, ProgramSpec, SessionConfig, TrainSession};
    let client = common::client();
    let mut arch = Architecture::emotion(24);
    arch.dense_units = 32;
    let config = |mode: CpuKernelMode| SessionConfig {
        kind: ModelKind::Emotion,
        cpu_kernels: mode.forced(&arch).unwrap(),
        arch: arch.clone(),
        optimizer: Optimizer::Momentum { momentum: 0.9, nesterov: false },
        global_batch: 8,
        devices: vec![client.device_ids()[0]],
        xla_options: vec![],
        precision: Precision::F32,
        conv: ConvChoice::Convolution,
    };
    let mut rng = common::Rng::new(5);
    let images = HostTensor::from_f32(&[8, 24, 24, 1], &rng.vec(8 * 24 * 24).iter().map(|v| *v as f32).collect::<Vec<_>>()).unwrap();
    let labels = HostTensor::from_i32(&[8], &[0, 1, 2, 0, 1, 2, 0, 1]).unwrap();
    let run = |mode| {
        let mut session = TrainSession::new(client, config(mode), 3).unwrap();
        for _ in 0..3 {
            session.train_step(&images, &labels, 0.05).unwrap();
        }
        let losses: Vec<f32> = session.drain_metrics().unwrap().iter().map(|m| m.loss).collect();
        (losses, session.params_to_host().unwrap())
    };
    // The oneDNN step really calls the kernels: every part of every block
    // is a custom call, and no convolution op is left.
    let spec = |mode: CpuKernelMode| ProgramSpec {
        kind: ModelKind::Emotion,
        arch: arch.clone(),
        optimizer: Optimizer::Sgd,
        replica_batch: 8,
        replicas: 1,
        precision: Precision::F32,
        conv: ConvChoice::Convolution,
        cpu_kernels: mode.forced(&arch).unwrap(),
    };
    let text = spec(CpuKernelMode::Onednn).train_step().unwrap().text;
    for target in ["emotionet_onednn_conv_fwd", "emotionet_onednn_conv_bwd_data", "emotionet_onednn_conv_bwd_weights"] {
        assert!(text.contains(target), "the oneDNN train step does not call {target}");
    }
    assert!(!text.contains("stablehlo.convolution"), "a convolution op is left in the oneDNN train step");
    assert!(!spec(CpuKernelMode::Xla).train_step().unwrap().text.contains("custom_call"), "the XLA train step must stay pure StableHLO");
    let (xla_loss, xla_params) = run(CpuKernelMode::Xla);
    let (dnn_loss, dnn_params) = run(CpuKernelMode::Onednn);
    for (a, b) in dnn_loss.iter().zip(&xla_loss) {
        assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "loss: oneDNN {a}, XLA {b}");
    }
    for ((name, a), (_, b)) in dnn_params.iter().zip(&xla_params) {
        let (a, b) = (a.to_f32().unwrap(), b.to_f32().unwrap());
        let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert!((p - q).abs() <= 1e-4 * scale, "{name}[{i}]: oneDNN {p}, XLA {q} (largest |value| {scale})");
        }
    }
}

/// `auto` times both forms of every part once, keeps the faster, and
/// writes the cache; a second choice for the same shapes reads the cache
/// and measures nothing. A damaged cache is an error naming the file.
#[test]
fn auto_measures_each_part_once_and_then_reads_the_cache() {
    use emotionet::models::kernel_choice::{self, ChoiceRequest, LayerPart};
    use emotionet::models::{Architecture, ChoiceSource, ConvChoice, CpuKernelMode, KernelCache, Precision};
    assert!(pjrt::onednn_version().is_some(), "oneDNN (libdnnl.so.2) must load here: `make setup` installs libdnnl-dev");
    let client = common::client();
    let dir = tempfile::tempdir().unwrap();
    let cache = KernelCache::at(dir.path().join("cpu-kernels.json"));
    let arch = Architecture::emotion(24);
    let request =
        ChoiceRequest { mode: CpuKernelMode::Auto, arch: &arch, replica_batch: 4, precision: Precision::F32, conv: ConvChoice::Convolution, repeats: 3 };
    let first = kernel_choice::choose(client, &request, &cache).unwrap();
    assert_eq!(first.source, ChoiceSource::Measured);
    let blocks = arch.conv_filters.len();
    assert_eq!(first.parts.len(), 3 * blocks - 1, "every part but block 1's input gradient: {first:?}");
    for p in &first.parts {
        assert!(!p.cached && p.xla_ms > 0.0 && p.onednn_ms > 0.0, "{p:?}");
        let want = if p.onednn_ms < p.xla_ms { emotionet::graph::Kernel::Onednn } else { emotionet::graph::Kernel::Xla };
        assert_eq!(p.chosen, want, "{p:?}");
        assert_eq!(p.part.of(first.kernels.block(p.block - 1)), p.chosen, "the kernels say what the part chose: {p:?}");
    }
    assert!(first.parts.iter().all(|p| !(p.block == 1 && p.part == LayerPart::InputGradient)));

    let second = kernel_choice::choose(client, &request, &cache).unwrap();
    assert_eq!(second.source, ChoiceSource::Cached);
    assert_eq!(second.kernels, first.kernels);
    assert!(second.parts.iter().all(|p| p.cached));

    // Another batch is another shape: measured anew, the old entries kept.
    let other = kernel_choice::choose(client, &ChoiceRequest { replica_batch: 2, ..request }, &cache).unwrap();
    assert_eq!(other.source, ChoiceSource::Measured);
    let entries: serde_json::Value = serde_json::from_slice(&std::fs::read(cache.path()).unwrap()).unwrap();
    assert_eq!(entries.as_object().unwrap().len(), 2 * (3 * blocks - 1));

    std::fs::write(cache.path(), b"{ cut").unwrap();
    let err = kernel_choice::choose(client, &request, &cache).unwrap_err().to_string();
    assert!(err.contains("cpu-kernels.json") && err.contains("delete it"), "{err}");

    // Forced modes measure nothing.
    for mode in [CpuKernelMode::Xla, CpuKernelMode::Onednn] {
        let forced = kernel_choice::choose(client, &ChoiceRequest { mode, ..request }, &cache).unwrap();
        assert_eq!(forced.source, ChoiceSource::Forced);
        assert!(forced.parts.is_empty());
        assert_eq!(forced.kernels.is_xla(), mode == CpuKernelMode::Xla);
    }
}
