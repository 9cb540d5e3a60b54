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
//!
//! The bucket's newest copy wins. The mirror keeps, in the local folder
//! ([`MANIFEST`], never uploaded), which object generation each local file
//! matches. [`Mirror::restore`] trusts a local file only when that
//! generation is still the bucket's; any other file the bucket holds (newer
//! there, or a local copy the mirror knows nothing of: a laptop's old copy,
//! a staging cache read weeks ago) is replaced by the bucket's object, and a
//! file the bucket dropped (its writer's checkpoint retention) is removed
//! here if it did not change since. Every upload carries a precondition: the
//! generation the mirror knows (for a file first seen in the bucket, the
//! one it was seen at), or "does not exist" for a new file, so an upload
//! never replaces an object someone else wrote meanwhile
//! ([`StorageError::PreconditionFailed`] instead).
//!
//! A file this mirror uploaded or downloaded that is later removed locally
//! (old checkpoints the trainer's `keep_checkpoints` retention drops, a
//! report folder replaced as a whole) is deleted from the bucket too, after
//! that round's uploads (so the newer checkpoint that caused the removal is
//! there first), and only if the object is still the generation this mirror
//! saw: the bucket keeps what the local folder keeps, and a fresh machine
//! does not download every checkpoint a long run ever wrote.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::Result;
use super::StorageError;
use super::bucket::{Bucket, Precondition};
use super::lease::Lease;

/// The mirror's knowledge of the bucket, kept at the root of the local
/// folder: for each file, the object generation it matches and its size
/// and modification time when it did. Local to this machine: never uploaded.
pub const MANIFEST: &str = ".emotionet-mirror.json";

/// Names the code base gives its temporary files: `<name>.<pid>-<n>.tmp`
/// (fsutil) and `<name>.json.tmp.<pid>` (the cloud state file).
pub fn is_temporary(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    name.ends_with(".tmp") || name.contains(".tmp.") || name.starts_with(".tmp")
}

/// Files that belong to one machine and never go to a bucket: temporary
/// files, [`crate::lock`]'s lock and holder files (`.emotionet.lock`,
/// `.<name>.emotionet.lock.holder.json`), which only mean something to the
/// processes of the host that wrote them, and the mirror's [`MANIFEST`].
pub fn is_local_only(path: &Path) -> bool {
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    is_temporary(path) || name.contains(crate::lock::LOCK_FILE) || name == MANIFEST
}

/// See [`Mirror::before_download`].
type DownloadHook = Box<dyn FnMut(&str) + Send>;

pub struct Mirror {
    bucket: Bucket,
    root: PathBuf,
    /// What each file was when it was last uploaded or downloaded (or, for
    /// an object only listed so far, nothing), and the object generation
    /// that holds it.
    seen: HashMap<PathBuf, Seen>,
    /// Whether `seen` has every object of the bucket prefix (after a listing).
    listed: bool,
    /// Called with each key [`Mirror::restore`] is about to download (tests
    /// use it to delete an object between the listing and the download).
    before_download: Option<DownloadHook>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    /// (size, modification time); `None`: the object was listed, its local file never matched it.
    stamp: Option<(u64, SystemTime)>,
    generation: i64,
}

