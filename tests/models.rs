//! The two CNNs as compiled programs: gradients of the full models against
//! finite differences, learning on a separable set, and data-parallel
//! training matching single-device training.

mod common;

use common::{Rng, check_vjp};
use emotionet::data::Normalization;
use emotionet::graph::Tensor;
use emotionet::graph::nn::DropoutKey;
use emotionet::graph::optim::Optimizer;
use emotionet::models::{Architecture, ConvChoice, ModelKind, Precision, ProgramSpec, SessionConfig, TrainSession};
use emotionet::tensor::{DType, HostTensor};

/// Full-model gradient check in f64 at a small input size, dropout included
/// (with a fixed key the dropout mask is a constant of the function).
fn check_model(kind: ModelKind, size: i64) {
    let mut arch = Architecture::for_kind(kind, size);
    arch.dense_units = 16;
    let spec = ProgramSpec {
        kind,
        arch: arch.clone(),
        optimizer: Optimizer::Sgd,
        replica_batch: 3,
        replicas: 1,
        precision: Precision::F32,
        conv: ConvChoice::Convolution,
        cpu_kernels: Default::default(),
        normalize: Default::default(),
    };
    let mut rng = Rng::new(kind as u64 + 100);
    let specs = arch.params().unwrap();
    let mut inputs: Vec<HostTensor> = specs
        .iter()
        .map(|p| {
            let scale = match p.init {
                emotionet::models::Init::HeNormal { fan_in } => (2.0 / fan_in as f64).sqrt() * 1.5,
                emotionet::models::Init::Zeros => 0.1,
            };
            let n = p.element_count() as usize;
            HostTensor::from_f64(&p.dims, &rng.vec(n).iter().map(|v| v * scale).collect::<Vec<_>>()).unwrap()
        })
        .collect();
    let n = (3 * size * size) as usize;
    inputs.push(HostTensor::from_f64(&[3, size, size, 1], &rng.vec(n)).unwrap());
    inputs.push(HostTensor::from_i32(&[3], &[1, 0, (arch.classes - 1) as i32]).unwrap());
    inputs.push(HostTensor::scalar_u32(42));
    inputs.push(HostTensor::scalar_i32(7));
    inputs.push(HostTensor::scalar_u32(0));
    let np = specs.len();
    let grads = check_vjp(&format!("{kind} model"), &inputs, 200, |g, p| {
        let key = DropoutKey { seed: p[np + 2], step: p[np + 3], example_offset: p[np + 4], salt: 1 };
        let params: Vec<Tensor> = p[..np].to_vec();
        let logits = spec.forward(g, &specs, &params, p[np], Some(&key)).unwrap();
        g.softmax_cross_entropy(logits, p[np + 1]).unwrap().mean
    });
    for (spec, grad) in specs.iter().zip(&grads) {
        assert!(grad.iter().any(|v| v.abs() > 1e-10), "{}: gradient is all zeros", spec.name);
    }
}

#[test]
fn face_model_gradients_match_finite_differences() {
    check_model(ModelKind::Face, 12);
}

#[test]
fn emotion_model_gradients_match_finite_differences() {
    check_model(ModelKind::Emotion, 16);
}

/// A separable two-class set: a bright blob in the top-left or bottom-right
/// quadrant, at a random position inside it, over noise; grey levels, as
/// the input pipeline hands them over.
fn separable_batch(rng: &mut Rng, batch: i64, size: i64) -> (HostTensor, HostTensor) {
    let s = size as usize;
    let mut pixels = vec![0u8; batch as usize * s * s];
    let mut labels = vec![0i32; batch as usize];
    for b in 0..batch as usize {
        let label = (rng.next_u64() % 2) as usize;
        labels[b] = label as i32;
        let half = s / 2;
        let (oy, ox) = (label * half + (rng.next_u64() as usize % (half - 3)), label * half + (rng.next_u64() as usize % (half - 3)));
        for y in 0..s {
            for x in 0..s {
                let noise = (rng.uniform() * 51.0) as u8;
                let blob = (oy..oy + 3).contains(&y) && (ox..ox + 3).contains(&x);
                pixels[(b * s + y) * s + x] = if blob { 255 } else { 77 + noise };
            }
        }
    }
    (HostTensor::from_u8(&[batch, size, size, 1], &pixels).unwrap(), HostTensor::from_i32(&[batch], &labels).unwrap())
}

