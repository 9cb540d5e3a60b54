//! The PJRT layer against the real CPU plugin: programs with known answers,
//! replicated execution, and every kind of bad input we promise to reject
//! with a clear error instead of a crash.

use std::path::PathBuf;

use emotionet::pjrt::{self, Backend, Client, ClientOptions, CompileOptions, PjrtError, Program};
use emotionet::tensor::{DType, HostTensor};

fn cpu_plugin() -> PathBuf {
    pjrt::resolve_plugin(Backend::Cpu, None).expect("the CPU plugin is installed by `make setup`")
}

fn cpu_client() -> Client {
    pjrt::connect(Backend::Cpu, None, &ClientOptions::new()).expect("CPU client")
}

const CONV_REDUCE: &str = r#"
module @conv_reduce {
  func.func public @main(%x: tensor<2x5x4x1xf32>, %w: tensor<3x3x1x2xf32>) -> (tensor<2x5x4x2xf32>, tensor<2xf32>) {
    %y = stablehlo.convolution(%x, %w) dim_numbers = [b, 0, 1, f]x[0, 1, i, o]->[b, 0, 1, f], window = {stride = [1, 1], pad = [[1, 1], [1, 1]]} {batch_group_count = 1 : i64, feature_group_count = 1 : i64} : (tensor<2x5x4x1xf32>, tensor<3x3x1x2xf32>) -> tensor<2x5x4x2xf32>
    %zero = stablehlo.constant dense<0.0> : tensor<f32>
    %s = stablehlo.reduce(%y init: %zero) applies stablehlo.add across dimensions = [0, 1, 2] : (tensor<2x5x4x2xf32>, tensor<f32>) -> tensor<2xf32>
    return %y, %s : tensor<2x5x4x2xf32>, tensor<2xf32>
  }
}
"#;

/// Plain-loop reference: NHWC input, HWIO kernel, stride 1, zero padding 1.
fn reference_conv(x: &[f32], w: &[f32], (n, h, wd, c): (usize, usize, usize, usize), (kh, kw, o): (usize, usize, usize)) -> Vec<f32> {
    let mut y = vec![0.0f32; n * h * wd * o];
    for b in 0..n {
        for i in 0..h {
            for j in 0..wd {
                for f in 0..o {
                    let mut acc = 0.0;
                    for di in 0..kh {
                        for dj in 0..kw {
                            let (ii, jj) = (i as isize + di as isize - 1, j as isize + dj as isize - 1);
                            if ii < 0 || jj < 0 || ii >= h as isize || jj >= wd as isize {
                                continue;
                            }
                            for ci in 0..c {
                                acc += x[((b * h + ii as usize) * wd + jj as usize) * c + ci] * w[((di * kw + dj) * c + ci) * o + f];
                            }
                        }
                    }
                    y[((b * h + i) * wd + j) * o + f] = acc;
                }
            }
        }
    }
    y
}

#[test]
fn convolution_and_reduction_match_a_plain_loop() {
    let client = cpu_client();
    let exe = client.compile(&Program::stablehlo("conv_reduce", CONV_REDUCE), &CompileOptions::single_device(0)).unwrap();
    assert_eq!(exe.outputs().len(), 2);
    assert_eq!(exe.outputs()[0].dims, vec![2, 5, 4, 2]);
    assert_eq!(exe.outputs()[1].dims, vec![2]);

    let x: Vec<f32> = (0..40).map(|i| ((i * 7 % 11) as f32 - 5.0) / 3.0).collect();
    let w: Vec<f32> = (0..18).map(|i| ((i * 5 % 7) as f32 - 3.0) / 4.0).collect();
    let xb = client.upload(&HostTensor::from_f32(&[2, 5, 4, 1], &x).unwrap(), 0).unwrap();
    let wb = client.upload(&HostTensor::from_f32(&[3, 3, 1, 2], &w).unwrap(), 0).unwrap();
    let out = exe.execute(&[&xb, &wb], &[]).unwrap();
    let y = out[0].to_host().unwrap().to_f32().unwrap();
    let s = out[1].to_host().unwrap().to_f32().unwrap();

    let expected = reference_conv(&x, &w, (2, 5, 4, 1), (3, 3, 2));
    for (a, b) in y.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-4, "conv: got {a}, expected {b}");
    }
    for (f, got) in s.iter().enumerate() {
        let sum: f32 = expected.iter().skip(f).step_by(2).sum();
        assert!((got - sum).abs() < 1e-3, "reduce feature {f}: got {got}, expected {sum}");
    }
    // Inputs were not donated: still readable.
    assert_eq!(xb.to_host().unwrap().to_f32().unwrap(), x);
}

