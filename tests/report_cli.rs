//! `emotionet report` through the real binary, on runs directories built
//! from record files the way the trainer and evaluator write them.
//!
//! Set EMOTIONET_KEEP_SAMPLE=DIR to keep the sample runs directory and its
//! report in DIR (for looking at the charts).

mod cli_support;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Output;

use cli_support::emotionet;
use emotionet::records::{
    Backend, Confusion, HierarchyEval, ImageSize, MetricPoint, MetricsLog, ModelKind, Platform, Precision, RunConfig, RunPaths, RunProcess, RunRecord,
    RunStatus, SCHEMA_VERSION, Split, SplitMetrics, Timing,
};

fn report(runs: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["report", runs.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    emotionet(&args)
}

/// What varies between the sample runs.
struct Spec {
    experiment: &'static str,
    model: ModelKind,
    backend: Backend,
    repeat: u32,
    size: u32,
    devices: u32,
    kind: &'static str,
    compile_s: f64,
    first_s: f64,
    steady_s: f64,
    train_acc: f64,
    eval_acc: f64,
    status: RunStatus,
}

fn labels(model: ModelKind) -> Vec<String> {
    let names: &[&str] = match model {
        ModelKind::Face => &["not a face", "face"],
        ModelKind::Emotion => &["happy", "sad", "neither"],
    };
    names.iter().map(|s| s.to_string()).collect()
}

/// Writes one run directory: record.json and metrics.jsonl.
fn write_run(runs: &Path, s: &Spec) {
    let steps = 15 * if s.model == ModelKind::Face { 30 } else { 40 };
    let batch = 100;
    let dir = runs.join(s.experiment).join(s.model.as_str()).join(s.backend.to_string()).join(format!("r{}", s.repeat));
    let paths = RunPaths::new(&dir);
    let finished = s.status == RunStatus::Finished;
    let steps_done = if finished { steps } else { 120 };

    // Step times: the first, then a steady state with a little jitter.
    let step_times: Vec<f64> = (0..steps_done).map(|i| if i == 0 { s.first_s } else { s.steady_s * (1.0 + 0.02 * ((i % 5) as f64 - 2.0)) }).collect();
    let train_wall: f64 = step_times.iter().sum();
    let total = s.compile_s + train_wall + 0.04 * train_wall + 1.5;
    let input_times: Vec<f64> = step_times.iter().map(|t| t * 0.04).collect();
    let timing = Timing::from_steps(s.compile_s, &step_times, &input_times, batch, total);

    // Slightly different curves per platform and repeat, as real runs have.
    let variant = 1.0 + 0.15 * (s.repeat as f64 + s.devices.min(3) as f64 + if s.backend == Backend::Gpu { 1.0 } else { 0.0 });
    let mut log = MetricsLog::open(&paths.metrics()).unwrap();
    let mut wall = s.compile_s;
    for step in (50..=steps_done).step_by(50) {
        wall += 50.0 * s.steady_s;
        let progress = step as f64 / steps as f64;
        let loss = 1.1 * (-3.5 * variant * progress).exp() + 0.02;
        let acc = 0.5 + (s.train_acc - 0.5) * (1.0 - (-4.0 * variant * progress).exp());
        log.append(&MetricPoint { step, epoch: step.div_ceil(15), wall_s: wall, split: Split::Train, loss, accuracy: acc }).unwrap();
        if step % 150 == 0 {
            let eval_acc = 0.5 + (s.eval_acc - 0.5) * (1.0 - (-4.0 * progress).exp());
            log.append(&MetricPoint { step, epoch: step.div_ceil(15), wall_s: wall + 0.5, split: Split::Eval, loss: loss * 1.6 + 0.05, accuracy: eval_acc })
                .unwrap();
        }
    }

    let classes = labels(s.model);
    let n = classes.len();
    // 300 eval images split evenly; the diagonal holds eval_acc of them.
    let per_class = 300 / n as u64;
    let mut matrix = vec![vec![0u64; n]; n];
    for (i, row) in matrix.iter_mut().enumerate() {
        let right = (per_class as f64 * s.eval_acc).round() as u64;
        row[i] = right;
        row[(i + 1) % n] += per_class - right;
    }
    let record = RunRecord {
        schema: SCHEMA_VERSION,
        run_id: format!("{}/{}/{}/r{}", s.experiment, s.model, s.backend, s.repeat),
        experiment: s.experiment.into(),
        model: s.model,
        backend: s.backend,
        repeat: s.repeat,
        platform: Platform {
            name: match s.backend {
                Backend::Cpu => "cpu",
                Backend::Gpu => "cuda",
                Backend::Tpu => "tpu",
            }
            .into(),
            version: "0.0.1".into(),
            device_kind: s.kind.into(),
            device_count: s.devices,
            plugin: format!(".deps/pjrt/{}.so", s.backend),
            pjrt_api_version: "0.81".into(),
            host: "bench-host".into(),
        },
        started_at: "2025-02-01T09:00:00.000Z".into(),
        finished_at: finished.then(|| "2025-02-01T09:30:00.000Z".to_string()),
        status: s.status.clone(),
        config: RunConfig {
            image_size: ImageSize { height: s.size, width: s.size },
            batch,
            steps_per_epoch: 15,
            epochs: steps / 15,
            total_steps: steps,
            optimizer: "adam".into(),
            learning_rate: Some(1e-3),
            seed: Some(s.repeat as u64),
            precision: Some(Precision::F32),
            compute_types: None,
            train_step_cost: None,
            cpu_kernels: None,
        },
        steps_done,
        resumes: 0,
        timing: Some(timing),
        final_train: finished.then_some(SplitMetrics { step: steps, loss: 0.05, accuracy: s.train_acc }),
        final_eval: finished.then_some(SplitMetrics { step: steps, loss: 0.4, accuracy: s.eval_acc }),
        confusion: finished.then(|| Confusion { labels: classes.clone(), matrix }),
        class_names: classes,
        per_source: Vec::new(),
        notes: BTreeMap::from([("dataset".to_string(), "synthetic".to_string())]),
    };
    record.save(&paths.record()).unwrap();
}

fn spec(experiment: &'static str, model: ModelKind, backend: Backend, repeat: u32) -> Spec {
    let (size, devices, kind) = match backend {
        Backend::Cpu => (if experiment == "paper-tpu" { 256 } else { 100 }, 1, "cpu"),
        Backend::Gpu => (100, 1, "NVIDIA H200"),
        Backend::Tpu => (256, 8, "TPU v3"),
    };
    let emotion = model == ModelKind::Emotion;
    let (compile_s, first_s, steady_s) = match backend {
        Backend::Cpu => (4.2 + repeat as f64 * 0.4, 2.9, if emotion { 2.80 } else { 2.05 - repeat as f64 * 0.04 }),
        Backend::Gpu => (9.8, 0.35, if emotion { 0.016 } else { 0.012 }),
        Backend::Tpu => (31.0, 1.2, if emotion { 0.11 } else { 0.09 }),
    };
    Spec {
        experiment,
        model,
        backend,
        repeat,
        size,
        devices,
        kind,
        compile_s,
        first_s,
        steady_s,
        train_acc: if emotion { 0.96 } else { 0.98 },
        eval_acc: if emotion { 0.9 } else { 0.94 },
        status: RunStatus::Finished,
    }
}

fn write_hierarchy(runs: &Path) {
    let names: Vec<String> = ["not a face", "happy", "sad", "neither"].iter().map(|s| s.to_string()).collect();
    // 40 non-faces and 20 of each emotion.
    let alone = Confusion { labels: names.clone(), matrix: vec![vec![0, 14, 9, 17], vec![0, 18, 1, 1], vec![0, 2, 15, 3], vec![0, 3, 2, 15]] };
    let filtered = Confusion { labels: names, matrix: vec![vec![37, 1, 1, 1], vec![1, 17, 1, 1], vec![1, 2, 15, 2], vec![0, 2, 2, 16]] };
    let eval = HierarchyEval::new(
        "paper-cpu",
        "2025-02-01T11:00:00Z",
        "paper-cpu/face/cpu/r0",
        "paper-cpu/emotion/cpu/r0",
        "cpu",
        "synthetic mixed set: 40 scenes + 60 faces, 100x100",
        alone,
        filtered,
    );
    eval.save(&runs.join("evals/paper-cpu/hierarchy.json")).unwrap();
}

/// The sample: CPU (two repeats of face), GPU and TPU runs, a failed run,
/// and a hierarchy evaluation.
fn sample_runs(runs: &Path) {
    for model in ModelKind::ALL {
        write_run(runs, &spec("paper-cpu", model, Backend::Cpu, 0));
        write_run(runs, &spec("paper-cpu", model, Backend::Gpu, 0));
        write_run(runs, &spec("paper-tpu", model, Backend::Tpu, 0));
    }
    write_run(runs, &spec("paper-cpu", ModelKind::Face, Backend::Cpu, 1));
    let mut failed = spec("paper-tpu", ModelKind::Emotion, Backend::Cpu, 0);
    failed.status = RunStatus::Failed { error: "killed by the orchestrator after 3 attempts: out of memory".into() };
    write_run(runs, &failed);
    write_hierarchy(runs);
}

/// Parses an SVG document and checks that it is well-formed XML with one
/// `<svg>` root.
fn assert_well_formed_svg(name: &str, text: &str) {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(text);
    let (mut depth, mut roots, mut elements) = (0usize, Vec::new(), 0usize);
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => {
                if depth == 0 {
                    roots.push(String::from_utf8_lossy(e.name().as_ref()).into_owned());
                }
                depth += 1;
                elements += 1;
            }
            Ok(Event::Empty(_)) => elements += 1,
            Ok(Event::End(_)) => depth -= 1,
            Ok(Event::Eof) => break,
            Ok(Event::Text(t)) => {
                t.decode().unwrap_or_else(|e| panic!("{name}: bad text: {e}"));
            }
            Ok(_) => {}
            Err(e) => panic!("{name} is not well-formed XML at {}: {e}", reader.buffer_position()),
        }
    }
    assert_eq!(depth, 0, "{name}: unclosed elements");
    assert_eq!(roots, ["svg"], "{name}: roots");
    assert!(elements > 10, "{name}: only {elements} elements");
}

