//! The real loaders and prep on small LFW, SUN397 and KDEF trees of real
//! JPEG/PNG files, with corrupt, truncated, empty, mislabelled, misnamed,
//! CMYK, 16-bit and bomb files among them.

mod data_support;

use std::collections::BTreeSet;

use data_support::{LFW_PEOPLE, build_trees};
use emotionet::data::{DataConfig, DataError, DatasetTag, EmotionGrouping, Expression, PrepOptions, RealSources, SourceConfig, Split, Task, loaders, prepare};

fn real_config(trees: &data_support::Trees, cache: &std::path::Path) -> DataConfig {
    DataConfig {
        source: SourceConfig::Real(RealSources {
            lfw: Some(trees.lfw.clone()),
            sun397: Some(trees.sun.clone()),
            kdef: Some(trees.kdef.clone()),
            ..Default::default()
        }),
        image_size: 32,
        cache_dir: cache.to_path_buf(),
        ..DataConfig::default()
    }
}

#[test]
fn loaders_find_every_image_and_report_misnamed_kdef_files() {
    let dir = tempfile::tempdir().unwrap();
    let trees = build_trees(dir.path());
    let lfw = loaders::load_lfw(&trees.lfw).unwrap();
    // 18 good + truncated + zero + text + png16, all named like images.
    assert_eq!(lfw.samples.len(), LFW_PEOPLE.iter().map(|p| p.1).sum::<usize>() + 4);
    assert!(lfw.samples.iter().all(|s| s.face && s.expression.is_none() && s.dataset == DatasetTag::Lfw));
    assert!(lfw.samples.iter().any(|s| s.identity == "Grace_Hopper"));

    let sun = loaders::load_sun397(&trees.sun, &[]).unwrap();
    assert_eq!(sun.samples.len(), 20 + 4);
    assert!(sun.samples.iter().all(|s| !s.face && s.identity.starts_with("sun_")));
    let fewer = loaders::load_sun397(&trees.sun, &["/s/street".to_string()]).unwrap();
    assert_eq!(fewer.samples.len(), 24 - 6);
    assert_eq!(fewer.filtered.values().sum::<usize>(), 6);

    let kdef = loaders::load_kdef(&trees.kdef, &emotionet::data::Angle::ALL).unwrap();
    assert_eq!(kdef.samples.len(), 12 * 7 * 2);
    let happy = kdef.samples.iter().filter(|s| s.expression == Some(Expression::Happy)).count();
    assert_eq!(happy, 24);
    let ids: BTreeSet<&str> = kdef.samples.iter().map(|s| s.identity.as_str()).collect();
    assert_eq!(ids.len(), 12);
    assert!(ids.contains("F01") && ids.contains("M06"));
    let skipped: Vec<&str> = kdef.skipped.iter().map(|k| k.path.as_str()).collect();
    assert!(skipped.iter().any(|p| p.ends_with("AF01XXS.JPG")), "{skipped:?}");
    assert!(skipped.iter().any(|p| p.ends_with("AF02HAS.JPG")), "{skipped:?}");

    let straight = loaders::load_kdef(&trees.kdef, &[emotionet::data::Angle::Straight]).unwrap();
    assert_eq!(straight.samples.len(), 12 * 7);
    assert_eq!(straight.filtered.values().sum::<usize>(), 12 * 7);
}