const ALL_REDUCE: &str = r#"
module @cross_replica_sum {
  func.func public @main(%x: tensor<3xf32>) -> tensor<3xf32> {
    %r = "stablehlo.all_reduce"(%x) ({
      ^bb0(%a: tensor<f32>, %b: tensor<f32>):
        %s = stablehlo.add %a, %b : tensor<f32>
        stablehlo.return %s : tensor<f32>
    }) {replica_groups = dense<[[0, 1, 2, 3]]> : tensor<1x4xi64>} : (tensor<3xf32>) -> tensor<3xf32>
    return %r : tensor<3xf32>
  }
}
"#;

#[test]
fn replicated_program_sums_across_four_devices() {
    let client = cpu_client();
    let ids = client.device_ids();
    assert!(ids.len() >= 4, "the CPU plugin exposes 4 devices by default, got {ids:?}");
    let ids = &ids[..4];
    let exe = client.compile(&Program::stablehlo("all_reduce", ALL_REDUCE), &CompileOptions::replicated(ids)).unwrap();
    assert_eq!(exe.device_ids(), ids);
    let inputs: Vec<_> =
        ids.iter().enumerate().map(|(r, &d)| client.upload(&HostTensor::from_f32(&[3], &[r as f32, 10.0 * r as f32, 1.0]).unwrap(), d).unwrap()).collect();
    let args: Vec<Vec<_>> = inputs.iter().map(|b| vec![b]).collect();
    let out = exe.execute_replicated(&args, &[]).unwrap();
    assert_eq!(out.len(), 4);
    for (r, replica) in out.iter().enumerate() {
        assert_eq!(replica[0].device_id(), ids[r]);
        assert_eq!(replica[0].to_host().unwrap().to_f32().unwrap(), vec![6.0, 60.0, 4.0]);
    }
}

#[test]
fn client_reports_platform_and_devices() {
    let client = pjrt::connect(Backend::Cpu, None, &ClientOptions::new().cpu_device_count(2)).unwrap();
    assert_eq!(client.platform_name(), "cpu");
    let devices = client.devices();
    assert_eq!(devices.len(), 2);
    assert_eq!(devices[0].kind, "cpu");
    assert_eq!(client.api().version(), (0, 81));
}

#[test]
fn missing_plugin_names_the_pip_package() {
    let err = pjrt::connect(Backend::Cpu, Some(std::path::Path::new("/no/such/plugin.so")), &ClientOptions::new()).unwrap_err();
    assert!(matches!(err, PjrtError::PluginNotFound { .. }), "{err}");
    assert!(err.to_string().contains("xla-cpu-pjrt==0.0.1"), "{err}");
    let err = pjrt::connect(Backend::Tpu, Some(std::path::Path::new("/no/libtpu.so")), &ClientOptions::new()).unwrap_err();
    assert!(err.to_string().contains("libtpu==0.0.30"), "{err}");
}

#[test]
fn a_file_that_is_not_a_plugin_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("plugin.so");
    std::fs::write(&text, "this is not a shared library").unwrap();
    let err = pjrt::Api::load(&text).unwrap_err();
    assert!(matches!(err, PjrtError::PluginLoad { .. }), "{err}");

    // A real shared library that is not a PJRT plugin: built here, so the
    // check runs on every machine whatever its library paths are.
    let src = dir.path().join("not_a_plugin.c");
    let lib = dir.path().join("libnot_a_plugin.so");
    std::fs::write(&src, "int answer(void) { return 42; }\n").unwrap();
    let status = std::process::Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&lib).arg(&src).status().expect("cc (gcc) is needed");
    assert!(status.success());
    let err = pjrt::Api::load(&lib).unwrap_err();
    assert!(matches!(err, PjrtError::NotAPlugin { .. }), "{err}");
    assert!(err.to_string().contains("GetPjrtApi"), "{err}");
}

