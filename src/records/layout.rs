//! Where everything lives under an output folder, defined once. Every reader
//! and writer (trainer, orchestrator, eval, report, cloud fetch) asks this
//! module for paths instead of joining names itself.
//!
//! ```text
//! <output>/
//!   campaign-state.json                       the orchestrator's state
//!   report/                                   emotionet report
//!   <experiment>/<model>/<backend>-r<repeat>/ one training run (RunPaths)
//!     record.json  metrics.jsonl  train.log  checkpoints/  tensorboard/
//!   <experiment>/hierarchy/<trained_on>-r<repeat>[-n<images>]/
//!     hierarchy.json  predictions.json  eval.log
//! ```

use std::path::{Path, PathBuf};

use super::{Backend, ModelKind};

/// File names inside a run or evaluation directory.
pub const RECORD_FILE: &str = "record.json";
pub const METRICS_FILE: &str = "metrics.jsonl";
pub const HIERARCHY_FILE: &str = "hierarchy.json";
pub const PREDICTIONS_FILE: &str = "predictions.json";
pub const CHECKPOINT_DIR: &str = "checkpoints";
pub const TENSORBOARD_DIR: &str = "tensorboard";
pub const TRAIN_LOG: &str = "train.log";
pub const EVAL_LOG: &str = "eval.log";
/// The orchestrator's state file, at the top of an output folder.
pub const CAMPAIGN_STATE_FILE: &str = "campaign-state.json";
/// The report's folder, at the top of an output folder.
pub const REPORT_DIR: &str = "report";

/// The layout of one output folder (`--out`, an experiment's `output`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunLayout {
    root: PathBuf,
}

impl RunLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunLayout { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of one training run.
    pub fn run(&self, experiment: &str, model: ModelKind, backend: Backend, repeat: u32) -> RunPaths {
        RunPaths::new(self.root.join(experiment).join(model.as_str()).join(format!("{backend}-r{repeat}")))
    }

    /// The folder of a hierarchy evaluation of the models trained on
    /// `trained_on`; `images` when it ran on a subset of that many images.
    pub fn hierarchy(&self, experiment: &str, trained_on: Backend, repeat: u32, images: Option<usize>) -> PathBuf {
        let mut leaf = format!("{trained_on}-r{repeat}");
        if let Some(n) = images {
            leaf.push_str(&format!("-n{n}"));
        }
        self.root.join(experiment).join("hierarchy").join(leaf)
    }

    pub fn campaign_state(&self) -> PathBuf {
        self.root.join(CAMPAIGN_STATE_FILE)
    }

    pub fn report_dir(&self) -> PathBuf {
        self.root.join(REPORT_DIR)
    }
}

/// The files of one run directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunPaths {
    pub dir: PathBuf,
}

impl RunPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        RunPaths { dir: dir.into() }
    }
    pub fn record(&self) -> PathBuf {
        self.dir.join(RECORD_FILE)
    }
    pub fn metrics(&self) -> PathBuf {
        self.dir.join(METRICS_FILE)
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.dir.join(CHECKPOINT_DIR)
    }
    pub fn tensorboard(&self) -> PathBuf {
        self.dir.join(TENSORBOARD_DIR)
    }
    /// The log a campaign keeps of the child trainer's output.
    pub fn train_log(&self) -> PathBuf {
        self.dir.join(TRAIN_LOG)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_documented_one() {
        let layout = RunLayout::new("/o");
        assert_eq!(layout.run("smoke", ModelKind::Face, Backend::Tpu, 2).dir, PathBuf::from("/o/smoke/face/tpu-r2"));
        assert_eq!(layout.run("smoke", ModelKind::Emotion, Backend::Cpu, 0).record(), PathBuf::from("/o/smoke/emotion/cpu-r0/record.json"));
        assert_eq!(layout.hierarchy("smoke", Backend::Cpu, 0, None), PathBuf::from("/o/smoke/hierarchy/cpu-r0"));
        assert_eq!(layout.hierarchy("smoke", Backend::Cpu, 1, Some(100)), PathBuf::from("/o/smoke/hierarchy/cpu-r1-n100"));
        assert_eq!(layout.campaign_state(), PathBuf::from("/o/campaign-state.json"));
        assert_eq!(layout.report_dir(), PathBuf::from("/o/report"));
    }
}
