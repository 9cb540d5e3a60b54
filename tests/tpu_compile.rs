//! Compiling for a TPU on this machine, which has none: the pinned libtpu
//! (`make tpu-plugin`; `make test` fetches it first) builds a v3-8's
//! topology and its compiler compiles our programs through our PJRT layer,
//! in the compile worker (a child process that alone gets libtpu's
//! compile-only environment).
//!
//! Each 256x256 compile takes 20-40 s of one core, so the golden programs
//! and the 100x100 ones are compiled in one worker process, two at a time.

mod cli_support;
mod cloud_fake;

use std::path::{Path, PathBuf};

use cli_support::{command, output, text};
use emotionet::graph::optim::Optimizer;
use emotionet::models::{Architecture, ConvChoice, ModelKind, Precision, ProgramSpec};
use emotionet::tpu::{self, ProgramRequest, Request};

fn libtpu() -> PathBuf {
    let path = emotionet::pjrt::deps_dir().join("libtpu/libtpu.so");
    assert!(path.is_file(), "{} is absent: `make tpu-plugin` fetches it (`make test` does it first)", path.display());
    path
}

fn exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_emotionet"))
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn golden(folder: &str, replicas: usize) -> ProgramRequest {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("hlo").join(folder).join("train_step.mlir");
    ProgramRequest {
        name: format!("{folder} train_step"),
        text: std::fs::read_to_string(&path).unwrap(),
        device_ids: (0..replicas as i32).collect(),
        serialize_to: None,
    }
}

fn built(kind: ModelKind, size: i64, replicas: usize, replica_batch: i64) -> ProgramRequest {
    let spec = ProgramSpec {
        kind,
        arch: Architecture::for_kind(kind, size),
        optimizer: Optimizer::Momentum { momentum: 0.9, nesterov: false },
        replica_batch,
        replicas,
        precision: Precision::F32,
        conv: ConvChoice::Convolution,
        cpu_kernels: Default::default(),
        normalize: Default::default(),
    };
    ProgramRequest {
        name: format!("{kind}_{size} x{replicas} train_step"),
        text: spec.train_step().unwrap().text,
        device_ids: (0..replicas as i32).collect(),
        serialize_to: None,
    }
}

fn v3_request(programs: Vec<ProgramRequest>) -> Request {
    Request { plugin: libtpu(), topology: "v3:2x2".into(), create_options: vec![], programs, threads: 2 }
}

/// Within 2% of a figure the issue measured through JAX's compile-only
/// client, or within its rounding: the issue prints GB with two decimals, so
/// its 0.12 GB stands for anything in [0.115, 0.125) GB (ours: 0.1164 with
/// f32 images).
fn near(what: &str, got: f64, want: f64, printed_unit: f64) {
    let off = (got - want).abs();
    assert!(off <= (0.02 * want).max(printed_unit / 2.0), "{what}: {got:.4e}, measured through JAX {want:.4e} ({:.1}% off)", off / want * 100.0);
}