#[test]
fn the_face_model_learns_a_separable_set() {
    let client = common::client();
    let mut arch = Architecture::face(16);
    arch.dense_units = 64;
    let config = SessionConfig {
        kind: ModelKind::Face,
        arch,
        optimizer: Optimizer::Momentum { momentum: 0.9, nesterov: false },
        global_batch: 32,
        devices: vec![client.device_ids()[0]],
        xla_options: vec![],
        precision: Precision::F32,
        conv: ConvChoice::Convolution,
        cpu_kernels: Default::default(),
        normalize: Default::default(),
    };
    let mut session = TrainSession::new(client, config, 1).unwrap();
    let mut rng = Rng::new(9);
    let mut last = Vec::new();
    for step in 0..300 {
        let (x, y) = separable_batch(&mut rng, 32, 16);
        session.train_step(&x, &y, 0.01).unwrap();
        if step >= 280 {
            last.extend(session.drain_metrics().unwrap());
        } else if step % 50 == 0 {
            session.drain_metrics().unwrap();
        }
    }
    let accuracy: f32 = last.iter().map(|m| m.accuracy()).sum::<f32>() / last.len() as f32;
    let loss: f32 = last.iter().map(|m| m.loss).sum::<f32>() / last.len() as f32;
    assert!(accuracy > 0.98, "train accuracy over the last 20 steps: {accuracy} (loss {loss})");
    // The eval program agrees on held-out data.
    let (x, y) = separable_batch(&mut rng, 32, 16);
    let totals = session.evaluate([(&x, &y, 32)], false).unwrap();
    assert!(totals.accuracy() > 0.95, "eval accuracy {}", totals.accuracy());
}

#[test]
fn four_device_training_matches_one_device_on_the_same_global_batch() {
    let client = common::client();
    let ids = client.device_ids();
    assert!(ids.len() >= 4);
    let mut arch = Architecture::emotion(16);
    arch.dense_units = 32;
    let make = |devices: Vec<i32>| SessionConfig {
        kind: ModelKind::Emotion,
        arch: arch.clone(),
        // Momentum, not Adam: Adam divides by sqrt(v), which turns rounding
        // noise in near-zero gradients into full-size steps.
        optimizer: Optimizer::Momentum { momentum: 0.9, nesterov: false },
        global_batch: 8,
        devices,
        xla_options: vec![],
        precision: Precision::F32,
        conv: ConvChoice::Convolution,
        cpu_kernels: Default::default(),
        normalize: Default::default(),
    };
    let mut one = TrainSession::new(client, make(vec![ids[0]]), 5).unwrap();
    let mut four = TrainSession::new(client, make(ids[..4].to_vec()), 5).unwrap();
    let mut rng = Rng::new(3);
    for _ in 0..3 {
        let n = 8 * 16 * 16;
        let x = HostTensor::from_u8(&[8, 16, 16, 1], &(0..n).map(|_| rng.next_u64() as u8).collect::<Vec<_>>()).unwrap();
        let y = HostTensor::from_i32(&[8], &[0, 1, 2, 0, 1, 2, 0, 1]).unwrap();
        one.train_step(&x, &y, 0.01).unwrap();
        four.train_step(&x, &y, 0.01).unwrap();
    }
    let (m1, m4) = (one.drain_metrics().unwrap(), four.drain_metrics().unwrap());
    for (a, b) in m1.iter().zip(&m4) {
        assert!((a.loss - b.loss).abs() < 1e-4 * (1.0 + a.loss.abs()), "loss {} vs {}", a.loss, b.loss);
        assert_eq!(a.correct, b.correct);
    }
    let (p1, p4) = (one.params_to_host().unwrap(), four.params_to_host().unwrap());
    for ((name, a), (_, b)) in p1.iter().zip(&p4) {
        let (a, b) = (a.to_f32().unwrap(), b.to_f32().unwrap());
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs()));
        let diff = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-5 * scale.max(1.0), "{name}: max difference {diff} (scale {scale})");
    }
}

