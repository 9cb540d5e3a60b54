//! Checkpoints: named host tensors plus string metadata in safetensors
//! files, written so that a crash never loses the previous checkpoint, and
//! checked on every load so that a corrupted one is never used.
//!
//! Layout of a checkpoint directory:
//! - `ckpt-<step>.safetensors`: a complete checkpoint (step zero-padded to
//!   12 digits so names sort by step);
//! - `ckpt-<step>.safetensors.tmp`: a save in progress or interrupted; never read.
//!
//! Tensors keep their stable dotted names (`block1.conv.weight`,
//! `opt.adam.m.block1.conv.weight`). The safetensors `__metadata__` holds the
//! caller's key/values (epoch, input-pipeline state as JSON, experiment hash,
//! ...) plus keys this module reserves ([`RESERVED_KEYS`]): [`META_STEP`],
//! [`META_TENSOR_ORDER`] (the names in the order they were saved, so a load
//! returns them in that order), and the integrity checks:
//! - [`META_TENSOR_CRC32C`]: the CRC32C (Castagnoli, as TensorFlow's
//!   checkpoints use) of every tensor's bytes, a JSON object name -> 8 hex
//!   digits;
//! - [`META_HEADER_CRC32C`]: the CRC32C of the rest of the header: every other
//!   metadata entry and every tensor's name, type and shape (see
//!   [`header_digest`]). A tensor's place in the file is covered by its own
//!   CRC: data read from the wrong offsets does not match it.
//!
//! A load checks the header first, then every tensor, and names the file and
//! the tensor that fails. [`CheckpointDir::latest`] skips a checkpoint that
//! fails (with a warning) and falls back to the one before; if none is intact
//! it is an error, never a silent fresh start. Checkpoints written before
//! these checks existed carry neither key: they still load, with a warning
//! that they are unverified.
//!
//! This module owns the file format and the directory's rotation; it knows
//! nothing of models or optimizers.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata, SafeTensorError, SafeTensors, TensorView};

use crate::fsutil::{self, FsError};
use crate::tensor::{DType, HostTensor};

/// Metadata key holding the step (decimal).
pub const META_STEP: &str = "step";
/// Metadata key holding the JSON array of tensor names in saved order.
pub const META_TENSOR_ORDER: &str = "tensor_order";
/// Metadata key holding every tensor's CRC32C (JSON object name -> 8 hex digits).
pub const META_TENSOR_CRC32C: &str = "tensor_crc32c";
/// Metadata key holding the CRC32C of the rest of the header (8 hex digits).
pub const META_HEADER_CRC32C: &str = "header_crc32c";
/// The metadata keys this module writes; a caller may not use them.
pub const RESERVED_KEYS: [&str; 4] = [META_STEP, META_TENSOR_ORDER, META_TENSOR_CRC32C, META_HEADER_CRC32C];
/// Conventional keys for callers (not enforced).
pub const META_EPOCH: &str = "epoch";
pub const META_INPUT_PIPELINE: &str = "input_pipeline";
pub const META_EXPERIMENT_HASH: &str = "experiment_hash";
/// The CPU kernels the state was trained with (`models::KernelChoice` as
/// JSON): a resumed run keeps them, so it stays bit-identical.
pub const META_CPU_KERNELS: &str = "cpu_kernels";

