//! Checkpoints on a real file system: round trips, rotation, saves
//! interrupted before or after the rename, checksums that catch a flipped
//! bit or a cut-short file, checkpoints of the format before checksums, and
//! a full disk (a real ENOSPC from /dev/full).

use std::collections::BTreeMap;
use std::fs;

use emotionet::checkpoint::{self, Checkpoint, CheckpointDir, CheckpointError, Integrity};
use emotionet::tensor::HostTensor;

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
    let found = ckpts.latest_checked().unwrap().unwrap();
    assert_eq!(found.checkpoint, checkpoint(100));
    assert_eq!(found.skipped.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(), vec![ckpts.path_for(300), ckpts.path_for(200)]);
    let err = ckpts.load(200).unwrap_err();
    assert!(matches!(err, CheckpointError::Incomplete { .. }), "{err}");
    assert!(err.to_string().contains("ckpt-000000000200.safetensors") && err.to_string().contains("cut short"), "{err}");
    // Cut inside the header too.
    fs::write(ckpts.path_for(200), &bytes[..40]).unwrap();
    assert!(matches!(ckpts.load(200), Err(CheckpointError::Incomplete { len: 40, .. })));
}

/// The file's header as JSON, and where the tensor data starts.
fn header(bytes: &[u8]) -> (serde_json::Value, usize) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&bytes[8..8 + n]).unwrap(), 8 + n)
}

fn flip_bit(path: &std::path::Path, offset: usize, bit: u8) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset] ^= 1 << bit;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_flipped_bit_in_a_tensor_fails_its_checksum_and_the_previous_checkpoint_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = CheckpointDir::new(dir.path(), 3).unwrap();
    ckpts.save(&checkpoint(100)).unwrap();
    let newest = ckpts.save(&checkpoint(200)).unwrap();
    let (Ok((_, Integrity::Verified)), Ok((_, Integrity::Verified))) = (Checkpoint::read_checked(&ckpts.path_for(100)), Checkpoint::read_checked(&newest))
    else {
        panic!("fresh checkpoints verify")
    };
    // One bit, in the middle of one tensor: still a well-formed file.
    let (json, data_start) = header(&fs::read(&newest).unwrap());
    let offsets = &json["block2.conv.weight"]["data_offsets"];
    let (begin, end) = (offsets[0].as_u64().unwrap() as usize, offsets[1].as_u64().unwrap() as usize);
    flip_bit(&newest, data_start + (begin + end) / 2, 3);
    let err = Checkpoint::read(&newest).unwrap_err();
    let CheckpointError::TensorChecksum { name, .. } = &err else { panic!("{err}") };
    assert_eq!(name, "block2.conv.weight");
    let text = err.to_string();
    assert!(text.contains(newest.to_str().unwrap()) && text.contains("`block2.conv.weight`") && text.contains("corrupted"), "{text}");

    let found = ckpts.latest_checked().unwrap().unwrap();
    assert_eq!((found.checkpoint.step, found.path.clone(), found.integrity), (100, ckpts.path_for(100), Integrity::Verified));
    assert_eq!(found.skipped.len(), 1);
    assert!(found.skipped[0].1.contains("block2.conv.weight"), "the warning names the tensor: {}", found.skipped[0].1);
    assert_eq!(ckpts.latest().unwrap().unwrap(), checkpoint(100));

    // The run goes on from step 100; the damaged step-200 file stays until
    // the run overwrites it, and rotation keeps it out of the count.
    ckpts.save(&checkpoint(150)).unwrap();
    assert_eq!(ckpts.steps().unwrap(), vec![100, 150, 200]);
    ckpts.save(&checkpoint(200)).unwrap();
    assert_eq!(ckpts.latest().unwrap().unwrap(), checkpoint(200));
}

#[test]
fn a_flipped_bit_in_the_header_fails_the_header_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let ckpts = CheckpointDir::new(dir.path(), 3).unwrap();
    let path = ckpts.save(&checkpoint(100)).unwrap();
    // The experiment hash "3f9a0c" -> "2f9a0c": the header is still valid
    // JSON and safetensors reads it; only the checksum can tell.
    let bytes = fs::read(&path).unwrap();
    let (_, data_start) = header(&bytes);
    let at = bytes[..data_start].windows(6).position(|w| w == b"3f9a0c").unwrap();
    flip_bit(&path, at, 0);
    let (json, _) = header(&fs::read(&path).unwrap());
    assert_eq!(json["__metadata__"]["experiment_hash"], "2f9a0c");
    let err = Checkpoint::read(&path).unwrap_err();
    assert!(matches!(err, CheckpointError::HeaderChecksum { .. }), "{err}");
    assert!(err.to_string().contains(path.to_str().unwrap()), "{err}");

    // With every checkpoint damaged, there is nothing to fall back to:
    // an error listing each, never a silent fresh start.
    let err = ckpts.latest().unwrap_err();
    let CheckpointError::NoneIntact { problems, .. } = &err else { panic!("{err}") };
    assert_eq!(problems.len(), 1);
    assert!(err.to_string().contains("none of the 1 checkpoint(s)") && err.to_string().contains("header fails its checksum"), "{err}");
}

