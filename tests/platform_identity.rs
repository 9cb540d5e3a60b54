//! Platform identity: a client runs the platform its backend means (cpu ->
//! cpu, gpu -> cuda/rocm, tpu -> tpu), or the connection is refused, so no
//! run is ever filed under a platform it did not run on. The one way around
//! it is a stand-in description that says so (`pjrt::StandIn`, for tests),
//! loaded only under the test switch EMOTIONET_ALLOW_STAND_IN=1.

mod cli_support;

use std::path::{Path, PathBuf};

use cli_support::{command, output, text};
use emotionet::pjrt::{self, Backend, ClientOptions, PjrtError, StandIns};

fn cpu_plugin() -> PathBuf {
    pjrt::resolve_plugin(Backend::Cpu, None).expect("the CPU plugin (make setup)")
}

fn stand_in(dir: &Path, body: serde_json::Value) -> PathBuf {
    let path = dir.join("stand-in.json");
    std::fs::write(&path, body.to_string()).unwrap();
    path
}

#[test]
fn the_cpu_plugin_asked_for_a_tpu_or_a_gpu_is_refused_naming_both() {
    let cpu = cpu_plugin();
    for backend in [Backend::Tpu, Backend::Gpu] {
        let err = pjrt::connect(backend, Some(&cpu), &ClientOptions::new()).unwrap_err();
        assert!(matches!(&err, PjrtError::PlatformMismatch { platform, .. } if platform == "cpu"), "{err:?}");
        let message = err.to_string();
        assert!(message.contains(&format!("asked for the {backend} backend")) && message.contains("runs platform \"cpu\""), "{message}");
        assert!(message.contains(backend.pip_package()), "says where the right plugin comes from: {message}");
    }
    let client = pjrt::connect(Backend::Cpu, Some(&cpu), &ClientOptions::new()).unwrap();
    assert_eq!(client.platform_name(), "cpu");
}

#[test]
fn a_stand_in_is_accepted_only_for_the_backend_and_platform_it_declares() {
    let dir = tempfile::tempdir().unwrap();
    let cpu = cpu_plugin();
    let why = "tests: no TPU here";
    let declared = stand_in(dir.path(), serde_json::json!({"library": cpu, "platform": "cpu", "stands_in_for": "tpu", "why": why}));
    let connect = |backend, plugin: &Path| pjrt::connect_with(backend, Some(plugin), &ClientOptions::new(), StandIns::Allowed);
    let client = connect(Backend::Tpu, &declared).unwrap();
    assert_eq!(client.platform_name(), "cpu", "the client says what it is");

    let err = connect(Backend::Gpu, &declared).unwrap_err().to_string();
    assert!(err.contains("asked for the gpu backend") && err.contains("standing in for tpu"), "{err}");

    // A description that lies about the library's platform is refused too.
    let lying = stand_in(dir.path(), serde_json::json!({"library": cpu, "platform": "tpu", "stands_in_for": "tpu", "why": why}));
    let err = connect(Backend::Tpu, &lying).unwrap_err().to_string();
    assert!(err.contains("runs platform \"cpu\"") && err.contains("declares platform \"tpu\""), "{err}");

    // Relative library paths are taken from the description's folder.
    std::os::unix::fs::symlink(&cpu, dir.path().join("cpu.so")).unwrap();
    let relative = stand_in(dir.path(), serde_json::json!({"library": "cpu.so", "platform": "cpu", "stands_in_for": "tpu", "why": why}));
    connect(Backend::Tpu, &relative).unwrap();

    let unknown = stand_in(dir.path(), serde_json::json!({"library": cpu, "platform": "cpu", "stands_in_for": "tpu", "why": why, "extra": 1}));
    let err = connect(Backend::Tpu, &unknown).unwrap_err().to_string();
    assert!(err.contains("unknown field `extra`") && err.contains("stands_in_for"), "{err}");
}

