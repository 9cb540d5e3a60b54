//! Host kernels as XLA custom calls, through the real CPU plugin: the PJRT
//! FFI extension is there, a typed handler registered through it runs inside
//! a compiled program with its attributes, and its errors come back as
//! errors (the process survives).

use emotionet::pjrt::{self, Backend, Client, ClientOptions, CompileOptions, Program};
use emotionet::tensor::HostTensor;

fn client() -> Client {
    let client = pjrt::connect(Backend::Cpu, None, &ClientOptions::new()).expect("CPU client");
    pjrt::register_host_kernels(client.api()).expect("host kernels register with the CPU plugin");
    client
}

/// `x + 1`, then the host kernel, then a reduction: the kernel's buffers
/// come from and go to ordinary XLA ops.
const SCALE_SHIFT: &str = r#"
module @scale_shift {
  func.func public @main(%x: tensor<3x5xf32>) -> (tensor<3x5xf32>, tensor<f32>) {
    %one = stablehlo.constant dense<1.0> : tensor<3x5xf32>
    %x1 = stablehlo.add %x, %one : tensor<3x5xf32>
    %y = stablehlo.custom_call @emotionet_scale_shift(%x1) {api_version = 4 : i32, backend_config = {scale = 2.5 : f32, shift = -0.75 : f32}} : (tensor<3x5xf32>) -> tensor<3x5xf32>
    %zero = stablehlo.constant dense<0.0> : tensor<f32>
    %s = stablehlo.reduce(%y init: %zero) applies stablehlo.add across dimensions = [0, 1] : (tensor<3x5xf32>, tensor<f32>) -> tensor<f32>
    return %y, %s : tensor<3x5xf32>, tensor<f32>
  }
}
"#;

#[test]
fn the_pinned_cpu_plugin_offers_the_ffi_extension() {
    let client = pjrt::connect(Backend::Cpu, None, &ClientOptions::new()).expect("CPU client");
    assert!(pjrt::has_ffi_extension(client.api()), "PJRT_Extension_Type_FFI missing from {}", client.api().path().display());
}

#[test]
fn a_typed_host_kernel_runs_inside_a_compiled_program() {
    let client = client();
    let exe = client.compile(&Program::stablehlo("scale_shift", SCALE_SHIFT), &CompileOptions::single_device(0)).expect("compiles with the custom call");
    let x: Vec<f32> = (0..15).map(|i| (i as f32 - 7.0) / 3.0).collect();
    let xb = client.upload(&HostTensor::from_f32(&[3, 5], &x).unwrap(), 0).unwrap();
    let out = exe.execute(&[&xb], &[]).unwrap();
    let y = out[0].to_host().unwrap().to_f32().unwrap();
    let s = out[1].to_host().unwrap().to_f32().unwrap()[0];
    let want: Vec<f32> = x.iter().map(|v| (v + 1.0) * 2.5 + -0.75).collect();
    // The kernel computes exactly this expression in f32: bit-identical.
    assert_eq!(y, want);
    let sum: f32 = want.iter().sum();
    assert!((s - sum).abs() <= 1e-5 * sum.abs().max(1.0), "sum {s} vs {sum}");
    // Run again: the handler is reusable and the inputs were not consumed.
    let again = exe.execute(&[&xb], &[]).unwrap()[0].to_host().unwrap().to_f32().unwrap();
    assert_eq!(again, want);
}

#[test]
fn a_kernel_error_fails_the_execution_with_its_message() {
    let client = client();
    let text = SCALE_SHIFT.replace(", shift = -0.75 : f32", "");
    let exe = client
        .compile(&Program::stablehlo("no_shift", text.as_str()), &CompileOptions::single_device(0))
        .expect("compiles: attributes are checked when the kernel runs");
    let xb = client.upload(&HostTensor::from_f32(&[3, 5], &[0.0; 15]).unwrap(), 0).unwrap();
    let err = match exe.execute(&[&xb], &[]).and_then(|out| out[0].to_host()) {
        Ok(_) => panic!("a call without `shift` must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("emotionet_scale_shift") && err.contains("missing attribute `shift`"), "{err}");
}

#[test]
fn an_unregistered_target_is_refused_at_compile_time() {
    let client = client();
    let text = SCALE_SHIFT.replace("@emotionet_scale_shift", "@emotionet_no_such_kernel");
    let err = match client.compile(&Program::stablehlo("unknown", text.as_str()), &CompileOptions::single_device(0)) {
        Ok(_) => panic!("an unknown target must not compile"),
        Err(e) => e,
    };
    assert!(err.to_string().contains("emotionet_no_such_kernel"), "{err}");
}
