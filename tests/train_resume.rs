//! The trainer through the real binary: killed with real signals mid-run it
//! resumes to exactly the parameters of an uninterrupted run; killed in the
//! middle of writing a checkpoint, the previous checkpoint survives; bad
//! experiment files are clear errors.

mod cli_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::{command, emotionet, output};
use emotionet::checkpoint::CheckpointDir;

/// A small experiment: the face model at 24x24 on a tiny synthetic set.
#[allow(clippy::too_many_arguments)] // a fixture's knobs, each named at its call
fn experiment(dir: &Path, name: &str, size: u32, batch: u32, steps_per_epoch: u32, epochs: u32, checkpoint_every: u32, dense: u32) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let text = format!(
        "name: {name}\noutput: {out}\nseed: 7\n\
         data:\n  image_size: {size}\n  cache_dir: {cache}\n  source:\n    synthetic: {{faces: 120, non_faces: 80, size: 48}}\n\
         models:\n  face:\n    batch: {batch}\n    steps_per_epoch: {steps_per_epoch}\n    epochs: {epochs}\n    optimizer: {{kind: adam}}\n    learning_rate: {{schedule: constant, value: 0.001}}\n    architecture: {{dense_units: {dense}}}\n\
         logging: {{every_steps: 2, checkpoint_every_steps: {checkpoint_every}, keep_checkpoints: 50}}\n",
        out = dir.join("runs").display(),
        cache = dir.join("cache").display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn kill(child: &Child, signal: &str) {
    let status = Command::new("kill").arg(format!("-{signal}")).arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn final_params(run_dir: &Path) -> Vec<(String, Vec<u8>)> {
    let ck = CheckpointDir::new(run_dir.join("checkpoints"), 1).unwrap().latest().unwrap().expect("a final checkpoint");
    ck.tensors.iter().map(|(n, t)| (n.clone(), t.bytes().to_vec())).collect()
}

/// Under each `--cpu-kernels` choice (`xla`, `onednn`, and `auto`, which
/// measures in the reference run and finds the same choice in its cache for
/// the killed run, then keeps its checkpoint's choice on every resume).
#[test]
fn a_run_killed_twice_resumes_to_the_same_parameters_as_an_uninterrupted_one() {
    killed_twice_resumes_to_the_same_parameters("xla");
}

#[test]
fn a_run_on_onednn_kernels_killed_twice_resumes_to_the_same_parameters() {
    killed_twice_resumes_to_the_same_parameters("onednn");
}

#[test]
fn a_run_on_kernels_chosen_by_measurement_killed_twice_resumes_to_the_same_parameters() {
    killed_twice_resumes_to_the_same_parameters("auto");
}

fn killed_twice_resumes_to_the_same_parameters(kernels: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cpu-kernels.json");
    let command = || {
        let mut c = command();
        c.env("EMOTIONET_CPU_KERNELS", kernels).env("EMOTIONET_KERNEL_CACHE", &cache);
        c
    };
    let emotionet = |args: &[&str]| output(command().args(args));
    // 400 small steps: long enough that the run cannot end between the test
    // seeing the step-12 checkpoint and freezing the trainer (asserted below).
    let reference = experiment(tmp.path(), "reference", 24, 8, 4, 100, 3, 32);
    assert!(emotionet(&["train", reference.to_str().unwrap(), "--quiet"]).status.success());
    let ref_dir = tmp.path().join("runs/reference/face/cpu-r0");

    // A finished run resumed again changes nothing: no second final eval point.
    let curve_before = std::fs::read(ref_dir.join("metrics.jsonl")).unwrap();
    let out = emotionet(&["train", reference.to_str().unwrap(), "--quiet", "--resume"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(std::fs::read(ref_dir.join("metrics.jsonl")).unwrap(), curve_before, "resuming a finished run appended to its curve");

    // Same experiment under another name: SIGKILL after the checkpoint of
    // step 6, then SIGINT (a clean stop) later, then resume to the end.
    let text = std::fs::read_to_string(&reference).unwrap().replace("name: reference", "name: killed");
    let killed = tmp.path().join("killed.yaml");
    std::fs::write(&killed, text).unwrap();
    let dir = tmp.path().join("runs/killed/face/cpu-r0");
    let checkpoints = CheckpointDir::new(dir.join("checkpoints"), 1).unwrap();

    let mut child = command().args(["train", killed.to_str().unwrap(), "--quiet"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    wait_for("the step-6 checkpoint", Duration::from_secs(120), || checkpoints.steps().unwrap().contains(&6));
    kill(&child, "KILL");
    assert!(!child.wait().unwrap().success());
    let record = read_record(&dir);
    assert_eq!(record["status"]["state"], "running", "a killed trainer cannot say so: {record}");

    let child = command().args(["train", killed.to_str().unwrap(), "--quiet", "--resume"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    wait_for("the step-12 checkpoint", Duration::from_secs(120), || checkpoints.steps().unwrap().contains(&12));
    // Freeze it, make sure it has not reached the end, then ask it to stop:
    // the stop request is certain to find it training.
    kill(&child, "STOP");
    assert!(!checkpoints.steps().unwrap().contains(&400), "the run ended before the test could stop it; make it longer");
    kill(&child, "INT");
    kill(&child, "CONT");
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "a clean stop exits 130: {stderr}");
    assert!(stderr.contains("--resume"), "the message says how to continue: {stderr}");
    let record = read_record(&dir);
    assert_eq!(record["status"]["state"], "stopped", "{record}");
    let stopped_at = record["status"]["step"].as_u64().unwrap();
    assert!((12..400).contains(&stopped_at), "{record}");
    assert_eq!(record["steps_done"], stopped_at);
    assert!(record["status"]["resume"].as_str().unwrap().contains("--resume"), "{record}");

    let out = emotionet(&["train", killed.to_str().unwrap(), "--quiet", "--resume"]);
    assert!(out.status.success());
    let (a, b) = (final_params(&ref_dir), final_params(&dir));
    assert_eq!(a.len(), b.len());
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert!(x == y, "{name} differs between the uninterrupted and the resumed run");
    }
    let record = read_record(&dir);
    assert_eq!(record["status"]["state"], "finished");
    assert_eq!(record["steps_done"], 400);
    assert!(record["resumes"].as_u64().unwrap() >= 2);
    // Every step's device and input time survived the two interruptions.
    let timing = &record["timing"];
    assert!(timing["steady_step_s"].as_f64().unwrap() > 0.0 && timing["input_wait_s"].as_f64().unwrap() > 0.0, "{timing}");
    // The curve holds each step once, despite the repeats after each kill.
    let steps: Vec<(u64, String)> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["step"].as_u64().unwrap(), v["split"].as_str().unwrap().to_string())
        })
        .collect();
    let mut unique = steps.clone();
    unique.dedup();
    assert_eq!(steps, unique, "no duplicated points in metrics.jsonl");
    assert!(std::fs::read_dir(dir.join("tensorboard")).unwrap().count() >= 1);

    // Both records name the kernels, the same ones; the resumed run says it
    // kept its checkpoint's.
    let (ours, theirs) = (read_record(&dir)["config"]["cpu_kernels"].clone(), read_record(&ref_dir)["config"]["cpu_kernels"].clone());
    assert_eq!(ours["mode"], kernels, "{ours}");
    assert_eq!(ours["kernels"], theirs["kernels"], "the two runs trained with different kernels: {ours} / {theirs}");
    assert_eq!(ours["source"], "checkpoint", "{ours}");
    let expected_source = if kernels == "auto" { "measured" } else { "forced" };
    assert_eq!(theirs["source"], expected_source, "{theirs}");
    // The precision's proof sees the convolutions on either kernel.
    assert_eq!(read_record(&ref_dir)["config"]["compute_types"], serde_json::json!({"convolution": ["f32"], "dot": ["f32"]}));
    let onednn_parts = theirs["kernels"].as_array().unwrap().iter().flat_map(|b| b.as_object().unwrap().values()).filter(|k| *k == "onednn").count();
    match kernels {
        "xla" => assert_eq!(onednn_parts, 0, "{theirs}"),
        // The face model's two conv blocks, three parts each.
        "onednn" => assert_eq!(onednn_parts, 6, "{theirs}"),
        // Five parts measured (block 1 has no input gradient), each chosen
        // as the faster of its two timings.
        _ => {
            let parts = theirs["parts"].as_array().unwrap();
            assert_eq!(parts.len(), 5, "{theirs}");
            for p in parts {
                let (x, o) = (p["xla_ms"].as_f64().unwrap(), p["onednn_ms"].as_f64().unwrap());
                assert!(x > 0.0 && o > 0.0, "{p}");
                assert_eq!(p["chosen"], if o < x { "onednn" } else { "xla" }, "{p}");
            }
        }
    }
}

fn read_record(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("record.json")).unwrap()).unwrap()
}

#[test]
fn an_unreadable_record_stops_a_resume_and_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path(), "torn", 24, 8, 2, 2, 2, 16);
    assert!(emotionet(&["train", exp.to_str().unwrap(), "--quiet"]).status.success());
    let record = tmp.path().join("runs/torn/face/cpu-r0/record.json");
    let text = std::fs::read_to_string(&record).unwrap();
    std::fs::write(&record, &text[..text.len() / 2]).unwrap();
    let out = emotionet(&["train", exp.to_str().unwrap(), "--quiet", "--resume"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&record.display().to_string()) && stderr.contains("not a valid record"), "{stderr}");
    // Nothing replaced it with a fresh record.
    assert_eq!(std::fs::read_to_string(&record).unwrap(), text[..text.len() / 2]);
}

