//! The training input pipeline: batches of a [`PreparedSplit`] as host
//! tensors for the trainer.
//!
//! - Images: u8 `[B, H, W, 1]` (NHWC, one grey channel), the grey levels
//!   themselves: the programs convert and normalize them on the device per
//!   [`Normalization`] (`models::ProgramSpec`), so a batch is a quarter of
//!   the bytes f32 would be, to make and to upload. Labels: i32 `[B]`.
//! - Training: an endless stream. Each epoch is a fresh seeded permutation
//!   (keyed by seed and epoch number); the incomplete tail of an epoch is
//!   DROPPED (each epoch has `len / B` batches, and a different tail is
//!   dropped each time), so every training batch is full.
//! - Optional class balancing (`balance_classes`, off by default): each
//!   epoch repeats the samples of smaller classes (each class reshuffled,
//!   then cycled) until every class has as many as the largest, so an
//!   epoch has `largest class x classes` samples. KDEF's 1:1:5
//!   happy/sad/neither split otherwise lets a model sit at 71% by always
//!   answering "neither".
//! - Mixed sources: each source's weight or share of every batch (see
//!   `mix`, which owns the order of an epoch).
//! - Augmentation (see `augment`): for each batch, one seed per row is
//!   drawn in row order from one seeded RNG stream, whose state is part of
//!   the saved position; each row's random transforms come from its own
//!   seed. A row is therefore a pure function of (image, settings, seed),
//!   and a batch is the same bit for bit whatever the thread count.
//! - A background thread prepares batches a few ahead (bounded channel)
//!   while the device runs the previous step; it makes the rows of each
//!   batch on a pool of `threads` threads (default: the host's cores).
//! - Augmentation that resamples or changes contrast (blur, contrast,
//!   ...) works in f32 and rounds back to grey levels (see `augment`); flip
//!   and shift alone stay exact. Each row is written straight into the
//!   batch's bytes.
//! - [`TrainPipeline::state`] is the position after the last batch handed
//!   out (epoch, offset, augmentation RNG); [`TrainPipeline::restore`] makes
//!   the next batches exactly those an uninterrupted run would have seen.
//! - Eval: fixed order, no augmentation, the last batch padded with zero
//!   images (label 0) and `valid` saying how many rows are real.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::augment;
use super::config::{Augmentation, Normalization, SourceMix};
use super::error::{DataError, Result};
use super::mix::EpochPlan;
use super::prep::PreparedSplit;
use crate::rng::Rng;
use crate::tensor::{DType, HostTensor};

pub use super::mix::{epoch_order, epoch_permutation};

/// Keys the augmentation stream apart from the other uses of the seed.
const AUGMENT_STREAM: u64 = 0x4155_474D;

/// One batch for the device.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// u8 `[B, H, W, 1]`: grey levels, normalized by the program.
    pub images: HostTensor,
    /// i32 `[B]`.
    pub labels: HostTensor,
    /// Rows that are real samples: `B` except for the last, padded eval batch.
    pub valid: usize,
}

/// How the training stream is made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PipelineConfig {
    pub batch_size: usize,
    pub seed: u64,
    pub augment: Augmentation,
    /// What the program will make of the grey levels; the batches do not
    /// depend on it (they are u8), it travels with the stream's settings.
    pub normalize: Normalization,
    /// Batches prepared ahead of the consumer (at least 1).
    pub prefetch: usize,
    /// Oversample smaller classes so each epoch is class-balanced.
    #[serde(default)]
    pub balance_classes: bool,
    /// Each source's weight or share, matched to samples by their
    /// `source_name`; empty (or all weight 1, no share) = one plain stream.
    #[serde(default)]
    pub mix: Vec<SourceMix>,
    /// Threads making the rows of a batch; 0 = the host's cores (see
    /// [`input_threads`]). The batches do not depend on it.
    #[serde(default)]
    pub threads: usize,
}

