//! The paper's hierarchy: the face model filters, and only what it calls a
//! face reaches the emotion model; everything else is answered "not a face".
//!
//! This module owns the hierarchy at inference time:
//! - [`Hierarchy`]: both trained models of an experiment on a device, and
//!   the answer for images ([`Hierarchy::answer`], used by `emotionet predict`);
//! - [`Hierarchy::evaluate`]: the paper's Table I and Figures 2-4 on a
//!   labelled mixed set (the hierarchy task's eval split): (a) the emotion
//!   model alone, which can never say "not a face", so every non-face counts
//!   as wrong; (b) the face filter followed by the emotion model. Both are
//!   confusion matrices over `["not_a_face", <emotion classes>]`, turned
//!   into a [`HierarchyEval`] (`hierarchy.json`, read by `emotionet report`);
//! - [`select_subset`]: a seeded, class-stratified fixed-size subset, like
//!   the paper's 100-image validation set;
//! - [`load_image`]: one image file decoded and fitted exactly as the data
//!   preparation does for training, as the grey levels the predict
//!   programs normalize.
//!
//! It trains nothing and owns no file format: `hierarchy.json` belongs to
//! [`crate::records`]; the per-image `predictions.json` written next to it
//! is a plain listing for people, read by nothing else.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::data::decode::{DecodeSettings, decode_file};
use crate::data::{DataConfig, DataError, EvalBatches, PreparedSet, PreparedSplit, SourceConfig, Task};
use crate::experiment::Experiment;
use crate::models::{InferenceError, InferenceModel, InferenceOptions, ModelKind};
use crate::pjrt::{Backend, Client};
use crate::records::{Confusion, FACE_LEVEL_LABELS, HierarchyEval, RecordError, SourceTable};
use crate::rng::Rng;
use crate::tensor::{HostTensor, TensorError};

/// A face is what the face model gives at least this probability (the
/// paper does not say; 0.5 is the argmax of a two-class softmax).
pub const DEFAULT_THRESHOLD: f32 = 0.5;
/// The face model's class index of "face" (`Task::Face` labels non-face 0, face 1).
pub const FACE_CLASS: usize = 1;
/// The hierarchy task's label of a non-face; emotion class `c` is `c + 1`.
pub const NOT_A_FACE: usize = 0;
/// Per-image answers of an evaluation, written next to `hierarchy.json`.
pub use crate::records::PREDICTIONS_FILE;

/// Keys the subset's RNG stream apart from every other use of the seed.
const SUBSET_STREAM: u64 = 0x5355_4253;

/// Why the hierarchy could not be loaded, run or evaluated.
#[derive(Debug, thiserror::Error)]
pub enum HierarchyError {
    #[error("face threshold {0}: must be a probability from 0 to 1")]
    Threshold(f32),
    #[error(transparent)]
    Inference(#[from] InferenceError),
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error(transparent)]
    Tensor(#[from] TensorError),
    #[error("the face model answers {got} classes; the hierarchy needs the two of the face task (non_face, face)")]
    FaceClasses { got: usize },
    #[error("the emotion model answers {got} classes, but {expected} emotion classes were given ({names:?})")]
    EmotionClasses { got: usize, expected: usize, names: Vec<String> },
    #[error("the face model takes {face}x{face} images and the emotion model {emotion}x{emotion}; both must take the data's image size")]
    InputSizes { face: i64, emotion: i64 },
    #[error("the evaluated set is labelled {got:?}, not with the hierarchy task's classes {expected:?}")]
    Labels { got: Vec<String>, expected: Vec<String> },
    #[error("asked for {asked} images, but the hierarchy's eval split holds only {available}; ask for at most {available} or leave --images out")]
    Subset { asked: usize, available: usize },
    #[error("asked for 0 images; ask for at least 1 or leave --images out")]
    NoImages,
    #[error("the hierarchy's eval split is empty: there is nothing to evaluate (more data, or a larger eval_fraction)")]
    EmptySet,
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

pub type Result<T, E = HierarchyError> = std::result::Result<T, E>;

/// Checks a face threshold.
pub fn check_threshold(threshold: f32) -> Result<f32> {
    if (0.0..=1.0).contains(&threshold) { Ok(threshold) } else { Err(HierarchyError::Threshold(threshold)) }
}

/// The answer of the emotion model for one face.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EmotionAnswer {
    /// Index into the emotion classes.
    pub class: usize,
    pub name: String,
    /// One probability per emotion class.
    pub probabilities: Vec<f32>,
}

/// The hierarchy's answer for one image.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Answer {
    /// The face model's probability that the image is a face.
    pub face_probability: f32,
    /// `face_probability >= threshold`.
    pub is_face: bool,
    /// Only for images called a face.
    pub emotion: Option<EmotionAnswer>,
}

