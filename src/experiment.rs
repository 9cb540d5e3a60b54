//! Experiment files (YAML): what to train, on what data, on which backend,
//! for how long, and how often to log, evaluate and checkpoint.
//!
//! Read in two stages, as the user wrote it and then against the system:
//! [`Experiment::from_file`] parses with unknown keys refused and checks every
//! value (an error names the file, the key and what is allowed); only then
//! does anything touch data or devices.
//!
//! ```yaml
//! name: smoke
//! seed: 1
//! backend: {kind: cpu, devices: 1}
//! data: {image_size: 48, source: {synthetic: {faces: 600, non_faces: 400}}}
//! models:
//!   face:    {batch: 32, steps_per_epoch: 15, epochs: 4}
//!   emotion: {batch: 32, steps_per_epoch: 15, epochs: 6}
//! logging: {every_steps: 5}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::{Augmentation, DataConfig, PipelineConfig, Task};
use crate::graph::optim::Optimizer;
use crate::models::{Architecture, ModelKind, Precision};
use crate::pjrt::{Backend, Client, ClientOptions, OptionOverride};

/// A bad experiment file: which file, which key, what is allowed.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: `{key}` = {value}: {allowed}")]
    Invalid { path: PathBuf, key: String, value: String, allowed: String },
    #[error("cannot serialise the experiment {name} to hash it")]
    Hash { name: String, source: serde_json::Error },
}

/// Devices to use: a count, or every device the plugin offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Devices {
    Count(usize),
    #[serde(with = "all_keyword")]
    All,
}

mod all_keyword {
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("all")
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        let text = String::deserialize(d)?;
        if text == "all" { Ok(()) } else { Err(serde::de::Error::custom(format!("expected a number of devices or \"all\", got {text:?}"))) }
    }
}

impl Devices {
    /// How many of `available` devices this means.
    pub fn resolve(self, available: usize) -> usize {
        match self {
            Devices::Count(n) => n,
            Devices::All => available,
        }
    }
}

/// Where the programs run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// cpu, gpu or tpu. Default cpu.
    #[serde(default = "default_backend")]
    pub kind: Backend,
    /// A PJRT plugin library to use instead of the backend's pinned one.
    #[serde(default)]
    pub plugin: Option<PathBuf>,
    /// PJRT client options, `name=value`.
    #[serde(default)]
    pub client_options: Vec<String>,
    /// Data-parallel devices: a number or "all". Default 1.
    #[serde(default = "default_devices")]
    pub devices: Devices,
    /// XLA debug options for every compilation (e.g. xla_cpu_enable_fast_math: false).
    #[serde(default)]
    pub xla_options: BTreeMap<String, OptionOverride>,
}

fn default_backend() -> Backend {
    Backend::Cpu
}
fn default_devices() -> Devices {
    Devices::Count(1)
}

impl Default for BackendConfig {
    fn default() -> Self {
        BackendConfig { kind: Backend::Cpu, plugin: None, client_options: vec![], devices: Devices::Count(1), xla_options: BTreeMap::new() }
    }
}

/// What a command line may change about where programs run (`--backend`,
/// `--plugin` / `EMOTIONET_PJRT_PLUGIN`, `--client-option`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BackendOverrides {
    pub kind: Option<Backend>,
    pub plugin: Option<PathBuf>,
    pub client_options: Vec<String>,
}

impl BackendConfig {
    /// This section with a command line's overrides applied: the one place
    /// where an experiment's backend and the command line meet. Moving to
    /// another kind of backend drops the section's plugin and client options,
    /// which were meant for its own kind; `--client-option`s add to the rest.
    pub fn with_overrides(&self, overrides: &BackendOverrides) -> BackendConfig {
        let mut resolved = self.clone();
        if let Some(kind) = overrides.kind.filter(|k| *k != self.kind) {
            resolved.kind = kind;
            resolved.plugin = None;
            resolved.client_options.clear();
        }
        if let Some(plugin) = &overrides.plugin {
            resolved.plugin = Some(plugin.clone());
        }
        resolved.client_options.extend(overrides.client_options.iter().cloned());
        resolved
    }

    /// Loads the plugin and creates a client: every command that runs
    /// programs connects through here.
    pub fn connect(&self) -> anyhow::Result<Client> {
        use anyhow::Context;
        let mut options = ClientOptions::new();
        for text in &self.client_options {
            options = options.parse_assignment(text)?;
        }
        let client = crate::pjrt::connect(self.kind, self.plugin.as_deref(), &options).with_context(|| format!("cannot open the {} backend", self.kind))?;
        tracing::info!("connected to {} ({}) with {} devices", client.platform_name(), client.platform_version(), client.devices().len());
        Ok(client)
    }