#[test]
fn a_failing_run_says_why_in_its_record() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path(), "nodata", 24, 8, 2, 3, 2, 16);
    // The run folder opens, then preparing the data fails.
    std::fs::write(&exp, std::fs::read_to_string(&exp).unwrap().replace("synthetic: {faces: 120, non_faces: 80, size: 48}", "real: {lfw: /no/such/lfw}"))
        .unwrap();
    let out = emotionet(&["train", exp.to_str().unwrap(), "--quiet"]);
    assert_eq!(out.status.code(), Some(1));
    let record = read_record(&tmp.path().join("runs/nodata/face/cpu-r0"));
    assert_eq!(record["status"]["state"], "failed", "{record}");
    assert!(record["status"]["error"].as_str().unwrap().contains("/no/such/lfw"), "{record}");
}

#[test]
fn killing_the_trainer_while_it_writes_a_checkpoint_keeps_the_previous_one() {
    let tmp = tempfile::tempdir().unwrap();
    // A model large enough (the face model at 100x100: 41 M parameters,
    // 164 MB a checkpoint with SGD) that a write can be caught in the act.
    let exp = experiment(tmp.path(), "big", 100, 2, 1, 6, 1, 1024);
    std::fs::write(&exp, std::fs::read_to_string(&exp).unwrap().replace("kind: adam", "kind: sgd")).unwrap();
    let dir = tmp.path().join("runs/big/face/cpu-r0/checkpoints");
    let checkpoints = CheckpointDir::new(&dir, 1).unwrap();
    let mut child = command().args(["train", exp.to_str().unwrap(), "--quiet"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let tmp_file =
        |d: &Path| std::fs::read_dir(d).ok().and_then(|it| it.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| p.to_string_lossy().ends_with(".tmp")));
    wait_for("a complete checkpoint, then the next one being written", Duration::from_secs(300), || {
        !checkpoints.steps().unwrap().is_empty() && tmp_file(&dir).is_some()
    });
    kill(&child, "KILL");
    child.wait().unwrap();
    let partial = tmp_file(&dir);
    let complete = checkpoints.steps().unwrap();
    assert!(!complete.is_empty());
    let latest = checkpoints.latest().unwrap().expect("the previous checkpoint survives");
    assert_eq!(latest.step, *complete.last().unwrap());
    assert!(partial.is_some(), "the interrupted write is left as a .tmp file, never under the real name");
    // And the run resumes from it to the end.
    let out = emotionet(&["train", exp.to_str().unwrap(), "--quiet", "--resume"]);
    assert!(out.status.success());
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(tmp.path().join("runs/big/face/cpu-r0/record.json")).unwrap()).unwrap();
    assert_eq!(record["status"]["state"], "finished");
    assert_eq!(record["steps_done"], 6);
    assert_eq!(record["resumes"], 1);
}