/// What happened to one image of an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ImageOutcome {
    /// The file (or array entry) the image came from.
    pub source: String,
    /// True class index into the hierarchy's class names.
    pub truth: usize,
    pub face_probability: f32,
    /// The emotion model's probabilities (it sees every image in system (a)).
    pub emotion_probabilities: Vec<f32>,
    /// System (a): the emotion model alone (never [`NOT_A_FACE`]).
    pub emotion_alone: usize,
    /// System (b): face filter + emotion model.
    pub with_face_filter: usize,
    /// The configured data source the image came from.
    pub source_name: String,
}

/// Both systems on one labelled set.
#[derive(Clone, Debug, PartialEq)]
pub struct HierarchyOutcome {
    /// `["not_a_face", <emotion classes>]`.
    pub class_names: Vec<String>,
    pub threshold: f32,
    pub images: Vec<ImageOutcome>,
    /// System (a), rows truth, columns prediction.
    pub emotion_alone: Confusion,
    /// System (b).
    pub with_face_filter: Confusion,
}

impl HierarchyOutcome {
    /// Table I per data source, in the order the sources first appear;
    /// empty when every image came from one source. `kind_of` names a
    /// source's kind (synthetic or real).
    pub fn per_source(&self, kind_of: impl Fn(&str) -> String) -> Result<Vec<SourceTable>> {
        let mut names: Vec<&str> = Vec::new();
        for i in &self.images {
            if !names.contains(&i.source_name.as_str()) {
                names.push(&i.source_name);
            }
        }
        if names.len() < 2 {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for name in names {
            let mine = || self.images.iter().filter(move |i| i.source_name == name);
            let alone = Confusion::from_pairs(self.class_names.clone(), mine().map(|i| (i.truth, i.emotion_alone)))?;
            let filtered = Confusion::from_pairs(self.class_names.clone(), mine().map(|i| (i.truth, i.with_face_filter)))?;
            out.push(SourceTable::new(name, kind_of(name), alone, filtered));
        }
        Ok(out)
    }

    /// The `hierarchy.json` record; its Table I rows are derived from the
    /// two matrices.
    pub fn to_record(&self, eval_id: &str, face_run: &str, emotion_run: &str, trained_on: &str, dataset: &str) -> HierarchyEval {
        HierarchyEval::new(
            eval_id,
            crate::records::now_rfc3339(),
            face_run,
            emotion_run,
            trained_on,
            dataset,
            self.emotion_alone.clone(),
            self.with_face_filter.clone(),
        )
    }
}

/// Both trained models on one device.
#[derive(Debug)]
pub struct Hierarchy {
    face: InferenceModel,
    emotion: InferenceModel,
    emotion_classes: Vec<String>,
    threshold: f32,
}

impl Hierarchy {
    /// Puts two loaded models together. `emotion_classes` names the emotion
    /// model's outputs, in order.
    pub fn new(face: InferenceModel, emotion: InferenceModel, emotion_classes: Vec<String>, threshold: f32) -> Result<Self> {
        let threshold = check_threshold(threshold)?;
        if face.classes() != 2 {
            return Err(HierarchyError::FaceClasses { got: face.classes() });
        }
        if emotion.classes() != emotion_classes.len() {
            return Err(HierarchyError::EmotionClasses { got: emotion.classes(), expected: emotion_classes.len(), names: emotion_classes });
        }
        let (fs, es) = (face.architecture().input_size, emotion.architecture().input_size);
        if fs != es {
            return Err(HierarchyError::InputSizes { face: fs, emotion: es });
        }
        Ok(Hierarchy { face, emotion, emotion_classes, threshold })
    }

