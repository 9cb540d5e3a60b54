//! Checkpoints on a real file system: round trips, rotation, and saves
//! interrupted before or after the rename.

use std::collections::BTreeMap;
use std::fs;

use emotionet::tensor::HostTensor;
use emotionet::train::checkpoint::{self, Checkpoint, CheckpointDir, CheckpointError};

fn checkpoint(step: u64) -> Checkpoint {
    let w: Vec<f32> = (0..2 * 3 * 5 * 5).map(|i| (i as f32 + step as f32) * 0.01 - 0.5).collect();
    let m: Vec<half::bf16> = (0..4).map(|i| half::bf16::from_f32(i as f32 * 0.25 + (step % 8) as f32)).collect();
    let mut metadata = BTreeMap::new();
    metadata.insert(checkpoint::META_EPOCH.to_string(), (step / 15).to_string());
    metadata.insert(checkpoint::META_INPUT_PIPELINE.to_string(), format!(r#"{{"epoch":{},"cursor":{},"seed":7}}"#, step / 15, step % 15));
    metadata.insert(checkpoint::META_EXPERIMENT_HASH.to_string(), "3f9a0c".to_string());
    Checkpoint {
        step,
        tensors: vec![
            // Deliberately not in name order: a load must keep this order.
            ("block2.conv.weight".to_string(), HostTensor::from_f32(&[2, 3, 5, 5], &w).unwrap()),
            ("block1.conv.bias".to_string(), HostTensor::from_f32(&[4], &[0.0, -1.5, 2.25, f32::MIN_POSITIVE]).unwrap()),
            ("opt.adam.m.block1.conv.bias".to_string(), HostTensor::from_bf16(&[4], &m).unwrap()),
            ("opt.step".to_string(), HostTensor::scalar_u32(step as u32)),
            ("data.rng".to_string(), HostTensor::from_u32(&[2], &[0xdead_beef, 42]).unwrap()),
        ],
        metadata,
    }
}

#[test]
fn values_order_and_metadata_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = CheckpointDir::new(dir.path().join("checkpoints"), 3).unwrap();
    let saved = checkpoint(450);
    let path = ckpts.save(&saved).unwrap();
    assert_eq!(path.file_name().unwrap(), "ckpt-000000000450.safetensors");
    let loaded = ckpts.load(450).unwrap();
    assert_eq!(loaded, saved);
    assert_eq!(loaded.tensor("opt.adam.m.block1.conv.bias").unwrap().to_f32().unwrap(), vec![2.0, 2.25, 2.5, 2.75]);
    // The file is plain safetensors: its header names our tensors and keeps the metadata.
    let bytes = fs::read(&path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    assert_eq!(header["block2.conv.weight"]["dtype"], "F32");
    assert_eq!(header["opt.adam.m.block1.conv.bias"]["dtype"], "BF16");
    assert_eq!(header["__metadata__"]["step"], "450");
    assert_eq!(header["__metadata__"]["experiment_hash"], "3f9a0c");
}

#[test]
fn keeps_only_the_last_n() {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = CheckpointDir::new(dir.path(), 2).unwrap();
    for step in [100, 200, 300, 400] {
        ckpts.save(&checkpoint(step)).unwrap();
    }
    assert_eq!(ckpts.steps().unwrap(), vec![300, 400]);
    assert_eq!(ckpts.latest().unwrap().unwrap().step, 400);
    assert!(matches!(ckpts.load(100), Err(CheckpointError::NotFound { step: 100, .. })));
    assert!(matches!(CheckpointDir::new(dir.path(), 0), Err(CheckpointError::KeepNone)));
}

#[test]
fn a_save_killed_before_the_rename_leaves_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = CheckpointDir::new(dir.path(), 3).unwrap();
    ckpts.save(&checkpoint(100)).unwrap();
    // What a kill during `save(200)` leaves: the temporary, half written.
    let full = checkpoint(200).to_bytes(&ckpts.path_for(200)).unwrap();
    let mut tmp = ckpts.path_for(200).into_os_string();
    tmp.push(".tmp");
    fs::write(&tmp, &full[..full.len() / 2]).unwrap();
    let latest = ckpts.latest().unwrap().unwrap();
    assert_eq!(latest, checkpoint(100));
    assert_eq!(ckpts.steps().unwrap(), vec![100]);
    // The next successful save clears the stale temporary of an older step.
    ckpts.save(&checkpoint(300)).unwrap();
    assert!(!std::path::Path::new(&tmp).exists());
    assert_eq!(ckpts.latest().unwrap().unwrap().step, 300);
}

#[test]
fn a_truncated_or_corrupt_final_file_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = CheckpointDir::new(dir.path(), 5).unwrap();
    ckpts.save(&checkpoint(100)).unwrap();
    ckpts.save(&checkpoint(200)).unwrap();
    // A file cut short under its final name (e.g. copied by hand, or a file
    // system that lost data despite fsync).
    let bytes = fs::read(ckpts.path_for(200)).unwrap();
    fs::write(ckpts.path_for(200), &bytes[..bytes.len() - 10]).unwrap();
    // And garbage named like a newer checkpoint.
    fs::write(ckpts.path_for(300), b"not a checkpoint").unwrap();
    assert_eq!(ckpts.latest().unwrap().unwrap(), checkpoint(100));
    let err = ckpts.load(200).unwrap_err().to_string();
    assert!(err.contains("ckpt-000000000200.safetensors"), "{err}");
}

#[test]
fn reserved_keys_and_duplicate_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = CheckpointDir::new(dir.path(), 1).unwrap();
    let mut c = checkpoint(1);
    c.metadata.insert(checkpoint::META_STEP.to_string(), "5".into());
    assert!(matches!(ckpts.save(&c), Err(CheckpointError::ReservedKey { .. })));
    let mut c = checkpoint(1);
    c.tensors.push(("opt.step".to_string(), HostTensor::scalar_u32(0)));
    let err = ckpts.save(&c).unwrap_err().to_string();
    assert!(err.contains("opt.step"), "{err}");
    assert!(ckpts.latest().unwrap().is_none());
}
