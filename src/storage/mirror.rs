//! A local output folder kept in step with a bucket prefix.
//!
//! Training writes local files (checkpoints and records whole, through a
//! temporary file and a rename; logs by appending). [`Mirror::sync`] uploads
//! each file that is new or changed since the last sync as one object, so the
//! bucket only ever holds whole files: a checkpoint object is a checkpoint
//! that was complete on disk. Temporary files are never uploaded. Deeper
//! files go first: a folder's files before the files beside it that
//! describe them (a run's checkpoints before its `record.json`, the runs
//! before the campaign's state file), so a bucket caught halfway through a
//! round never has a record that names a checkpoint it lacks, from that round.
//! [`Mirror::restore`] is the other direction, for a fresh machine: every
//! object the local folder lacks is downloaded (whole, through a rename).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::Result;
use super::StorageError;
use super::bucket::Bucket;

/// Names the code base gives its temporary files: `<name>.<pid>-<n>.tmp`
/// (fsutil) and `<name>.json.tmp.<pid>` (the cloud state file).
pub fn is_temporary(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    name.ends_with(".tmp") || name.contains(".tmp.") || name.starts_with(".tmp")
}

pub struct Mirror {
    bucket: Bucket,
    root: PathBuf,
    /// What each file was when it was last uploaded (or downloaded).
    seen: HashMap<PathBuf, (u64, SystemTime)>,
}

/// What one sync did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub uploaded: usize,
    pub bytes: u64,
}

impl Mirror {
    pub fn new(bucket: Bucket, root: impl Into<PathBuf>) -> Self {
        Mirror { bucket, root: root.into(), seen: HashMap::new() }
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Downloads every object whose file is missing locally; returns how many.
    /// Local files win: they are at least as new as anything uploaded from them.
    pub async fn restore(&mut self) -> Result<usize> {
        let mut count = 0;
        for object in self.bucket.list("").await? {
            let rel = PathBuf::from(&object.key);
            let local = self.root.join(&rel);
            if object.key.ends_with('/')
                || object.key == super::LOCK_KEY
                || local.exists()
                || is_temporary(&rel)
                || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                continue;
            }
            self.bucket.get_to_file(&object.key, &local).await?;
            if let Some(stamp) = stamp(&local) {
                self.seen.insert(rel, stamp);
            }
            count += 1;
        }
        Ok(count)
    }

    /// Uploads every file that changed since it was last seen.
    pub async fn sync(&mut self) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        if !self.root.exists() {
            return Ok(report);
        }
        for rel in walk(&self.root)? {
            let local = self.root.join(&rel);
            let Some(now) = stamp(&local) else { continue };
            if self.seen.get(&rel) == Some(&now) {
                continue;
            }
            let key = rel.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>().join("/");
            match self.bucket.put_file(&key, &local).await {
                Ok(_) => {
                    report.uploaded += 1;
                    report.bytes += now.0;
                    self.seen.insert(rel, now);
                }
                // Renamed over or removed between the walk and the upload: the next sync sees the new one.
                Err(StorageError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}

fn stamp(path: &Path) -> Option<(u64, SystemTime)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// Every regular, non-temporary file below `root`, relative to it, sorted.
fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StorageError::io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StorageError::io(&dir, e))?;
            let path = rel.join(entry.file_name());
            let Ok(kind) = entry.file_type() else { continue };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() && !is_temporary(&path) {
                files.push(path);
            }
        }
    }
    // Deepest first, then by name (see the module docs).
    files.sort_by(|a, b| b.components().count().cmp(&a.components().count()).then_with(|| a.cmp(b)));
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_are_recognised() {
        assert!(is_temporary(Path::new("run/checkpoint.safetensors.123-4.tmp")));
        assert!(is_temporary(Path::new("cloud-vms.json.tmp.99")));
        assert!(!is_temporary(Path::new("run/checkpoint-000100.safetensors")));
        assert!(!is_temporary(Path::new("run/metrics.jsonl")));
    }
}
