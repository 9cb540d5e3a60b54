//! The input pipeline: seeded reshuffles per epoch, exact resume from a saved
//! state (with augmentation on), and padded eval batches.

use std::sync::Arc;

use emotionet::data::{Augmentation, Batch, EvalBatches, Normalization, PipelineConfig, PreparedSplit, Split, TrainPipeline};
use emotionet::tensor::DType;

/// A split whose image i is filled with the value i (so batches show their indices).
fn split(n: usize, side: u32) -> PreparedSplit {
    let per = (side * side) as usize;
    let mut pixels = Vec::with_capacity(n * per);
    for i in 0..n {
        // A little structure so flips and shifts change the pixels.
        pixels.extend((0..per).map(|p| ((i + p % side as usize) % 256) as u8));
    }
    PreparedSplit { split: Split::Train, image_size: side, pixels, labels: (0..n as i32).map(|i| i % 3).collect(), info: Vec::new() }
}

fn first_pixels(batch: &Batch, side: usize) -> Vec<u8> {
    batch.images.bytes().chunks(side * side).map(|img| img[0]).collect()
}

fn take(p: &mut TrainPipeline, n: usize) -> Vec<Batch> {
    (0..n).map(|_| p.next_batch().unwrap()).collect()
}

#[test]
fn restoring_a_saved_state_replays_exactly_the_same_batches() {
    let data = Arc::new(split(50, 8));
    let config = PipelineConfig { augment: Augmentation { flip: true, max_shift_px: 2, ..Augmentation::default() }, ..PipelineConfig::new(8, 42) };
    let mut uninterrupted = TrainPipeline::new(data.clone(), config.clone()).unwrap();
    let all = take(&mut uninterrupted, 20);

    let mut first = TrainPipeline::new(data.clone(), config.clone()).unwrap();
    let head = take(&mut first, 7);
    let state = first.state();
    drop(first);
    let json = serde_json::to_string(&state).unwrap();
    let mut resumed = TrainPipeline::new(data.clone(), config.clone()).unwrap();
    resumed.next_batch().unwrap(); // wherever it was, restore moves it
    resumed.restore(serde_json::from_str(&json).unwrap()).unwrap();
    let tail = take(&mut resumed, 13);
    assert_eq!(head, all[..7]);
    assert!(tail == all[7..], "resumed run diverged");
    assert_eq!(state.batches, 7);
    assert_eq!(state.epoch, 1, "50 samples / 8 = 6 batches an epoch");
}

#[test]
fn epochs_are_reshuffled_and_drop_their_tail() {
    let data = Arc::new(split(50, 4));
    let mut p = TrainPipeline::new(data, PipelineConfig::new(10, 7)).unwrap();
    assert_eq!(p.steps_per_epoch(), 5);
    let epoch0: Vec<u8> = take(&mut p, 5).iter().flat_map(|b| first_pixels(b, 4)).collect();
    assert_eq!(p.state().epoch, 1);
    let epoch1: Vec<u8> = take(&mut p, 5).iter().flat_map(|b| first_pixels(b, 4)).collect();
    let mut sorted = epoch0.clone();
    sorted.sort();
    assert_eq!(sorted, (0..50).collect::<Vec<u8>>(), "every sample once per epoch (50 = 5 x 10, no tail)");
    assert_ne!(epoch0, epoch1, "a new order each epoch");
    assert_ne!(epoch0, (0..50).collect::<Vec<u8>>(), "shuffled, not in order");

    // With 47 samples, 7 are dropped each epoch, and every batch is full.
    let mut p = TrainPipeline::new(Arc::new(split(47, 4)), PipelineConfig::new(10, 7)).unwrap();
    for b in take(&mut p, 9) {
        assert_eq!((b.valid, b.images.dims()[0]), (10, 10));
    }
    // The same seed gives the same stream; another seed another one.
    let a = take(&mut TrainPipeline::new(Arc::new(split(50, 4)), PipelineConfig::new(10, 1)).unwrap(), 3);
    let b = take(&mut TrainPipeline::new(Arc::new(split(50, 4)), PipelineConfig::new(10, 1)).unwrap(), 3);
    let c = take(&mut TrainPipeline::new(Arc::new(split(50, 4)), PipelineConfig::new(10, 2)).unwrap(), 3);
    assert!(a == b && a != c);
}

#[test]
fn eval_batches_keep_order_and_pad_the_last_one() {
    let data = split(23, 4);
    let batches: Vec<Batch> = EvalBatches::new(&data, 10).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.iter().map(|b| b.valid).collect::<Vec<_>>(), vec![10, 10, 3]);
    assert!(batches.iter().all(|b| b.images.dims() == [10, 4, 4, 1] && b.images.dtype() == DType::U8 && b.labels.dims() == [10]));
    let order: Vec<u8> = batches.iter().flat_map(|b| first_pixels(b, 4)[..b.valid].to_vec()).collect();
    assert_eq!(order, (0..23).collect::<Vec<u8>>());
    let last = &batches[2];
    let labels: Vec<i32> = last.labels.bytes().chunks(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert_eq!(labels, vec![20 % 3, 21 % 3, 22 % 3, 0, 0, 0, 0, 0, 0, 0]);
    assert!(first_pixels(last, 4)[3..].iter().all(|&p| p == 0), "padding rows are zero");
    // The grey levels themselves, one byte a pixel: the programs normalize.
    assert_eq!(&batches[0].images.bytes()[16..32], data.image(1));
}