/// Why a checkpoint could not be saved or loaded. Every variant names the
/// file or directory, and the tensor or key at fault where there is one.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot {op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid safetensors checkpoint: {source}")]
    Format { path: PathBuf, source: SafeTensorError },
    #[error(
        "{path} is incomplete: its size ({len} bytes) is not what its header describes; the file was cut short (an interrupted write or copy) or its header is corrupted"
    )]
    Incomplete { path: PathBuf, len: usize },
    #[error("{path}: the header fails its checksum (CRC32C {found:08x}, recorded {recorded:08x}): the file is corrupted")]
    HeaderChecksum { path: PathBuf, recorded: u32, found: u32 },
    #[error("{path}: tensor `{name}` fails its checksum (CRC32C {found:08x}, recorded {recorded:08x}): the file is corrupted")]
    TensorChecksum { path: PathBuf, name: String, recorded: u32, found: u32 },
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
    #[error("none of the {} checkpoint(s) in {dir} is intact:{}\nmove them away to start over", problems.len(), problems.iter().map(|p| format!("\n  {p}")).collect::<String>())]
    NoneIntact { dir: PathBuf, problems: Vec<String> },
    #[error(
        "no space left on the disk for checkpoint {path}: it needs {}{}. Free space there, or lower `logging.keep_checkpoints` (now {keep}; every checkpoint kept takes as much)",
        size_text(*needed),
        available.map(|a| format!(" and {} is free", size_text(a))).unwrap_or_default()
    )]
    DiskFull { path: PathBuf, needed: u64, available: Option<u64>, keep: usize, source: std::io::Error },
    #[error("keep_last must be at least 1 (got 0): pruning would delete the checkpoint just saved")]
    KeepNone,
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// What a load could prove about a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Integrity {
    /// Its header and every tensor match their checksums.
    Verified,
    /// It was written before checkpoints carried checksums: nothing could
    /// be checked beyond the safetensors structure.
    NoChecksums,
}

/// One training state: what a resumed run needs to continue exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub step: u64,
    /// Named tensors, in the order the trainer wants them back.
    pub tensors: Vec<(String, HostTensor)>,
    /// Free-form key/values; must not use the [`RESERVED_KEYS`].
    pub metadata: BTreeMap<String, String>,
}

impl Checkpoint {
    /// The tensor called `name`, if any.
    pub fn tensor(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// Encodes the checkpoint as safetensors bytes, checksums included;
    /// `path` only names errors.
    pub fn to_bytes(&self, path: &Path) -> Result<Vec<u8>, CheckpointError> {
        let meta_err = |key: &str, e: serde_json::Error| CheckpointError::Metadata { path: path.to_path_buf(), key: key.to_string(), reason: e.to_string() };
        let mut metadata: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &self.metadata {
            if RESERVED_KEYS.contains(&k.as_str()) {
                return Err(CheckpointError::ReservedKey { key: k.clone() });
            }
            metadata.insert(k.clone(), v.clone());
        }
        let mut seen = std::collections::HashSet::new();
        let mut views = Vec::with_capacity(self.tensors.len());
        let mut crcs = BTreeMap::new();
        let mut layout = BTreeMap::new();
        for (name, t) in &self.tensors {
            if !seen.insert(name.as_str()) {
                return Err(CheckpointError::DuplicateTensor { name: name.clone() });
            }
            let encode = |source| CheckpointError::Encode { path: path.to_path_buf(), name: name.clone(), source };
            let shape: Vec<usize> = t.dims().iter().map(|&d| d as usize).collect();
            let dtype = to_safetensors_dtype(t.dtype());
            crcs.insert(name.as_str(), format!("{:08x}", crc32c::crc32c(t.bytes())));
            layout.insert(name.clone(), (dtype.to_string(), shape.clone()));
            let view = TensorView::new(dtype, shape, t.bytes()).map_err(encode)?;
            views.push((name.clone(), view));
        }
        let order: Vec<&str> = self.tensors.iter().map(|(n, _)| n.as_str()).collect();
        metadata.insert(META_STEP.to_string(), self.step.to_string());
        metadata.insert(META_TENSOR_ORDER.to_string(), serde_json::to_string(&order).map_err(|e| meta_err(META_TENSOR_ORDER, e))?);
        metadata.insert(META_TENSOR_CRC32C.to_string(), serde_json::to_string(&crcs).map_err(|e| meta_err(META_TENSOR_CRC32C, e))?);
        let digest = header_digest(&metadata, &layout).map_err(|e| meta_err(META_HEADER_CRC32C, e))?;
        metadata.insert(META_HEADER_CRC32C.to_string(), format!("{digest:08x}"));
        let metadata: HashMap<String, String> = metadata.into_iter().collect();
        safetensors::serialize(views, Some(metadata)).map_err(|source| CheckpointError::Format { path: path.to_path_buf(), source })
    }

    /// Decodes safetensors bytes and checks them against their checksums;
    /// `path` names errors and the warning for an unchecked file.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Self, CheckpointError> {
        let (checkpoint, integrity) = Self::from_bytes_checked(path, bytes)?;
        warn_if_unchecked(path, integrity);
        Ok(checkpoint)
    }