#[test]
fn bad_session_configs_are_clear_errors() {
    let client = common::client();
    let base = SessionConfig {
        kind: ModelKind::Face,
        arch: Architecture::face(16),
        optimizer: Optimizer::Sgd,
        global_batch: 6,
        devices: client.device_ids()[..4].to_vec(),
        xla_options: vec![],
        precision: Precision::F32,
        conv: ConvChoice::Convolution,
        cpu_kernels: Default::default(),
        normalize: Default::default(),
    };
    let err = TrainSession::new(client, base.clone(), 0).err().unwrap();
    assert!(err.to_string().contains("multiple of the device count 4"), "{err}");
    let err = TrainSession::new(client, SessionConfig { arch: Architecture::emotion(4), global_batch: 4, ..base.clone() }, 0).err().unwrap();
    assert!(err.to_string().contains("cannot be pooled down"), "{err}");
    let mut session = TrainSession::new(client, SessionConfig { global_batch: 4, devices: vec![0], ..base }, 0).unwrap();
    let wrong = HostTensor::zeros(DType::F32, &[4, 8, 8, 1]).unwrap();
    let labels = HostTensor::zeros(DType::I32, &[4]).unwrap();
    let err = session.train_step(&wrong, &labels, 0.1).unwrap_err();
    assert!(err.to_string().contains("images: expected ui8[4, 16, 16, 1]"), "{err}");
}

/// Regression: parameter names are declared by the layers now, no longer
/// listed by hand. A checkpoint written by the code before that change
/// (`emotionet train`, emotion model at 16x16 with conv_filters [2, 3, 4],
/// dense 4, Adam, 2 steps) must still load by name, parameters and
/// optimizer state alike, and train on.
#[test]
fn a_checkpoint_from_before_declared_parameters_still_loads() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/emotion_checkpoint_before_declared_params.safetensors");
    let ck = emotionet::checkpoint::Checkpoint::read(&path).unwrap();
    let mut arch = Architecture::emotion(16);
    arch.conv_filters = vec![2, 3, 4];
    arch.dense_units = 4;
    let optimizer = Optimizer::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8 };
    let specs = arch.params().unwrap();
    let take = |name: &str| ck.tensor(name).unwrap_or_else(|| panic!("{name} is not in {}", path.display())).clone();
    let params: Vec<HostTensor> = specs.iter().map(|s| take(&s.name)).collect();
    let state: Vec<HostTensor> = specs.iter().flat_map(|s| optimizer.state_names(&s.name)).map(|n| take(&n)).collect();
    assert_eq!(params.len() + state.len(), 30, "every tensor of the old checkpoint is used");
    let client = common::client();
    let config = SessionConfig {
        kind: ModelKind::Emotion,
        arch,
        optimizer,
        global_batch: 4,
        devices: vec![client.device_ids()[0]],
        xla_options: vec![],
        precision: Precision::F32,
        conv: ConvChoice::Convolution,
        cpu_kernels: Default::default(),
        normalize: Default::default(),
    };
    let mut session = TrainSession::with_values(client, config, 3, params.clone(), state, ck.step).unwrap();
    // The loaded values are the checkpoint's, and a step moves them.
    for ((name, now), before) in session.params_to_host().unwrap().iter().zip(&params) {
        assert_eq!(now.to_f32().unwrap(), before.to_f32().unwrap(), "{name}");
    }
    let x = HostTensor::from_u8(&[4, 16, 16, 1], &(0..4 * 256).map(|i| (i % 17 * 15) as u8).collect::<Vec<_>>()).unwrap();
    let y = HostTensor::from_i32(&[4], &[0, 1, 2, 0]).unwrap();
    session.train_step(&x, &y, 0.001).unwrap();
    let m = session.drain_metrics().unwrap();
    assert!(m[0].loss.is_finite() && m[0].step == 2, "{m:?}");
    let moved = session.params_to_host().unwrap();
    assert_ne!(moved[0].1.to_f32().unwrap(), params[0].to_f32().unwrap(), "block1.conv.weight did not change");
}

