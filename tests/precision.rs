//! Precision is part of every record (issue 24, item 5): a run's record
//! says what the network computed in, with the element types of the
//! convolutions and dots of the train step it compiled as the proof, and
//! the report keeps bf16 and f32 runs of one experiment in separate rows.

mod cli_support;

use std::path::{Path, PathBuf};

use cli_support::{command, output, text};

/// A tiny face experiment on the CPU, in `precision`.
fn experiment(dir: &Path, precision: &str) -> PathBuf {
    let path = dir.join(format!("tiny-{precision}.yaml"));
    std::fs::write(
        &path,
        format!(
            "name: tiny\nseed: 1\noutput: {out}\ndata: {{image_size: 24, cache_dir: {cache}, source: {{synthetic: {{faces: 20, non_faces: 20, size: 32}}}}}}\n\
             models:\n  face: {{batch: 8, steps_per_epoch: 2, epochs: 1, precision: {precision}, architecture: {{dense_units: 8}}}}\n",
            out = dir.join("out").display(),
            cache = dir.join("cache").display()
        ),
    )
    .unwrap();
    path
}

fn record(dir: &Path, repeat: u32) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join(format!("out/tiny/face/cpu-r{repeat}/record.json"))).unwrap()).unwrap()
}

#[test]
fn a_bf16_run_records_bf16_and_its_train_step_computes_in_bf16() {
    let dir = tempfile::tempdir().unwrap();
    for (precision, repeat) in [("f32", 0), ("bf16", 1)] {
        let out = output(command().arg("train").arg(experiment(dir.path(), precision)).args(["--quiet", "--repeat", &repeat.to_string()]));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let (f32_run, bf16_run) = (record(dir.path(), 0), record(dir.path(), 1));
    assert_eq!(f32_run["config"]["precision"], "f32");
    assert_eq!(f32_run["config"]["compute_types"], serde_json::json!({"convolution": ["f32"], "dot": ["f32"]}));
    // bf16 did something: the record says so, and the program the run
    // compiled takes bf16 into every convolution and dot.
    assert_eq!(bf16_run["config"]["precision"], "bf16");
    assert_eq!(bf16_run["config"]["compute_types"], serde_json::json!({"convolution": ["bf16"], "dot": ["bf16"]}));
    // What bf16 means on this CPU is said in the record (emulated without
    // AMX-BF16); an f32 run has no such note.
    let has_amx = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default().split_whitespace().any(|f| f == "amx_bf16");
    let note = bf16_run["notes"]["cpu_bf16"].as_str().unwrap_or_else(|| panic!("no cpu_bf16 note: {bf16_run}"));
    assert!(note.contains(if has_amx { "AMX-BF16 is present, but" } else { "XLA:CPU emulates bf16" }), "{note}");
    assert!(f32_run["notes"].get("cpu_bf16").is_none(), "{f32_run}");

    // One row each in the report's run table, with the precision and its proof.
    let report = dir.path().join("report");
    let out = output(command().arg("report").arg(dir.path().join("out")).arg("--out").arg(&report));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let md = std::fs::read_to_string(report.join("report.md")).unwrap();
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| face | CPU (cpu) | cpu ×1 | tiny | 24x24 |")).collect();
    assert_eq!(rows.len(), 2, "{md}");
    assert!(rows.iter().any(|l| l.contains("| f32 (conv f32, dot f32) |")), "{rows:?}");
    assert!(rows.iter().any(|l| l.contains("| bf16 (conv bf16, dot bf16) |")), "{rows:?}");
    assert!(md.contains("CPU (cpu ×1) · bf16"), "bf16 rows are labelled elsewhere too: {md}");
}