/// Builds a real shared library exporting `GetPjrtApi` whose table claims the
/// given API version, like an old libtpu or a future major release.
fn fake_plugin(dir: &std::path::Path, major: i32, minor: i32) -> PathBuf {
    let src = dir.join(format!("fake_{major}_{minor}.c"));
    let lib = dir.join(format!("libfake_{major}_{minor}.so"));
    std::fs::write(
        &src,
        format!(
            "#include <stddef.h>\n\
             struct version {{ size_t struct_size; void* ext; int major; int minor; }};\n\
             struct api {{ size_t struct_size; void* ext; struct version v; void* fns[200]; }};\n\
             static struct api table = {{ sizeof(struct api), 0, {{ sizeof(struct version), 0, {major}, {minor} }}, {{0}} }};\n\
             const struct api* GetPjrtApi(void) {{ return &table; }}\n"
        ),
    )
    .unwrap();
    let status = std::process::Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&lib).arg(&src).status().expect("cc (gcc) is needed");
    assert!(status.success());
    lib
}

#[test]
fn plugins_of_an_incompatible_api_version_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let old = fake_plugin(dir.path(), 0, 54);
    let err = pjrt::Api::load(&old).unwrap_err();
    assert!(matches!(err, PjrtError::IncompatibleVersion { plugin_minor: 54, .. }), "{err}");
    assert!(err.to_string().contains("too old"), "{err}");
    assert!(err.to_string().contains("0.54"), "{err}");

    let future = fake_plugin(dir.path(), 1, 0);
    let err = pjrt::Api::load(&future).unwrap_err();
    assert!(err.to_string().contains("major"), "{err}");
}

#[test]
fn malformed_stablehlo_reports_the_compiler_message() {
    let client = cpu_client();
    let text =
        "module { func.func public @main(%x: tensor<2xf32>) -> tensor<2xf32> { %y = stablehlo.frobnicate %x : tensor<2xf32> return %y : tensor<2xf32> } }";
    let err = client.compile(&Program::stablehlo("broken", text), &CompileOptions::single_device(0)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("broken"), "names the program: {msg}");
    assert!(msg.contains("frobnicate"), "carries the parser's message: {msg}");

    // A type error the verifier catches.
    let text = "module { func.func public @main(%x: tensor<2xf32>) -> tensor<3xf32> { return %x : tensor<2xf32> } }";
    let err = client.compile(&Program::stablehlo("mistyped", text), &CompileOptions::single_device(0)).unwrap_err();
    assert!(matches!(err, PjrtError::Plugin { .. }), "{err}");
}

#[test]
fn bad_compile_and_client_options_never_reach_the_plugin() {
    let client = cpu_client();
    let program = Program::stablehlo("p", CONV_REDUCE);
    let zero = CompileOptions { num_replicas: 0, ..CompileOptions::single_device(0) };
    assert!(matches!(client.compile(&program, &zero), Err(PjrtError::InvalidArgument { .. })));
    assert!(matches!(client.compile(&program, &CompileOptions::single_device(77)), Err(PjrtError::InvalidArgument { .. })));
    let err = ClientOptions::new().parse_assignment("cpu_device_count=four").unwrap_err();
    assert!(err.to_string().contains("integer"), "{err}");
    let err = pjrt::connect(Backend::Cpu, None, &ClientOptions::new().set("cpu_device_count", pjrt::NamedValue::String("4".into()))).unwrap_err();
    assert!(err.to_string().contains("int64"), "{err}");
}

const ADD_ONE: &str = r#"
module @add_one {
  func.func public @main(%x: tensor<4xf32> {tf.aliasing_output = 0 : i32}) -> tensor<4xf32> {
    %one = stablehlo.constant dense<1.0> : tensor<4xf32>
    %y = stablehlo.add %x, %one : tensor<4xf32>
    return %y : tensor<4xf32>
  }
}
"#;