    /// XLA options as the PJRT layer takes them.
    pub fn xla_options(&self) -> Vec<(String, OptionOverride)> {
        self.xla_options.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Learning rate as a function of the step (computed on the host, passed to
/// the training program each step, so a schedule never recompiles).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "schedule", rename_all = "snake_case", deny_unknown_fields)]
pub enum LearningRate {
    Constant {
        value: f64,
    },
    /// `initial * decay_rate ^ (step / decay_steps)`.
    ExponentialDecay {
        initial: f64,
        decay_rate: f64,
        decay_steps: u64,
    },
    /// Cosine from `initial` down to `final_value` over the run.
    Cosine {
        initial: f64,
        #[serde(default)]
        final_value: f64,
    },
    /// `values[i]` until `boundaries[i]`, then the next value.
    Piecewise {
        boundaries: Vec<u64>,
        values: Vec<f64>,
    },
}

impl LearningRate {
    pub fn at(&self, step: u64, total_steps: u64) -> f64 {
        match self {
            LearningRate::Constant { value } => *value,
            LearningRate::ExponentialDecay { initial, decay_rate, decay_steps } => initial * decay_rate.powf(step as f64 / (*decay_steps).max(1) as f64),
            LearningRate::Cosine { initial, final_value } => {
                let t = (step as f64 / total_steps.max(1) as f64).min(1.0);
                final_value + 0.5 * (initial - final_value) * (1.0 + (std::f64::consts::PI * t).cos())
            }
            LearningRate::Piecewise { boundaries, values } => {
                let i = boundaries.iter().take_while(|&&b| step >= b).count();
                values[i.min(values.len() - 1)]
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        let positive = |v: f64, what: &str| if v > 0.0 && v.is_finite() { Ok(()) } else { Err(format!("{what} must be a positive number")) };
        match self {
            LearningRate::Constant { value } => positive(*value, "value"),
            LearningRate::ExponentialDecay { initial, decay_rate, decay_steps } => {
                positive(*initial, "initial")?;
                positive(*decay_rate, "decay_rate")?;
                if *decay_steps == 0 { Err("decay_steps must be at least 1".into()) } else { Ok(()) }
            }
            LearningRate::Cosine { initial, final_value } => {
                positive(*initial, "initial")?;
                if *final_value < 0.0 || final_value > initial { Err("final_value must be between 0 and initial".into()) } else { Ok(()) }
            }
            LearningRate::Piecewise { boundaries, values } => {
                if values.len() != boundaries.len() + 1 {
                    return Err(format!("values needs one more entry than boundaries ({} boundaries, {} values)", boundaries.len(), values.len()));
                }
                if boundaries.windows(2).any(|w| w[0] >= w[1]) {
                    return Err("boundaries must be strictly increasing".into());
                }
                values.iter().try_for_each(|v| positive(*v, "every value"))
            }
        }
    }
}

/// Changes to the paper's architecture (all optional).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchitectureOverrides {
    pub conv_filters: Option<Vec<i64>>,
    pub kernel_size: Option<i64>,
    pub pool: Option<i64>,
    pub dense_units: Option<i64>,
    pub dropout: Option<f64>,
}

/// How one model is trained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelTraining {
    /// Global batch (over all devices). Default 100.
    #[serde(default = "default_batch")]
    pub batch: i64,
    /// Steps per epoch. Default 15 (the paper's).
    #[serde(default = "default_steps_per_epoch")]
    pub steps_per_epoch: u64,
    pub epochs: u64,
    #[serde(default = "default_optimizer")]
    pub optimizer: Optimizer,
    #[serde(default = "default_lr")]
    pub learning_rate: LearningRate,
    #[serde(default)]
    pub architecture: ArchitectureOverrides,
    /// What the network computes in: `f32` (default) or `bf16` (mixed
    /// precision; weights, optimizer state and loss stay f32). Left out of
    /// the serialized form when f32, so existing experiments keep their hash.
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
    /// This model's training-time augmentation, in place of `data.augment`
    /// (for example the face model only, where it helps transfer to real
    /// photographs). Absent: `data.augment`. Left out of the serialized form
    /// when absent, so existing experiments keep their hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<Augmentation>,
}

fn default_batch() -> i64 {
    100
}
fn default_steps_per_epoch() -> u64 {
    15
}
fn default_optimizer() -> Optimizer {
    Optimizer::Momentum { momentum: 0.9, nesterov: false }
}
fn default_lr() -> LearningRate {
    LearningRate::Constant { value: 0.01 }
}

impl ModelTraining {
    pub fn total_steps(&self) -> u64 {
        self.steps_per_epoch * self.epochs
    }
}

/// The models of an experiment; at least one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Models {
    pub face: Option<ModelTraining>,
    pub emotion: Option<ModelTraining>,
}

/// How often things happen during training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Logging {
    /// Training loss/accuracy to TensorBoard and metrics.jsonl every N steps
    /// (the paper: 100). Also at the end of every epoch.
    pub every_steps: u64,
    /// Evaluate on the eval split every N steps; 0 = only at the end of each epoch.
    pub eval_every_steps: u64,
    /// Evaluate at the end of every epoch.
    pub eval_every_epoch: bool,
    /// Checkpoint every N steps; 0 = at the end of every epoch.
    pub checkpoint_every_steps: u64,
    /// Checkpoints kept on disk (the newest).
    pub keep_checkpoints: usize,
}

impl Default for Logging {
    fn default() -> Self {
        Logging { every_steps: 100, eval_every_steps: 0, eval_every_epoch: true, checkpoint_every_steps: 0, keep_checkpoints: 3 }
    }
}

/// One experiment file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Experiment {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Runs are written under `<output>/<name>/...`. Default `runs`.
    #[serde(default = "default_output")]
    pub output: PathBuf,
    /// Seeds weights, dropout and batch order. Default 0.
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub backend: BackendConfig,
    #[serde(default)]
    pub data: DataConfig,
    pub models: Models,
    #[serde(default)]
    pub logging: Logging,
}

