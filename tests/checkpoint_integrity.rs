//! Checkpoint integrity through the real binary: a resume skips a corrupted
//! newest checkpoint (a flipped bit in one tensor) with a warning naming the
//! file and the tensor, and goes on from the one before; a full disk (a real
//! ENOSPC from /dev/full) stops the run with the OS error said once, how
//! much the checkpoint needs and what to do.

mod cli_support;

use std::fs;
use std::path::{Path, PathBuf};

use cli_support::{emotionet, text};
use emotionet::train::CheckpointDir;

/// The face model at 24x24 on a tiny synthetic set: 8 steps, a checkpoint
/// every 2.
fn experiment(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let text = format!(
        "name: {name}\noutput: {out}\nseed: 7\n\
         data:\n  image_size: 24\n  cache_dir: {cache}\n  source:\n    synthetic: {{faces: 80, non_faces: 60, size: 48}}\n\
         models:\n  face:\n    batch: 8\n    steps_per_epoch: 4\n    epochs: 2\n    architecture: {{dense_units: 16}}\n\
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
    let exp = experiment(tmp.path(), "bitrot");
    let exp = exp.to_str().unwrap();
    assert!(emotionet(&["train", exp, "--quiet"]).status.success());
    let dir = tmp.path().join("runs/bitrot/face/cpu-r0");
    let checkpoints = CheckpointDir::new(dir.join("checkpoints"), 1).unwrap();
    assert_eq!(checkpoints.steps().unwrap(), vec![4, 6, 8]);

    // One bit in the middle of the dense layer's weights of the newest.
    let newest = checkpoints.path_for(8);
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
    assert!(stderr.contains(&format!("using {} (step 6)", checkpoints.path_for(6).display())), "{stderr}");
    let record: serde_json::Value = serde_json::from_slice(&fs::read(dir.join("record.json")).unwrap()).unwrap();
    assert_eq!((record["steps_done"].as_u64(), record["resumes"].as_u64()), (Some(8), Some(1)));
    // Step 8 was trained again and its checkpoint rewritten whole.
    assert_eq!(checkpoints.latest_checked().unwrap().unwrap().checkpoint.step, 8);
    assert!(checkpoints.latest_checked().unwrap().unwrap().skipped.is_empty());

    // With every checkpoint damaged, a resume stops and says so.
    for step in checkpoints.steps().unwrap() {
        let path = checkpoints.path_for(step);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    }
    let out = emotionet(&["train", exp, "--quiet", "--resume"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("none of the 3 checkpoint(s)") && stderr.contains("cut short"), "{stderr}");
}

#[test]
fn a_full_disk_names_the_size_of_the_checkpoint_and_the_way_out_with_the_os_error_once() {
    if !Path::new("/dev/full").exists() {
        eprintln!("no /dev/full here; skipping");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path(), "full");
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
}
