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
//!
//! A file this mirror uploaded or downloaded that is later removed locally
//! (old checkpoints the trainer's `keep_checkpoints` retention drops, a
//! report folder replaced as a whole) is deleted from the bucket too, after
//! that round's uploads (so the newer checkpoint that caused the removal is
//! there first), and only if the object is still the generation this mirror
//! saw: the bucket keeps what the local folder keeps, and a fresh machine
//! does not download every checkpoint a long run ever wrote.

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

/// Files that belong to one machine and never go to a bucket: temporary
/// files, and [`crate::lock`]'s lock and holder files (`.emotionet.lock`,
/// `.<name>.emotionet.lock.holder.json`), which only mean something to the
/// processes of the host that wrote them.
pub fn is_local_only(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    is_temporary(path) || name.contains(crate::lock::LOCK_FILE)
}

pub struct Mirror {
    bucket: Bucket,
    root: PathBuf,
    /// What each file was when it was last uploaded (or downloaded), and
    /// the object generation that holds it.
    seen: HashMap<PathBuf, Seen>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    stamp: (u64, SystemTime),
    generation: i64,
}

/// What one sync did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub uploaded: usize,
    pub bytes: u64,
    /// Objects deleted because their local file was removed.
    pub deleted: usize,
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
                || is_local_only(&rel)
                || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                continue;
            }
            self.bucket.get_to_file(&object.key, &local).await?;
            if let Some(stamp) = stamp(&local) {
                self.seen.insert(rel, Seen { stamp, generation: object.generation });
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
        let files = walk(&self.root)?;
        for rel in &files {
            let local = self.root.join(rel);
            let Some(now) = stamp(&local) else { continue };
            if self.seen.get(rel).map(|s| s.stamp) == Some(now) {
                continue;
            }
            match self.bucket.put_file(&key_of(rel), &local).await {
                Ok(generation) => {
                    report.uploaded += 1;
                    report.bytes += now.0;
                    self.seen.insert(rel.clone(), Seen { stamp: now, generation });
                }
                // Renamed over or removed between the walk and the upload: the next sync sees the new one.
                Err(StorageError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let present: std::collections::HashSet<&PathBuf> = files.iter().collect();
        let mut gone: Vec<(PathBuf, i64)> = self.seen.iter().filter(|(rel, _)| !present.contains(rel)).map(|(rel, s)| (rel.clone(), s.generation)).collect();
        gone.sort();
        for (rel, generation) in gone {
            // Removed between the walk and now, or renamed away for good: either way not here now.
            if self.root.join(&rel).exists() {
                continue;
            }
            match self.bucket.delete(&key_of(&rel), generation).await {
                Ok(()) => report.deleted += 1,
                // Someone wrote a newer object under that name: it is theirs, keep it.
                Err(StorageError::PreconditionFailed { .. }) => {}
                Err(e) => return Err(e),
            }
            self.seen.remove(&rel);
        }
        Ok(report)
    }
}

/// The object key of a relative path: its parts joined with `/`.
fn key_of(rel: &Path) -> String {
    rel.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>().join("/")
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
            } else if kind.is_file() && !is_local_only(&path) {
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

    #[test]
    fn lock_files_stay_on_their_machine() {
        assert!(is_local_only(Path::new("face/cpu-r0/.emotionet.lock")));
        assert!(is_local_only(Path::new("face/cpu-r0/.emotionet.lock.holder.json")));
        assert!(is_local_only(Path::new(".report.emotionet.lock")));
        assert!(is_local_only(Path::new("run/checkpoint.safetensors.123-4.tmp")));
        assert!(!is_local_only(Path::new("face/cpu-r0/record.json")));
    }
}