    /// [`Checkpoint::from_bytes`], saying what could be checked instead of
    /// warning.
    pub fn from_bytes_checked(path: &Path, bytes: &[u8]) -> Result<(Self, Integrity), CheckpointError> {
        let format = |source| CheckpointError::Format { path: path.to_path_buf(), source };
        let meta_err = |key: &str, reason: String| CheckpointError::Metadata { path: path.to_path_buf(), key: key.to_string(), reason };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| match e {
            SafeTensorError::HeaderTooSmall | SafeTensorError::InvalidHeaderLength | SafeTensorError::MetadataIncompleteBuffer => {
                CheckpointError::Incomplete { path: path.to_path_buf(), len: bytes.len() }
            }
            e => format(e),
        })?;
        let mut metadata: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
        // The header first: nothing in it is trusted before it checks out.
        let integrity = match (metadata.remove(META_HEADER_CRC32C), metadata.contains_key(META_TENSOR_CRC32C)) {
            (None, false) => Integrity::NoChecksums,
            (Some(text), true) => {
                let recorded = parse_crc(&text).ok_or_else(|| meta_err(META_HEADER_CRC32C, format!("{text:?} is not a CRC32C (8 hex digits)")))?;
                let found = header_digest(&metadata, &layout_of(&header)).map_err(|e| meta_err(META_HEADER_CRC32C, e.to_string()))?;
                if found != recorded {
                    return Err(CheckpointError::HeaderChecksum { path: path.to_path_buf(), recorded, found });
                }
                Integrity::Verified
            }
            (header_crc, _) => {
                let (has, lacks) = if header_crc.is_some() { (META_HEADER_CRC32C, META_TENSOR_CRC32C) } else { (META_TENSOR_CRC32C, META_HEADER_CRC32C) };
                return Err(meta_err(lacks, format!("missing although `{has}` is there: the header is corrupted")));
            }
        };
        let crcs: BTreeMap<String, String> = match metadata.remove(META_TENSOR_CRC32C) {
            Some(text) => serde_json::from_str(&text).map_err(|e| meta_err(META_TENSOR_CRC32C, format!("not a JSON object of names and checksums: {e}")))?,
            None => BTreeMap::new(),
        };
        let step_text = metadata.remove(META_STEP).ok_or_else(|| meta_err(META_STEP, "missing".into()))?;
        let step = step_text.parse::<u64>().map_err(|e| meta_err(META_STEP, format!("{step_text:?} is not a step number: {e}")))?;
        let order_text = metadata.remove(META_TENSOR_ORDER).ok_or_else(|| meta_err(META_TENSOR_ORDER, "missing".into()))?;
        let order: Vec<String> = serde_json::from_str(&order_text).map_err(|e| meta_err(META_TENSOR_ORDER, format!("not a JSON list of names: {e}")))?;
        let file = SafeTensors::deserialize(bytes).map_err(format)?;
        if file.len() != order.len() {
            return Err(meta_err(META_TENSOR_ORDER, format!("lists {} names but the file holds {} tensors", order.len(), file.len())));
        }
        if integrity == Integrity::Verified && crcs.len() != order.len() {
            return Err(meta_err(META_TENSOR_CRC32C, format!("holds {} checksums for {} tensors", crcs.len(), order.len())));
        }
        let mut tensors = Vec::with_capacity(order.len());
        for name in order {
            let view = file.tensor(&name).map_err(format)?;
            if integrity == Integrity::Verified {
                let text = crcs.get(&name).ok_or_else(|| meta_err(META_TENSOR_CRC32C, format!("no checksum for tensor `{name}`")))?;
                let recorded = parse_crc(text).ok_or_else(|| meta_err(META_TENSOR_CRC32C, format!("{text:?} (tensor `{name}`) is not a CRC32C")))?;
                let found = crc32c::crc32c(view.data());
                if found != recorded {
                    return Err(CheckpointError::TensorChecksum { path: path.to_path_buf(), name, recorded, found });
                }
            }
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
        Ok((Checkpoint { step, tensors, metadata }, integrity))
    }

