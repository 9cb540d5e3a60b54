//! The hierarchy at inference, end to end on the real CPU plugin: both
//! models are trained for a few steps on a small synthetic set (real JPEG
//! files, real prep, the real trainer), then `emotionet eval`, `emotionet
//! report` and `emotionet predict` run through the real binary.
//!
//! The trained runs are shared by the tests of this file (one fixture);
//! they live under Cargo's per-target temporary folder and are rebuilt on
//! every run of this test binary.

mod cli_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cli_support::{emotionet, text};
use emotionet::checkpoint::{Checkpoint, CheckpointDir};
use emotionet::data::{PrepOptions, PreparedSet, prepare};
use emotionet::experiment::Experiment;
use emotionet::hierarchy::{self, FACE_CLASS};
use emotionet::models::{InferenceError, InferenceModel, InferenceOptions, ModelKind};
use emotionet::pjrt::{self, Backend, Client, ClientOptions};
use emotionet::records::HierarchyEval;
use emotionet::tensor::HostTensor;
use emotionet::train::{TrainOptions, train};

struct Fixture {
    root: PathBuf,
    experiment_file: PathBuf,
    experiment: Experiment,
    /// The hierarchy task's data, as eval prepares it.
    set: PreparedSet,
}

fn experiment_yaml(root: &Path, name: &str) -> String {
    format!(
        "name: {name}
seed: 5
output: {root}/runs
data:
  image_size: 24
  cache_dir: {root}/cache
  source: {{synthetic: {{faces: 300, non_faces: 200, size: 64, difficulty: 0.2}}}}
models:
  face:
    batch: 16
    steps_per_epoch: 10
    epochs: 4
    learning_rate: {{schedule: constant, value: 0.05}}
    architecture: {{conv_filters: [8, 16], dense_units: 32}}
  emotion:
    batch: 16
    steps_per_epoch: 10
    epochs: 4
    learning_rate: {{schedule: constant, value: 0.05}}
    architecture: {{conv_filters: [8, 16, 16], dense_units: 32}}
logging: {{every_steps: 10, eval_every_epoch: false}}
",
        root = root.display()
    )
}

/// Trains both models once for the whole test binary.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("eval_hierarchy");
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        let experiment_file = root.join("evaltest.yaml");
        fs::write(&experiment_file, experiment_yaml(&root, "evaltest")).unwrap();
        let experiment = Experiment::from_file(&experiment_file).unwrap();
        for kind in ModelKind::ALL {
            let options = TrainOptions::new(&experiment);
            train(&experiment, kind, &options).unwrap_or_else(|e| panic!("training the {kind} model: {e:#}"));
        }
        let set = prepare(&experiment.data, &PrepOptions::new(hierarchy::task(&experiment))).unwrap().set;
        Fixture { root, experiment_file, experiment, set }
    })
}

fn client() -> Client {
    pjrt::connect(Backend::Cpu, None, &ClientOptions::new()).expect("the CPU plugin (make setup)")
}