/// The threads a pipeline asking for `threads` uses: that many, or the
/// cores this process may use when 0.
pub fn input_threads(threads: usize) -> usize {
    if threads > 0 { threads } else { std::thread::available_parallelism().map_or(1, |n| n.get()) }
}

impl PipelineConfig {
    /// No augmentation, [0, 1] pixels, three batches of prefetch, no mix.
    pub fn new(batch_size: usize, seed: u64) -> PipelineConfig {
        PipelineConfig {
            batch_size,
            seed,
            augment: Augmentation::default(),
            normalize: Normalization::default(),
            prefetch: 3,
            balance_classes: false,
            mix: Vec::new(),
            threads: 0,
        }
    }

    /// Takes augmentation, normalization, balancing and the sources' mix
    /// from an experiment's data section.
    pub fn from_data_config(data: &super::config::DataConfig, batch_size: usize, seed: u64) -> PipelineConfig {
        PipelineConfig {
            augment: data.augment,
            normalize: data.normalize,
            balance_classes: data.balance_classes,
            mix: data.source.mix(),
            threads: data.input_threads.unwrap_or(0),
            ..PipelineConfig::new(batch_size, seed)
        }
    }
}

/// Where the training stream is: enough to continue it exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipelineState {
    pub seed: u64,
    /// Epochs completed (the permutation in use is that of `epoch`).
    pub epoch: u64,
    /// Offset in the epoch's permutation of the next batch's first sample.
    pub position: usize,
    /// Batches handed out since the start (across epochs).
    pub batches: u64,
    /// Size of the split and of a batch: a state only fits the same ones.
    pub samples: usize,
    pub batch_size: usize,
    /// The augmentation RNG (xoshiro256** words) before the next batch.
    pub rng: [u64; 4],
    /// The mix the state belongs to ([`EpochPlan::fingerprint`]); empty
    /// for a single plain source.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mix: String,
}

/// The shuffled, optionally augmented training batches of a split.
pub struct TrainPipeline {
    split: Arc<PreparedSplit>,
    config: PipelineConfig,
    state: PipelineState,
    plan: Arc<EpochPlan>,
    /// Samples per epoch used (whole batches).
    epoch_len: usize,
    receiver: Option<Receiver<Produced>>,
    worker: Option<JoinHandle<()>>,
}

impl TrainPipeline {
    /// Starts the stream at epoch 0. Errors if a batch is larger than the split.
    pub fn new(split: Arc<PreparedSplit>, config: PipelineConfig) -> Result<TrainPipeline> {
        if config.batch_size == 0 || config.batch_size > split.len() {
            return Err(DataError::BatchLargerThanSplit { batch_size: config.batch_size, samples: split.len(), split: split.split.name() });
        }
        let plan = Arc::new(EpochPlan::new(&split.labels, &split.source_names(), &config.mix, config.seed, config.batch_size, config.balance_classes)?);
        let epoch_len = plan.epoch_len();
        let state = PipelineState {
            seed: config.seed,
            epoch: 0,
            position: 0,
            batches: 0,
            samples: split.len(),
            batch_size: config.batch_size,
            rng: Rng::keyed(config.seed, &[AUGMENT_STREAM]).state(),
            mix: plan.fingerprint(),
        };
        let mut pipeline = TrainPipeline { split, config, state, plan, epoch_len, receiver: None, worker: None };
        pipeline.start()?;
        Ok(pipeline)
    }

    /// Full batches per epoch (the tail is dropped).
    pub fn steps_per_epoch(&self) -> usize {
        self.epoch_len / self.config.batch_size
    }

    /// The position after the last batch returned by [`next_batch`](Self::next_batch).
    pub fn state(&self) -> PipelineState {
        self.state.clone()
    }