    /// Reads one checkpoint file and checks it (warning if it carries no
    /// checksums).
    pub fn read(path: &Path) -> Result<Self, CheckpointError> {
        let (checkpoint, integrity) = Self::read_checked(path)?;
        warn_if_unchecked(path, integrity);
        Ok(checkpoint)
    }

    /// [`Checkpoint::read`], saying what could be checked instead of warning.
    pub fn read_checked(path: &Path) -> Result<(Self, Integrity), CheckpointError> {
        let bytes = fs::read(path).map_err(|source| CheckpointError::Io { op: "read", path: path.to_path_buf(), source })?;
        Self::from_bytes_checked(path, &bytes)
    }
}

fn warn_if_unchecked(path: &Path, integrity: Integrity) {
    if integrity == Integrity::NoChecksums {
        tracing::warn!("{} carries no checksums (it was written before emotionet checked checkpoints): loading it unverified", path.display());
    }
}

/// The CRC32C that [`META_HEADER_CRC32C`] records: over the JSON of every
/// other metadata entry (sorted by key) and of every tensor's name, type and
/// shape (sorted by name). Sorted maps make it independent of the order
/// safetensors happens to write the header in.
pub fn header_digest(metadata: &BTreeMap<String, String>, layout: &BTreeMap<String, (String, Vec<usize>)>) -> Result<u32, serde_json::Error> {
    let text = serde_json::to_vec(&(metadata, layout))?;
    Ok(crc32c::crc32c(&text))
}

/// Every tensor's name, type and shape, as the file's header states them.
fn layout_of(header: &Metadata) -> BTreeMap<String, (String, Vec<usize>)> {
    header.tensors().into_iter().map(|(name, info)| (name, (info.dtype.to_string(), info.shape.clone()))).collect()
}

fn parse_crc(text: &str) -> Option<u32> {
    (text.len() == 8).then(|| u32::from_str_radix(text, 16).ok()).flatten()
}

/// `bytes` for a person: "312.4 MiB".
fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
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

/// A checkpoint found by [`CheckpointDir::latest_checked`].
#[derive(Clone, Debug)]
pub struct FoundCheckpoint {
    pub checkpoint: Checkpoint,
    /// The file it was read from.
    pub path: PathBuf,
    pub integrity: Integrity,
    /// Newer checkpoint files that failed their checks, with why, newest first.
    pub skipped: Vec<(PathBuf, String)>,
}

/// A directory of rotating checkpoints.
#[derive(Clone, Debug)]
pub struct CheckpointDir {
    dir: PathBuf,
    keep_last: usize,
}

impl CheckpointDir {
    /// Checkpoints live in `dir` (created on first save); at most
    /// `keep_last` (at least 1) of them are kept.
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
    /// checkpoints up to this step. Returns the checkpoint's path. A crash
    /// at any point leaves every earlier checkpoint intact.
    ///
    /// So that the disk never holds more than `keep_last` checkpoints (one
    /// more for `keep_last` 1), the older ones that would be pruned after
    /// this save are deleted before it, always leaving at least one: lowering
    /// `keep_checkpoints` is then a way out of a full disk.
    pub fn save(&self, checkpoint: &Checkpoint) -> Result<PathBuf, CheckpointError> {
        let path = self.path_for(checkpoint.step);
        let bytes = checkpoint.to_bytes(&path)?;
        fs::create_dir_all(&self.dir).map_err(|source| CheckpointError::Io { op: "create", path: self.dir.clone(), source })?;
        if let Some(before) = checkpoint.step.checked_sub(1) {
            self.prune(before, self.keep_last.saturating_sub(1).max(1))?;
        }
        let mut tmp = path.clone().into_os_string();
        tmp.push(".tmp");
        fsutil::write_via(Path::new(&tmp), &path, &bytes).map_err(|e| self.disk_full(e, &path, bytes.len() as u64))?;
        self.prune(checkpoint.step, self.keep_last)?;
        Ok(path)
    }