#[test]
fn a_checkpoint_written_before_checksums_still_loads_unverified() {
    // The format before this change, written with the safetensors crate
    // directly: only `step` and `tensor_order` in the metadata.
    let dir = tempfile::tempdir().unwrap();
    let ckpts = CheckpointDir::new(dir.path(), 3).unwrap();
    let old = checkpoint(300);
    let views: Vec<_> = old
        .tensors
        .iter()
        .map(|(name, t)| {
            let dtype = match t.dtype() {
                emotionet::tensor::DType::F32 => safetensors::Dtype::F32,
                emotionet::tensor::DType::BF16 => safetensors::Dtype::BF16,
                emotionet::tensor::DType::U32 => safetensors::Dtype::U32,
                other => panic!("{other:?}"),
            };
            let shape: Vec<usize> = t.dims().iter().map(|&d| d as usize).collect();
            (name.clone(), safetensors::tensor::TensorView::new(dtype, shape, t.bytes()).unwrap())
        })
        .collect();
    let mut metadata: std::collections::HashMap<String, String> = old.metadata.clone().into_iter().collect();
    metadata.insert("step".into(), "300".into());
    let order: Vec<&str> = old.tensors.iter().map(|(n, _)| n.as_str()).collect();
    metadata.insert("tensor_order".into(), serde_json::to_string(&order).unwrap());
    fs::create_dir_all(dir.path()).unwrap();
    fs::write(ckpts.path_for(300), safetensors::serialize(views, Some(metadata)).unwrap()).unwrap();

    let found = ckpts.latest_checked().unwrap().unwrap();
    assert_eq!(found.integrity, Integrity::NoChecksums);
    assert_eq!(found.checkpoint, old);
    // Saving again writes the checksums.
    ckpts.save(&checkpoint(400)).unwrap();
    assert_eq!(ckpts.latest_checked().unwrap().unwrap().integrity, Integrity::Verified);

    // A file that has one checksum key but not the other is damaged, not old.
    let bytes = fs::read(ckpts.path_for(400)).unwrap();
    let (_, data_start) = header(&bytes);
    let at = bytes[..data_start].windows(13).position(|w| w == b"header_crc32c").unwrap();
    flip_bit(&ckpts.path_for(400), at, 1);
    let err = Checkpoint::read(&ckpts.path_for(400)).unwrap_err().to_string();
    assert!(err.contains("header_crc32c") && err.contains("corrupted"), "{err}");
}

#[test]
fn a_full_disk_says_what_the_checkpoint_needs_and_keeps_the_last_good_one() {
    if !std::path::Path::new("/dev/full").exists() {
        eprintln!("no /dev/full here; skipping");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ckpts = CheckpointDir::new(dir.path(), 2).unwrap();
    ckpts.save(&checkpoint(100)).unwrap();
    ckpts.save(&checkpoint(200)).unwrap();
    // The temporary of the next save is /dev/full: every write to it fails
    // with the kernel's ENOSPC, as on a full disk.
    let mut tmp = ckpts.path_for(300).into_os_string();
    tmp.push(".tmp");
    std::os::unix::fs::symlink("/dev/full", &tmp).unwrap();
    let err = ckpts.save(&checkpoint(300)).unwrap_err();
    let CheckpointError::DiskFull { needed, keep, .. } = &err else { panic!("{err}") };
    assert_eq!(*needed, checkpoint(300).to_bytes(&ckpts.path_for(300)).unwrap().len() as u64);
    assert_eq!(*keep, 2);
    let text = emotionet::errors::chain_text(&*anyhow::Error::new(err));
    let os = std::io::Error::from_raw_os_error(28).to_string();
    assert_eq!(text.matches(&os).count(), 1, "the OS error once: {text}");
    assert!(text.contains("it needs") && text.contains("KiB") && text.contains("logging.keep_checkpoints` (now 2"), "{text}");
    // Before writing, the save made room by dropping what it would have
    // pruned after (keeping one); the last good checkpoint is intact.
    assert_eq!(ckpts.steps().unwrap(), vec![200]);
    assert_eq!(ckpts.latest().unwrap().unwrap(), checkpoint(200));
    assert!(!std::path::Path::new(&tmp).exists(), "the failed temporary is removed");
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