#[test]
fn report_of_cpu_gpu_tpu_runs_and_a_hierarchy() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    sample_runs(&runs);
    let out_dir = tmp.path().join("report");
    let out = report(&runs, &out_dir, &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("report.md"));
    let md = fs::read_to_string(out_dir.join("report.md")).unwrap();

    // The paper's reference figures, labelled.
    for paper in ["2 h 38 min 22 s (9,502 s)", "14 h 17 min 21 s (51,441 s)", "5.3 min (318 s)", "13.3 min (798 s)", "**paper: CPU cluster, 100x100**"] {
        assert!(md.contains(paper), "missing {paper:?}");
    }
    // Face on CPU: two repeats, compile 4.2 and 4.6 s; steady steps of
    // 2.05 and 2.01 s; median with the range.
    assert!(md.contains("| 4.40 (4.20–4.60) |"), "face CPU compile");
    assert!(md.contains("| 2,030 (2,010–2,050) |"), "face CPU steady step");
    // GPU: images/s = batch / steady step = 100 / 0.012.
    assert!(md.contains("| 8,333 |") || md.contains("| 8,330 |"), "GPU images/s");
    // TPU: 8 devices of kind "TPU v3" at 256x256.
    assert!(md.contains("TPU v3 ×8"));
    assert!(md.contains("256x256"));
    // Each TPU run's estimated cost: its total wall time at the table's v3-8
    // list prices ($8.00/h on demand, $2.04/h spot), labelled as estimates with their source.
    assert!(md.contains("### Estimated cost of the TPU runs"), "{md}");
    for model in ["face", "emotion"] {
        let record: serde_json::Value = serde_json::from_slice(&fs::read(runs.join(format!("paper-tpu/{model}/tpu/r0/record.json"))).unwrap()).unwrap();
        let wall = record["timing"]["total_wall_s"].as_f64().unwrap();
        let row = md
            .lines()
            .find(|l| l.contains(&format!("paper-tpu/{model}/tpu/r0")) && l.contains("(est.)"))
            .unwrap_or_else(|| panic!("no cost row for {model}: {md}"));
        assert!(row.contains(&format!("${:.2} (est.)", wall * 8.00 / 3600.0)) && row.contains(&format!("${:.2} (est.)", wall * 2.04 / 3600.0)), "{row}");
    }
    assert!(md.contains("Estimates, not bills") && md.contains(emotionet::cloud::cost::PRICE_DATE), "the estimate names its date and source");
    // Accuracy from the records, beside the paper's.
    assert!(md.contains("| 98.0% | 94.0% |"), "face accuracy");
    assert!(md.contains("| 99% | 94% |"), "paper TPU face accuracy");
    // Speedups: GPU and TPU against CPU within paper-cpu; the failed CPU run
    // leaves paper-tpu emotion without a baseline, which is said.
    assert!(md.contains("### Our platforms against our CPU"));
    let gpu_row = md.lines().find(|l| l.starts_with("| face | paper-cpu | GPU")).expect("face GPU speedup row");
    assert!(gpu_row.contains('×'), "{gpu_row}");
    assert!(md.contains("No finished CPU run of the emotion model in experiment `paper-tpu`"));
    assert!(md.contains("failed after 120 of 600 steps: killed by the orchestrator after 3 attempts: out of memory"));
    // Ours against the paper: the paper-cpu face run used the paper's size and steps.
    assert!(
        md.lines().any(|l| l.starts_with("| face | CPU (cpu ×1) · paper-cpu |") && l.contains("**paper: CPU cluster, 100x100**") && l.ends_with("| yes |"))
    );
    // Table I: the paper's rows and ours from hierarchy.json.
    assert!(md.contains("| emotion model alone on mixed input | **paper** (100-image validation set) | 32 | 68 | 32% |"));
    assert!(md.contains("| emotion model alone | ours: `paper-cpu`, trained on cpu; synthetic mixed set: 40 scenes + 60 faces, 100x100 | 48 | 52 | 48.0% |"));
    assert!(md.contains("| face filter + emotion model | ours: `paper-cpu`"));
    assert!(md.contains("| 85 | 15 | 85.0% |"));
    // Nothing is claimed missing that is present.
    assert!(!md.contains("No finished TPU runs"));
    assert!(!md.contains("No hierarchy evaluation"));

    // Charts: all referenced, all present, all well-formed.
    let svgs: Vec<String> = fs::read_dir(&out_dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.ends_with(".svg")).collect();
    for name in [
        "training-time.svg",
        "curves-face-loss.svg",
        "curves-emotion-accuracy.svg",
        "confusion-face-paper-cpu-gpu.svg",
        "hierarchy-paper-cpu-emotion-alone.svg",
        "hierarchy-paper-cpu-with-face-filter.svg",
    ] {
        assert!(svgs.iter().any(|s| s == name), "{name} missing from {svgs:?}");
    }
    for name in &svgs {
        assert!(md.contains(&format!("]({name})")), "{name} not linked from report.md");
        assert_well_formed_svg(name, &fs::read_to_string(out_dir.join(name)).unwrap());
    }
    let timing_svg = fs::read_to_string(out_dir.join("training-time.svg")).unwrap();
    assert!(timing_svg.contains("log scale"), "seconds against hours need a log axis");
    assert!(timing_svg.contains("paper: TPU v3-8, 256x256"));

    // report.json agrees.
    let json: serde_json::Value = serde_json::from_str(&fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(json["runs"].as_array().unwrap().len(), 8);
    assert_eq!(json["groups"].as_array().unwrap().len(), 7);
    let face_cpu = json["groups"].as_array().unwrap().iter().find(|g| g["model"] == "face" && g["backend"] == "cpu").unwrap();
    assert_eq!(face_cpu["compile_s"]["n"], 2);
    assert!((face_cpu["compile_s"]["median"].as_f64().unwrap() - 4.4).abs() < 1e-9);
    assert_eq!(json["hierarchy"][0]["table"][1]["correct"], 85);

    if let Some(keep) = std::env::var_os("EMOTIONET_KEEP_SAMPLE") {
        let keep = Path::new(&keep);
        let _ = fs::remove_dir_all(keep);
        fs::create_dir_all(keep).unwrap();
        fs::rename(&runs, keep.join("runs")).unwrap();
        fs::rename(&out_dir, keep.join("report")).unwrap();
    }
}

