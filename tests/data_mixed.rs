//! Mixed sources, on real files: a small synthetic set (real JPEGs through
//! the real loaders) next to scikit-image's real LFW subset (`.npy`).
//! Prep splits each source on its own, by identity and seeded; the cache
//! keys ignore the pipeline-only weights and shares; the pipeline honours
//! a source's share of every batch and replays exactly the same mixed,
//! augmented batches after a resume.

use std::collections::BTreeSet;
use std::sync::Arc;

use emotionet::data::{
    Augmentation, Batch, DataConfig, NpySource, PipelineConfig, PrepOptions, PreparedSet, RealSources, SourceConfig, SourcePart, SyntheticSource, Task,
    TrainPipeline, prepare,
};

fn subset_path() -> std::path::PathBuf {
    let path = emotionet::pjrt::deps_dir().join("data/lfw_subset.npy");
    assert!(path.is_file(), "{} is missing: run `make setup` (it extracts it from the scikit-image wheel)", path.display());
    path
}

fn synthetic() -> SyntheticSource {
    SyntheticSource { faces: 60, non_faces: 40, size: 32, ..SyntheticSource::default() }
}

fn mixed(cache: &std::path::Path, share: Option<f64>) -> DataConfig {
    DataConfig {
        source: SourceConfig::Mixed(vec![
            SourcePart { synthetic: Some(synthetic()), ..SourcePart::default() },
            SourcePart {
                real: Some(RealSources { npy: vec![NpySource::skimage_lfw_subset(subset_path())], ..RealSources::default() }),
                share,
                ..SourcePart::default()
            },
        ]),
        image_size: 16,
        cache_dir: cache.to_path_buf(),
        ..DataConfig::default()
    }
}

fn eval_identities(set: &PreparedSet, source: &str) -> BTreeSet<String> {
    set.eval.info.iter().filter(|i| i.source_name == source).map(|i| format!("{}:{}", i.dataset, i.identity)).collect()
}

#[test]
fn each_source_is_split_by_identity_on_its_own_and_the_cache_ignores_shares() {
    let dir = tempfile::tempdir().unwrap();
    let config = mixed(dir.path(), Some(0.25));
    let out = prepare(&config, &PrepOptions::new(Task::Face)).unwrap();
    assert!(!out.cache_hit);
    let set = out.set;
    let names: Vec<&str> = set.sources.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["synthetic", "lfw_subset"]);
    assert_eq!(set.report.sources["lfw_subset"], [140, 60], "30% of the 200 real images held out");
    assert_eq!(set.report.sources["synthetic"].iter().sum::<usize>(), 100);
    assert_eq!(set.eval.source_counts()["lfw_subset"], 60);
    for source in ["synthetic", "lfw_subset"] {
        let train: BTreeSet<String> = set.train.info.iter().filter(|i| i.source_name == source).map(|i| format!("{}:{}", i.dataset, i.identity)).collect();
        assert!(train.is_disjoint(&eval_identities(&set, source)), "{source}: an identity on both sides");
    }
    // The synthetic part splits exactly as the synthetic set alone.
    let alone = DataConfig { source: SourceConfig::Synthetic(synthetic()), ..config.clone() };
    let alone = prepare(&alone, &PrepOptions::new(Task::Face)).unwrap().set;
    assert_eq!(eval_identities(&set, "synthetic"), eval_identities(&alone, "synthetic"));

    // Weights and shares only change batches: the same prep is a cache hit.
    let again = prepare(&mixed(dir.path(), Some(0.5)), &PrepOptions::new(Task::Face)).unwrap();
    assert!(again.cache_hit, "changing a share must not re-decode");
    assert_eq!(again.set.eval.labels, set.eval.labels);

    // The emotion task has no use for the LFW subset (no expressions) and says so.
    let emotion = prepare(&config, &PrepOptions::new(Task::Emotion { grouping: Default::default() })).unwrap().set;
    assert!(emotion.train.info.iter().all(|i| i.source_name == "synthetic"));
    assert!(emotion.report.warnings.iter().any(|w| w.contains("lfw_subset") && w.contains("no image with a label")), "{:?}", emotion.report.warnings);
}