    /// Continues from a saved state; the next batch is the one that followed it.
    pub fn restore(&mut self, state: PipelineState) -> Result<()> {
        let checks = [
            ("seed", state.seed as usize, self.config.seed as usize),
            ("samples", state.samples, self.split.len()),
            ("batch_size", state.batch_size, self.config.batch_size),
        ];
        for (field, saved, current) in checks {
            if saved != current {
                return Err(DataError::StateMismatch { field, saved: saved.to_string(), current: current.to_string() });
            }
        }
        let mix = self.plan.fingerprint();
        if state.mix != mix {
            let show = |m: &str| if m.is_empty() { "one plain source".to_string() } else { m.to_string() };
            return Err(DataError::StateMismatch { field: "mix", saved: show(&state.mix), current: show(&mix) });
        }
        if state.position + state.batch_size > self.epoch_len {
            return Err(DataError::StateMismatch {
                field: "position",
                saved: state.position.to_string(),
                current: format!("at most {}", self.epoch_len - state.batch_size),
            });
        }
        self.stop();
        self.state = state;
        self.start()
    }

    /// The next training batch (blocks until the producer has it ready).
    /// A batch the producer could not make is an error carrying its cause.
    pub fn next_batch(&mut self) -> Result<Batch> {
        let receiver = self.receiver.as_ref().ok_or(DataError::ProducerStopped)?;
        match receiver.recv() {
            Ok(Ok((batch, state))) => {
                self.state = state;
                Ok(batch)
            }
            Ok(Err(cause)) => Err(DataError::BatchFailed { batch: self.state.batches + 1, source: Box::new(cause) }),
            Err(_) => Err(DataError::ProducerStopped),
        }
    }

    fn start(&mut self) -> Result<()> {
        let (tx, rx) = sync_channel(self.config.prefetch.max(1));
        let split = Arc::clone(&self.split);
        let plan = Arc::clone(&self.plan);
        let config = self.config.clone();
        let state = self.state.clone();
        let worker = std::thread::Builder::new()
            .name("emotionet-batches".into())
            .spawn(move || produce_guarded(split, plan, config, state, tx))
            .map_err(DataError::ProducerSpawn)?;
        self.worker = Some(worker);
        self.receiver = Some(rx);
        Ok(())
    }

    fn stop(&mut self) {
        // Dropping the receiver makes the producer's next send fail, which ends it.
        self.receiver = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

impl Drop for TrainPipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The producer thread: computes batches from `state` until the consumer goes away.
/// What the producer hands over: a batch and the state after it, or why it
/// could not make the next one (after which it stops).
type Produced = Result<(Batch, PipelineState)>;

/// Runs [`produce`], turning a panic into an error the consumer receives,
/// so that a failure in the background thread reaches the trainer with its cause.
fn produce_guarded(split: Arc<PreparedSplit>, plan: Arc<EpochPlan>, config: PipelineConfig, state: PipelineState, tx: SyncSender<Produced>) {
    let errors = tx.clone();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| produce(split, plan, config, state, tx)));
    if let Err(panic) = outcome {
        let message = panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string())).unwrap_or_default();
        let _ = errors.send(Err(DataError::ProducerPanicked { message }));
    }
}

fn produce(split: Arc<PreparedSplit>, plan: Arc<EpochPlan>, config: PipelineConfig, mut state: PipelineState, tx: SyncSender<Produced>) {
    let epoch_len = plan.epoch_len();
    let mut order = plan.order(state.epoch);
    let mut rng = Rng::from_state(state.rng);
    let threads = input_threads(config.threads);
    let pool = if threads > 1 {
        match rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("emotionet-input-{i}")).build() {
            Ok(pool) => Some(pool),
            Err(e) => {
                // The batches are the same on one thread, only slower.
                tracing::warn!("cannot start {threads} input threads ({e}); making batches on one");
                None
            }
        }
    } else {
        None
    };
    loop {
        let indices = &order[state.position..state.position + config.batch_size];
        let batch = match assemble(&split, indices, config.batch_size, Some((&config.augment, &mut rng)), pool.as_ref()) {
            Ok(b) => b,
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        };
        state.position += config.batch_size;
        state.batches += 1;
        if state.position + config.batch_size > epoch_len {
            state.epoch += 1;
            state.position = 0;
            order = plan.order(state.epoch);
        }
        state.rng = rng.state();
        if tx.send(Ok((batch, state.clone()))).is_err() {
            return;
        }
    }
}