#[test]
fn a_rerun_replaces_the_previous_report_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    write_run(&runs, &spec("smoke", ModelKind::Face, Backend::Cpu, 0));
    let out_dir = tmp.path().join("out");
    assert!(report(&runs, &out_dir, &[]).status.success());
    // A chart from an earlier report that the new one does not produce.
    fs::write(out_dir.join("confusion-old.svg"), "<svg/>").unwrap();
    write_run(&runs, &spec("smoke", ModelKind::Emotion, Backend::Cpu, 0));
    assert!(report(&runs, &out_dir, &[]).status.success());
    assert!(!out_dir.join("confusion-old.svg").exists());
    let md = fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("No finished GPU runs") && md.contains("No finished TPU runs"));
    assert!(md.contains("No hierarchy evaluation"));
    // No staging directories left behind.
    let names: Vec<_> = fs::read_dir(tmp.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// A runs folder that does not exist, or holds no runs, is said to be so,
/// with what to give instead; --skip-invalid (which cannot help) is not offered.
#[test]
fn a_missing_or_empty_runs_folder_says_so_and_what_to_give() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("reports/latest");
    let missing = tmp.path().join("no-such-runs");
    let out = report(&missing, &out_dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("there is no runs folder {}: it does not exist", missing.display())), "{stderr}");
    assert!(stderr.contains("make demo") && stderr.contains("runs/demo"), "{stderr}");
    assert!(!stderr.contains("--skip-invalid") && !stderr.contains("named above"), "{stderr}");
    assert!(!tmp.path().join("reports").exists(), "nothing written for a missing runs folder");

    let empty = tmp.path().join("empty-runs");
    fs::create_dir_all(&empty).unwrap();
    let out = report(&empty, &out_dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no run records (record.json) or hierarchy evaluations"), "{stderr}");
    assert!(stderr.contains("make demo") && !stderr.contains("--skip-invalid"), "{stderr}");
}

