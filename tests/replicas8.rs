//! The programs a Cloud TPU v3-8 runs, exercised here: a v3-8 shows up as 8
//! PJRT devices (4 chips, 2 TensorCores each) and emotionet trains on all 8
//! as data-parallel replicas. The CPU plugin does the same when asked for 8
//! devices (client option `cpu_device_count=8`), so the 8-replica training
//! step (cross-replica gradient averaging included) is compiled and run here
//! and compared with one device.
//!
//! The emotion model at 100x100 runs with `make test`; the face model at
//! 100x100 and the 256x256 emotion program are heavy for a 2-core machine
//! (the latter holds 8 copies of its 96.5M parameters, their momentum and
//! gradients), so they are `#[ignore]`d and run by `make test-tpu-programs`. The 256x256
//! face model (268M parameters per replica, 2.7 GiB peak for one replica at
//! batch 16) needs about 8 x 2.7 GiB, more than this 23 GiB machine has.

use emotionet::graph::optim::Optimizer;
use emotionet::models::{Architecture, ConvChoice, ModelKind, Precision, ProgramSpec, SessionConfig, TrainSession};
use emotionet::pjrt::{self, Backend, Client, ClientOptions};
use emotionet::tensor::HostTensor;

fn client_with_8_devices() -> Client {
    let client = pjrt::connect(Backend::Cpu, None, &ClientOptions::new().cpu_device_count(8)).expect("the CPU plugin (make setup)");
    assert_eq!(client.device_ids().len(), 8, "cpu_device_count=8 gives 8 devices, like a v3-8");
    client
}

/// Deterministic grey-level images and labels for `classes` classes.
fn batch(seed: u64, n: usize, size: usize, classes: i32) -> (HostTensor, HostTensor) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
    };
    let pixels: Vec<u8> = (0..n * size * size).map(|_| next()).collect();
    let labels: Vec<i32> = (0..n as i32).map(|i| i % classes).collect();
    (HostTensor::from_u8(&[n as i64, size as i64, size as i64, 1], &pixels).unwrap(), HostTensor::from_i32(&[n as i64], &labels).unwrap())
}

fn classes(kind: ModelKind) -> i32 {
    match kind {
        ModelKind::Face => 2,
        ModelKind::Emotion => 3,
    }
}

/// Two training steps of `kind` at 100x100 on 1 device and on 8 replicas,
/// from the same initial parameters and batches: same losses, same
/// predictions, parameters equal up to float rounding (the sums of the
/// gradients are taken in another order).
fn eight_replicas_match_one_device(kind: ModelKind) {
    let client = client_with_8_devices();
    let ids = client.device_ids();
    let make = |devices: Vec<i32>| SessionConfig {
        kind,
        // The paper's architecture at the paper's CPU input size.
        arch: Architecture::for_kind(kind, 100),
        optimizer: Optimizer::Momentum { momentum: 0.9, nesterov: false },
        // 2 images per replica: the smallest batch that still averages over replicas.
        global_batch: 16,
        devices,
        xla_options: vec![],
        precision: Precision::F32,
        conv: ConvChoice::Convolution,
        cpu_kernels: Default::default(),
        normalize: Default::default(),
    };
    let mut one = TrainSession::new(&client, make(vec![ids[0]]), 11).unwrap();
    let mut eight = TrainSession::new(&client, make(ids.clone()), 11).unwrap();
    assert_eq!(eight.train_executable().num_replicas(), 8);
    for step in 0..2 {
        let (x, y) = batch(step + 1, 16, 100, classes(kind));
        one.train_step(&x, &y, 0.001).unwrap();
        eight.train_step(&x, &y, 0.001).unwrap();
    }
    let (m1, m8) = (one.drain_metrics().unwrap(), eight.drain_metrics().unwrap());
    assert_eq!((m1.len(), m8.len()), (2, 2));
    for (a, b) in m1.iter().zip(&m8) {
        assert!(a.loss.is_finite());
        assert!((a.loss - b.loss).abs() < 1e-4 * (1.0 + a.loss.abs()), "{kind}: loss {} on 1 device, {} on 8", a.loss, b.loss);
        assert_eq!(a.correct, b.correct, "{kind}");
    }
    let (p1, p8) = (one.params_to_host().unwrap(), eight.params_to_host().unwrap());
    assert_eq!(p1.len(), p8.len());
    let mut worst = 0f32;
    for ((name, a), (_, b)) in p1.iter().zip(&p8) {
        let (a, b) = (a.to_f32().unwrap(), b.to_f32().unwrap());
        let scale = a.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
        let diff = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(diff <= 1e-5 * scale, "{kind} {name}: max difference {diff} (scale {scale})");
        worst = worst.max(diff / scale);
    }
    eprintln!(
        "{kind} at 100x100, 1 device vs 8 replicas: losses {:?} vs {:?}, largest parameter difference {worst:e} (relative)",
        m1.iter().map(|m| m.loss).collect::<Vec<_>>(),
        m8.iter().map(|m| m.loss).collect::<Vec<_>>()
    );
}

