//! The code paths of an asynchronous plugin, on the real CPU plugin.
//!
//! The CPU plugin is asynchronous like the GPU and TPU ones: `execute`
//! returns once the work is enqueued (measured here: ~50 µs for a program
//! that then runs ~0.5 s) and its outputs carry ready events. So these tests
//! run what only an asynchronous plugin exercises: reading outputs of work
//! still in flight, chains of donating executions with no wait between
//! them, inputs dropped while in use, and uploading the next batch while a
//! training step runs. What only a real device shows (separate copy
//! streams, device memory pressure, errors raised on the device after
//! `execute` returned) is listed in docs/gpu.md.

mod common;

use emotionet::graph::optim::Optimizer;
use emotionet::models::{Architecture, ConvChoice, ModelKind, Precision, SessionConfig, TrainSession};
use emotionet::pjrt::{Client, CompileOptions, Program};
use emotionet::tensor::{DType, HostTensor};

/// `x + N` computed the slow way: N rounds of `a = a·I + 1` on 256x256
/// matrices (N dot products of ~34 MFLOP each), so that an execution is
/// still running when `execute` returns. The input is aliased to the output,
/// as in our training programs.
fn slow_add(n: usize) -> Program {
    Program::stablehlo(
        "slow_add",
        format!(
            r#"
module @slow_add {{
  func.func public @main(%x: tensor<256x256xf32> {{tf.aliasing_output = 0 : i32}}, %eye: tensor<256x256xf32>) -> tensor<256x256xf32> {{
    %c0 = stablehlo.constant dense<0> : tensor<i32>
    %n = stablehlo.constant dense<{n}> : tensor<i32>
    %one = stablehlo.constant dense<1> : tensor<i32>
    %ones = stablehlo.constant dense<1.0> : tensor<256x256xf32>
    %r:2 = stablehlo.while(%i = %c0, %a = %x) : tensor<i32>, tensor<256x256xf32>
      cond {{
        %p = stablehlo.compare LT, %i, %n : (tensor<i32>, tensor<i32>) -> tensor<i1>
        stablehlo.return %p : tensor<i1>
      }} do {{
        %d = stablehlo.dot_general %a, %eye, contracting_dims = [1] x [0] : (tensor<256x256xf32>, tensor<256x256xf32>) -> tensor<256x256xf32>
        %s = stablehlo.add %d, %ones : tensor<256x256xf32>
        %j = stablehlo.add %i, %one : tensor<i32>
        stablehlo.return %j, %s : tensor<i32>, tensor<256x256xf32>
      }}
    return %r#1 : tensor<256x256xf32>
  }}
}}
"#
        ),
    )
}

const SIDE: usize = 256;

fn identity() -> HostTensor {
    let mut v = vec![0.0f32; SIDE * SIDE];
    for i in 0..SIDE {
        v[i * SIDE + i] = 1.0;
    }
    HostTensor::from_f32(&[SIDE as i64, SIDE as i64], &v).unwrap()
}

fn filled(value: f32) -> HostTensor {
    HostTensor::from_f32(&[SIDE as i64, SIDE as i64], &vec![value; SIDE * SIDE]).unwrap()
}

fn all_equal(t: &HostTensor, want: f32) -> bool {
    t.to_f32().unwrap().iter().all(|&v| v == want)
}

fn client() -> &'static Client {
    common::client()
}

#[test]
fn reading_an_output_waits_for_the_execution_that_makes_it() {
    let exe = client().compile(&slow_add(200), &CompileOptions::single_device(0)).unwrap();
    let eye = client().upload(&identity(), 0).unwrap();
    let x = client().upload(&filled(1.0), 0).unwrap();
    let y = exe.execute(&[&x, &eye], &[]).unwrap().remove(0);
    // Not asserted (timing is the plugin's business): whether the work was
    // still in flight here is what makes this the asynchronous path.
    eprintln!("output ready right after execute returned: {}", y.is_ready().unwrap());
    // Read without waiting first: the copy must wait on the ready event.
    assert!(all_equal(&y.to_host().unwrap(), 201.0));
    // What PJRT promises: once its ready event has been awaited, a buffer
    // is ready. (Right after `to_host` it need not say so yet: the plugin
    // may fulfil the event on another thread a moment later, which failed
    // this test about one run in seven on a 2-core Xeon.)
    y.wait_ready().unwrap();
    assert!(y.is_ready().unwrap(), "an output whose ready event was awaited is ready");
}

#[test]
fn donating_steps_chain_without_waits_and_inputs_may_be_dropped_while_in_use() {
    let exe = client().compile(&slow_add(20), &CompileOptions::single_device(0)).unwrap();
    let eye = client().upload(&identity(), 0).unwrap();
    // Ten executions, each donating the previous one's output before that
    // output exists, with no wait in between; each donated handle is
    // dropped at once, while the execution that consumes it may still run.
    let mut state = client().upload(&filled(0.5), 0).unwrap();
    let mut in_flight = 0;
    for _ in 0..10 {
        let next = exe.execute(&[&state, &eye], &[0]).unwrap().remove(0);
        assert!(state.is_donated());
        assert!(state.to_host().is_err(), "a donated buffer cannot be read");
        in_flight += usize::from(!next.is_ready().unwrap());
        state = next;
    }
    eprintln!("{in_flight} of 10 outputs were still being computed when the next step was enqueued");
    assert!(all_equal(&state.to_host().unwrap(), 200.5));

    // A non-donated input dropped right after `execute`: the plugin keeps
    // it alive until the execution is done with it.
    let x = client().upload(&filled(2.0), 0).unwrap();
    let y = exe.execute(&[&x, &eye], &[]).unwrap().remove(0);
    drop(x);
    assert!(all_equal(&y.to_host().unwrap(), 22.0));
}

