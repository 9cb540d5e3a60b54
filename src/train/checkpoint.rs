//! Checkpoints: named host tensors plus string metadata in safetensors
//! files, written so that a crash never loses the previous checkpoint.
//!
//! Layout of a checkpoint directory:
//! - `ckpt-<step>.safetensors`: a complete checkpoint (step zero-padded to
//!   12 digits so names sort by step);
//! - `ckpt-<step>.safetensors.tmp`: a save in progress or interrupted; never read.
//!
//! Tensors keep their stable dotted names (`block1.conv.weight`,
//! `opt.adam.m.block1.conv.weight`). The safetensors `__metadata__` holds the
//! caller's key/values (epoch, input-pipeline state as JSON, experiment hash,
//! ...) plus two keys this module reserves: [`META_STEP`] and
//! [`META_TENSOR_ORDER`] (the names in the order they were saved, so a load
//! returns them in that order). This module owns the file format and the
//! directory's rotation; it knows nothing of models or optimizers.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, SafeTensorError, SafeTensors, TensorView};

use crate::fsutil::{self, FsError};
use crate::tensor::{DType, HostTensor};

/// Metadata key holding the step (decimal).
pub const META_STEP: &str = "step";
/// Metadata key holding the JSON array of tensor names in saved order.
pub const META_TENSOR_ORDER: &str = "tensor_order";
/// Conventional keys for callers (not enforced).
pub const META_EPOCH: &str = "epoch";
pub const META_INPUT_PIPELINE: &str = "input_pipeline";
pub const META_EXPERIMENT_HASH: &str = "experiment_hash";