#[test]
fn the_8_replica_emotion_training_step_at_100x100_matches_one_device() {
    eight_replicas_match_one_device(ModelKind::Emotion);
}

/// The face model's dense layer (40000 x 1024) makes this one the heavier.
#[test]
#[ignore = "heavy (about 6 GiB, 1-2 minutes on 2 cores): make test-tpu-programs"]
fn the_8_replica_face_training_step_at_100x100_matches_one_device() {
    eight_replicas_match_one_device(ModelKind::Face);
}

/// The checked-in `hlo/emotion_256_b128_r8/train_step.mlir` (what a v3-8
/// runs for the paper's emotion model: 256x256, 16 images per core) is
/// the program this session compiles, and it runs one step on 8 devices.
#[test]
#[ignore = "heavy (8 copies of a 96.5M-parameter model, minutes on 2 cores): make test-tpu-programs"]
fn the_256x256_emotion_program_of_a_v3_8_compiles_and_runs_one_step() {
    let arch = Architecture::for_kind(ModelKind::Emotion, 256);
    let optimizer = Optimizer::Momentum { momentum: 0.9, nesterov: false };
    let spec = ProgramSpec {
        kind: ModelKind::Emotion,
        arch: arch.clone(),
        optimizer: optimizer.clone(),
        replica_batch: 16,
        replicas: 8,
        precision: Precision::F32,
        conv: ConvChoice::Convolution,
        cpu_kernels: Default::default(),
        normalize: Default::default(),
    };
    let golden = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hlo/emotion_256_b128_r8/train_step.mlir")).unwrap();
    assert!(spec.train_step().unwrap().text == golden, "the session's program is the checked-in one");

    let client = client_with_8_devices();
    let started = std::time::Instant::now();
    let config = SessionConfig {
        kind: ModelKind::Emotion,
        arch,
        optimizer,
        global_batch: 128,
        devices: client.device_ids(),
        xla_options: vec![],
        precision: Precision::F32,
        conv: ConvChoice::Convolution,
        cpu_kernels: Default::default(),
        normalize: Default::default(),
    };
    let mut session = TrainSession::new(&client, config, 3).unwrap();
    let compiled = started.elapsed();
    assert_eq!(session.train_executable().num_replicas(), 8);
    let (x, y) = batch(5, 128, 256, 3);
    let step = std::time::Instant::now();
    session.train_step(&x, &y, 0.01).unwrap();
    let metrics = session.drain_metrics().unwrap();
    eprintln!(
        "256x256 emotion, 8 replicas x 16 images: compile {:.1} s, one step {:.1} s, loss {}",
        compiled.as_secs_f64(),
        step.elapsed().as_secs_f64(),
        metrics[0].loss
    );
    assert_eq!(metrics.len(), 1);
    assert!(metrics[0].loss.is_finite() && metrics[0].loss > 0.0, "{:?}", metrics[0]);
    let params = session.params_to_host().unwrap();
    assert!(params.iter().all(|(_, p)| p.to_f32().unwrap().iter().all(|v| v.is_finite())));
}
