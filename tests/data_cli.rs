//! `emotionet data synth|prep|fetch` through the real binary.

mod data_support;

use data_support::emotionet;

#[test]
fn synth_then_prep_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synth");
    let o = emotionet(&["data", "synth", "--out", out.to_str().unwrap(), "--seed", "3", "--faces", "60", "--non-faces", "40", "--size", "48", "--quiet"]);
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("wrote 100 JPEGs"), "{stdout}");
    assert!(out.join("lfw").is_dir() && out.join("KDEF").is_dir() && out.join("SUN397/ClassName.txt").is_file());

    let cache = dir.path().join("cache");
    let (lfw, kdef, sun) = (out.join("lfw"), out.join("KDEF"), out.join("SUN397"));
    let args = [
        "data",
        "prep",
        "--task",
        "face",
        "--quiet",
        "--image-size",
        "32",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--lfw",
        lfw.to_str().unwrap(),
        "--kdef",
        kdef.to_str().unwrap(),
        "--sun397",
        sun.to_str().unwrap(),
    ];
    let o = emotionet(&args);
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("non_face") && stdout.contains("face") && stdout.contains("cache: written"), "{stdout}");
    assert!(stdout.contains("skipped files: 0"), "{stdout}");
    let o = emotionet(&args);
    assert!(String::from_utf8_lossy(&o.stdout).contains("cache: hit"));

    let mut json_args = args.to_vec();
    json_args[3] = "hierarchy";
    json_args.push("--json");
    let o = emotionet(&json_args);
    assert!(o.status.success());
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let classes: Vec<&str> = report["classes"].as_array().unwrap().iter().map(|c| c["class"].as_str().unwrap()).collect();
    assert_eq!(classes, vec!["not_a_face", "happy", "sad", "neither"]);
}

#[test]
fn prep_reads_a_yaml_config_and_strict_names_the_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    data_support::write_jpeg(&dir.path().join("lfw/A_B/A_B_0001.jpg"), 30, 30, 1);
    data_support::write_jpeg(&dir.path().join("lfw/C_D/C_D_0001.jpg"), 30, 30, 2);
    data_support::write_jpeg(&dir.path().join("SUN397/a/abbey/sun_a.jpg"), 30, 30, 3);
    data_support::write_jpeg(&dir.path().join("SUN397/a/abbey/sun_b.jpg"), 30, 30, 4);
    data_support::write(&dir.path().join("lfw/C_D/C_D_0002.jpg"), b"");
    let config = dir.path().join("experiment.yaml");
    let yaml = format!(
        "name: tiny\ndata:\n  image_size: 16\n  resize: stretch\n  cache_dir: {}\n  source:\n    real:\n      lfw: {}\n      sun397: {}\n",
        dir.path().join("cache").display(),
        dir.path().join("lfw").display(),
        dir.path().join("SUN397").display()
    );
    std::fs::write(&config, yaml).unwrap();
    let o = emotionet(&["data", "prep", "--config", config.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("16x16 stretch") && stdout.contains("skipped files: 1") && stdout.contains("0 bytes"), "{stdout}");

    let o = emotionet(&["data", "prep", "--config", config.to_str().unwrap(), "--quiet", "--strict"]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("C_D_0002.jpg") && stderr.contains("--strict"), "{stderr}");

    std::fs::write(&config, "data:\n  resize: squash\n").unwrap();
    let o = emotionet(&["data", "prep", "--config", config.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("squash") && stderr.contains("center_crop") && stderr.contains("experiment.yaml"), "{stderr}");
}

#[test]
fn a_missing_folder_exits_1_and_bad_usage_exits_2() {
    let o = emotionet(&["data", "prep", "--lfw", "/nonexistent/lfw", "--quiet"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/lfw"));
    let o = emotionet(&["data", "prep", "--task", "everything"]);
    assert_eq!(o.status.code(), Some(2));
    let o = emotionet(&["data", "prep", "--npy", "x.npy"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--npy-faces"));
}

#[test]
fn kdef_fetch_explains_the_licence_and_layout() {
    let o = emotionet(&["data", "fetch", "kdef"]);
    assert!(o.status.success());
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("kdef.se") && stdout.contains("KDEF/AF01/AF01AFS.JPG"), "{stdout}");
    let o = emotionet(&["data", "fetch", "sun397", "--dest", "/tmp/never-used"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--sha256"));
}
