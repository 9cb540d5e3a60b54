//! The one real face set we have: scikit-image's LFW subset (100 real LFW
//! face crops, then 100 real non-face patches, float64 25x25), imported,
//! upscaled to the model size and batched.

use std::sync::Arc;

use emotionet::data::{DataConfig, EvalBatches, NpySource, PipelineConfig, PrepOptions, RealSources, SourceConfig, Task, TrainPipeline, loaders, prepare};
use emotionet::tensor::DType;

fn subset_path() -> std::path::PathBuf {
    let path = emotionet::pjrt::deps_dir().join("data/lfw_subset.npy");
    assert!(path.is_file(), "{} is missing: run `make setup` (it extracts it from the scikit-image wheel)", path.display());
    path
}

#[test]
fn the_real_lfw_subset_reads_as_200_images_of_25x25() {
    let path = subset_path();
    let header = loaders::read_npy_header(&path).unwrap();
    assert_eq!(header.shape, vec![200, 25, 25]);
    let array = loaders::read_npy(&path).unwrap();
    assert_eq!((array.count, array.height, array.width), (200, 25, 25));
    // Real photographs: faces are not flat, and values use the whole range.
    let face = array.image(0);
    let (min, max) = (face.iter().min().unwrap(), face.iter().max().unwrap());
    assert!(max - min > 100, "contrast {min}..{max}");
}

#[test]
fn imported_upscaled_to_model_size_and_batched() {
    let dir = tempfile::tempdir().unwrap();
    let config = DataConfig {
        source: SourceConfig::Real(RealSources { npy: vec![NpySource::skimage_lfw_subset(subset_path())], ..Default::default() }),
        image_size: 100,
        cache_dir: dir.path().to_path_buf(),
        ..DataConfig::default()
    };
    let out = prepare(&config, &PrepOptions::new(Task::Face)).unwrap();
    let set = out.set;
    assert_eq!(set.train.len() + set.eval.len(), 200);
    assert_eq!(set.report.classes[1].train + set.report.classes[1].eval, 100, "100 faces");
    assert_eq!(set.report.classes[0].train + set.report.classes[0].eval, 100, "100 non-faces");
    assert!((55..=65).contains(&set.eval.len()), "30% eval: {}", set.eval.len());
    assert!(set.report.skipped.is_empty());
    // Index 0..100 are faces: check the labels follow the indices.
    for (l, info) in set.train.labels.iter().zip(&set.train.info) {
        let index: usize = info.source.rsplit('[').next().unwrap().trim_end_matches(']').parse().unwrap();
        assert_eq!(*l, i32::from(index < 100), "{}", info.source);
    }
    assert_eq!(set.train.image(0).len(), 100 * 100);

    let train = Arc::new(set.train.clone());
    let mut pipeline = TrainPipeline::new(train, PipelineConfig::new(32, 5)).unwrap();
    let batch = pipeline.next_batch().unwrap();
    assert_eq!(batch.images.dims(), &[32, 100, 100, 1]);
    assert_eq!(batch.images.dtype(), DType::U8);
    assert_eq!(batch.labels.dims(), &[32]);
    let values = batch.images.bytes();
    assert!(values.iter().any(|&v| v > 128) && values.iter().any(|&v| v < 128));

    let eval: Vec<_> = EvalBatches::new(&set.eval, 32).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(eval.iter().map(|b| b.valid).sum::<usize>(), set.eval.len());
}