/// bf16 mixed precision trains like f32: from the same initial weights on
/// the same batches, the loss of each of 30 steps (falling from about 1 to
/// 0.001) stays within 0.02 of the f32 run's, absolute. bf16 keeps 8
/// significant bits (relative rounding 2^-9, about 0.2%); through a few
/// layers that moves a loss of order 1 by a few thousandths, and the runs'
/// parameters drift apart slowly as rounding compounds (measured worst:
/// 0.006 on an AVX2 EPYC; the bound leaves 3x). The parameters and
/// optimizer state stay f32 (checked), so checkpoints do not depend on
/// precision.
#[test]
fn bf16_training_tracks_f32() {
    let client = common::client();
    let mut arch = Architecture::face(16);
    arch.dense_units = 64;
    let make = |precision| SessionConfig {
        kind: ModelKind::Face,
        arch: arch.clone(),
        optimizer: Optimizer::Momentum { momentum: 0.9, nesterov: false },
        global_batch: 32,
        devices: vec![client.device_ids()[0]],
        xla_options: vec![],
        precision,
        conv: ConvChoice::Convolution,
        cpu_kernels: Default::default(),
        normalize: Default::default(),
    };
    let mut f32_run = TrainSession::new(client, make(Precision::F32), 4).unwrap();
    let mut bf16_run = TrainSession::new(client, make(Precision::Bf16), 4).unwrap();
    let mut rng = Rng::new(21);
    for _ in 0..30 {
        let (x, y) = separable_batch(&mut rng, 32, 16);
        f32_run.train_step(&x, &y, 0.01).unwrap();
        bf16_run.train_step(&x, &y, 0.01).unwrap();
    }
    let (a, b) = (f32_run.drain_metrics().unwrap(), bf16_run.drain_metrics().unwrap());
    let worst = a.iter().zip(&b).map(|(a, b)| (a.loss - b.loss).abs()).fold(0f32, f32::max);
    eprintln!(
        "f32 losses {:?}\nbf16 losses {:?}\nworst difference {worst}",
        a.iter().map(|m| m.loss).collect::<Vec<_>>(),
        b.iter().map(|m| m.loss).collect::<Vec<_>>()
    );
    assert!(worst < 0.02, "bf16 loss strays {worst} from f32's");
    assert!(b.last().unwrap().loss < 0.5 * b[0].loss, "bf16 did not learn: {b:?}");
    // bf16 did something: the train step each session compiled takes bf16
    // (f32) into every convolution and dot.
    use std::collections::BTreeSet;
    for (session, dtype) in [(&bf16_run, DType::BF16), (&f32_run, DType::F32)] {
        for op in ["stablehlo.convolution", "stablehlo.dot_general"] {
            assert_eq!(session.train_program().operand_types(op), BTreeSet::from([dtype]), "{op}");
        }
    }
    for (name, t) in bf16_run.params_to_host().unwrap().iter().chain(&bf16_run.state_to_host().unwrap()) {
        assert_eq!(t.dtype(), DType::F32, "{name}");
    }
}

fn spec_for(kind: ModelKind, arch: Architecture, batch: i64, normalize: Normalization) -> ProgramSpec {
    ProgramSpec {
        kind,
        arch,
        optimizer: Optimizer::Sgd,
        replica_batch: batch,
        replicas: 1,
        precision: Precision::F32,
        conv: ConvChoice::Convolution,
        cpu_kernels: Default::default(),
        normalize,
    }
}