#[test]
fn face_prep_counts_labels_splits_by_identity_and_reports_every_skip() {
    let dir = tempfile::tempdir().unwrap();
    let trees = build_trees(dir.path());
    let config = real_config(&trees, &dir.path().join("cache"));
    let out = prepare(&config, &PrepOptions::new(Task::Face)).unwrap();
    let set = &out.set;
    assert_eq!(set.class_names, vec!["non_face", "face"]);
    let report = &set.report;

    // Every bad file is skipped with a reason that says what is wrong.
    let reason_of = |p: &std::path::Path| {
        report
            .skipped
            .iter()
            .find(|k| k.path == p.display().to_string())
            .map(|k| k.reason.clone())
            .unwrap_or_else(|| panic!("{} not reported: {:#?}", p.display(), report.skipped))
    };
    assert!(reason_of(&trees.truncated).contains("truncated"), "{}", reason_of(&trees.truncated));
    assert!(reason_of(&trees.zero).contains("0 bytes"));
    assert!(reason_of(&trees.text).contains("neither JPEG nor PNG"));
    assert!(reason_of(&trees.corrupt).contains("corrupt"), "{}", reason_of(&trees.corrupt));
    assert!(reason_of(&trees.bomb).contains("decode limits"), "{}", reason_of(&trees.bomb));
    assert!(reason_of(&trees.misnamed).contains("misnamed KDEF"));
    assert!(reason_of(&trees.wrong_folder).contains("in AF01"));
    assert_eq!(report.skipped.len(), 7, "{:#?}", report.skipped);
    assert_eq!(report.skipped_by_reason.values().sum::<usize>(), 7);

    // The odd formats decode: a CMYK JPEG, a grey JPEG and a 16-bit PNG.
    let all_sources: Vec<&str> = set.train.info.iter().chain(&set.eval.info).map(|i| i.source.as_str()).collect();
    for odd in [&trees.cmyk, &trees.png16] {
        assert!(all_sources.contains(&odd.display().to_string().as_str()), "{} missing", odd.display());
    }

    // Counts: faces = 18 LFW + 1 png16 + 168 KDEF; non-faces = 20 + grey + CMYK.
    let faces = 18 + 1 + 168;
    let non_faces = 22;
    let [train, eval] = report.total();
    assert_eq!(train + eval, faces + non_faces);
    assert_eq!(report.classes[1].train + report.classes[1].eval, faces);
    assert_eq!(report.classes[0].train + report.classes[0].eval, non_faces);
    assert_eq!(set.train.labels.iter().filter(|&&l| l == 1).count(), report.classes[1].train);
    for (labels, info) in [(&set.train.labels, &set.train.info), (&set.eval.labels, &set.eval.info)] {
        for (l, i) in labels.iter().zip(info) {
            assert_eq!(*l, i32::from(i.face));
        }
    }
    assert_eq!(set.train.pixels.len(), set.train.len() * 32 * 32);

    // No identity on both sides; the eval share is near 30%.
    let train_ids: BTreeSet<String> = set.train.info.iter().map(|i| format!("{}:{}", i.dataset, i.identity)).collect();
    let eval_ids: BTreeSet<String> = set.eval.info.iter().map(|i| format!("{}:{}", i.dataset, i.identity)).collect();
    assert!(train_ids.is_disjoint(&eval_ids), "{:?}", train_ids.intersection(&eval_ids).collect::<Vec<_>>());
    let share = eval as f64 / (train + eval) as f64;
    assert!((0.2..0.4).contains(&share), "eval share {share}");

    // The report exists on disk as JSON and as a table.
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&out.report_json).unwrap()).unwrap();
    assert_eq!(json["skipped"].as_array().unwrap().len(), 7);
    let table = std::fs::read_to_string(&out.report_table).unwrap();
    assert!(table.contains("non_face") && table.contains("skipped files: 7"), "{table}");
}