    /// Loads the newest checkpoints of an experiment's face and emotion runs
    /// (`face_dir`, `emotion_dir`) with the experiment's architectures. Each
    /// model's program is compiled for a batch of its training batch, or
    /// `max_batch` if that is smaller, on the client's first device.
    pub fn load(client: &Client, experiment: &Experiment, face_dir: &Path, emotion_dir: &Path, max_batch: usize, threshold: f32) -> Result<Self> {
        let threshold = check_threshold(threshold)?;
        let device = client.device_ids().first().copied().unwrap_or(0);
        let options = |kind: ModelKind| {
            let trained = experiment.training(kind).map_or(1, |t| t.batch);
            InferenceOptions {
                batch: trained.min(max_batch.max(1) as i64).max(1),
                device,
                xla_options: experiment.backend.xla_options(),
                normalize: experiment.data.normalize,
            }
        };
        let face = InferenceModel::from_run_dir(client, ModelKind::Face, experiment.architecture(ModelKind::Face), face_dir, &options(ModelKind::Face))?;
        let emotion =
            InferenceModel::from_run_dir(client, ModelKind::Emotion, experiment.architecture(ModelKind::Emotion), emotion_dir, &options(ModelKind::Emotion))?;
        let classes = experiment.task(ModelKind::Emotion).class_names().iter().map(|s| s.to_string()).collect();
        Self::new(face, emotion, classes, threshold)
    }

    pub fn face(&self) -> &InferenceModel {
        &self.face
    }

