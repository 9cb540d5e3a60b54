//! Checkpoint integrity through the real binary: a resume skips a corrupted
//! newest checkpoint (a flipped bit in one tensor) with a warning naming the
//! file and the tensor, and goes on from the one before (none intact is an
//! error); a full disk (a real ENOSPC from /dev/full) stops the run with the
//! OS error said once (on stderr and in the record), how much the checkpoint
//! needs and what to do.

mod cli_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::{command, emotionet, text};
use emotionet::checkpoint::CheckpointDir;

/// The face model on a tiny synthetic set: `epochs` of 4 steps, a
/// checkpoint every 2.
fn experiment(dir: &Path, name: &str, size: u32, epochs: u32, dense: u32) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let text = format!(
        "name: {name}\noutput: {out}\nseed: 7\n\
         data:\n  image_size: {size}\n  cache_dir: {cache}\n  source:\n    synthetic: {{faces: 80, non_faces: 60, size: 48}}\n\
         models:\n  face:\n    batch: 8\n    steps_per_epoch: 4\n    epochs: {epochs}\n    architecture: {{dense_units: {dense}}}\n\
         logging: {{every_steps: 2, checkpoint_every_steps: 2, keep_checkpoints: 3}}\n",
        out = dir.join("runs").display(),
        cache = dir.join("cache").display(),
    );
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_resume_skips_a_corrupted_newest_checkpoint_and_goes_on_from_the_one_before() {
    let tmp = tempfile::tempdir().unwrap();
    // 40 steps, killed once the step-6 checkpoint is there: the run is left
    // unfinished with a few checkpoints, as after a crash.
    let exp = experiment(tmp.path(), "bitrot", 40, 10, 256);
    let exp = exp.to_str().unwrap();
    let dir = tmp.path().join("runs/bitrot/face/cpu-r0");
    let checkpoints = CheckpointDir::new(dir.join("checkpoints"), 1).unwrap();
    let mut child = command().args(["train", exp, "--quiet"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let start = Instant::now();
    while !checkpoints.steps().unwrap().contains(&6) {
        assert!(start.elapsed() < Duration::from_secs(120), "no step-6 checkpoint");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(Command::new("kill").arg("-KILL").arg(child.id().to_string()).status().unwrap().success());
    child.wait().unwrap();
    let steps = checkpoints.steps().unwrap();
    assert!(steps.len() >= 2 && *steps.last().unwrap() < 40, "killed mid-run with at least two checkpoints: {steps:?}");

    // Every checkpoint cut short: the resume stops and says so, rather
    // than start over.
    let saved: Vec<(PathBuf, Vec<u8>)> = steps.iter().map(|&s| (checkpoints.path_for(s), fs::read(checkpoints.path_for(s)).unwrap())).collect();
    for (path, bytes) in &saved {
        fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
    }
    let out = emotionet(&["train", exp, "--quiet", "--resume"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("none of the {} checkpoint(s)", steps.len())) && stderr.contains("cut short"), "{stderr}");

    // Put back, then one bit flipped in the middle of the dense layer's
    // weights of the newest: it is skipped, named with its tensor, and
    // the run goes on from the one before to the end.
    for (path, bytes) in &saved {
        fs::write(path, bytes).unwrap();
    }
    let newest = checkpoints.path_for(*steps.last().unwrap());
    let previous = checkpoints.path_for(steps[steps.len() - 2]);
    let mut bytes = fs::read(&newest).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let offsets = &header["dense.weight"]["data_offsets"];
    let middle = 8 + n + (offsets[0].as_u64().unwrap() + offsets[1].as_u64().unwrap()) as usize / 2;
    bytes[middle] ^= 0x10;
    fs::write(&newest, bytes).unwrap();

    let out = emotionet(&["train", exp, "--quiet", "--resume"]);
    assert!(out.status.success());
    let stderr = text(&out.stderr);
    assert!(stderr.contains(newest.to_str().unwrap()) && stderr.contains("`dense.weight` fails its checksum"), "the warning names file and tensor: {stderr}");
    assert!(stderr.contains(&format!("using {} (step {})", previous.display(), steps[steps.len() - 2])), "{stderr}");
    let record: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("record.json")).unwrap()).unwrap();
    assert_eq!(record["status"]["state"], "finished");
    assert_eq!(record["steps_done"], 40);
    // The damaged file was rewritten whole when the run got there again.
    let found = checkpoints.latest_checked().unwrap().unwrap();
    assert_eq!((found.checkpoint.step, found.skipped.len()), (40, 0));
    for step in checkpoints.steps().unwrap() {
        assert!(emotionet::checkpoint::Checkpoint::read(&checkpoints.path_for(step)).is_ok(), "step {step}");
    }
}

#[test]
fn a_full_disk_names_the_size_of_the_checkpoint_and_the_way_out_with_the_os_error_once() {
    if !Path::new("/dev/full").exists() {
        eprintln!("no /dev/full here; skipping");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path(), "full", 24, 2, 16);
    // The first checkpoint's temporary is /dev/full: its write fails with
    // the kernel's ENOSPC, as on a full disk.
    let dir = tmp.path().join("runs/full/face/cpu-r0/checkpoints");
    fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.join("ckpt-000000000002.safetensors.tmp")).unwrap();
    let out = emotionet(&["train", exp.to_str().unwrap(), "--quiet"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let os = std::io::Error::from_raw_os_error(28).to_string();
    assert_eq!(stderr.matches(&os).count(), 1, "the OS error once: {stderr}");
    assert!(stderr.contains("ckpt-000000000002.safetensors: it needs") && stderr.contains("KiB"), "{stderr}");
    assert!(stderr.contains("Free space there, or lower `logging.keep_checkpoints` (now 3"), "{stderr}");
    // The record says the same, once.
    let record: serde_json::Value = serde_json::from_slice(&fs::read(dir.with_file_name("record.json")).unwrap()).unwrap();
    assert_eq!(record["status"]["state"], "failed");
    let error = record["status"]["error"].as_str().unwrap();
    assert_eq!(error.matches(&os).count(), 1, "{error}");
    assert!(error.contains("it needs"), "{error}");
}
