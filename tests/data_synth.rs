//! The synthetic set: deterministic to the byte, the documented counts and
//! layouts, and readable end to end by the real loaders.

mod data_support;

use std::collections::BTreeMap;
use std::path::Path;

use emotionet::data::{
    Angle, DataConfig, Expression, PrepOptions, SourceConfig, SynthConfig, SyntheticSource, Task, generate_dataset, loaders, prepare, synth,
};

fn files(root: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if p.file_name().unwrap() != synth::MANIFEST {
                out.insert(p.strip_prefix(root).unwrap().display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn small() -> SynthConfig {
    SynthConfig { seed: 11, faces: 60, non_faces: 40, size: 48, ..SynthConfig::default() }
}

#[test]
fn the_same_seed_gives_the_same_bytes_and_another_seed_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let a = generate_dataset(&small(), &dir.path().join("a"), false).unwrap();
    let b = generate_dataset(&small(), &dir.path().join("b"), false).unwrap();
    assert_eq!((a.lfw_images, a.kdef_images, a.sun_images), (b.lfw_images, b.kdef_images, b.sun_images));
    let (fa, fb) = (files(&dir.path().join("a")), files(&dir.path().join("b")));
    assert_eq!(fa.len(), 100 + 1, "100 JPEGs and ClassName.txt");
    assert!(fa == fb, "same seed, different bytes");
    let c = SynthConfig { seed: 12, ..small() };
    generate_dataset(&c, &dir.path().join("c"), false).unwrap();
    let fc = files(&dir.path().join("c"));
    let same = fa.iter().filter(|(k, v)| fc.get(*k) == Some(v)).count();
    assert!(same <= 1, "{same} files identical across seeds");
    // Regenerating into an existing synthetic folder replaces it.
    generate_dataset(&small(), &dir.path().join("c"), false).unwrap();
    assert!(files(&dir.path().join("c")) == fa);
}

#[test]
fn the_real_loaders_read_it_with_the_documented_counts() {
    let dir = tempfile::tempdir().unwrap();
    let config = SynthConfig { faces: 90, non_faces: 30, ..small() };
    let m = generate_dataset(&config, dir.path(), false).unwrap();
    assert_eq!((m.kdef_images, m.lfw_images, m.sun_images), (45, 45, 30));
    let lfw = loaders::load_lfw(&dir.path().join("lfw")).unwrap();
    let kdef = loaders::load_kdef(&dir.path().join("KDEF"), &Angle::ALL).unwrap();
    let sun = loaders::load_sun397(&dir.path().join("SUN397"), &[]).unwrap();
    assert_eq!((lfw.samples.len(), kdef.samples.len(), sun.samples.len()), (45, 45, 30));
    assert!(lfw.skipped.is_empty() && kdef.skipped.is_empty() && sun.skipped.is_empty());
    assert_eq!(lfw.samples.iter().map(|s| &s.identity).collect::<std::collections::BTreeSet<_>>().len(), m.lfw_people);
    for e in Expression::ALL {
        assert!(kdef.samples.iter().any(|s| s.expression == Some(e)), "{e} missing");
    }
    // KDEF-style pictures are portrait like KDEF's 562x762.
    let first = image::open(kdef.samples[0].source.path()).unwrap();
    assert_eq!((first.width(), first.height()), (48, 65));
    assert!(dir.path().join("SUN397/ClassName.txt").is_file());
}

#[test]
fn a_synthetic_source_in_the_config_is_generated_once_and_prepared() {
    let dir = tempfile::tempdir().unwrap();
    let config = DataConfig {
        source: SourceConfig::Synthetic(SyntheticSource { faces: 70, non_faces: 50, size: 40, ..SyntheticSource::default() }),
        image_size: 32,
        cache_dir: dir.path().to_path_buf(),
        ..DataConfig::default()
    };
    let face = prepare(&config, &PrepOptions::new(Task::Face)).unwrap();
    assert_eq!(face.set.train.len() + face.set.eval.len(), 120);
    let emotion = prepare(&config, &PrepOptions::new(Task::Emotion { grouping: config.grouping })).unwrap();
    assert_eq!(emotion.set.train.len() + emotion.set.eval.len(), 35, "the KDEF half");
    let manifests: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with("synth-")).collect();
    assert_eq!(manifests.len(), 1, "generated once, reused by the second prep");
}

#[test]
fn difficulty_knobs_are_validated_with_their_names() {
    let err = SynthConfig { difficulty: 1.5, ..small() }.validate().unwrap_err().to_string();
    assert!(err.contains("difficulty") && err.contains("0 (easy) to 1 (hard)"), "{err}");
    let err = SynthConfig { size: 4, ..small() }.validate().unwrap_err().to_string();
    assert!(err.contains("size"), "{err}");
}