fn take(p: &mut TrainPipeline, n: usize) -> Vec<Batch> {
    (0..n).map(|_| p.next_batch().unwrap()).collect()
}

/// Rows of an unaugmented batch (grey levels) that are images of the LFW
/// subset, recognised by their pixels.
fn real_rows(batch: &Batch, set: &PreparedSet) -> usize {
    let side = set.image_size as usize;
    let real: BTreeSet<Vec<u8>> =
        (0..set.train.len()).filter(|&i| set.train.info[i].source_name == "lfw_subset").map(|i| set.train.image(i).to_vec()).collect();
    batch.images.bytes().chunks(side * side).filter(|img| real.contains(*img)).count()
}

#[test]
fn a_share_of_every_batch_and_an_exact_resume_with_augmentation() {
    let dir = tempfile::tempdir().unwrap();
    let data = mixed(dir.path(), Some(0.25));
    let set = prepare(&data, &PrepOptions::new(Task::Face)).unwrap().set;
    let train = Arc::new(set.train.clone());

    let plain = PipelineConfig::from_data_config(&data, 8, 11);
    let mut p = TrainPipeline::new(train.clone(), plain.clone()).unwrap();
    let synthetic_train = set.report.sources["synthetic"][0];
    assert_eq!(p.steps_per_epoch(), synthetic_train / 6, "the synthetic images fill the other 6 rows of each batch once an epoch");
    for b in take(&mut p, 5) {
        assert_eq!(real_rows(&b, &set), 2, "a quarter of each batch of 8 is real");
    }

    let augment = Augmentation { flip: true, max_shift_px: 2, rotate_deg: 10.0, blur_sigma: 1.0, contrast: 0.3, noise: 0.05, ..Augmentation::default() };
    let config = PipelineConfig { augment, balance_classes: true, ..plain.clone() };
    let uninterrupted = take(&mut TrainPipeline::new(train.clone(), config.clone()).unwrap(), 3 * p.steps_per_epoch() + 2);
    let mut first = TrainPipeline::new(train.clone(), config.clone()).unwrap();
    let head = take(&mut first, p.steps_per_epoch() + 3);
    let state = serde_json::to_string(&first.state()).unwrap();
    drop(first);
    let mut resumed = TrainPipeline::new(train.clone(), config.clone()).unwrap();
    resumed.restore(serde_json::from_str(&state).unwrap()).unwrap();
    let tail = take(&mut resumed, uninterrupted.len() - head.len());
    assert!(head[..] == uninterrupted[..head.len()]);
    assert!(tail[..] == uninterrupted[head.len()..], "the resumed stream differs from the uninterrupted one");

    // A state saved under another mix is refused, naming the mix.
    let other = PipelineConfig::from_data_config(&mixed(dir.path(), Some(0.5)), 8, 11);
    let mut elsewhere = TrainPipeline::new(train, PipelineConfig { augment, balance_classes: true, ..other }).unwrap();
    let err = elsewhere.restore(serde_json::from_str(&state).unwrap()).unwrap_err().to_string();
    assert!(err.contains("mix") && err.contains("lfw_subset:s0.25") && err.contains("lfw_subset:s0.5"), "{err}");
}

#[test]
fn the_shipped_experiments_parse_and_the_cpu_ones_learn_from_real_faces() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    for name in ["smoke.yaml", "paper-cpu.yaml", "paper-tpu.yaml"] {
        let e = emotionet::experiment::Experiment::from_file(&root.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let sources: Vec<String> = e.data.source.summaries().into_iter().map(|(n, _)| n).collect();
        let expected: &[&str] = if name == "paper-tpu.yaml" { &["synthetic"] } else { &["synthetic", "lfw_subset"] };
        assert_eq!(sources, expected, "{name}");
    }
}
