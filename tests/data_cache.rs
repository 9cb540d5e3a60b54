//! The prepared-set cache: a second prep is a hit that decodes nothing; a
//! changed setting or input misses; a damaged cache file is rebuilt.

mod data_support;

use emotionet::data::{DataConfig, PrepOptions, RealSources, ResizeMode, SourceConfig, Task, prepare};

fn setup(dir: &std::path::Path) -> DataConfig {
    for (i, person) in ["A_B", "C_D", "E_F", "G_H"].iter().enumerate() {
        for n in 1..=3 {
            data_support::write_jpeg(&dir.join(format!("lfw/{person}/{person}_{n:04}.jpg")), 40, 40, (i * 10 + n) as u32);
        }
    }
    for i in 0..10 {
        data_support::write_jpeg(&dir.join(format!("SUN397/b/beach/sun_{i:02}.jpg")), 50, 40, 100 + i);
    }
    DataConfig {
        source: SourceConfig::Real(RealSources { lfw: Some(dir.join("lfw")), sun397: Some(dir.join("SUN397")), ..Default::default() }),
        image_size: 24,
        cache_dir: dir.join("cache"),
        ..DataConfig::default()
    }
}

#[test]
fn a_second_prep_is_a_cache_hit_and_a_changed_setting_misses() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let options = PrepOptions::new(Task::Face);
    let first = prepare(&config, &options).unwrap();
    assert!(!first.cache_hit);
    assert_eq!(first.decoded, 22);
    assert!(first.cache_path.is_file());

    let second = prepare(&config, &options).unwrap();
    assert!(second.cache_hit);
    assert_eq!(second.decoded, 0, "a hit decodes nothing");
    assert!(second.set == first.set, "the cache returns exactly what was prepared");

    // Pipeline-only settings do not change the prepared data.
    let mut augmented = config.clone();
    augmented.augment.flip = true;
    assert!(prepare(&augmented, &options).unwrap().cache_hit);

    for changed in [
        DataConfig { image_size: 20, ..config.clone() },
        DataConfig { resize: ResizeMode::Pad, ..config.clone() },
        DataConfig { split_seed: 9, ..config.clone() },
        DataConfig { eval_fraction: 0.5, ..config.clone() },
    ] {
        let out = prepare(&changed, &options).unwrap();
        assert!(!out.cache_hit, "changed setting must miss");
        assert_eq!(out.decoded, 22);
    }
    assert!(
        !prepare(&config, &PrepOptions::new(Task::Hierarchy { grouping: config.grouping })).map(|o| o.cache_hit).unwrap_or(false),
        "another task misses (or fails)"
    );
}

#[test]
fn a_changed_input_file_misses() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let options = PrepOptions::new(Task::Face);
    prepare(&config, &options).unwrap();
    // Replace one picture with a different one (new size and mtime).
    std::thread::sleep(std::time::Duration::from_millis(20));
    data_support::write_jpeg(&dir.path().join("lfw/A_B/A_B_0001.jpg"), 44, 40, 77);
    let out = prepare(&config, &options).unwrap();
    assert!(!out.cache_hit);
    // A new file misses too.
    data_support::write_jpeg(&dir.path().join("lfw/A_B/A_B_0009.jpg"), 40, 40, 78);
    let out = prepare(&config, &options).unwrap();
    assert!(!out.cache_hit);
    assert_eq!(out.decoded, 23);
}

#[test]
fn a_damaged_cache_file_is_rebuilt_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path());
    let options = PrepOptions::new(Task::Face);
    let first = prepare(&config, &options).unwrap();
    let mut bytes = std::fs::read(&first.cache_path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5A;
    std::fs::write(&first.cache_path, &bytes).unwrap();
    let again = prepare(&config, &options).unwrap();
    assert!(!again.cache_hit, "a flipped byte must not pass the checksum");
    assert!(again.set.train == first.set.train && again.set.eval == first.set.eval, "the rebuilt set is the same data");
    // A torn (truncated) file is rejected too, and no temp files are left behind.
    let bytes = std::fs::read(&first.cache_path).unwrap();
    std::fs::write(&first.cache_path, &bytes[..bytes.len() - 100]).unwrap();
    assert!(!prepare(&config, &options).unwrap().cache_hit);
    assert!(prepare(&config, &options).unwrap().cache_hit);
    let leftovers: Vec<_> =
        std::fs::read_dir(&config.cache_dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().contains(".tmp")).collect();
    assert!(leftovers.is_empty());
}