    pub fn emotion(&self) -> &InferenceModel {
        &self.emotion
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    pub fn emotion_classes(&self) -> &[String] {
        &self.emotion_classes
    }

    /// The hierarchy's classes: `["not_a_face", <emotion classes>]`, the
    /// class names of [`Task::Hierarchy`].
    pub fn class_names(&self) -> Vec<String> {
        std::iter::once("not_a_face".to_string()).chain(self.emotion_classes.iter().cloned()).collect()
    }

    /// Side of the square images both models take.
    pub fn image_size(&self) -> i64 {
        self.face.architecture().input_size
    }

    /// The answer for each image of `images: f32[n, H, W, 1]`: the face
    /// model sees every image; only those it calls a face go to the
    /// emotion model.
    pub fn answer(&self, images: &HostTensor) -> Result<Vec<Answer>> {
        let face = self.face.probabilities(images)?;
        let faces: Vec<usize> = face.iter().enumerate().filter(|(_, p)| p[FACE_CLASS] >= self.threshold).map(|(i, _)| i).collect();
        let emotions = self.emotion.probabilities(&take_rows(images, &faces)?)?;
        let mut answers: Vec<Answer> =
            face.iter().map(|p| Answer { face_probability: p[FACE_CLASS], is_face: p[FACE_CLASS] >= self.threshold, emotion: None }).collect();
        for (&i, probabilities) in faces.iter().zip(emotions) {
            let class = argmax(&probabilities);
            answers[i].emotion = Some(EmotionAnswer { class, name: self.emotion_classes[class].clone(), probabilities });
        }
        Ok(answers)
    }

    /// Table I at the face / not-a-face level on the face task's eval split
    /// (`split`, labels 0 = non-face, 1 = face), one table per data source
    /// in the order the sources first appear. It counts the faces that
    /// carry no expression label (real LFW photographs), which the
    /// hierarchy task cannot score: the emotion model alone answers an
    /// emotion, i.e. "a face", for every image; with the filter, the face
    /// model's decision stands. Only the face model runs.
    pub fn evaluate_face_level(&self, split: &PreparedSplit, kind_of: impl Fn(&str) -> String) -> Result<Vec<SourceTable>> {
        if split.is_empty() {
            return Err(HierarchyError::EmptySet);
        }
        let labels: Vec<String> = FACE_LEVEL_LABELS.iter().map(|s| s.to_string()).collect();
        let mut per_source: Vec<(String, Confusion, Confusion)> = Vec::new();
        let mut next = 0;
        for batch in EvalBatches::new(split, self.face.batch() as usize)? {
            let batch = batch?;
            for p_face in self.face.probabilities(&batch.images)?.into_iter().take(batch.valid) {
                let truth = usize::try_from(split.labels[next]).unwrap_or(usize::MAX);
                let source = split.info.get(next).map(|i| i.source_name.clone()).unwrap_or_default();
                let at = match per_source.iter().position(|(name, _, _)| *name == source) {
                    Some(at) => at,
                    None => {
                        per_source.push((source, Confusion::new(labels.clone()), Confusion::new(labels.clone())));
                        per_source.len() - 1
                    }
                };
                let (_, alone, filtered) = &mut per_source[at];
                alone.add(truth, FACE_CLASS)?;
                filtered.add(truth, if p_face[FACE_CLASS] >= self.threshold { FACE_CLASS } else { NOT_A_FACE })?;
                next += 1;
            }
        }
        Ok(per_source.into_iter().map(|(name, alone, filtered)| SourceTable::new(name.clone(), kind_of(&name), alone, filtered)).collect())
    }

    /// Runs both systems of Table I over `split`, whose labels are the
    /// hierarchy task's (`class_names`, from [`PreparedSet::class_names`]).
    ///
    /// The emotion model runs on every image once: system (a) uses all its
    /// answers, system (b) only those of the images the face filter passes.
    /// That equals sending only the passed images, because an image's
    /// answer does not depend on the rest of its batch.
    pub fn evaluate(&self, split: &PreparedSplit, class_names: &[String]) -> Result<HierarchyOutcome> {
        let expected = self.class_names();
        if class_names != expected.as_slice() {
            return Err(HierarchyError::Labels { got: class_names.to_vec(), expected });
        }
        if split.is_empty() {
            return Err(HierarchyError::EmptySet);
        }
        let mut alone = Confusion::new(expected.clone());
        let mut filtered = Confusion::new(expected.clone());
        let mut images = Vec::with_capacity(split.len());
        let mut next = 0;
        for batch in EvalBatches::new(split, self.face.batch() as usize)? {
            let batch = batch?;
            let face = self.face.probabilities(&batch.images)?;
            let emotion = self.emotion.probabilities(&batch.images)?;
            for (p_face, p_emotion) in face.into_iter().zip(emotion).take(batch.valid) {
                let truth = usize::try_from(split.labels[next]).unwrap_or(usize::MAX);
                let emotion_alone = argmax(&p_emotion) + 1;
                let with_face_filter = if p_face[FACE_CLASS] >= self.threshold { emotion_alone } else { NOT_A_FACE };
                alone.add(truth, emotion_alone)?;
                filtered.add(truth, with_face_filter)?;
                images.push(ImageOutcome {
                    source: split.info.get(next).map(|i| i.source.clone()).unwrap_or_default(),
                    truth,
                    face_probability: p_face[FACE_CLASS],
                    emotion_probabilities: p_emotion,
                    emotion_alone,
                    with_face_filter,
                    source_name: split.info.get(next).map(|i| i.source_name.clone()).unwrap_or_default(),
                });
                next += 1;
            }
        }
        Ok(HierarchyOutcome { class_names: expected, threshold: self.threshold, images, emotion_alone: alone, with_face_filter: filtered })
    }
}

/// Index of the largest value (the first of equals; NaN never wins).
fn argmax(values: &[f32]) -> usize {
    values.iter().enumerate().fold(0, |best, (i, &v)| if v > values[best] || (values[best].is_nan() && !v.is_nan()) { i } else { best })
}

/// Rows `rows` of `images` (along the first dimension), in that order.
fn take_rows(images: &HostTensor, rows: &[usize]) -> Result<HostTensor> {
    let mut dims = images.dims().to_vec();
    let n = dims.first().copied().unwrap_or(0).max(1) as usize;
    let row_bytes = images.bytes().len() / n;
    let mut bytes = Vec::with_capacity(rows.len() * row_bytes);
    for &r in rows {
        bytes.extend_from_slice(&images.bytes()[r * row_bytes..(r + 1) * row_bytes]);
    }
    if let Some(d) = dims.first_mut() {
        *d = rows.len() as i64;
    }
    Ok(HostTensor::from_bytes(images.dtype(), &dims, bytes)?)
}

/// A fixed-size subset of a labelled split, like the paper's 100-image
/// validation set: `count` indices, stratified by class (each class gets
/// its share of `count` in proportion to its share of the split, rounded by
/// largest remainder, ties to the lower class), drawn within each class by
/// a seeded shuffle, and returned in ascending order.
pub fn select_subset(labels: &[i32], count: usize, seed: u64) -> Result<Vec<usize>> {
    if count == 0 {
        return Err(HierarchyError::NoImages);
    }
    if count > labels.len() {
        return Err(HierarchyError::Subset { asked: count, available: labels.len() });
    }
    let classes = labels.iter().map(|&l| l.max(0) as usize + 1).max().unwrap_or(0);
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        members[l.max(0) as usize].push(i);
    }
    let total = labels.len();
    let mut quota: Vec<usize> = members.iter().map(|m| count * m.len() / total).collect();
    let mut left = count - quota.iter().sum::<usize>();
    // Largest remainder: the fractional part of count * n_c / total is
    // (count * n_c) mod total, compared as integers to stay exact.
    let mut order: Vec<usize> = (0..classes).collect();
    order.sort_by_key(|&c| std::cmp::Reverse((count * members[c].len()) % total));
    for c in order {
        if left == 0 {
            break;
        }
        if quota[c] < members[c].len() {
            quota[c] += 1;
            left -= 1;
        }
    }
    let mut chosen = Vec::with_capacity(count);
    for (c, m) in members.iter_mut().enumerate() {
        let mut rng = Rng::keyed(seed, &[SUBSET_STREAM, c as u64]);
        rng.shuffle(m);
        chosen.extend_from_slice(&m[..quota[c]]);
    }
    chosen.sort_unstable();
    Ok(chosen)
}

/// The images `indices` of `split`, as a split of their own.
pub fn subset(split: &PreparedSplit, indices: &[usize]) -> PreparedSplit {
    let mut out = PreparedSplit { split: split.split, image_size: split.image_size, pixels: Vec::new(), labels: Vec::new(), info: Vec::new() };
    for &i in indices {
        out.pixels.extend_from_slice(split.image(i));
        out.labels.push(split.labels[i]);
        if let Some(info) = split.info.get(i) {
            out.info.push(info.clone());
        }
    }
    out
}

/// One image file as the models see it: decoded, made grey and fitted to
/// the data's image size by its resize mode (the very function data
/// preparation uses): the grey levels, which the predict program
/// normalizes as training did. `Err` is the reason, to report next to the
/// file.
pub fn load_image(path: &Path, data: &DataConfig) -> std::result::Result<Vec<u8>, String> {
    let settings = DecodeSettings { size: data.image_size, resize: data.resize, limits: data.decode_limits };
    decode_file(path, &settings)
}

/// Stacks images from [`load_image`] into `u8[n, size, size, 1]`.
pub fn images_tensor(images: &[Vec<u8>], size: u32) -> Result<HostTensor> {
    let values: Vec<u8> = images.iter().flatten().copied().collect();
    Ok(HostTensor::from_u8(&[images.len() as i64, i64::from(size), i64::from(size), 1], &values)?)
}

/// Where an experiment's hierarchy evaluation goes:
/// `<output>/<name>/hierarchy/<trained_on>-r<repeat>[-n<images>]`, beside
/// the model runs, so `emotionet report <output>` finds it.
pub fn eval_dir(experiment: &Experiment, trained_on: Backend, repeat: u32, images: Option<usize>) -> PathBuf {
    experiment.layout().hierarchy(&experiment.name, trained_on, repeat, images)
}

/// A one-line description of the evaluated set for `hierarchy.json`, e.g.
/// "synthetic (seed 0, difficulty 0.5): 100 of the 412 images of the
/// hierarchy task's eval split (40 not_a_face, 20 happy, ...), 100x100
/// center_crop, split seed 0".
pub fn describe_set(set: &PreparedSet, evaluated: &PreparedSplit, data: &DataConfig) -> String {
    let source = match &data.source {
        SourceConfig::Synthetic(s) => format!("synthetic (seed {}, difficulty {})", s.seed, s.difficulty),
        SourceConfig::Real(_) => {
            let names: Vec<String> = set.report.datasets.iter().filter(|(_, [_, eval])| *eval > 0).map(|(name, [_, eval])| format!("{name} {eval}")).collect();
            format!("real data ({})", names.join(", "))
        }
        SourceConfig::Mixed(_) => {
            let counts = evaluated.source_counts();
            let names: Vec<String> =
                set.sources.iter().map(|s| format!("{} ({}) {}", s.name, s.kind, counts.get(s.name.as_str()).copied().unwrap_or(0))).collect();
            format!("mixed sources: {}", names.join(", "))
        }
    };
    let counts = evaluated.class_counts(set.class_names.len());
    let per_class: Vec<String> = set.class_names.iter().zip(&counts).map(|(name, n)| format!("{n} {name}")).collect();
    let which = if evaluated.len() == set.eval.len() {
        format!("the {} images", evaluated.len())
    } else {
        format!("{} of the {} images", evaluated.len(), set.eval.len())
    };
    format!(
        "{source}: {which} of the hierarchy task's eval split ({}), {}x{} {}, split seed {}",
        per_class.join(", "),
        set.image_size,
        set.image_size,
        data.resize.name(),
        data.split_seed
    )
}

/// The hierarchy task of an experiment's data.
pub fn task(experiment: &Experiment) -> Task {
    Task::Hierarchy { grouping: experiment.data.grouping }
}

/// `predictions.json`: the settings and every image's answers.
#[derive(Serialize)]
pub struct Predictions<'a> {
    pub eval_id: &'a str,
    pub threshold: f32,
    pub class_names: &'a [String],
    pub face_checkpoint: Option<String>,
    pub emotion_checkpoint: Option<String>,
    pub images: &'a [ImageOutcome],
}