/// [`MANIFEST`]'s contents.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    /// The bucket prefix the generations are of.
    source: String,
    files: BTreeMap<String, ManifestEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestEntry {
    generation: i64,
    size: u64,
    /// Nanoseconds since the Unix epoch.
    modified_ns: u64,
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
    /// A mirror of `bucket` in `root`, with what the manifest there says
    /// (when it was written for this same bucket prefix).
    pub fn new(bucket: Bucket, root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let seen = load_manifest(&root, &bucket.url(""));
        Mirror { bucket, root, seen, listed: false, before_download: None }
    }

    /// Calls `hook` with each key [`Mirror::restore`] is about to download,
    /// after the listing: for tests of what happens in between.
    #[doc(hidden)]
    pub fn before_download(&mut self, hook: impl FnMut(&str) + Send + 'static) {
        self.before_download = Some(Box::new(hook));
    }

    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Brings the local folder to what the bucket holds: downloads every
    /// object whose local file is missing or not known to match it (see the
    /// module docs); removes the files the bucket no longer has that did not
    /// change here since they matched it. Returns how many files it downloaded.
    ///
    /// An object listed and then gone before its download (a writer's
    /// checkpoint retention deletes old checkpoints while we read) is
    /// skipped, as if it had not been listed: the bucket no longer has it.
    pub async fn restore(&mut self) -> Result<usize> {
        let mut count = 0;
        let mut present = HashSet::new();
        for object in self.bucket.list("").await? {
            let rel = PathBuf::from(&object.key);
            if object.key.ends_with('/')
                || object.key == super::LOCK_KEY
                || is_local_only(&rel)
                || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                continue;
            }
            present.insert(rel.clone());
            let local = self.root.join(&rel);
            // Ours and current: the local file is that object, or newer work
            // of this machine that the next sync uploads over it.
            if local.exists() && self.seen.get(&rel).is_some_and(|s| s.generation == object.generation && s.stamp.is_some()) {
                continue;
            }
            if let Some(hook) = self.before_download.as_mut() {
                hook(&object.key);
            }
            let generation = match self.bucket.get_to_file(&object.key, &local).await {
                Ok(generation) => generation,
                Err(StorageError::NotFound { url }) => {
                    tracing::debug!("{url} was listed, then deleted before its download (its writer's retention): skipped");
                    present.remove(&rel);
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.seen.insert(rel, Seen { stamp: stamp(&local), generation });
            count += 1;
        }
        let dropped: Vec<(PathBuf, Seen)> = self.seen.iter().filter(|(rel, _)| !present.contains(*rel)).map(|(r, s)| (r.clone(), *s)).collect();
        for (rel, seen) in dropped {
            let local = self.root.join(&rel);
            // Unchanged since it matched an object that is gone now: stale.
            if seen.stamp.is_some() && stamp(&local) == seen.stamp {
                std::fs::remove_file(&local).map_err(|e| StorageError::io(&local, e))?;
            }
            self.seen.remove(&rel);
        }
        self.listed = true;
        self.save_manifest()?;
        Ok(count)
    }

    /// Learns the generation of every object (for the preconditions of the
    /// first uploads) without downloading anything.
    async fn learn(&mut self) -> Result<()> {
        for object in self.bucket.list("").await? {
            let rel = PathBuf::from(&object.key);
            match self.seen.get_mut(&rel) {
                Some(seen) if seen.generation == object.generation => {}
                // Someone else wrote it since the manifest: upload ours over that generation (if ours is here).
                Some(seen) => *seen = Seen { stamp: None, generation: object.generation },
                None => {
                    self.seen.insert(rel, Seen { stamp: None, generation: object.generation });
                }
            }
        }
        self.listed = true;
        Ok(())
    }

    /// Uploads every file that changed since it was last seen, each with
    /// its precondition. With a `lease` (a writer's output), each upload and
    /// each delete is vouched for first and runs under [`Lease::guard`]:
    /// none starts, and none is still running or retried, once the lease
    /// cannot be vouched for.
    pub async fn sync(&mut self, lease: Option<&mut Lease>) -> Result<SyncReport> {
        let mut report = SyncReport::default();
        if !self.root.exists() {
            return Ok(report);
        }
        if !self.listed {
            self.learn().await?;
        }
        let files = walk(&self.root)?;
        let result = self.upload_and_prune(&files, &mut report, lease).await;
        if report.uploaded > 0 || report.deleted > 0 {
            self.save_manifest()?;
        }
        result.map(|()| report)
    }

    async fn upload_and_prune(&mut self, files: &[PathBuf], report: &mut SyncReport, mut lease: Option<&mut Lease>) -> Result<()> {
        for rel in files {
            let local = self.root.join(rel);
            let Some(now) = stamp(&local) else { continue };
            let known = self.seen.get(rel).copied();
            if known.and_then(|s| s.stamp) == Some(now) {
                continue;
            }
            let precondition = match known {
                Some(seen) => Precondition::GenerationIs(seen.generation),
                None => Precondition::DoesNotExist,
            };
            let key = key_of(rel);
            let upload = self.bucket.put_file_if(&key, &local, precondition);
            match under(lease.as_deref_mut(), upload).await {
                Ok(generation) => {
                    report.uploaded += 1;
                    report.bytes += now.0;
                    self.seen.insert(rel.clone(), Seen { stamp: Some(now), generation });
                }
                // Renamed over or removed between the walk and the upload: the next sync sees the new one.
                Err(StorageError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        let present: HashSet<&PathBuf> = files.iter().collect();
        // Only files that were here once: an object merely listed is not ours to delete.
        let mut gone: Vec<(PathBuf, i64)> =
            self.seen.iter().filter(|(rel, s)| s.stamp.is_some() && !present.contains(rel)).map(|(rel, s)| (rel.clone(), s.generation)).collect();
        gone.sort();
        for (rel, generation) in gone {
            // Removed between the walk and now, or renamed away for good: either way not here now.
            if self.root.join(&rel).exists() {
                continue;
            }
            let key = key_of(&rel);
            match under(lease.as_deref_mut(), self.bucket.delete(&key, generation)).await {
                Ok(()) => report.deleted += 1,
                // Someone wrote a newer object under that name: it is theirs, keep it.
                Err(StorageError::PreconditionFailed { .. }) => {}
                Err(e) => return Err(e),
            }
            self.seen.remove(&rel);
        }
        Ok(())
    }

    /// Writes [`MANIFEST`] (whole, through a rename) with what is known to match.
    fn save_manifest(&self) -> Result<()> {
        if !self.root.exists() {
            return Ok(());
        }
        let files = self
            .seen
            .iter()
            .filter_map(|(rel, s)| {
                let (size, modified) = s.stamp?;
                let modified_ns = modified.duration_since(UNIX_EPOCH).ok()?.as_nanos().try_into().ok()?;
                Some((key_of(rel), ManifestEntry { generation: s.generation, size, modified_ns }))
            })
            .collect();
        let manifest = Manifest { source: self.bucket.url(""), files };
        let path = self.root.join(MANIFEST);
        let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| StorageError::io(&path, std::io::Error::other(e)))?;
        crate::fsutil::write_atomic(&path, &bytes).map_err(|e| StorageError::io(&path, std::io::Error::other(e.to_string())))
    }
}

/// `work` (one upload or delete), vouched for and guarded by `lease` if there is one.
async fn under<T>(lease: Option<&mut Lease>, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    match lease {
        Some(lease) => {
            lease.vouch().await?;
            lease.guard(work).await
        }
        None => work.await,
    }
}

/// What the manifest in `root` knows, if it was written for `source`; an
/// unreadable one knows nothing (every file is then checked against the bucket).
fn load_manifest(root: &Path, source: &str) -> HashMap<PathBuf, Seen> {
    let path = root.join(MANIFEST);
    let Ok(bytes) = std::fs::read(&path) else { return HashMap::new() };
    let manifest: Manifest = match serde_json::from_slice(&bytes) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!("ignoring {}: {e}; every local file is checked against the bucket", path.display());
            return HashMap::new();
        }
    };
    if manifest.source != source {
        return HashMap::new();
    }
    manifest
        .files
        .into_iter()
        .map(|(key, e)| {
            let stamp = (e.size, UNIX_EPOCH + Duration::from_nanos(e.modified_ns));
            (PathBuf::from(key), Seen { stamp: Some(stamp), generation: e.generation })
        })
        .collect()
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