fn default_output() -> PathBuf {
    PathBuf::from("runs")
}

impl Experiment {
    /// Reads and validates an experiment file.
    pub fn from_file(path: &Path) -> Result<Experiment, ExperimentError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExperimentError::Io { path: path.to_path_buf(), source })?;
        Self::from_text(&text, path)
    }

    /// Parses and validates YAML text; `path` names it in errors.
    pub fn from_text(text: &str, path: &Path) -> Result<Experiment, ExperimentError> {
        let experiment: Experiment = serde_yaml::from_str(text).map_err(|e| ExperimentError::Syntax { path: path.to_path_buf(), message: e.to_string() })?;
        experiment.validate(path)?;
        Ok(experiment)
    }

    /// Checks values serde cannot.
    pub fn validate(&self, path: &Path) -> Result<(), ExperimentError> {
        let invalid = |key: &str, value: &dyn std::fmt::Display, allowed: String| ExperimentError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            value: value.to_string(),
            allowed,
        };
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(invalid("name", &format!("{:?}", self.name), "a non-empty name of letters, digits, '-', '_' and '.' (it names the run folder)".into()));
        }
        if let Devices::Count(0) = self.backend.devices {
            return Err(invalid("backend.devices", &0, "at least 1, or \"all\"".into()));
        }
        self.data.validate().map_err(|e| invalid("data", &"(see message)", e.to_string()))?;
        if self.models.face.is_none() && self.models.emotion.is_none() {
            return Err(invalid("models", &"{}", "at least one of `face` and `emotion`".into()));
        }
        for (kind, training) in self.trainings() {
            let key = |k: &str| format!("models.{kind}.{k}");
            if training.batch < 1 {
                return Err(invalid(&key("batch"), &training.batch, "a positive number of images per step".into()));
            }
            if let Devices::Count(n) = self.backend.devices {
                if training.batch % n as i64 != 0 {
                    return Err(invalid(&key("batch"), &training.batch, format!("a multiple of backend.devices ({n}): each device takes an equal share")));
                }
            }
            if training.steps_per_epoch == 0 {
                return Err(invalid(&key("steps_per_epoch"), &0, "at least 1 (the paper used 15)".into()));
            }
            if training.epochs == 0 {
                return Err(invalid(&key("epochs"), &0, "at least 1 (the paper: 30 for face, 40 for emotion)".into()));
            }
            training.optimizer.validate().map_err(|e| invalid(&key("optimizer"), &training.optimizer.name(), e))?;
            training.learning_rate.validate().map_err(|e| invalid(&key("learning_rate"), &format!("{:?}", training.learning_rate), e))?;
            if let Some(augment) = &training.augment {
                augment.validate(self.data.image_size).map_err(|e| invalid(&key("augment"), &"(see message)", e.to_string()))?;
            }
            let arch = self.architecture(kind);
            arch.validate()
                .map_err(|e| invalid(&key("architecture"), &format!("image_size {} with conv_filters {:?}", arch.input_size, arch.conv_filters), e))?;
        }
        Ok(())
    }

    /// The models to train, face first.
    pub fn trainings(&self) -> Vec<(ModelKind, &ModelTraining)> {
        let mut out = Vec::new();
        if let Some(t) = &self.models.face {
            out.push((ModelKind::Face, t));
        }
        if let Some(t) = &self.models.emotion {
            out.push((ModelKind::Emotion, t));
        }
        out
    }

    pub fn training(&self, kind: ModelKind) -> Option<&ModelTraining> {
        match kind {
            ModelKind::Face => self.models.face.as_ref(),
            ModelKind::Emotion => self.models.emotion.as_ref(),
        }
    }

    /// The data task a model trains on.
    pub fn task(&self, kind: ModelKind) -> Task {
        match kind {
            ModelKind::Face => Task::Face,
            ModelKind::Emotion => Task::Emotion { grouping: self.data.grouping },
        }
    }

    /// The paper's architecture for `kind` at the data's image size, with
    /// the file's overrides and the task's class count.
    pub fn architecture(&self, kind: ModelKind) -> Architecture {
        let mut arch = Architecture::for_kind(kind, self.data.image_size as i64);
        arch.classes = self.task(kind).class_names().len() as i64;
        if let Some(o) = self.training(kind).map(|t| &t.architecture) {
            if let Some(v) = &o.conv_filters {
                arch.conv_filters = v.clone();
            }
            if let Some(v) = o.kernel_size {
                arch.kernel_size = v;
            }
            if let Some(v) = o.pool {
                arch.pool = v;
            }
            if let Some(v) = o.dense_units {
                arch.dense_units = v;
            }
            if let Some(v) = o.dropout {
                arch.dropout = v;
            }
        }
        arch
    }

    /// How `kind`'s training batches are drawn: the data section's
    /// settings, with the model's own augmentation if it has one.
    pub fn pipeline_config(&self, training: &ModelTraining) -> PipelineConfig {
        let mut config = PipelineConfig::from_data_config(&self.data, training.batch as usize, self.seed);
        if let Some(augment) = training.augment {
            config.augment = augment;
        }
        config
    }

    /// The output folder's layout (where every run of this experiment goes).
    pub fn layout(&self) -> crate::records::RunLayout {
        crate::records::RunLayout::new(&self.output)
    }

    /// The folder of one training run of this experiment.
    pub fn run_paths(&self, kind: ModelKind, backend: Backend, repeat: u32) -> crate::records::RunPaths {
        self.layout().run(&self.name, kind, backend, repeat)
    }

    /// A short hash of what `kind` is trained from, so that a checkpoint is
    /// never resumed, nor a finished run reused, under a different
    /// experiment. Where runs are written (`output`, `--out`) and the
    /// description are not part of what is trained, so they do not enter it.
    pub fn content_hash(&self, kind: ModelKind) -> Result<String, ExperimentError> {
        use sha2::{Digest, Sha256};
        let mut what = self.clone();
        what.output = PathBuf::new();
        what.description.clear();
        let text = serde_json::to_string(&(what, kind)).map_err(|source| ExperimentError::Hash { name: self.name.clone(), source })?;
        let digest = Sha256::digest(text.as_bytes());
        Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Experiment, ExperimentError> {
        Experiment::from_text(text, Path::new("exp.yaml"))
    }

    const MINIMAL: &str = "name: t\nmodels:\n  face: {epochs: 2}\n";

    #[test]
    fn defaults_are_the_paper_reconstruction() {
        let e = parse(MINIMAL).unwrap();
        let face = e.models.face.as_ref().unwrap();
        assert_eq!((face.batch, face.steps_per_epoch, face.epochs), (100, 15, 2));
        assert_eq!(e.architecture(ModelKind::Face), Architecture::face(100));
        assert_eq!(e.logging.every_steps, 100);
    }

    #[test]
    fn errors_name_the_file_the_key_and_what_is_allowed() {
        let err = parse("name: t\nmodels:\n  face: {epochs: 2, batchsize: 3}\n").unwrap_err().to_string();
        assert!(err.contains("exp.yaml") && err.contains("unknown field `batchsize`"), "{err}");
        let err = parse("name: t\nmodels:\n  face: {epochs: 2, batch: 0}\n").unwrap_err().to_string();
        assert!(err.contains("models.face.batch") && err.contains("positive"), "{err}");
        let err = parse("name: t\nbackend: {devices: 4}\nmodels:\n  face: {epochs: 2, batch: 10}\n").unwrap_err().to_string();
        assert!(err.contains("multiple of backend.devices (4)"), "{err}");
        let err =
            parse("name: t\ndata: {image_size: 8}\nmodels:\n  emotion: {epochs: 2, architecture: {conv_filters: [8, 8, 8, 8]}}\n").unwrap_err().to_string();
        assert!(err.contains("models.emotion.architecture") && err.contains("cannot be pooled down"), "{err}");
        let err = parse("name: t\nmodels: {}\n").unwrap_err().to_string();
        assert!(err.contains("at least one of `face` and `emotion`"), "{err}");
        let err = parse("name: t\nmodels:\n  face: {epochs: 2, learning_rate: {schedule: constant, value: -1}}\n").unwrap_err().to_string();
        assert!(err.contains("learning_rate") && err.contains("positive"), "{err}");
        let err = parse("name: [t\n").unwrap_err().to_string();
        assert!(err.contains("exp.yaml"), "{err}");
        let err = parse("name: t\nbackend: {kind: quantum}\nmodels:\n  face: {epochs: 1}\n").unwrap_err().to_string();
        assert!(err.contains("quantum"), "{err}");
    }

    #[test]
    fn learning_rate_schedules() {
        let c = LearningRate::Cosine { initial: 1.0, final_value: 0.0 };
        assert!((c.at(0, 100) - 1.0).abs() < 1e-12 && (c.at(50, 100) - 0.5).abs() < 1e-12 && c.at(100, 100).abs() < 1e-12);
        let p = LearningRate::Piecewise { boundaries: vec![10, 20], values: vec![0.1, 0.01, 0.001] };
        assert_eq!((p.at(9, 0), p.at(10, 0), p.at(25, 0)), (0.1, 0.01, 0.001));
        let e = LearningRate::ExponentialDecay { initial: 1.0, decay_rate: 0.5, decay_steps: 10 };
        assert!((e.at(20, 0) - 0.25).abs() < 1e-12);
    }

    #[test]
    fn precision_is_f32_or_bf16_and_f32_keeps_the_serialized_form() {
        let e = parse("name: t\nmodels:\n  face: {epochs: 2, precision: bf16}\n").unwrap();
        assert_eq!(e.models.face.as_ref().unwrap().precision, Precision::Bf16);
        assert!(serde_json::to_string(&e).unwrap().contains("\"precision\":\"bf16\""));
        // f32, the default, is left out, so experiments written before the
        // key existed keep their content hash (and their checkpoints resume).
        let f = parse(MINIMAL).unwrap();
        assert_eq!(f.models.face.as_ref().unwrap().precision, Precision::F32);
        assert!(!serde_json::to_string(&f).unwrap().contains("precision"));
        let err = parse("name: t\nmodels:\n  face: {epochs: 2, precision: fp16}\n").unwrap_err().to_string();
        assert!(err.contains("exp.yaml") && err.contains("fp16") && err.contains("`f32`") && err.contains("`bf16`"), "{err}");
    }

    #[test]
    fn devices_accept_a_count_or_all() {
        let e = parse("name: t\nbackend: {kind: tpu, devices: all}\nmodels:\n  face: {epochs: 1, batch: 128}\n").unwrap();
        assert_eq!(e.backend.devices.resolve(8), 8);
        assert!(parse("name: t\nbackend: {devices: some}\nmodels:\n  face: {epochs: 1}\n").is_err());
    }

    #[test]
    fn a_model_can_have_its_own_augmentation() {
        let e =
            parse("name: t\ndata: {augment: {flip: true}}\nmodels:\n  face: {epochs: 1, augment: {blur_sigma: 0.8, contrast: 0.2}}\n  emotion: {epochs: 1}\n")
                .unwrap();
        let face = e.pipeline_config(e.models.face.as_ref().unwrap());
        assert!(!face.augment.flip && face.augment.blur_sigma == 0.8, "the model's own setting replaces data.augment");
        assert!(e.pipeline_config(e.models.emotion.as_ref().unwrap()).augment.flip, "the other model keeps data.augment");
        let err = parse("name: t\nmodels:\n  face: {epochs: 1, augment: {rotate_deg: 90}}\n").unwrap_err().to_string();
        assert!(err.contains("models.face.augment") && err.contains("rotate_deg"), "{err}");
        // Absent, it leaves the experiment's hash as it was.
        let plain = parse(MINIMAL).unwrap();
        assert!(!serde_json::to_string(&plain).unwrap().contains("augment\":null"));
    }
}