#[test]
fn golden_and_100x100_programs_compile_for_a_v3_with_the_measured_figures() {
    let dir = scratch();
    let programs = vec![
        golden("face_256_b128_r8", 8),
        golden("emotion_256_b128_r8", 8),
        golden("face_256_b128_r8_bf16", 8),
        golden("emotion_256_b128_r8_bf16", 8),
        golden("emotion_100_b100", 1),
        golden("face_100_b100", 1),
        built(ModelKind::Face, 100, 8, 16),
        built(ModelKind::Emotion, 100, 8, 16),
    ];
    let response = tpu::worker::run(exe(), &v3_request(programs), dir.path()).unwrap();
    assert_eq!(response.platform_name, "tpu");
    assert_eq!(response.devices.len(), 8);
    assert!(response.devices.iter().all(|d| d.kind == "TPU v3"), "{:?}", response.devices);
    for p in &response.programs {
        let m = p.memory.unwrap_or_else(|| panic!("{}: {:?}", p.name, p.error));
        let c = p.cost.as_ref().unwrap();
        println!(
            "{}: {:.1} s, arguments {:.3e}, outputs {:.3e}, aliased {:.3e}, temp {:.3e}, code {:.3e}, total {:.3e}, flops {:.3e}, bytes {:.3e}",
            p.name,
            p.compile_s,
            m.arguments as f64,
            m.outputs as f64,
            m.aliased as f64,
            m.temp as f64,
            m.generated_code as f64,
            m.total() as f64,
            c.flops,
            c.bytes_accessed
        );
        assert!(m.arguments > 0 && m.temp > 0 && m.total() > 0, "{}: {m:?}", p.name);
        assert!((m.total() as f64) < 16.0 * (1u64 << 30) as f64, "{} fits a v3 core: {m:?}", p.name);
        assert!(c.flops > 0.0 && c.bytes_accessed > 0.0, "{}: {c:?}", p.name);
    }
    // (arguments, temp, flops, bytes accessed) per replica, measured through
    // JAX 0.10.2's compile-only client with the same libtpu (issue 21), with
    // f32 images. Since issue 20 the images are u8 (normalized in the
    // program): that moves the arguments of emotion_100_b100, whose batch of
    // 100 images at 100x100 is large next to its 13.8M parameters, out of
    // the rounding. Measured with this libtpu on 2026-12-08, the
    // same program before and after: arguments 116,405,248 -> 112,411,648
    // bytes (-3,993,600: the image argument; a plain count says 4.0 MB of
    // f32 -> 1.0 MB of u8, the rest is the TPU's padded layouts), temp
    // unchanged, bytes accessed 4.4844e9 -> 4.4858e9 (+0.03%), flops the
    // same. So that figure is the less the measured 3,993,600; the
    // 256x256 programs move by 0.2% at most and keep the figures.
    let u8_images = 3_993_600.0;
    let measured = [
        ("face_256_b128_r8", 2.15e9, 2.49e9, 1.11e11, 2.12e10),
        ("emotion_256_b128_r8", 0.78e9, 2.49e9, 1.49e11, 1.44e10),
        ("face_256_b128_r8_bf16", 2.15e9, 1.42e9, 1.11e11, 1.68e10),
        ("emotion_256_b128_r8_bf16", 0.78e9, 1.41e9, 1.49e11, 9.76e9),
        ("emotion_100_b100", 0.12e9 - u8_images, 0.86e9, 1.35e11, 4.48e9),
    ];
    for (folder, arguments, temp, flops, bytes) in measured {
        let p = response.programs.iter().find(|p| p.name == format!("{folder} train_step")).unwrap();
        let (m, c) = (p.memory.unwrap(), p.cost.as_ref().unwrap());
        // GB to two decimals; flops and bytes to three digits.
        near(&format!("{folder} arguments"), m.arguments as f64, arguments, 0.01e9);
        near(&format!("{folder} temp"), m.temp as f64, temp, 0.01e9);
        near(&format!("{folder} flops"), c.flops, flops, 0.0);
        near(&format!("{folder} bytes accessed"), c.bytes_accessed, bytes, 0.0);
    }
    // Eight replicas of the 100x100 step each hold the whole model but an
    // eighth of the batch: same arguments but for the batch, fewer flops.
    for kind in ModelKind::ALL {
        let one = response.programs.iter().find(|p| p.name == format!("{kind}_100_b100 train_step")).unwrap();
        let eight = response.programs.iter().find(|p| p.name == format!("{kind}_100 x8 train_step")).unwrap();
        assert!(eight.cost.as_ref().unwrap().flops < one.cost.as_ref().unwrap().flops / 4.0, "{kind}: {one:?} {eight:?}");
    }
}

#[test]
fn every_accelerator_type_builds_its_topology() {
    let dir = scratch();
    for target in tpu::TARGETS {
        let request = Request {
            plugin: libtpu(),
            topology: target.topology.into(),
            create_options: target.create_options.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            programs: vec![],
            threads: 1,
        };
        let response = tpu::worker::run(exe(), &request, dir.path()).unwrap_or_else(|e| panic!("{}: {e}", target.accelerator_type));
        assert_eq!(response.devices.len(), target.devices, "{}", target.accelerator_type);
        assert!(response.devices.iter().all(|d| d.kind == target.generation.device_kind), "{}: {:?}", target.accelerator_type, response.devices);
    }
}

#[test]
fn a_wrong_topology_or_accelerator_type_is_a_clear_error() {
    let dir = scratch();
    let mut request = v3_request(vec![]);
    request.topology = "v3:9x9x9".into();
    let e = tpu::worker::run(exe(), &request, dir.path()).unwrap_err().to_string();
    assert!(e.contains("v3:9x9x9"), "the error names the topology: {e}");

    let out = output(command().args(["compile", "experiments/paper-tpu.yaml", "--target", "v3-9"]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown accelerator type \"v3-9\"; known: v2-8, v3-8, v4-8, v5p-8, v5litepod-8, v6e-8, v3-32"), "{stderr}");
}

