//! `emotionet hlo` regenerates the checked-in programs under hlo/ byte for
//! byte, and `emotionet bench` runs through the real binary.

mod cli_support;

use std::path::Path;

use cli_support::emotionet;

#[test]
fn checked_in_programs_are_regenerated_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().to_str().unwrap();
    let configs: [&[&str]; 8] = [
        &["--model", "face", "--size", "100"],
        &["--model", "emotion", "--size", "100"],
        &["--model", "face", "--size", "256", "--replicas", "8", "--batch", "128"],
        &["--model", "emotion", "--size", "256", "--replicas", "8", "--batch", "128"],
        &["--model", "face", "--size", "100", "--precision", "bf16"],
        &["--model", "emotion", "--size", "100", "--precision", "bf16"],
        &["--model", "face", "--size", "256", "--replicas", "8", "--batch", "128", "--precision", "bf16"],
        &["--model", "emotion", "--size", "256", "--replicas", "8", "--batch", "128", "--precision", "bf16"],
    ];
    for config in configs {
        let mut args = vec!["hlo", "--out", out];
        args.extend_from_slice(config);
        assert!(emotionet(&args).status.success());
    }
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("hlo");
    let mut compared = 0;
    for dir in std::fs::read_dir(tmp.path()).unwrap() {
        let dir = dir.unwrap().path();
        for file in std::fs::read_dir(&dir).unwrap() {
            let file = file.unwrap().path();
            let rel = file.strip_prefix(tmp.path()).unwrap();
            let checked_in = std::fs::read(golden.join(rel)).unwrap_or_else(|e| panic!("hlo/{}: {e}; regenerate with `emotionet hlo`", rel.display()));
            assert!(
                std::fs::read(&file).unwrap() == checked_in,
                "hlo/{} differs from what `emotionet hlo` writes now; regenerate it after a deliberate change",
                rel.display()
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 24, "3 programs x 8 configurations");
}

#[test]
fn hlo_rejects_sizes_the_network_cannot_pool() {
    let out = emotionet(&["hlo", "--model", "emotion", "--size", "6", "--out", "/tmp/never"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be pooled down"));
}

#[test]
fn bench_prints_a_json_line_and_a_table() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("bench.jsonl");
    let out = emotionet(&["bench", "--model", "face", "--size", "24", "--batch", "4", "--steps", "2", "--json", json.to_str().unwrap()]);
    assert!(out.status.success());
    let line = std::fs::read_to_string(&json).unwrap();
    let v: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(v["model"], "face");
    assert_eq!(v["batch"], 4);
    assert!(v["images_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["compile_s"].as_f64().unwrap() > 0.0);
    assert!(String::from_utf8_lossy(&out.stdout).contains("img/s"));
    let bad = emotionet(&["bench", "--model", "face", "--size", "24", "--batch", "5", "--devices", "2"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("does not split across 2 devices"));
}

#[test]
fn bench_input_times_the_pipeline_alone_per_augmentation_and_thread_count() {
    let tmp = tempfile::tempdir().unwrap();
    let json = tmp.path().join("input.jsonl");
    let out = emotionet(&["bench", "--input", "--size", "32", "--batch", "8", "--threads", "1,2", "--input-batches", "3", "--json", json.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let cases: Vec<(String, u64)> = lines.iter().map(|v| (v["augment"].as_str().unwrap().to_string(), v["threads"].as_u64().unwrap())).collect();
    assert_eq!(cases, [("off".to_string(), 1), ("off".into(), 2), ("demo".into(), 1), ("demo".into(), 2)]);
    for v in &lines {
        assert_eq!(v["bench"], "input");
        assert_eq!((v["size"].as_u64(), v["batch"].as_u64(), v["batches_timed"].as_u64()), (Some(32), Some(8), Some(3)));
        assert!(v["images_per_s"].as_f64().unwrap() > 0.0 && v["images_per_s_per_core"].as_f64().unwrap() > 0.0);
        assert!(v["machine"]["cores"].as_u64().unwrap() >= 1 && !v["machine"]["cpu"].as_str().unwrap().is_empty());
        assert_eq!(v["image_bytes_per_batch"].as_u64().unwrap(), 8 * 32 * 32 * v["bytes_per_pixel"].as_u64().unwrap());
    }
    assert_eq!(lines[2]["augmentation"]["blur_sigma"].as_f64(), Some(0.8));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("machine: ") && stdout.contains("img/s/core"), "{stdout}");

    let bad = emotionet(&["bench", "--input", "--augment", "{flip: true, wobble: 3}"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("wobble"), "{}", String::from_utf8_lossy(&bad.stderr));
    let bad = emotionet(&["bench", "--input", "--threads", "2,0"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--threads"));
}

#[test]
fn the_benchmarked_demo_augmentation_is_the_demo_experiments() {
    let smoke = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/smoke.yaml");
    let experiment = emotionet::experiment::Experiment::from_file(&smoke).unwrap();
    assert_eq!(experiment.models.face.as_ref().and_then(|f| f.augment), Some(emotionet::bench::demo_augmentation()));
}