/// Why a checkpoint could not be saved or loaded. Every variant names the
/// file or directory, and the tensor or key at fault where there is one.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid safetensors checkpoint: {source}")]
    Format { path: PathBuf, source: SafeTensorError },
    #[error("cannot encode tensor `{name}` for {path}: {source}")]
    Encode { path: PathBuf, name: String, source: SafeTensorError },
    #[error("{path}: metadata `{key}`: {reason}")]
    Metadata { path: PathBuf, key: String, reason: String },
    #[error("metadata key `{key}` is reserved by the checkpoint format; use another name")]
    ReservedKey { key: String },
    #[error("tensor name `{name}` appears twice in the checkpoint")]
    DuplicateTensor { name: String },
    #[error("{path}: tensor `{name}` has type {dtype:?}, which emotionet checkpoints do not use")]
    UnsupportedDType { path: PathBuf, name: String, dtype: Dtype },
    #[error("{path}: tensor `{name}`: {reason}")]
    Tensor { path: PathBuf, name: String, reason: String },
    #[error("no checkpoint for step {step} in {dir}")]
    NotFound { dir: PathBuf, step: u64 },
    #[error("keep_last must be at least 1 (got 0): pruning would delete the checkpoint just saved")]
    KeepNone,
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// One training state: what a resumed run needs to continue exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub step: u64,
    /// Named tensors, in the order the trainer wants them back.
    pub tensors: Vec<(String, HostTensor)>,
    /// Free-form key/values; must not use [`META_STEP`] or [`META_TENSOR_ORDER`].
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// The tensor called `name`, if any.
    pub fn tensor(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Encodes the checkpoint as safetensors bytes; `path` only names errors.
    pub fn to_bytes(&self, path: &Path) -> Result<Vec<u8>, CheckpointError> {
        let mut metadata: HashMap<String, String> = HashMap::new();
        for (k, v) in &self.metadata {
            if k == META_STEP || k == META_TENSOR_ORDER {
                return Err(CheckpointError::ReservedKey { key: k.clone() });
            }
            metadata.insert(k.clone(), v.clone());
        }
        let mut seen = std::collections::HashSet::new();
        let mut views = Vec::with_capacity(self.tensors.len());
        for (name, t) in &self.tensors {
            if !seen.insert(name.as_str()) {
                return Err(CheckpointError::DuplicateTensor { name: name.clone() });
            }
            let encode = |source| CheckpointError::Encode { path: path.to_path_buf(), name: name.clone(), source };
            let shape: Vec<usize> = t.dims().iter().map(|&d| d as usize).collect();
            let view = TensorView::new(to_safetensors_dtype(t.dtype()), shape, t.bytes()).map_err(encode)?;
            views.push((name.clone(), view));
        }
        let order: Vec<&str> = self.tensors.iter().map(|(n, _)| n.as_str()).collect();
        metadata.insert(META_STEP.to_string(), self.step.to_string());
        metadata.insert(
            META_TENSOR_ORDER.to_string(),
            serde_json::to_string(&order).map_err(|e| CheckpointError::Metadata {
                path: path.to_path_buf(),
                key: META_TENSOR_ORDER.into(),
                reason: e.to_string(),
            })?,
        );
        safetensors::serialize(views, Some(metadata)).map_err(|source| CheckpointError::Format { path: path.to_path_buf(), source })
    }

    /// Decodes safetensors bytes; `path` only names errors.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, CheckpointError> {
        let format = |source| CheckpointError::Format { path: path.to_path_buf(), source };
        let meta_err = |key: &str, reason: String| CheckpointError::Metadata { path: path.to_path_buf(), key: key.to_string(), reason };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(format)?;
        let mut metadata: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
        let step_text = metadata.remove(META_STEP).ok_or_else(|| meta_err(META_STEP, "missing".into()))?;
        let step = step_text.parse::<u64>().map_err(|e| meta_err(META_STEP, format!("{step_text:?} is not a step number: {e}")))?;
        let order_text = metadata.remove(META_TENSOR_ORDER).ok_or_else(|| meta_err(META_TENSOR_ORDER, "missing".into()))?;
        let order: Vec<String> = serde_json::from_str(&order_text).map_err(|e| meta_err(META_TENSOR_ORDER, format!("not a JSON list of names: {e}")))?;
        let file = SafeTensors::deserialize(bytes).map_err(format)?;
        if file.len() != order.len() {
            return Err(meta_err(META_TENSOR_ORDER, format!("lists {} names but the file holds {} tensors", order.len(), file.len())));
        }
        let mut tensors = Vec::with_capacity(order.len());
        for name in order {
            let view = file.tensor(&name).map_err(format)?;
            let dtype = from_safetensors_dtype(view.dtype()).ok_or_else(|| CheckpointError::UnsupportedDType {
                path: path.to_path_buf(),
                name: name.clone(),
                dtype: view.dtype(),
            })?;
            let dims: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
            let tensor = HostTensor::from_bytes(dtype, &dims, view.data().to_vec()).map_err(|e| CheckpointError::Tensor {
                path: path.to_path_buf(),
                name: name.clone(),
                reason: e.to_string(),
            })?;
            tensors.push((name, tensor));
        }
        Ok(Checkpoint { step, tensors, metadata })
    }

    /// Reads one checkpoint file.
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let bytes = fs::read(path).map_err(|source| CheckpointError::Io { op: "read", path: path.to_path_buf(), source })?;
        Self::from_bytes(path, &bytes)
    }
}

fn to_safetensors_dtype(d: DType) -> Dtype {
    match d {
        DType::F32 => Dtype::F32,
        DType::F64 => Dtype::F64,
        DType::BF16 => Dtype::BF16,
        DType::I32 => Dtype::I32,
        DType::U32 => Dtype::U32,
        DType::Pred => Dtype::BOOL,
    }
}

fn from_safetensors_dtype(d: Dtype) -> Option<DType> {
    match d {
        Dtype::F32 => Some(DType::F32),
        Dtype::F64 => Some(DType::F64),
        Dtype::BF16 => Some(DType::BF16),
        Dtype::I32 => Some(DType::I32),
        Dtype::U32 => Some(DType::U32),
        Dtype::BOOL => Some(DType::Pred),
        _ => None,
    }
}