#[test]
fn eval_writes_table_i_from_its_matrices_and_the_report_draws_it() {
    let f = fixture();
    let exp = f.experiment_file.to_str().unwrap();
    let out = emotionet(&["eval", exp, "--json", "--quiet"]);
    assert!(out.status.success());
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
    let path = PathBuf::from(summary["hierarchy_json"].as_str().unwrap());
    assert_eq!(path, f.root.join("runs/evaltest/hierarchy/cpu-r0/hierarchy.json"));

    // `load` validates: schema, matrix shapes, labels, accuracy = correct / total.
    let eval = HierarchyEval::load(&path).unwrap();
    let n = f.set.eval.len() as u64;
    let non_faces = f.set.eval.labels.iter().filter(|&&l| l == 0).count() as u64;
    assert!(non_faces > 0 && non_faces < n, "the eval split mixes faces and non-faces");
    assert_eq!(eval.class_names, vec!["not_a_face", "happy", "sad", "neither"]);
    for (row, c) in eval.table.iter().zip([&eval.emotion_alone, &eval.with_face_filter]) {
        assert_eq!(c.total(), n, "{}: every eval image counted once", row.system);
        assert_eq!((row.correct, row.wrong), (c.correct(), c.wrong()), "{}", row.system);
        assert_eq!(row.correct + row.wrong, n);
    }
    for truth in 0..4 {
        assert_eq!(eval.emotion_alone.truth_total(truth), f.set.eval.class_counts(4)[truth] as u64);
        assert_eq!(eval.emotion_alone.cell(truth, 0), 0, "the emotion model alone never answers not_a_face");
    }
    assert_eq!(eval.emotion_alone.truth_total(0), non_faces);
    assert!(eval.emotion_alone.wrong() >= non_faces, "alone, every non-face is wrong");
    // The paper's point: the filter turns non-faces into right answers. (A
    // seeded run; 40 steps take the face model to about 80% eval accuracy.)
    assert!(eval.with_face_filter.cell(0, 0) > 0, "the face filter rejects some non-faces");
    assert!(eval.with_face_filter.correct() > eval.emotion_alone.correct(), "the filter helps: {:?}", eval.table);
    assert_eq!(summary["per_class"].as_array().unwrap().len(), 4);
    assert_eq!(summary["paper_table_i"][2]["accuracy"], 0.9);

    // Per-image answers, consistent with the matrices.
    let predictions: serde_json::Value = serde_json::from_slice(&fs::read(path.with_file_name("predictions.json")).unwrap()).unwrap();
    let images = predictions["images"].as_array().unwrap();
    assert_eq!(images.len() as u64, n);
    let filtered_out = images.iter().filter(|i| i["with_face_filter"] == 0).count() as u64;
    assert_eq!(filtered_out, eval.with_face_filter.predicted_total(0));
    for i in images {
        let p = i["face_probability"].as_f64().unwrap();
        assert_eq!(i["with_face_filter"] == 0, p < 0.5, "{i}");
        if p >= 0.5 {
            assert_eq!(i["with_face_filter"], i["emotion_alone"], "a face keeps the emotion model's answer");
        }
    }

    // A seeded 40-image subset, stratified by class, in its own folder.
    let out = emotionet(&["eval", exp, "--images", "40", "--quiet"]);
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    for needle in [
        "Table I",
        "paper: emotion model alone on mixed input",
        "ours:  emotion model alone",
        "ours:  face filter + emotion model",
        "90.0%",
        "Emotion model alone (rows: truth",
        "Face filter + emotion model (rows: truth",
        "precision",
    ] {
        assert!(stdout.contains(needle), "eval prints {needle:?}");
    }
    let subset = HierarchyEval::load(&f.root.join("runs/evaltest/hierarchy/cpu-r0-n40/hierarchy.json")).unwrap();
    assert_eq!(subset.emotion_alone.total(), 40);
    for c in 0..4 {
        let share = f.set.eval.class_counts(4)[c] as f64 * 40.0 / n as f64;
        let got = subset.emotion_alone.truth_total(c) as f64;
        assert!((got - share).abs() < 1.0, "class {c}: {got} images, proportional share {share:.2}");
    }

    // The report finds both evaluations under the runs folder and draws them.
    let report_dir = f.root.join("report");
    let out = emotionet(&["report", f.root.join("runs").to_str().unwrap(), "--out", report_dir.to_str().unwrap()]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("2 hierarchy evaluation(s)"));
    let md = fs::read_to_string(report_dir.join("report.md")).unwrap();
    for needle in ["### Evaluation `evaltest/cpu-r0`", "### Evaluation `evaltest/cpu-r0-n40`", "face filter + emotion model", "evaltest/face/cpu/r0 (step 40)"]
    {
        assert!(md.contains(needle), "report.md shows {needle:?}");
    }
    let svgs: Vec<String> =
        fs::read_dir(&report_dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("hierarchy-")).collect();
    assert_eq!(svgs.len(), 4, "two matrices per evaluation: {svgs:?}");
}