#[test]
fn outputs_outlive_their_executable_and_client_handles() {
    // Everything but the pending output dropped before it is ready.
    let y = {
        let exe = client().compile(&slow_add(100), &CompileOptions::single_device(1)).unwrap();
        let eye = client().upload(&identity(), 1).unwrap();
        let x = client().upload(&filled(3.0), 1).unwrap();
        exe.execute(&[&x, &eye], &[]).unwrap().remove(0)
    };
    assert!(all_equal(&y.to_host().unwrap(), 103.0));
}

/// A non-row-major output: XLA hands it back in its device layout unless
/// asked otherwise, which for a [2, 3] array means transposed bytes.
const COLUMN_MAJOR_OUTPUT: &str = r#"
module @column_major {
  func.func public @main(%x: tensor<2x3xf32>) -> (tensor<2x3xf32> {mhlo.layout_mode = "{0,1}"}) {
    %one = stablehlo.constant dense<1.0> : tensor<2x3xf32>
    %y = stablehlo.add %x, %one : tensor<2x3xf32>
    return %y : tensor<2x3xf32>
  }
}
"#;

#[test]
fn outputs_are_read_row_major_whatever_their_device_layout() {
    let exe = client().compile(&Program::stablehlo("column_major", COLUMN_MAJOR_OUTPUT), &CompileOptions::single_device(0)).unwrap();
    let x = client().upload(&HostTensor::from_f32(&[2, 3], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap(), 0).unwrap();
    let y = exe.execute(&[&x], &[]).unwrap().remove(0);
    assert_eq!(y.to_host().unwrap().to_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
}

fn tiny_session(seed: u64) -> TrainSession {
    let mut arch = Architecture::face(16);
    arch.conv_filters = vec![4, 8];
    arch.dense_units = 16;
    let config = SessionConfig {
        kind: ModelKind::Face,
        arch,
        optimizer: Optimizer::Momentum { momentum: 0.9, nesterov: false },
        global_batch: 8,
        devices: vec![0],
        xla_options: vec![],
        precision: Precision::F32,
        conv: ConvChoice::Convolution,
        cpu_kernels: Default::default(),
        normalize: Default::default(),
    };
    TrainSession::new(client(), config, seed).unwrap()
}

fn batch(step: usize) -> (HostTensor, HostTensor) {
    let mut rng = common::Rng::new(step as u64 + 1);
    let images: Vec<u8> = (0..8 * 16 * 16).map(|_| (rng.uniform() * 255.0) as u8).collect();
    let labels: Vec<i32> = (0..8).map(|i| ((i + step) % 2) as i32).collect();
    (HostTensor::from_u8(&[8, 16, 16, 1], &images).unwrap(), HostTensor::from_i32(&[8], &labels).unwrap())
}

#[test]
fn uploading_the_next_batch_during_a_step_trains_exactly_like_waiting() {
    const STEPS: usize = 6;
    // The trainer's way: enqueue the step, upload the next batch while it
    // runs, then wait; metrics are read back only at the end.
    let mut overlapped = tiny_session(7);
    let uploader = overlapped.uploader();
    let (x, y) = batch(0);
    let mut next = Some(uploader.upload(&x, &y).unwrap());
    for step in 0..STEPS {
        let current = next.take().unwrap();
        overlapped.train_step_on(&current, 0.05).unwrap();
        if step + 1 < STEPS {
            let (x, y) = batch(step + 1);
            next = Some(uploader.upload(&x, &y).unwrap());
        }
        // The batch the step reads is dropped here, possibly mid-step.
        drop(current);
        overlapped.wait().unwrap();
    }
    let overlapped_metrics = overlapped.drain_metrics().unwrap();

    // The serial way: upload, step, read the metrics, one after another.
    let mut serial = tiny_session(7);
    let mut serial_metrics = Vec::new();
    for step in 0..STEPS {
        let (x, y) = batch(step);
        serial.train_step(&x, &y, 0.05).unwrap();
        serial.wait().unwrap();
        serial_metrics.extend(serial.drain_metrics().unwrap());
    }

    assert_eq!(overlapped_metrics, serial_metrics);
    let a = overlapped.params_to_host().unwrap();
    let b = serial.params_to_host().unwrap();
    for ((name, p), (_, q)) in a.iter().zip(&b) {
        assert_eq!(p.dtype(), DType::F32);
        assert_eq!(p.bytes(), q.bytes(), "{name} differs between the overlapped and the serial run");
    }
    assert_eq!(overlapped.state_to_host().unwrap().len(), serial.state_to_host().unwrap().len());
}
