//! The arguments `eval` and `predict` share: which experiment's trained
//! face and emotion models to load, from where, and where to run them.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::BackendArgs;
use crate::experiment::BackendConfig;
use crate::experiment::Experiment;
use crate::hierarchy::{self, DEFAULT_THRESHOLD};
use crate::models::{InferenceError, ModelKind};
use crate::pjrt::Backend;

#[derive(Args, Debug)]
pub struct TrainedModelsArgs {
    /// The experiment file (YAML) whose trained face and emotion models to use.
    pub experiment: PathBuf,
    /// Where to run the models (default: the experiment's backend).
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Use the runs trained on this backend (default: --backend).
    #[arg(long, value_enum)]
    pub trained_on: Option<Backend>,
    /// Repeat index of the runs to use.
    #[arg(long, default_value_t = 0)]
    pub repeat: u32,
    /// An image is a face when the face model gives it at least this probability.
    #[arg(long, default_value_t = DEFAULT_THRESHOLD)]
    pub threshold: f32,
    /// Where the runs are, as for `emotionet train --out` (default: the experiment's `output`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// The checked arguments: the experiment and both run folders, which exist.
pub struct TrainedModels {
    pub experiment: Experiment,
    /// Where the models run: the experiment's `backend:` with the overrides.
    pub backend: BackendConfig,
    pub trained_on: Backend,
    pub threshold: f32,
    pub face_dir: PathBuf,
    pub emotion_dir: PathBuf,
}

impl TrainedModelsArgs {
    /// Reads the experiment and finds both runs, before any data or device
    /// is touched; `purpose` names the command in errors.
    pub fn resolve(&self, purpose: &str) -> anyhow::Result<TrainedModels> {
        let mut experiment = Experiment::from_file(&self.experiment)?;
        if let Some(out) = &self.out {
            experiment.output = out.clone();
        }
        let threshold = hierarchy::check_threshold(self.threshold).context("--threshold")?;
        for kind in ModelKind::ALL {
            experiment
                .training(kind)
                .with_context(|| format!("{} has no `models.{kind}` section: {purpose} needs both a face and an emotion model", self.experiment.display()))?;
        }
        let backend = self.backend.resolve(&experiment.backend);
        let trained_on = self.trained_on.unwrap_or(backend.kind);
        let face_dir = experiment.run_paths(ModelKind::Face, trained_on, self.repeat).dir;
        let emotion_dir = experiment.run_paths(ModelKind::Emotion, trained_on, self.repeat).dir;
        for (kind, dir) in [(ModelKind::Face, &face_dir), (ModelKind::Emotion, &emotion_dir)] {
            if !dir.is_dir() {
                return Err(InferenceError::NoRunDir { kind, dir: dir.clone() }.into());
            }
        }
        Ok(TrainedModels { experiment, backend, trained_on, threshold, face_dir, emotion_dir })
    }
}