#[test]
fn a_malformed_record_is_an_error_naming_the_file_and_keeps_the_old_report() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    write_run(&runs, &spec("smoke", ModelKind::Face, Backend::Cpu, 0));
    let out_dir = tmp.path().join("out");
    assert!(report(&runs, &out_dir, &[]).status.success());
    let good = fs::read_to_string(out_dir.join("report.md")).unwrap();

    let bad = runs.join("smoke/emotion/cpu/r0/record.json");
    fs::create_dir_all(bad.parent().unwrap()).unwrap();
    fs::write(&bad, r#"{"schema": 1, "run_id": "x", "experiment": "smoke""#).unwrap();
    let out = report(&runs, &out_dir, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("smoke/emotion/cpu/r0/record.json"), "{stderr}");
    assert!(stderr.contains("--skip-invalid"), "{stderr}");
    assert_eq!(fs::read_to_string(out_dir.join("report.md")).unwrap(), good, "a failed report must not touch the old one");

    // With --skip-invalid the report is made and names the skipped file.
    let out = report(&runs, &out_dir, &["--skip-invalid"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 invalid file(s) skipped"));
    let md = fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("Skipped `smoke/emotion/cpu/r0/record.json`"), "{md}");
}

#[test]
fn a_curve_cut_off_by_a_crash_is_reported_not_fatal() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let mut running = spec("smoke", ModelKind::Face, Backend::Cpu, 0);
    // Written as running by this (living) test process.
    running.status = RunStatus::running_here();
    write_run(&runs, &running);
    let metrics = runs.join("smoke/face/cpu/r0/metrics.jsonl");
    let mut text = fs::read_to_string(&metrics).unwrap();
    text.push_str(r#"{"step":150,"epoch":10,"wall"#);
    fs::write(&metrics, text).unwrap();
    let out_dir = tmp.path().join("out");
    assert!(report(&runs, &out_dir, &[]).status.success());
    let md = fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("`smoke/face/cpu/r0/metrics.jsonl`: the last line was cut off"), "{md}");
    assert!(md.contains("Run `smoke/face/cpu/r0` is still running"), "{md}");
    assert!(md.contains("No finished runs of the face model."));
    // Its curve is still drawn, labelled as running.
    assert!(fs::read_to_string(out_dir.join("curves-face-loss.svg")).unwrap().contains("CPU · smoke · r0 (running)"));
}