#[test]
fn a_state_from_another_pipeline_is_refused() {
    let mut p = TrainPipeline::new(Arc::new(split(50, 4)), PipelineConfig::new(10, 1)).unwrap();
    let state = p.state();
    let mut other = TrainPipeline::new(Arc::new(split(40, 4)), PipelineConfig::new(10, 1)).unwrap();
    let err = other.restore(state.clone()).unwrap_err().to_string();
    assert!(err.contains("samples") && err.contains("50") && err.contains("40"), "{err}");
    assert!(TrainPipeline::new(Arc::new(split(5, 4)), PipelineConfig::new(10, 1)).is_err(), "batch larger than the split");
    p.restore(state).unwrap();
}

#[test]
fn class_balancing_oversamples_small_classes_and_resumes_exactly() {
    // 30 of class 0, 6 of class 1, 4 of class 2.
    let mut data = split(40, 4);
    data.labels = (0..40)
        .map(|i| {
            if i < 30 {
                0
            } else if i < 36 {
                1
            } else {
                2
            }
        })
        .collect();
    let data = Arc::new(data);
    let config = PipelineConfig { balance_classes: true, ..PipelineConfig::new(9, 4) };
    let mut p = TrainPipeline::new(data.clone(), config.clone()).unwrap();
    assert_eq!(p.steps_per_epoch(), 90 / 9);
    let mut counts = [0usize; 3];
    let batches = take(&mut p, 10);
    for b in &batches {
        for c in b.labels.bytes().chunks(4) {
            counts[i32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize] += 1;
        }
    }
    assert_eq!(counts, [30, 30, 30]);
    assert_eq!(p.state().epoch, 1);
    let mut fresh = TrainPipeline::new(data.clone(), config.clone()).unwrap();
    let state = {
        take(&mut fresh, 4);
        fresh.state()
    };
    let mut resumed = TrainPipeline::new(data, config.clone()).unwrap();
    resumed.restore(state).unwrap();
    assert!(take(&mut resumed, 6) == batches[4..]);
}

#[test]
fn a_batch_the_producer_cannot_make_is_an_error_with_its_cause() {
    // Labels for 20 images but pixels for 10: the background producer fails
    // on the first batch that reaches past them, and the trainer must hear why.
    let mut data = split(20, 4);
    data.pixels.truncate(10 * 16);
    let mut pipeline = TrainPipeline::new(Arc::new(data), PipelineConfig::new(20, 1)).unwrap();
    let err = pipeline.next_batch().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("training batch 1 could not be made") && text.contains("panicked"), "{text}");
    // After that, the stream says it has stopped rather than hang.
    assert!(pipeline.next_batch().is_err());
}

#[test]
fn batches_are_the_same_bit_for_bit_whatever_the_thread_count_and_resume_exactly() {
    let data = Arc::new(split(60, 12));
    let every =
        Augmentation { flip: true, max_shift_px: 2, scale: 0.1, rotate_deg: 8.0, blur_sigma: 1.0, contrast: 0.2, brightness: 0.1, gamma: 0.3, noise: 0.05 };
    let flip_shift = Augmentation { flip: true, max_shift_px: 3, ..Augmentation::default() };
    for augment in [Augmentation::default(), flip_shift, every] {
        let config = |threads| PipelineConfig { augment, normalize: Normalization::MinusOneOne, threads, ..PipelineConfig::new(8, 5) };
        // 7 batches an epoch: 12 batches cross an epoch boundary.
        let one = take(&mut TrainPipeline::new(Arc::clone(&data), config(1)).unwrap(), 12);
        for threads in [2, 3, 8] {
            let many = take(&mut TrainPipeline::new(Arc::clone(&data), config(threads)).unwrap(), 12);
            for (k, (a, b)) in one.iter().zip(&many).enumerate() {
                assert!(a.images.bytes() == b.images.bytes() && a.labels == b.labels, "{augment:?}: batch {k} differs with {threads} threads");
            }
        }
        if !augment.is_off() {
            // Rows of one batch get different draws: augmenting did something.
            let plain = take(&mut TrainPipeline::new(Arc::clone(&data), config(1)).unwrap(), 1);
            let unaugmented = take(&mut TrainPipeline::new(Arc::clone(&data), PipelineConfig { augment: Augmentation::default(), ..config(1) }).unwrap(), 1);
            assert_ne!(plain[0].images, unaugmented[0].images, "{augment:?}");
        }
        // Resume mid-epoch on 4 threads from a state saved on 1.
        let mut first = TrainPipeline::new(Arc::clone(&data), config(1)).unwrap();
        take(&mut first, 3);
        let state = first.state();
        let mut resumed = TrainPipeline::new(Arc::clone(&data), config(4)).unwrap();
        resumed.restore(state).unwrap();
        let rest = take(&mut resumed, 9);
        for (k, (a, b)) in one[3..].iter().zip(&rest).enumerate() {
            assert!(a.images.bytes() == b.images.bytes() && a.labels == b.labels, "{augment:?}: resumed batch {} differs", k + 3);
        }
    }
}

#[test]
fn input_threads_default_to_the_host_and_are_validated() {
    assert_eq!(emotionet::data::pipeline::input_threads(3), 3);
    assert_eq!(emotionet::data::pipeline::input_threads(0), std::thread::available_parallelism().unwrap().get());
    let data: emotionet::data::DataConfig = serde_yaml::from_str("input_threads: 4").unwrap();
    assert_eq!(PipelineConfig::from_data_config(&data, 8, 1).threads, 4);
    let zero: emotionet::data::DataConfig = serde_yaml::from_str("input_threads: 0").unwrap();
    let e = zero.validate().unwrap_err().to_string();
    assert!(e.contains("input_threads") && e.contains("1 to 1024"), "{e}");
}