/// Builds a batch of `batch_size` rows from `indices` (fewer indices pad with
/// zero images and label 0), augmenting each image when asked (see `augment`
/// for the order of the random draws), its rows spread over `pool` if any.
fn assemble(
    split: &PreparedSplit,
    indices: &[usize],
    batch_size: usize,
    augment: Option<(&Augmentation, &mut Rng)>,
    pool: Option<&rayon::ThreadPool>,
) -> Result<Batch> {
    let side = split.image_size as usize;
    let n = side * side;
    // One seed per row, drawn in row order: a row is then a pure function
    // of (image, settings, seed), whichever thread makes it.
    let (aug, seeds) = match augment.filter(|(a, _)| !a.is_off()) {
        Some((a, rng)) => (Some(*a), indices.iter().map(|_| rng.next_u64()).collect()),
        None => (None, Vec::new()),
    };
    let make_row = |row: usize, dst: &mut [u8], unit: &mut Vec<f32>| {
        let src = split.image(indices[row]);
        match &aug {
            // Flip and shift alone stay on whole grey levels: exact, no f32.
            Some(a) if a.is_flip_and_shift_only() => augment::flip_and_shift(src, side, a, &mut Rng::new(seeds[row]), dst),
            Some(a) => {
                unit.resize(n, 0.0);
                augment::augment(src, side, a, &mut Rng::new(seeds[row]), unit, dst);
            }
            None => dst.copy_from_slice(src),
        }
    };
    let mut bytes = vec![0u8; batch_size * n];
    let rows = &mut bytes[..indices.len() * n];
    match pool {
        Some(pool) => pool.install(|| rows.par_chunks_mut(n).enumerate().for_each_init(Vec::new, |unit, (row, dst)| make_row(row, dst, unit))),
        None => {
            let mut unit = Vec::new();
            for (row, dst) in rows.chunks_mut(n).enumerate() {
                make_row(row, dst, &mut unit);
            }
        }
    }
    let mut labels = vec![0i32; batch_size];
    for (label, &i) in labels.iter_mut().zip(indices) {
        *label = split.labels[i];
    }
    let dims = [batch_size as i64, side as i64, side as i64, 1];
    Ok(Batch { images: HostTensor::from_bytes(DType::U8, &dims, bytes)?, labels: HostTensor::from_i32(&[batch_size as i64], &labels)?, valid: indices.len() })
}

/// Eval batches in split order; the last one is padded and has `valid < B`
/// when the split is not a multiple of the batch size.
pub struct EvalBatches<'a> {
    split: &'a PreparedSplit,
    batch_size: usize,
    next: usize,
}

impl<'a> EvalBatches<'a> {
    pub fn new(split: &'a PreparedSplit, batch_size: usize) -> Result<EvalBatches<'a>> {
        if batch_size == 0 {
            return Err(DataError::BatchLargerThanSplit { batch_size, samples: split.len(), split: split.split.name() });
        }
        Ok(EvalBatches { split, batch_size, next: 0 })
    }

    /// Batches in one pass (the last one possibly padded).
    pub fn len(&self) -> usize {
        self.split.len().div_ceil(self.batch_size)
    }

    pub fn is_empty(&self) -> bool {
        self.split.is_empty()
    }
}

impl Iterator for EvalBatches<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next >= self.split.len() {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.split.len());
        let indices: Vec<usize> = (self.next..end).collect();
        self.next = end;
        Some(assemble(self.split, &indices, self.batch_size, None, None))
    }
}