#[test]
fn runs_are_shown_as_they_are_interrupted_stopped_or_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    // A trainer killed without a word: its record still says running, but
    // its process (a `true` that has exited) is gone.
    let child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait_with_output().unwrap();
    let mut killed = spec("smoke", ModelKind::Face, Backend::Cpu, 0);
    killed.status = RunStatus::Running { process: Some(RunProcess { pid, host: emotionet::records::host_name(), start_ticks: Some(1) }) };
    write_run(&runs, &killed);
    let mut stopped = spec("smoke", ModelKind::Face, Backend::Cpu, 1);
    stopped.status = RunStatus::Stopped { step: 120, resume: "emotionet train smoke.yaml --model face --resume --out runs --repeat 1".into() };
    write_run(&runs, &stopped);
    let mut failed = spec("smoke", ModelKind::Emotion, Backend::Cpu, 0);
    failed.status = RunStatus::Failed { error: "the emotion model's training loss diverged at step 120".into() };
    write_run(&runs, &failed);
    let out_dir = tmp.path().join("out");
    assert!(report(&runs, &out_dir, &[]).status.success());
    let md = fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("3 runs (1 interrupted, 1 failed, 1 stopped)"), "{md}");
    assert!(md.contains("Run `smoke/face/cpu/r0` was interrupted (its process died without recording an end"), "{md}");
    assert!(md.contains("Run `smoke/face/cpu/r1` was stopped on request at step 120 of 450; left out of timing and accuracy. Resume it with `emotionet train smoke.yaml --model face --resume --out runs --repeat 1`."), "{md}");
    assert!(md.contains("Run `smoke/emotion/cpu/r0` failed after 120 of 600 steps: the emotion model's training loss diverged at step 120"), "{md}");
    assert!(!md.contains("| running |"), "{md}");
}

#[test]
fn an_unknown_field_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    write_run(&runs, &spec("smoke", ModelKind::Face, Backend::Cpu, 0));
    let path = runs.join("smoke/face/cpu/r0/record.json");
    let mut value: serde_json::Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    value["timing"]["compile_seconds"] = 3.into();
    fs::write(&path, value.to_string()).unwrap();
    let out = report(&runs, &tmp.path().join("out"), &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("record.json") && stderr.contains("compile_seconds"), "{stderr}");
}