/// Without the test switch a stand-in is refused, in the library and on the
/// command line, with an error that says what a stand-in is for; with
/// EMOTIONET_ALLOW_STAND_IN=1 the same command trains, and its record names
/// the CPU that ran it.
#[test]
fn a_stand_in_is_refused_unless_the_test_switch_is_set() {
    let dir = tempfile::tempdir().unwrap();
    let declared = stand_in(dir.path(), serde_json::json!({"library": cpu_plugin(), "platform": "cpu", "stands_in_for": "tpu", "why": "tests"}));
    let err = pjrt::connect_with(Backend::Tpu, Some(&declared), &ClientOptions::new(), StandIns::Refused).unwrap_err();
    assert!(matches!(&err, PjrtError::StandInRefused { stands_in_for: Backend::Tpu, .. }), "{err:?}");

    let experiment = tiny_tpu_experiment(dir.path());
    let train = |allow: Option<&str>| {
        let mut cmd = command();
        cmd.arg("train").arg(&experiment).arg("--quiet").env("EMOTIONET_PJRT_PLUGIN", &declared).env_remove(pjrt::ALLOW_STAND_IN_ENV);
        if let Some(value) = allow {
            cmd.env(pjrt::ALLOW_STAND_IN_ENV, value);
        }
        output(&mut cmd)
    };
    let record = dir.path().join("out/tiny/face/tpu-r0/record.json");
    for allow in [None, Some("0"), Some("yes")] {
        let out = train(allow);
        assert_eq!(out.status.code(), Some(1), "{allow:?}");
        let stderr = text(&out.stderr);
        assert!(stderr.contains("is a stand-in description") && stderr.contains("play the tpu backend"), "{stderr}");
        assert!(stderr.contains("only so that tests can walk the tpu code paths") && stderr.contains("no tpu run"), "says what a stand-in is for: {stderr}");
        assert!(stderr.contains("EMOTIONET_ALLOW_STAND_IN=1") && stderr.contains("libtpu=="), "says the switch and the real plugin: {stderr}");
        assert!(!record.exists(), "nothing was trained");
    }
    let out = train(Some("1"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    assert_eq!((record["backend"].as_str(), record["platform"]["name"].as_str()), (Some("tpu"), Some("cpu")));
}

fn tiny_tpu_experiment(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.yaml");
    std::fs::write(
        &path,
        format!(
            "name: tiny\nseed: 1\nbackend: {{kind: tpu}}\noutput: {out}\ndata: {{image_size: 24, cache_dir: {cache}, source: {{synthetic: {{faces: 20, non_faces: 20, size: 32}}}}}}\n\
             models:\n  face: {{batch: 8, steps_per_epoch: 2, epochs: 1, architecture: {{dense_units: 8}}}}\n",
            out = dir.join("out").display(),
            cache = dir.join("cache").display()
        ),
    )
    .unwrap();
    path
}

/// The bug this issue was filed for: with EMOTIONET_PJRT_PLUGIN pointing at
/// the CPU plugin, an experiment asking for a TPU trained on the CPU and
/// wrote `.../face/tpu-r0/`.
#[test]
fn train_refuses_to_file_a_cpu_run_under_tpu() {
    let dir = tempfile::tempdir().unwrap();
    let experiment = tiny_tpu_experiment(dir.path());
    let out = output(command().arg("train").arg(&experiment).arg("--quiet").env("EMOTIONET_PJRT_PLUGIN", cpu_plugin()));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("asked for the tpu backend") && stderr.contains("runs platform \"cpu\""), "{stderr}");
    assert!(!dir.path().join("out/tiny/face/tpu-r0/record.json").exists(), "no record may claim a TPU run");
}

/// One plugin serves one backend: a campaign that runs two backends here
/// refuses a single --plugin instead of handing it to every lane.
#[test]
fn a_campaign_never_hands_one_plugin_to_every_lane() {
    let dir = tempfile::tempdir().unwrap();
    tiny_tpu_experiment(dir.path());
    let campaign = dir.path().join("campaign.yaml");
    std::fs::write(&campaign, "experiments: [tiny.yaml]\nbackends: [cpu, gpu]\nhierarchy_eval: false\n").unwrap();
    let out = output(command().arg("run").arg(&campaign).arg("--quiet").env("EMOTIONET_PJRT_PLUGIN", cpu_plugin()));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("names one plugin") && stderr.contains("cpu and gpu") && stderr.contains("--backend"), "{stderr}");
    assert!(!dir.path().join("out/campaign-state.json").exists() && !dir.path().join("out/tiny").exists(), "refused before anything ran");
}