/// A directory of rotating checkpoints.
#[derive(Clone, Debug)]
pub struct CheckpointDir {
    dir: PathBuf,
    keep_last: usize,
}

impl CheckpointDir {
    /// Checkpoints live in `dir` (created on first save); `save` keeps the
    /// newest `keep_last` (at least 1).
    pub fn new(dir: impl Into<PathBuf>, keep_last: usize) -> Result<Self, CheckpointError> {
        if keep_last == 0 {
            return Err(CheckpointError::KeepNone);
        }
        Ok(CheckpointDir { dir: dir.into(), keep_last })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file a checkpoint of `step` is saved to.
    pub fn path_for(&self, step: u64) -> PathBuf {
        self.dir.join(format!("ckpt-{step:012}.safetensors"))
    }

    /// Writes `ckpt-<step>.safetensors.tmp`, syncs it, renames it into place,
    /// syncs the directory, then deletes all but the newest `keep_last`
    /// checkpoints. Returns the checkpoint's path. A crash at any point
    /// leaves every earlier checkpoint intact.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<PathBuf, CheckpointError> {
        let path = self.path_for(checkpoint.step);
        let bytes = checkpoint.to_bytes(&path)?;
        fs::create_dir_all(&self.dir).map_err(|source| CheckpointError::Io { op: "create", path: self.dir.clone(), source })?;
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        fsutil::write_via(Path::new(&tmp), &path, &bytes)?;
        self.prune()?;
        Ok(path)
    }

    /// Steps of the complete checkpoint files present, ascending. Temporary
    /// files and other names are ignored.
    pub fn steps(&self) -> Result<Vec<u64>, CheckpointError> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(CheckpointError::Io { op: "list", path: self.dir.clone(), source }),
        };
        let mut steps = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| CheckpointError::Io { op: "list", path: self.dir.clone(), source })?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(step) = name.strip_prefix("ckpt-").and_then(|s| s.strip_suffix(".safetensors")).and_then(|s| s.parse::<u64>().ok()) {
                steps.push(step);
            }
        }
        steps.sort_unstable();
        Ok(steps)
    }

    /// The newest checkpoint that reads back whole. Files that do not
    /// (truncated by a crash, corrupted) are skipped with a warning, so a
    /// resume falls back to the one before.
    pub fn latest(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        for step in self.steps()?.into_iter().rev() {
            match Checkpoint::read(&self.path_for(step)) {
                Ok(c) if c.step == step => return Ok(Some(c)),
                Ok(c) => tracing::warn!("skipping {}: it says step {} but is named for step {step}", self.path_for(step).display(), c.step),
                Err(e) => tracing::warn!("skipping unreadable checkpoint: {e}"),
            }
        }
        Ok(None)
    }

    /// The checkpoint of `step`.
    pub fn load(&self, step: u64) -> Result<Checkpoint, CheckpointError> {
        let path = self.path_for(step);
        if !path.exists() {
            return Err(CheckpointError::NotFound { dir: self.dir.clone(), step });
        }
        Checkpoint::read(&path)
    }

    /// Deletes all but the newest `keep_last` checkpoints, and leftover
    /// temporaries of saves older than the newest checkpoint.
    fn prune(&self) -> Result<(), CheckpointError> {
        let steps = self.steps()?;
        let newest = steps.last().copied();
        let remove = |path: PathBuf| fs::remove_file(&path).map_err(|source| CheckpointError::Io { op: "remove", path, source });
        for &step in steps.iter().rev().skip(self.keep_last) {
            remove(self.path_for(step))?;
        }
        if let (Some(newest), Ok(entries)) = (newest, fs::read_dir(&self.dir)) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(name) = name.to_str() else { continue };
                let tmp_step = name.strip_prefix("ckpt-").and_then(|s| s.strip_suffix(".safetensors.tmp")).and_then(|s| s.parse::<u64>().ok());
                if tmp_step.is_some_and(|s| s < newest) {
                    remove(entry.path())?;
                }
            }
        }
        Ok(())
    }
}