    /// A full disk (or quota) while writing becomes [`CheckpointError::DiskFull`],
    /// which says how much is needed and what to do.
    fn disk_full(&self, error: FsError, path: &Path, needed: u64) -> CheckpointError {
        match error {
            FsError::Write { source, .. } | FsError::Sync { source, .. }
                if source.kind() == std::io::ErrorKind::StorageFull || source.raw_os_error() == Some(rustix::io::Errno::DQUOT.raw_os_error()) =>
            {
                let available = rustix::fs::statvfs(&self.dir).ok().map(|s| s.f_bavail.saturating_mul(s.f_frsize));
                CheckpointError::DiskFull { path: path.to_path_buf(), needed, available, keep: self.keep_last, source }
            }
            other => other.into(),
        }
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

    /// The newest checkpoint that passes its checks, `None` when there is
    /// no checkpoint at all. Newer files that fail (corrupted, cut short)
    /// are skipped with a warning naming the file and the tensor, so a
    /// resume falls back to the one before; if every file fails, that is
    /// [`CheckpointError::NoneIntact`].
    pub fn latest(&self) -> Result<Option<Checkpoint>, CheckpointError> {
        Ok(self.latest_checked()?.map(|found| found.checkpoint))
    }

    /// [`CheckpointDir::latest`], with where the checkpoint came from and
    /// what was skipped.
    pub fn latest_checked(&self) -> Result<Option<FoundCheckpoint>, CheckpointError> {
        let mut skipped = Vec::new();
        for step in self.steps()?.into_iter().rev() {
            let path = self.path_for(step);
            let problem = match Checkpoint::read_checked(&path) {
                Ok((c, _)) if c.step != step => format!("{}: it holds step {} but is named for step {step}", path.display(), c.step),
                Ok((checkpoint, integrity)) => {
                    warn_if_unchecked(&path, integrity);
                    if !skipped.is_empty() {
                        tracing::warn!("using {} (step {step}) instead", path.display());
                    }
                    return Ok(Some(FoundCheckpoint { checkpoint, path, integrity, skipped }));
                }
                Err(e) => e.to_string(),
            };
            tracing::warn!("skipping a damaged checkpoint: {problem}");
            skipped.push((path, problem));
        }
        if skipped.is_empty() {
            return Ok(None);
        }
        Err(CheckpointError::NoneIntact { dir: self.dir.clone(), problems: skipped.into_iter().map(|(_, problem)| problem).collect() })
    }

    /// The checkpoint of `step`.
    pub fn load(&self, step: u64) -> Result<Checkpoint, CheckpointError> {
        let path = self.path_for(step);
        if !path.exists() {
            return Err(CheckpointError::NotFound { dir: self.dir.clone(), step });
        }
        Checkpoint::read(&path)
    }

    /// Deletes all but the newest `keep` checkpoints up to step `upto`, and
    /// leftover temporaries of saves older than the newest checkpoint.
    /// Checkpoints after `upto` are left alone: they exist only when a resume
    /// skipped them as damaged, and the run overwrites them when it gets
    /// there.
    fn prune(&self, upto: u64, keep: usize) -> Result<(), CheckpointError> {
        let steps = self.steps()?;
        let newest = steps.last().copied();
        let remove = |path: PathBuf| fs::remove_file(&path).map_err(|source| CheckpointError::Io { op: "remove", path, source });
        for &step in steps.iter().rev().filter(|&&s| s <= upto).skip(keep) {
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