#[test]
fn an_empty_or_missing_runs_dir_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    fs::create_dir_all(empty.join("nothing/here")).unwrap();
    let out = report(&empty, &tmp.path().join("out"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no run records (record.json) or hierarchy evaluations (hierarchy.json) under"));
    assert!(!tmp.path().join("out").exists());

    let out = report(&tmp.path().join("missing"), &tmp.path().join("out"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("it does not exist"));
}

#[test]
fn refuses_to_replace_a_directory_that_is_not_a_report() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    write_run(&runs, &spec("smoke", ModelKind::Face, Backend::Cpu, 0));
    let precious = tmp.path().join("notes");
    fs::create_dir_all(&precious).unwrap();
    fs::write(precious.join("thesis.tex"), "do not delete").unwrap();
    let out = report(&runs, &precious, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to replace"));
    assert_eq!(fs::read_to_string(precious.join("thesis.tex")).unwrap(), "do not delete");
    // Nor the runs directory itself, nor a parent of it.
    assert_eq!(report(&runs, tmp.path(), &[]).status.code(), Some(1));
    assert!(runs.join("smoke/face/cpu/r0/record.json").exists());
}

/// Issue 24, item 1: a campaign with one stand-in TPU run (the CPU plugin
/// playing the TPU through a stand-in description, as the cloud tests run
/// it) beside real CPU runs. Every section of the report keeps it out of the
/// TPU figures, the speedups, the paper comparison and "TPU present", and
/// shows it in its own labelled rows.
#[test]
fn a_stand_in_tpu_run_is_labelled_and_never_counted_as_a_tpu_run() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    for model in ModelKind::ALL {
        write_run(&runs, &spec("paper-cpu", model, Backend::Cpu, 0));
    }
    // Asked for the TPU, filed under tpu, ran on the CPU: what a stand-in writes.
    let mut stand_in = spec("paper-cpu", ModelKind::Face, Backend::Tpu, 0);
    (stand_in.size, stand_in.devices, stand_in.kind) = (100, 1, "cpu");
    write_run(&runs, &stand_in);
    let path = runs.join("paper-cpu/face/tpu/r0/record.json");
    let mut record = RunRecord::load(&path).unwrap();
    record.platform.name = "cpu".into();
    record.save(&path).unwrap();

    let out_dir = tmp.path().join("out");
    assert!(report(&runs, &out_dir, &[]).status.success());
    let md = fs::read_to_string(out_dir.join("report.md")).unwrap();
    let section = |n: &str| -> String {
        let start = md.find(&format!("\n## {n}")).unwrap_or_else(|| panic!("no section {n}"));
        let rest = &md[start + 1..];
        rest[..rest[3..].find("\n## ").map_or(rest.len(), |e| e + 3)].to_string()
    };
    let label = "CPU standing in for TPU";

    // Header: three runs in three groups, one of them a stand-in.
    assert!(md.contains("3 runs (3 finished) in 3 groups (1 of them stand-ins, counted as nothing)"), "{md}");
    // 1. Its own labelled row in the table, no bar in the chart.
    let s1 = section("1.");
    assert!(s1.lines().any(|l| l.starts_with(&format!("| face | {label} (cpu ×1) | paper-cpu |"))), "{s1}");
    assert!(!s1.lines().any(|l| l.starts_with("| face | TPU")), "{s1}");
    let chart = fs::read_to_string(out_dir.join("training-time.svg")).unwrap();
    assert!(!chart.contains("TPU ·") && !chart.contains("stand"), "no stand-in bar: {chart}");
    assert_eq!(chart.matches("CPU · paper-cpu · 100x100</text>").count(), 2, "one CPU bar per model: {chart}");
    // 2. No speedup (a CPU against a CPU), no comparison of it with the paper.
    let s2 = section("2.");
    assert!(s2.contains("No experiment has finished runs of the same model on CPU and on another platform"), "{s2}");
    assert!(!s2.contains("TPU ·") && !s2.contains("standing in"), "{s2}");
    assert!(s2.lines().any(|l| l.starts_with("| face | CPU (cpu ×1) · paper-cpu |")), "the real CPU run is compared: {s2}");
    // 3. A labelled row, the CPU's platform, no TPU cost.
    let s3 = section("3.");
    assert!(s3.lines().any(|l| l.starts_with(&format!("| face | {label} (cpu 0.0.1) | cpu ×1 | paper-cpu |"))), "{s3}");
    assert!(s3.lines().any(|l| l.starts_with("| face | CPU (cpu 0.0.1) | cpu ×1 | paper-cpu |")), "{s3}");
    assert!(s3.contains("Rows labelled *standing in for*"), "{s3}");
    assert!(!s3.contains("Estimated cost of the TPU runs"), "a CPU cost no TPU time: {s3}");
    // 4. Accuracy next to the paper's: only the real runs.
    let s4 = section("4.");
    assert!(!s4.contains("TPU (") && !s4.contains("standing in"), "{s4}");
    assert!(s4.contains("ours: CPU (cpu ×1) · paper-cpu"), "{s4}");
    // 5. Its curve, labelled, in the CPU's colours.
    let curves = fs::read_to_string(out_dir.join("curves-face-loss.svg")).unwrap();
    assert!(curves.contains(label), "{curves}");
    // 6. No TPU confusion matrix.
    let s6 = section("6.");
    assert!(!s6.contains("TPU"), "{s6}");
    // 8. The TPU is missing, and the stand-in is explained.
    let s8 = section("8.");
    assert!(s8.contains("No finished TPU runs: the TPU rows and bars are absent, not zero."), "{s8}");
    assert!(s8.contains("No finished GPU runs"), "{s8}");
    assert!(
        s8.contains(
            "Run `paper-cpu/face/tpu/r0` of the face model in experiment `paper-cpu` asked for TPU but ran on CPU (cpu ×1) through a stand-in description"
        ),
        "{s8}"
    );
    // Appendix: where each run ran.
    let appendix = section("Appendix");
    assert!(appendix.lines().any(|l| l.starts_with("| `paper-cpu/face/tpu/r0` |") && l.contains(&format!("| {label} |"))), "{appendix}");

    // report.json: no TPU group, speedup or comparison; the stand-in on its own.
    let json: serde_json::Value = serde_json::from_str(&fs::read_to_string(out_dir.join("report.json")).unwrap()).unwrap();
    let backends: Vec<&str> = json["groups"].as_array().unwrap().iter().map(|g| g["backend"].as_str().unwrap()).collect();
    assert_eq!(backends, ["cpu", "cpu"]);
    assert_eq!(json["stand_in_groups"].as_array().unwrap().len(), 1);
    assert_eq!((json["stand_in_groups"][0]["backend"].as_str(), json["stand_in_groups"][0]["stand_in_for"].as_str()), (Some("cpu"), Some("tpu")));
    assert_eq!(json["speedups"].as_array().unwrap().len(), 0);
    assert!(json["paper_comparisons"].as_array().unwrap().iter().all(|c| c["backend"] == "cpu"));
    let run = json["runs"].as_array().unwrap().iter().find(|r| r["run_id"] == "paper-cpu/face/tpu/r0").unwrap();
    assert_eq!(run["ran_on"], serde_json::json!({"backend": "cpu", "stand_in_for": "tpu"}));
}

/// A TPU prediction file for `experiment`, as the cloud preflight writes it
/// (`tpu::write_prediction`): the train step of each model at `step_s`
/// (the roofline), plus an eval step that the report must not show.
fn write_prediction(runs: &Path, experiment: &str, step_s: [(ModelKind, f64); 2]) -> std::path::PathBuf {
    use emotionet::tpu::{self, CompileReport, ProgramFigures, Role};
    let target = tpu::target("v3-8").unwrap();
    let program = |model: ModelKind, role: Role, step: f64| ProgramFigures {
        name: format!("{model} {}", role.as_str()),
        model,
        role,
        image_size: 256,
        batch: 128,
        replicas: if role == Role::TrainStep { 8 } else { 1 },
        precision: Precision::F32,
        program_hash: "0".repeat(64),
        compile_s: 20.0,
        error: None,
        memory: Some(emotionet::pjrt::MemoryStats { arguments: 2_150_000_000, temp: 2_490_000_000, ..Default::default() }),
        memory_total_bytes: Some(4_640_000_000),
        hbm_bytes: target.generation.hbm_bytes,
        fits: true,
        flops: Some(1.11e11),
        bytes_accessed: Some(2.12e10),
        roofline_step_s: Some(step),
        bound: Some("memory".into()),
        runs: (role == Role::TrainStep).then_some(15 * if model == ModelKind::Face { 30 } else { 40 }),
        serialized: None,
    };
    let mut programs = Vec::new();
    for (model, step) in step_s {
        programs.push(program(model, Role::TrainStep, step));
        programs.push(program(model, Role::EvalStep, step / 3.0));
    }
    let report = CompileReport {
        experiment: experiment.into(),
        accelerator_type: "v3-8".into(),
        topology: "v3:2x2".into(),
        create_options: vec![],
        devices: 8,
        device_kind: "TPU v3".into(),
        platform_version: "libtpu test".into(),
        plugin: "libtpu.so".into(),
        plugin_attributes: vec![],
        peak_bf16_flops: target.generation.peak_bf16_flops,
        peak_f32_flops: target.generation.peak_f32_flops,
        hbm_bytes: target.generation.hbm_bytes,
        hbm_bandwidth: target.generation.hbm_bandwidth,
        peak_source: target.generation.source.into(),
        f32_peak_note: tpu::targets::f32_peak_note().into(),
        programs,
        predicted_train_s: Some(step_s[0].1 * 450.0 + step_s[1].1 * 600.0),
        predicted_cost: vec![],
        price_source: emotionet::cloud::cost::PRICE_SOURCE.into(),
        prediction_note: tpu::PREDICTION_NOTE.into(),
        refusals: vec![],
    };
    tpu::write_prediction(runs, &report).unwrap()
}

/// The prediction is shown as one: its own labelled rows next to the
/// measured TPU group with measured / predicted, never a bar in the time
/// chart, never a group, a speedup or a paper comparison.
#[test]
fn a_tpu_prediction_is_labelled_shown_beside_the_measured_tpu_row_and_counted_as_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    sample_runs(&runs);
    let without = tmp.path().join("without");
    assert!(report(&runs, &without, &[]).status.success());
    // The sample's TPU steady steps are 90 ms (face) and 110 ms (emotion):
    // predicted at a quarter of that, measured / predicted is 4.
    let file = write_prediction(&runs, "paper-tpu", [(ModelKind::Face, 0.0225), (ModelKind::Emotion, 0.0275)]);
    assert_eq!(file, runs.join("paper-tpu/tpu-prediction-v3-8.json"));
    let out_dir = tmp.path().join("report");
    let out = report(&runs, &out_dir, &[]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("### Predicted TPU time: a prediction, not a measurement"), "{md}");
    let rows: Vec<&str> = md.lines().filter(|l| l.contains("| paper-tpu | predicted on TPU v3-8 (compiler cost analysis, roofline) |")).collect();
    assert_eq!(rows.len(), 2, "one row per model's train step, no eval step: {rows:?}");
    let face = rows.iter().find(|l| l.starts_with("| face |")).unwrap();
    // 450 steps of 22.5 ms = 10.1 s; $8.00/h on demand, $2.04/h spot; 4.64 GB = 4.32 GiB of a v3 core's 16.
    assert!(face.contains("| 256x256 | 128 × 8 | 450 | 22.5 ms (memory-bound) |"), "{face}");
    assert!(face.contains("| $0.02 (est.) | $0.01 (est.) | 4.32 GiB of 16.00 GiB |"), "{face}");
    let measured = md.lines().find(|l| l.starts_with("| face | paper-tpu | measured: TPU")).expect("the measured TPU row follows its prediction");
    assert!(measured.contains("| 90.0 ms |") && measured.contains("| 4.00× |"), "{measured}");

    // Nothing else moved: the chart, the groups, the speedups and the paper comparisons are those of the report without it.
    assert_eq!(fs::read_to_string(out_dir.join("training-time.svg")).unwrap(), fs::read_to_string(without.join("training-time.svg")).unwrap());
    let json: serde_json::Value = serde_json::from_slice(&fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    let before: serde_json::Value = serde_json::from_slice(&fs::read(without.join("report.json")).unwrap()).unwrap();
    for key in ["groups", "speedups", "paper_comparisons"] {
        assert_eq!(json[key], before[key], "{key}");
    }
    let predictions = json["tpu_predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 2);
    for p in predictions {
        assert_eq!(p["kind"], "prediction");
        assert_eq!(p["file"], "paper-tpu/tpu-prediction-v3-8.json");
        let ratio = p["measured"]["step_ratio"].as_f64().unwrap();
        assert!((ratio - 4.0).abs() < 0.05, "{p}");
        assert!(p["measured"]["train_ratio"].as_f64().unwrap() > 3.9, "{p}");
    }

    // A broken prediction file is named, as a broken record is.
    fs::write(&file, b"{\"experiment\": 1}").unwrap();
    let out = report(&runs, &tmp.path().join("broken"), &[]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot read the TPU prediction") && stderr.contains("tpu-prediction-v3-8.json"), "{stderr}");
}

/// Achieved FLOP/s from the recorded flops per step: flops per device x
/// devices / steady step, and for a TPU of the peak table its MFU; a CPU
/// or GPU row has no MFU (no peak in the record or the table).
#[test]
fn achieved_flops_come_from_the_recorded_cost_analysis_and_tpus_get_an_mfu() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    sample_runs(&runs);
    for (dir, flops) in [("paper-tpu/face/tpu/r0", 1.11e11), ("paper-cpu/face/cpu/r0", 2.0e10), ("paper-cpu/face/cpu/r1", 2.0e10)] {
        let path = runs.join(dir).join("record.json");
        let mut record = RunRecord::load(&path).unwrap();
        record.config.train_step_cost = Some(emotionet::records::StepCost { flops, bytes_accessed: 1e9 });
        record.save(&path).unwrap();
    }
    let out_dir = tmp.path().join("report");
    assert!(report(&runs, &out_dir, &[]).status.success());
    let md = fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.contains("### Achieved FLOP/s"), "{md}");
    // TPU face: 1.11e11 flops x 8 devices / 90 ms = 9,867 GFLOP/s, 2.0% of 8 x 61.5 TFLOP/s.
    let tpu = md.lines().find(|l| l.starts_with("| face | paper-tpu | TPU (TPU v3 ×8) | TPU v3 ×8 | 1.110e11 |")).expect("the TPU row");
    assert!(tpu.contains("| 9,867 |"), "{tpu}");
    let json: serde_json::Value = serde_json::from_slice(&fs::read(out_dir.join("report.json")).unwrap()).unwrap();
    let group = |backend: &str, experiment: &str| {
        json["groups"].as_array().unwrap().iter().find(|g| g["backend"] == backend && g["experiment"] == experiment && g["model"] == "face").unwrap().clone()
    };
    let mfu = group("tpu", "paper-tpu")["mfu"]["median"].as_f64().unwrap();
    assert!((mfu - 1.11e11 * 8.0 / 0.09 / (8.0 * 61.5e12)).abs() < 1e-4, "{mfu}");
    let cpu = group("cpu", "paper-cpu");
    assert!(cpu["achieved_flops_per_s"]["median"].as_f64().unwrap() > 0.0, "{cpu}");
    assert!(cpu["mfu"].is_null(), "no CPU peak in the record: {cpu}");
    assert!(group("gpu", "paper-cpu")["achieved_flops_per_s"].is_null(), "a run without a cost analysis has no figure");
}