#[test]
fn bad_experiment_files_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("malformed.yaml", "name: [x\n", "malformed.yaml"),
        ("unknown.yaml", "name: x\nmodels:\n  face: {epochs: 1, bach: 3}\n", "unknown field `bach`"),
        ("batch0.yaml", "name: x\nmodels:\n  face: {epochs: 1, batch: 0}\n", "models.face.batch"),
        ("pool.yaml", "name: x\ndata: {image_size: 8}\nmodels:\n  emotion: {epochs: 1, architecture: {conv_filters: [4, 4, 4, 4]}}\n", "cannot be pooled down"),
        ("devices.yaml", "name: x\nbackend: {devices: 4}\nmodels:\n  face: {epochs: 1, batch: 6}\n", "multiple of backend.devices (4)"),
        (
            "missing.yaml",
            "name: x\noutput: OUT\ndata: {cache_dir: OUT/c, source: {real: {lfw: /no/such/lfw}}}\nmodels:\n  face: {epochs: 1, batch: 2}\n",
            "/no/such/lfw",
        ),
    ];
    for (file, text, needle) in cases {
        let path = tmp.path().join(file);
        std::fs::write(&path, text.replace("OUT", &tmp.path().display().to_string())).unwrap();
        let out = emotionet(&["train", path.to_str().unwrap(), "--quiet"]);
        assert_eq!(out.status.code(), Some(1), "{file}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{file}: expected {needle:?} in: {stderr}");
    }
}