#[test]
fn wrong_sizes_and_types_are_rejected_before_the_ffi_call() {
    // The host tensor itself cannot be built with the wrong byte count.
    let err = HostTensor::from_bytes(DType::F32, &[4], vec![0u8; 15]).unwrap_err();
    assert!(err.to_string().contains("needs 16 bytes, got 15"), "{err}");

    let client = cpu_client();
    let exe = client.compile(&Program::stablehlo("add_one", ADD_ONE), &CompileOptions::single_device(0)).unwrap();
    let wrong_shape = client.upload(&HostTensor::from_f32(&[5], &[0.0; 5]).unwrap(), 0).unwrap();
    let err = exe.execute(&[&wrong_shape], &[]).unwrap_err();
    assert!(err.to_string().contains("must be tensor<4xf32>, got tensor<5xf32>"), "{err}");
    let wrong_type = client.upload(&HostTensor::from_i32(&[4], &[0; 4]).unwrap(), 0).unwrap();
    let err = exe.execute(&[&wrong_type], &[]).unwrap_err();
    assert!(err.to_string().contains("got tensor<4xi32>"), "{err}");
    let err = exe.execute(&[], &[]).unwrap_err();
    assert!(err.to_string().contains("takes 1 arguments, got 0"), "{err}");
    let elsewhere = client.upload(&HostTensor::from_f32(&[4], &[0.0; 4]).unwrap(), 1).unwrap();
    let err = exe.execute(&[&elsewhere], &[]).unwrap_err();
    assert!(err.to_string().contains("is on device 1"), "{err}");
    assert!(client.upload(&HostTensor::from_f32(&[4], &[0.0; 4]).unwrap(), 42).is_err());
}

#[test]
fn a_donated_buffer_used_again_is_an_error() {
    let client = cpu_client();
    let exe = client.compile(&Program::stablehlo("add_one", ADD_ONE), &CompileOptions::single_device(0)).unwrap();
    let x = client.upload(&HostTensor::from_f32(&[4], &[1.0, 2.0, 3.0, 4.0]).unwrap(), 0).unwrap();

    // Not donated: usable again.
    let y = exe.execute(&[&x], &[]).unwrap().remove(0);
    assert_eq!(x.to_host().unwrap().to_f32().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);

    // Donated: the output may reuse its memory; the input is dead.
    let z = exe.execute(&[&y], &[0]).unwrap().remove(0);
    assert!(y.is_donated());
    assert_eq!(z.to_host().unwrap().to_f32().unwrap(), vec![3.0, 4.0, 5.0, 6.0]);
    let err = y.to_host().unwrap_err();
    assert!(matches!(err, PjrtError::BufferDonated { .. }), "{err}");
    let err = exe.execute(&[&y], &[]).unwrap_err();
    assert!(matches!(err, PjrtError::BufferDonated { .. }), "{err}");
    assert!(exe.execute(&[&z], &[3]).unwrap_err().to_string().contains("out of range"));
}

#[test]
fn buffers_and_executables_keep_the_client_alive() {
    let (exe, x) = {
        let client = cpu_client();
        let exe = client.compile(&Program::stablehlo("add_one", ADD_ONE), &CompileOptions::single_device(0)).unwrap();
        let x = client.upload(&HostTensor::from_f32(&[4], &[0.0; 4]).unwrap(), 0).unwrap();
        (exe, x)
    };
    let y = exe.execute(&[&x], &[]).unwrap().remove(0);
    assert_eq!(y.to_host().unwrap().to_f32().unwrap(), vec![1.0; 4]);
}

#[test]
fn the_plugin_is_loaded_once_per_path() {
    // The same file named three ways: directly, through a symlink and with a
    // `.` component. One load means one entry, whose path was allocated once.
    let plugin = cpu_plugin();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link-to-plugin.so");
    std::os::unix::fs::symlink(&plugin, &link).unwrap();
    let dotted = plugin.parent().unwrap().join(".").join(plugin.file_name().unwrap());
    let a = pjrt::Api::load(&plugin).unwrap();
    for other in [&link, &dotted] {
        let b = pjrt::Api::load(other).unwrap();
        assert!(std::ptr::eq(a.path(), b.path()), "{} was loaded a second time", other.display());
    }
}

/// The CPU plugin gives a cost analysis of a loaded executable (what every
/// run records as its train step's flops), counting what is computed: the
/// 3x3 convolution of CONV_REDUCE over a 5x4 image with padding 1 has
/// 13 x 10 taps inside the image per (batch, output feature), so
/// 2 x 2 x 130 = 520 multiply-adds = 1,040 flops; the reduction of 2 x 40
/// values to 2 is 78 adds: 1,118.
#[test]
fn the_cpu_plugin_gives_a_cost_analysis_of_a_loaded_executable() {
    let client = cpu_client();
    let exe = client.compile(&Program::stablehlo("conv_reduce", CONV_REDUCE), &CompileOptions::single_device(0)).unwrap();
    let cost = exe.cost_analysis().expect("the CPU plugin's cost analysis");
    assert_eq!(cost.flops, 1118.0, "{cost:?}");
    assert!(cost.bytes_accessed > 0.0, "{cost:?}");
}
