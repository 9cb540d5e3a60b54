//! A tiny mixed-source experiment end to end through the real binary:
//! a small synthetic set plus scikit-image's real LFW subset, both models
//! trained on the CPU plugin (`emotionet run`), then the hierarchy
//! evaluation and the report. The per-source figures must be in the run
//! record, in `hierarchy.json` and in the report, and must add up to the
//! overall ones.

mod cli_support;

use std::path::Path;

use cli_support::emotionet;
use emotionet::records::{HierarchyEval, RunRecord};

fn experiment(root: &Path) -> String {
    let subset = emotionet::pjrt::deps_dir().join("data/lfw_subset.npy");
    assert!(subset.is_file(), "{} is missing: run `make setup`", subset.display());
    format!(
        "name: tinymix
seed: 3
output: {root}/runs
data:
  image_size: 24
  cache_dir: {root}/cache
  balance_classes: true
  augment: {{flip: true, contrast: 0.2, blur_sigma: 0.5}}
  source:
    mixed:
      - synthetic: {{faces: 160, non_faces: 100, size: 48, difficulty: 0.2}}
      - name: lfw_subset
        real: {{npy: [{{path: {subset}, faces: [0, 100], non_faces: [100, 200]}}]}}
        share: 0.25
models:
  face:
    batch: 16
    steps_per_epoch: 10
    epochs: 2
    optimizer: {{kind: adam}}
    learning_rate: {{schedule: constant, value: 0.001}}
    architecture: {{conv_filters: [8, 16], dense_units: 32}}
  emotion:
    batch: 16
    steps_per_epoch: 10
    epochs: 1
    optimizer: {{kind: adam}}
    learning_rate: {{schedule: constant, value: 0.001}}
    architecture: {{conv_filters: [8, 16, 16], dense_units: 32}}
logging: {{every_steps: 10, eval_every_epoch: false, checkpoint_every_steps: 0}}
",
        root = root.display(),
        subset = subset.display()
    )
}

#[test]
fn a_tiny_mixed_experiment_reports_accuracy_per_source() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tinymix.yaml");
    std::fs::write(&file, experiment(tmp.path())).unwrap();
    let out = tmp.path().join("runs");
    let o = emotionet(&["run", file.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success());

    // The face run: both sources in the record, adding up to the whole.
    let face = RunRecord::load(&out.join("tinymix/face/cpu-r0/record.json")).unwrap();
    let names: Vec<(&str, &str)> = face.per_source.iter().map(|s| (s.source.as_str(), s.kind.as_str())).collect();
    assert_eq!(names, [("synthetic", "synthetic"), ("lfw_subset", "real")]);
    assert_eq!(face.per_source[1].examples, 60, "30% of the 200 real images are held out");
    let all = face.confusion.as_ref().unwrap();
    assert_eq!(face.per_source.iter().map(|s| s.examples).sum::<u64>(), all.total());
    assert_eq!(face.per_source.iter().map(|s| s.confusion.correct()).sum::<u64>(), all.correct());
    // The emotion model had only the synthetic set to learn from: one source, nothing to split.
    let emotion = RunRecord::load(&out.join("tinymix/emotion/cpu-r0/record.json")).unwrap();
    assert!(emotion.per_source.is_empty());

    // The hierarchy: Table I per source, and face or not on the real faces too.
    let h = HierarchyEval::load(&out.join("tinymix/hierarchy/cpu-r0/hierarchy.json")).unwrap();
    let sources: Vec<&str> = h.per_source.iter().map(|t| t.source.as_str()).collect();
    assert_eq!(sources, ["synthetic", "lfw_subset"], "real non-faces are in the hierarchy task");
    assert_eq!(h.per_source.iter().map(|t| t.with_face_filter.total()).sum::<u64>(), h.with_face_filter.total());
    let real = h.face_level.iter().find(|t| t.source == "lfw_subset").expect("a face-level table for the real images");
    assert_eq!(real.kind, "real");
    assert_eq!((real.emotion_alone.truth_total(0), real.emotion_alone.truth_total(1)), (28, 32), "the held-out real non-faces and faces");
    assert_eq!(real.table[0].correct, 32, "the emotion model alone calls every image a face");

    let report = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    for needle in
        ["only `lfw_subset` (real, 60 eval images)", "The same evaluation per data source", "Table I per source", "Face filter against no filter, per source"]
    {
        assert!(report.contains(needle), "the report lacks {needle:?}");
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("report/report.json")).unwrap()).unwrap();
    assert_eq!(json["hierarchy"][0]["face_level"].as_array().map(Vec::len), Some(2));
}