/// Batches travel as u8 and the programs normalize them (issue 20): the
/// program's f32 value of every grey level is the host table's, bit for
/// bit, for both normalizations (the table is within 1 ulp of the division
/// the pipeline uploaded as f32 before: `data::config`'s unit test).
#[test]
fn the_programs_normalize_every_grey_level_exactly_as_the_host_table() {
    for normalize in [Normalization::ZeroOne, Normalization::MinusOneOne] {
        let spec = spec_for(ModelKind::Face, Architecture::face(16), 1, normalize);
        let mut g = emotionet::graph::Graph::new("normalize");
        let levels = g.parameter("levels", DType::U8, &[256]).unwrap();
        let values = spec.normalized(&mut g, levels).unwrap();
        let all: Vec<u8> = (0..=255).collect();
        let out = common::run(&g, &[values], &[HostTensor::from_u8(&[256], &all).unwrap()]);
        let got: Vec<u32> = out[0].to_f32().unwrap().iter().map(|v| v.to_bits()).collect();
        let want: Vec<u32> = normalize.table().iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want, "{normalize:?}");
    }
}

/// `predict` on u8 images answers exactly what the same network gives for
/// the host-normalized f32 images (the programs before issue 20), bit for
/// bit, for both models and normalizations.
#[test]
fn predict_on_grey_levels_equals_the_network_on_host_normalized_images() {
    let client = common::client();
    for (kind, normalize) in [(ModelKind::Face, Normalization::MinusOneOne), (ModelKind::Emotion, Normalization::ZeroOne)] {
        let mut arch = Architecture::for_kind(kind, 24);
        arch.dense_units = 32;
        let spec = spec_for(kind, arch.clone(), 4, normalize);
        let specs = arch.params().unwrap();
        let params = emotionet::models::init_params(&specs, 11);
        let mut rng = Rng::new(5);
        let grey: Vec<u8> = (0..4 * 24 * 24).map(|_| rng.next_u64() as u8).collect();
        let table = normalize.table();
        let unit: Vec<f32> = grey.iter().map(|&p| table[usize::from(p)]).collect();
        let run = |text: &emotionet::program::Program, images: HostTensor| {
            let exe = client.compile(text, &emotionet::pjrt::CompileOptions::single_device(0)).unwrap();
            let mut buffers: Vec<_> = params.iter().map(|t| client.upload(t, 0).unwrap()).collect();
            buffers.push(client.upload(&images, 0).unwrap());
            let refs: Vec<_> = buffers.iter().collect();
            exe.execute(&refs, &[]).unwrap()[0].to_host().unwrap().to_f32().unwrap()
        };
        let ours = run(&spec.predict().unwrap().program, HostTensor::from_u8(&[4, 24, 24, 1], &grey).unwrap());
        // The same network on an f32 input, as the programs were built before.
        let mut g = emotionet::graph::Graph::new("predict_f32");
        let p: Vec<Tensor> = specs.iter().map(|s| g.parameter(&s.name, DType::F32, &s.dims).unwrap()).collect();
        let x = g.parameter("images", DType::F32, &[4, 24, 24, 1]).unwrap();
        let logits = spec.forward(&mut g, &specs, &p, x, None).unwrap();
        let probs = g.softmax(logits).unwrap();
        let before = g.to_program(&[probs], &emotionet::graph::EmitOptions::default()).unwrap();
        let reference = run(&before, HostTensor::from_f32(&[4, 24, 24, 1], &unit).unwrap());
        assert_eq!(ours.len(), 4 * arch.classes as usize);
        assert!(ours.iter().zip(&reference).all(|(a, b)| a.to_bits() == b.to_bits()), "{kind} {normalize:?}: {ours:?} vs {reference:?}");
    }
}