#[test]
fn emotion_and_hierarchy_tasks_label_by_grouping_and_share_the_split() {
    let dir = tempfile::tempdir().unwrap();
    let trees = build_trees(dir.path());
    let config = real_config(&trees, &dir.path().join("cache"));
    let g = EmotionGrouping::HappySadNeither;
    let emotion = prepare(&config, &PrepOptions::new(Task::Emotion { grouping: g })).unwrap().set;
    assert_eq!(emotion.class_names, vec!["happy", "sad", "neither"]);
    let counts: Vec<usize> = (0..3).map(|c| emotion.train.labels.iter().chain(&emotion.eval.labels).filter(|&&l| l == c).count()).collect();
    assert_eq!(counts, vec![24, 24, 120], "KDEF only: 12 subjects x 2 angles x (1, 1, 5) expressions");
    assert!(emotion.report.unused_by_task > 0, "LFW faces and scenes are unused");

    let hierarchy = prepare(&config, &PrepOptions::new(Task::Hierarchy { grouping: g })).unwrap().set;
    assert_eq!(hierarchy.class_names, vec!["not_a_face", "happy", "sad", "neither"]);
    for (l, i) in hierarchy.eval.labels.iter().zip(&hierarchy.eval.info) {
        let expected = if !i.face { 0 } else { g.class_of(i.expression.unwrap()) + 1 };
        assert_eq!(*l, expected);
    }
    // A KDEF subject is on the same side in both tasks.
    let side = |set: &emotionet::data::PreparedSet, id: &str| {
        if set.eval.info.iter().any(|i| i.dataset == DatasetTag::Kdef && i.identity == id) { Split::Eval } else { Split::Train }
    };
    for s in 1..=6 {
        for sex in ['F', 'M'] {
            let id = format!("{sex}{s:02}");
            assert_eq!(side(&emotion, &id), side(&hierarchy, &id), "{id}");
        }
    }
    let joyful = prepare(&config, &PrepOptions::new(Task::Emotion { grouping: EmotionGrouping::JoyfulNot })).unwrap().set;
    assert_eq!(joyful.train.labels.iter().chain(&joyful.eval.labels).filter(|&&l| l == 0).count(), 24);
}

#[test]
fn strict_mode_names_the_first_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let trees = build_trees(dir.path());
    let config = real_config(&trees, &dir.path().join("cache"));
    let err = prepare(&config, &PrepOptions { task: Task::Face, strict: true, progress: false }).unwrap_err();
    let DataError::StrictSkip { path, reason } = &err else { panic!("{err}") };
    assert!(path.contains("KDEF") || path.contains("lfw") || path.contains("SUN397"), "{path}");
    assert!(!reason.is_empty());

    // With only clean files, strict passes; a decode-time failure is still caught.
    let clean = dir.path().join("clean");
    data_support::write_jpeg(&clean.join("lfw/A_B/A_B_0001.jpg"), 30, 30, 1);
    data_support::write_jpeg(&clean.join("lfw/C_D/C_D_0001.jpg"), 30, 30, 2);
    data_support::write_jpeg(&clean.join("SUN397/a/abbey/sun_a.jpg"), 30, 30, 3);
    data_support::write_jpeg(&clean.join("SUN397/a/abbey/sun_b.jpg"), 30, 30, 4);
    let mut config = DataConfig {
        source: SourceConfig::Real(RealSources { lfw: Some(clean.join("lfw")), sun397: Some(clean.join("SUN397")), ..Default::default() }),
        image_size: 16,
        cache_dir: dir.path().join("cache2"),
        ..DataConfig::default()
    };
    prepare(&config, &PrepOptions { task: Task::Face, strict: true, progress: false }).unwrap();
    data_support::write_truncated_jpeg(&clean.join("lfw/C_D/C_D_0002.jpg"));
    config.cache_dir = dir.path().join("cache3");
    let err = prepare(&config, &PrepOptions { task: Task::Face, strict: true, progress: false }).unwrap_err();
    assert!(err.to_string().contains("C_D_0002.jpg") && err.to_string().contains("truncated"), "{err}");
}