impl Predictions<'_> {
    /// Writes the listing atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut text = serde_json::to_string_pretty(self).map_err(|e| HierarchyError::Write { path: path.to_path_buf(), reason: e.to_string() })?;
        text.push('\n');
        crate::fsutil::write_atomic(path, text.as_bytes()).map_err(|e| HierarchyError::Write { path: path.to_path_buf(), reason: e.to_string() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_face_class_is_the_face_tasks() {
        assert_eq!(Task::Face.class_names()[FACE_CLASS], "face");
        let names = Task::Hierarchy { grouping: Default::default() }.class_names();
        assert_eq!(names[NOT_A_FACE], "not_a_face");
    }

    #[test]
    fn subsets_are_stratified_seeded_and_sorted() {
        // 60 non-faces, 25 happy, 10 sad, 5 neither.
        let labels: Vec<i32> = [(0, 60), (1, 25), (2, 10), (3, 5)].iter().flat_map(|&(l, n)| std::iter::repeat_n(l, n)).collect();
        let per_class = |picked: &[usize]| -> Vec<usize> { (0..4).map(|c| picked.iter().filter(|&&i| labels[i] == c).count()).collect() };
        let picked = select_subset(&labels, 20, 7).unwrap();
        assert_eq!(picked.len(), 20);
        assert!(picked.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(per_class(&picked), vec![12, 5, 2, 1]);
        // Quotas 9, 3.75, 1.5, 0.75: the two left over go to the largest
        // remainders (happy and neither, 0.75 each; sad's 0.5 loses).
        assert_eq!(per_class(&select_subset(&labels, 15, 7).unwrap()), vec![9, 4, 1, 1]);
        assert_eq!(select_subset(&labels, 20, 7).unwrap(), picked);
        assert_ne!(select_subset(&labels, 20, 8).unwrap(), picked);
        assert_eq!(select_subset(&labels, 100, 7).unwrap(), (0..100).collect::<Vec<_>>());
        assert!(matches!(select_subset(&labels, 101, 7), Err(HierarchyError::Subset { asked: 101, available: 100 })));
        assert!(matches!(select_subset(&labels, 0, 7), Err(HierarchyError::NoImages)));
    }

    #[test]
    fn argmax_takes_the_first_of_equals() {
        assert_eq!(argmax(&[0.2, 0.5, 0.5]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.1]), 1);
        assert_eq!(argmax(&[0.3]), 0);
    }
}