#[test]
fn the_worker_refuses_to_run_without_its_environment() {
    // Started by hand, without the compile-only variables emotionet gives it.
    let dir = scratch();
    let request = dir.path().join("request.json");
    std::fs::write(&request, serde_json::to_vec(&v3_request(vec![])).unwrap()).unwrap();
    let mut cmd = command();
    cmd.arg(tpu::worker::WORKER_SUBCOMMAND).arg(&request).arg(dir.path().join("response.json"));
    for (name, _) in emotionet::pjrt::LIBTPU_COMPILE_ONLY_ENV {
        cmd.env_remove(name);
    }
    let out = output(&mut cmd);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("TPU_SKIP_MDS_QUERY=1"), "names what is missing");
}

/// An experiment whose face model cannot fit a v3 core: at 1024x1024 its
/// first dense layer is 1024 x 4,194,304 (16 GiB of f32 weights alone).
pub fn face_1024_experiment(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/paper-tpu.yaml")).unwrap();
    let text = text.replace("name: paper-tpu", "name: face-1024").replace("image_size: 256", "image_size: 1024");
    let cut = text.find("  emotion:").unwrap();
    let rest = &text[cut..];
    let logging = rest.find("logging:").unwrap();
    let text = format!("{}{}", &text[..cut], &rest[logging..]);
    let path = dir.join("face-1024.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `compile` refuses it with the compiler's figures; then the `cloud up`
/// preflight refuses it with the same figures before any request reaches
/// the stand-in Cloud TPU API. The preflight answers from the compile cache
/// that `compile` filled (a fresh preflight compile is shown in
/// tests/cloud_cli.rs with a tiny experiment): compiling the 1024x1024
/// programs takes a minute of this machine, once is enough.
#[test]
fn compile_and_the_cloud_up_preflight_refuse_a_face_model_that_does_not_fit_with_its_figures() {
    let dir = scratch();
    let exp = face_1024_experiment(dir.path());
    let xdg_cache = dir.path().join("xdg-cache");
    let out = output(command().env("XDG_CACHE_HOME", &xdg_cache).args(["compile"]).arg(&exp).args(["--target", "v3-8", "--model", "face", "--json"]));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    // The TPU compiler itself runs out of HBM and says how much it needs.
    assert!(stderr.contains("face-1024 cannot run on a v3-8: face train_step needs "), "{stderr}");
    assert!(stderr.contains("G of HBM per device; a v3 device has 16.00 GiB (the TPU compiler: Ran out of memory in memory space hbm. Used "), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints one JSON document even when refusing");
    let train = &report["programs"][0];
    assert_eq!(train["name"], "face train_step");
    assert_eq!(train["fits"], false);
    assert!(train["error"].as_str().unwrap().contains("ResourceExhausted"), "{train}");
    assert!(report["predicted_train_s"].is_null());

    let fake = cloud_fake::FakeTpu::start();
    let up = output(
        command()
            .current_dir(dir.path())
            .env("XDG_CACHE_HOME", &xdg_cache)
            .env("EMOTIONET_TPU_API_URL", &fake.url)
            .env("EMOTIONET_CLOUD_STATE", dir.path().join("state.json"))
            .env("HOME", dir.path())
            .env("GCE_METADATA_HOST", "127.0.0.1:9")
            .env("GOOGLE_APPLICATION_CREDENTIALS", fake.authorized_user_file(dir.path(), cloud_fake::REFRESH_TOKEN))
            .env("EMOTIONET_GCLOUD", dir.path().join("no-gcloud"))
            .args(["cloud", "up", "--project", "p-1", "--zone", "europe-west4-a", "--accelerator-type", "v3-8", "--campaign"])
            .arg(&exp),
    );
    assert_eq!(up.status.code(), Some(1));
    let stderr = text(&up.stderr);
    assert!(stderr.contains("preflight: 0 compiled now, 3 answered from the compile cache"), "{stderr}");
    assert!(stderr.contains("the preflight refused ") && stderr.contains(" on a v3-8: face-1024: face train_step needs "), "{stderr}");
    assert!(stderr.contains("G of HBM per device; a v3 device has 16.00 GiB (the TPU compiler: Ran out of memory in memory space hbm. Used "), "{stderr}");
    assert!(stderr.contains("Nothing was created or started") && stderr.contains("--skip-preflight"), "{stderr}");
    assert!(fake.requests().is_empty(), "no request reached the API: {:?}", fake.requests());
    assert!(!dir.path().join("state.json").exists(), "no VM recorded");
}