#[test]
fn missing_folders_and_empty_classes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = loaders::load_lfw(&dir.path().join("nope")).unwrap_err();
    assert!(matches!(err, DataError::MissingFolder { .. }) && err.to_string().contains("nope"), "{err}");

    // Faces only: the face task has no non-faces.
    data_support::write_jpeg(&dir.path().join("lfw/A_B/A_B_0001.jpg"), 30, 30, 1);
    let config = DataConfig {
        source: SourceConfig::Real(RealSources { lfw: Some(dir.path().join("lfw")), ..Default::default() }),
        cache_dir: dir.path().join("cache"),
        ..DataConfig::default()
    };
    let err = prepare(&config, &PrepOptions::new(Task::Face)).unwrap_err();
    assert!(matches!(err, DataError::EmptyClass { ref class, .. } if class == "non_face"), "{err}");

    // A class folder without images, and an unknown class folder name.
    let folders = dir.path().join("classes");
    data_support::write_jpeg(&folders.join("happy/x_0001.jpg"), 20, 20, 1);
    std::fs::create_dir_all(folders.join("sad")).unwrap();
    let err = loaders::load_folder(&folders).unwrap_err();
    assert!(err.to_string().contains("sad") && err.to_string().contains("no images"), "{err}");
    data_support::write_jpeg(&folders.join("sad/y_0001.jpg"), 20, 20, 2);
    data_support::write_jpeg(&folders.join("cats/z.jpg"), 20, 20, 3);
    let err = loaders::load_folder(&folders).unwrap_err();
    assert!(err.to_string().contains("cats") && err.to_string().contains("allowed"), "{err}");
}

#[test]
fn unreadable_entries_are_skipped_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let lfw = dir.path().join("lfw");
    data_support::write_jpeg(&lfw.join("A_B/A_B_0001.jpg"), 30, 30, 1);
    // A dangling link stands for an entry we cannot read (tests run as root,
    // so permission bits would not stop us).
    std::os::unix::fs::symlink(dir.path().join("gone"), lfw.join("Broken_Link")).unwrap();
    let catalog = loaders::load_lfw(&lfw).unwrap();
    assert_eq!(catalog.samples.len(), 1);
    assert!(catalog.skipped.iter().any(|k| k.path.ends_with("Broken_Link") && k.reason.contains("cannot read")), "{:?}", catalog.skipped);
}

#[test]
fn akdef_and_class_folder_datasets_load_with_expressions() {
    let dir = tempfile::tempdir().unwrap();
    let akdef = dir.path().join("AKDEF");
    for (i, name) in ["FHAS.JPG", "MHAS.JPG", "FSAS.JPG", "MSAHL.JPG", "FNEFR.jpg", "FANS.JPG", "bogus.JPG"].iter().enumerate() {
        data_support::write_jpeg(&akdef.join(name), 40, 54, i as u32);
    }
    let catalog = loaders::load_akdef(&akdef, &emotionet::data::Angle::ALL).unwrap();
    assert_eq!(catalog.samples.len(), 6);
    assert_eq!(catalog.skipped.len(), 1);
    assert!(catalog.skipped[0].reason.contains("misnamed AKDEF"));
    let ids: BTreeSet<&str> = catalog.samples.iter().map(|s| s.identity.as_str()).collect();
    assert_eq!(ids, BTreeSet::from(["average-F", "average-M"]));
    assert_eq!(catalog.samples.iter().filter(|s| s.expression == Some(Expression::Sad)).count(), 2);

    let folders = dir.path().join("classes");
    for (class, n) in [("happy", 4), ("SA", 4), ("neutral", 4), ("non_face", 5)] {
        for i in 0..n {
            data_support::write_jpeg(&folders.join(class).join(format!("person{i}_{:04}.jpg", i + 1)), 30, 30, i);
        }
    }
    let config = DataConfig {
        source: SourceConfig::Real(RealSources { folders: vec![folders.clone()], akdef: Some(akdef), ..Default::default() }),
        image_size: 16,
        cache_dir: dir.path().join("cache"),
        ..DataConfig::default()
    };
    let set = prepare(&config, &PrepOptions::new(Task::Hierarchy { grouping: EmotionGrouping::HappySadNeither })).unwrap().set;
    let labels: Vec<i32> = set.train.labels.iter().chain(&set.eval.labels).copied().collect();
    let count = |l: i32| labels.iter().filter(|&&x| x == l).count();
    // not_a_face 5; happy 4 + 2 AKDEF; sad 4 + 2; neither 4 + 2 (NE, AN).
    assert_eq!((count(0), count(1), count(2), count(3)), (5, 6, 6, 6));
    assert_eq!(set.report.skipped.len(), 1);
}