#[test]
fn predict_answers_each_image_like_eval_and_reports_a_corrupt_one() {
    let f = fixture();
    let exp = f.experiment_file.to_str().unwrap();
    // Two real JPEGs of the hierarchy's eval split: a face and a non-face.
    let face = f.set.eval.labels.iter().position(|&l| l > 0).unwrap();
    let scene = f.set.eval.labels.iter().position(|&l| l == 0).unwrap();
    let face_file = f.set.eval.info[face].source.clone();
    let scene_file = f.set.eval.info[scene].source.clone();
    assert!(face_file.to_lowercase().ends_with(".jpg") && scene_file.to_lowercase().ends_with(".jpg"));
    let corrupt = f.root.join("corrupt.jpg");
    let bytes = fs::read(&face_file).unwrap();
    fs::write(&corrupt, &bytes[..bytes.len() / 2]).unwrap();
    let corrupt = corrupt.to_str().unwrap();

    let out = emotionet(&["predict", exp, &face_file, corrupt, &scene_file, "--json"]);
    assert_eq!(out.status.code(), Some(1), "a failed image makes the exit status 1");
    assert!(text(&out.stderr).contains("1 of 3 images could not be read"));
    let lines: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["image"], corrupt);
    assert!(lines[1]["error"].as_str().unwrap().contains("truncated JPEG"), "{}", lines[1]);

    // The same files through the library path eval uses (prep cache ->
    // input pipeline -> model) give the same face probabilities: predict
    // decodes, fits and normalizes exactly as training did.
    let model = InferenceModel::from_run_dir(
        &client(),
        ModelKind::Face,
        f.experiment.architecture(ModelKind::Face),
        &f.experiment.run_paths(ModelKind::Face, Backend::Cpu, 0).dir,
        &InferenceOptions::new(4, f.experiment.data.normalize),
    )
    .unwrap();
    for (line, index) in [(&lines[0], face), (&lines[2], scene)] {
        let expected = model.probabilities(&HostTensor::from_u8(&[1, 24, 24, 1], f.set.eval.image(index)).unwrap()).unwrap()[0][FACE_CLASS];
        let got = line["face_probability"].as_f64().unwrap() as f32;
        assert!((got - expected).abs() < 1e-5, "{}: predict says {got}, the prepared image gives {expected}", line["image"]);
        let is_face = line["is_face"].as_bool().unwrap();
        assert_eq!(is_face, got >= 0.5);
        if is_face {
            let probs = line["emotion_probabilities"].as_object().unwrap();
            let mut names: Vec<&str> = probs.keys().map(String::as_str).collect();
            names.sort_unstable();
            assert_eq!(names, vec!["happy", "neither", "sad"]);
            let sum: f64 = probs.values().map(|v| v.as_f64().unwrap()).sum();
            assert!((sum - 1.0).abs() < 1e-4);
            assert!(probs.contains_key(line["emotion"].as_str().unwrap()));
        } else {
            assert!(line["emotion"].is_null() && line["emotion_probabilities"].is_null());
        }
    }

    // The table: one row per image, the error on the corrupt file's row.
    let not_an_image = f.root.join("notes.jpg");
    fs::write(&not_an_image, "just text").unwrap();
    let out = emotionet(&["predict", exp, &scene_file, not_an_image.to_str().unwrap(), "--threshold", "0"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    let rows: Vec<&str> = stdout.lines().collect();
    assert_eq!(rows.len(), 3, "a header and one row per image");
    assert!(rows[0].contains("face p") && rows[0].contains("happy") && rows[0].contains("neither"));
    assert!(rows[1].starts_with(&scene_file) && !rows[1].contains("not a face"), "threshold 0 calls everything a face: {}", rows[1]);
    assert!(rows[2].contains("error: not an image"), "{}", rows[2]);
}

#[test]
fn inference_batches_any_number_of_images_and_checks_checkpoints() {
    let f = fixture();
    let client = client();
    let arch = f.experiment.architecture(ModelKind::Emotion);
    let run_dir = f.experiment.run_paths(ModelKind::Emotion, Backend::Cpu, 0).dir;
    let model =
        InferenceModel::from_run_dir(&client, ModelKind::Emotion, arch.clone(), &run_dir, &InferenceOptions::new(4, f.experiment.data.normalize)).unwrap();
    assert_eq!(model.source().unwrap().step, 40);

    // 7 images = one full batch and one padded; answers do not depend on batching.
    let stack = |ids: &[usize]| {
        HostTensor::from_u8(&[ids.len() as i64, 24, 24, 1], &ids.iter().flat_map(|&i| f.set.eval.image(i).to_vec()).collect::<Vec<_>>()).unwrap()
    };
    let all = model.probabilities(&stack(&[0, 1, 2, 3, 4, 5, 6])).unwrap();
    assert_eq!(all.len(), 7);
    for row in &all {
        assert_eq!(row.len(), 3);
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
    let shifted = model.probabilities(&stack(&[5, 6, 0])).unwrap();
    for (a, b) in [(5, 0), (6, 1), (0, 2)] {
        for (x, y) in all[a].iter().zip(&shifted[b]) {
            assert!((x - y).abs() < 1e-6, "image {a}: {:?} vs {:?}", all[a], shifted[b]);
        }
    }
    assert!(model.probabilities(&stack(&[])).unwrap().is_empty());
    let err = model.probabilities(&HostTensor::from_u8(&[1, 12, 12, 1], &[0; 144]).unwrap()).unwrap_err().to_string();
    assert!(err.contains("ui8[n, 24, 24, 1]"), "{err}");
    // f32 images (what the pipeline made before issue 20) are refused by name.
    let err = model.probabilities(&HostTensor::from_f32(&[1, 24, 24, 1], &[0.0; 576]).unwrap()).unwrap_err().to_string();
    assert!(err.contains("ui8[n, 24, 24, 1]") && err.contains("f32[1, 24, 24, 1]"), "{err}");

    // Broken run folders: each error names the folder, file or tensor.
    let bad = f.root.join("broken");
    fs::create_dir_all(&bad).unwrap();
    let err =
        InferenceModel::from_run_dir(&client, ModelKind::Emotion, arch.clone(), &bad, &InferenceOptions::new(4, f.experiment.data.normalize)).unwrap_err();
    assert!(matches!(err, InferenceError::NoCheckpoint { .. }) && err.to_string().contains(bad.to_str().unwrap()), "{err}");
    let good = CheckpointDir::new(run_dir.join("checkpoints"), 1).unwrap().latest().unwrap().unwrap();
    let mut missing = good.clone();
    missing.tensors.retain(|(name, _)| name != "dense.weight");
    let dir = CheckpointDir::new(bad.join("checkpoints"), 1).unwrap();
    let saved = dir.save(&Checkpoint { step: 3, ..missing }).unwrap();
    let err = InferenceModel::from_run_dir(&client, ModelKind::Emotion, arch.clone(), &bad, &InferenceOptions::new(4, f.experiment.data.normalize))
        .unwrap_err()
        .to_string();
    assert!(err.contains(saved.to_str().unwrap()) && err.contains("dense.weight"), "{err}");
    let mut narrower = arch.clone();
    narrower.dense_units = 16;
    let err = InferenceModel::from_run_dir(&client, ModelKind::Emotion, narrower, &run_dir, &InferenceOptions::new(4, f.experiment.data.normalize))
        .unwrap_err()
        .to_string();
    assert!(err.contains("dense.weight") && err.contains("architecture or image size"), "{err}");
}

#[test]
fn eval_and_predict_without_trained_runs_name_the_missing_folder() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("untrained.yaml");
    fs::write(&file, experiment_yaml(root.path(), "untrained")).unwrap();
    let missing = root.path().join("runs/untrained/face/cpu-r3");
    let out = emotionet(&["eval", file.to_str().unwrap(), "--repeat", "3"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(missing.to_str().unwrap()) && stderr.contains("emotionet train"), "{stderr}");
    assert!(!root.path().join("cache").exists(), "nothing is prepared before the runs are found");

    let out = emotionet(&["predict", file.to_str().unwrap(), "x.jpg", "--repeat", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(missing.to_str().unwrap()));

    let out = emotionet(&["eval", file.to_str().unwrap(), "--threshold", "1.5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("threshold 1.5"));
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn predict_and_eval_check_the_checkpoints_they_load() {
    let f = fixture();
    let exp = f.experiment_file.to_str().unwrap();
    // A copy of the trained runs, damaged: the fixture stays whole for the
    // other tests.
    let root = f.root.join("damaged");
    let _ = fs::remove_dir_all(&root);
    copy_dir(&f.root.join("runs/evaltest"), &root.join("runs/evaltest"));
    let out_dir = root.join("runs");
    let out_arg = out_dir.to_str().unwrap();
    let checkpoints = CheckpointDir::new(out_dir.join("evaltest/emotion/cpu-r0/checkpoints"), 1).unwrap();
    let steps = checkpoints.steps().unwrap();
    assert!(steps.len() >= 2, "{steps:?}");
    let newest = checkpoints.path_for(*steps.last().unwrap());
    let previous = checkpoints.path_for(steps[steps.len() - 2]);
    let mut bytes = fs::read(&newest).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    bytes[8 + n + header["block1.conv.weight"]["data_offsets"][0].as_u64().unwrap() as usize] ^= 1;
    fs::write(&newest, bytes).unwrap();
    let face = f.set.eval.labels.iter().position(|&l| l > 0).unwrap();
    let face_file = f.set.eval.info[face].source.clone();

    // predict: the damaged newest is skipped, named with its tensor, and the
    // one before answers.
    let out = emotionet(&["predict", exp, &face_file, "--out", out_arg, "--json"]);
    assert!(out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains(newest.to_str().unwrap()) && stderr.contains("`block1.conv.weight` fails its checksum"), "{stderr}");
    assert!(stderr.contains(&format!("using {}", previous.display())), "{stderr}");

    // eval likewise, and its record names the checkpoint it used.
    let out = emotionet(&["eval", exp, "--out", out_arg, "--images", "20", "--json", "--quiet"]);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("`block1.conv.weight` fails its checksum"), "{}", text(&out.stderr));
    let predictions = fs::read_to_string(out_dir.join("evaltest/hierarchy/cpu-r0-n20").join(hierarchy::PREDICTIONS_FILE)).unwrap();
    assert!(predictions.contains(previous.to_str().unwrap()), "the predictions name the checkpoint used");

    // With no intact checkpoint left, both stop and say so.
    for step in steps {
        let path = checkpoints.path_for(step);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
    }
    for args in [vec!["predict", exp, &face_file, "--out", out_arg], vec!["eval", exp, "--out", out_arg, "--quiet"]] {
        let out = emotionet(&args);
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("checkpoint(s) in") && stderr.contains("is intact") && stderr.contains("cut short"), "{stderr}");
    }
}
