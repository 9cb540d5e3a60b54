//! Data sources in a Cloud Storage bucket. Wherever a data config names a
//! folder or a `.npy` file (`lfw`, `sun397`, `kdef`, `akdef`, `folders`,
//! `npy[].path`), it may name `gs://BUCKET/PREFIX` instead. Before anything
//! reads it, the prefix (or the one `.npy` object) is copied into the cache
//! folder, `CACHE_DIR/gcs/BUCKET/PREFIX`, and the config is rewritten to
//! point there; the loaders, the cache key and the pipeline then see an
//! ordinary local folder.
//!
//! The copy is incremental and survives a kill:
//! - each object is downloaded whole to a temporary name and renamed into
//!   place ([`crate::fsutil::write_atomic`]); its length is checked against
//!   the listing, and Google's client checks the object's CRC32C on the
//!   way (a full read is validated against the checksum the service sends);
//! - after each object, one line (key, generation, size, CRC32C of the local
//!   bytes) is appended to the copy's journal, `<local>.emotionet-sync`,
//!   next to the folder: a copy killed half-way resumes with the objects the
//!   journal names, and a torn last line is ignored;
//! - an object whose generation and size are those in the journal, with a
//!   local file of that size, is not downloaded again; a changed object (a
//!   new generation) is; a local file no object has any more (or the
//!   temporary left by a kill) is removed, so the folder is exactly the prefix;
//! - at the end the journal is rewritten whole, one line per object.
//!
//! `data.prepared: gs://BUCKET/PREFIX` names a prepared set instead of raw
//! sources ([`locate_prepared`]): the one `prep-TASK-KEY.emods` object of the
//! task is copied the same way, alone, into `CACHE_DIR/gcs/BUCKET/PREFIX`.
//!
//! It owns the local copies and their journals; it does not touch the
//! prepared-set cache files (see `cache`), nor decide what a folder holds
//! (the loaders do).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::{DataConfig, SourceConfig};
use super::error::{DataError, Result};
use crate::storage::{Bucket, GcsPath, Location, ObjectInfo, StorageConfig, StorageError};

/// Downloads in flight at once.
const PARALLEL_DOWNLOADS: usize = 16;
/// The journal's suffix, next to the local copy.
const JOURNAL_SUFFIX: &str = ".emotionet-sync";

/// What the copy of one source did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceCopy {
    /// `gs://BUCKET/PREFIX` as the config wrote it.
    pub url: String,
    /// Where it now is.
    pub local: PathBuf,
    /// Objects in the source.
    pub objects: usize,
    /// Objects downloaded this time (new or changed).
    pub downloaded: usize,
    /// Bytes downloaded this time.
    pub bytes: u64,
    /// Local files removed because no object has them (any more).
    pub removed: usize,
}

/// A config with its bucket sources copied and rewritten to local paths.
#[derive(Clone, Debug)]
pub struct Localized {
    pub config: DataConfig,
    pub copies: Vec<SourceCopy>,
}

/// `path` as a bucket location, if it is one (`gs://...`).
pub fn bucket_path(path: &Path) -> Option<&str> {
    path.to_str().filter(|s| s.starts_with("gs://"))
}

/// Every path of `config` that names a bucket.
pub fn bucket_sources(config: &DataConfig) -> Vec<String> {
    let mut out = Vec::new();
    visit_paths(&mut config.clone(), &mut |path, _| {
        if let Some(url) = bucket_path(path) {
            out.push(url.to_string());
        }
    });
    out
}

/// Copies `config`'s bucket sources through the real service with
/// Application Default Credentials, or the emulator `STORAGE_EMULATOR_HOST`
/// names (see [`StorageConfig::from_env`]); a config without any is
/// returned as it is, without touching the network.
pub fn localize(config: &DataConfig) -> Result<Localized> {
    if bucket_sources(config).is_empty() {
        return Ok(Localized { config: config.clone(), copies: Vec::new() });
    }
    let storage = StorageConfig::from_env(|| {
        crate::google::auth::credentials(&crate::google::AuthConfig::default()).map_err(|e| StorageError::Credentials { message: e.to_string() })
    })
    .map_err(|e| DataError::Remote { url: bucket_sources(config).join(", "), local: config.cache_dir.join("gcs"), message: e.to_string() })?;
    localize_with(config, storage)
}

/// [`localize`] with the storage endpoint and credentials given.
pub fn localize_with(config: &DataConfig, storage: StorageConfig) -> Result<Localized> {
    let mut out = config.clone();
    // (url, single object?, local path)
    let mut wanted: Vec<(String, bool, PathBuf)> = Vec::new();
    let root = config.cache_dir.join("gcs");
    let mut bad: Option<DataError> = None;
    visit_paths(&mut out, &mut |path, single| {
        let Some(url) = bucket_path(path).map(str::to_string) else { return };
        match Location::parse(&url) {
            Ok(Location::Gcs(gcs)) if !(single && gcs.prefix.is_empty()) => {
                let local = root.join(&gcs.bucket).join(&gcs.prefix);
                if !wanted.iter().any(|(u, _, _)| *u == url) {
                    wanted.push((url, single, local.clone()));
                }
                *path = local;
            }
            // The first bad one is reported.
            Ok(_) => {
                bad.get_or_insert(DataError::config("source", &url, "gs://BUCKET/PATH/TO/FILE.npy: a .npy source names one object"));
            }
            Err(e) => {
                bad.get_or_insert(DataError::config("source", &url, e.to_string()));
            }
        }
    });
    if let Some(e) = bad {
        return Err(e);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().map_err(|e| DataError::io(&root, e))?;
    let mut copies = Vec::new();
    for (url, single, local) in wanted {
        let copy = runtime.block_on(copy_source(&url, single, &local, storage.clone()));
        copies.push(copy.map_err(|message| DataError::Remote { url: url.clone(), local: local.clone(), message })?);
    }
    Ok(Localized { config: out, copies })
}

/// Whether `name` is a prepared set's cache file for `task` (`prep-TASK-KEY.emods`).
fn is_prepared_for(name: &str, task: &str) -> bool {
    name.strip_prefix("prep-")
        .and_then(|rest| rest.strip_prefix(task))
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|key| key.strip_suffix(".emods").is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric())))
}

/// The one prepared set for `task` that `at` holds (a local folder, or a
/// `gs://BUCKET/PREFIX` that `data prep --out` filled): its local file, and
/// for a bucket the copy that brought it into `CACHE_DIR/gcs/BUCKET/PREFIX`
/// (one object, with the journal's generation check: unchanged, it is not
/// downloaded again). None, or several, is an error naming what was found.
pub fn locate_prepared(at: &Path, task: &str, cache_dir: &Path) -> Result<(PathBuf, Vec<SourceCopy>)> {
    let pick = |names: Vec<String>, place: &str| -> Result<String> {
        let found: Vec<String> = names.into_iter().filter(|n| is_prepared_for(n, task)).collect();
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(DataError::config(
                "prepared",
                place,
                format!(
                    "a folder or gs:// prefix holding a prepared set of the {task} task (prep-{task}-KEY.emods, from `emotionet data prep EXPERIMENT.yaml --task {task} --out {place}`); it holds none"
                ),
            )),
            several => Err(DataError::config(
                "prepared",
                place,
                format!(
                    "a folder or gs:// prefix holding one prepared set of the {task} task; it holds {}: {} (keep one there)",
                    several.len(),
                    several.join(", ")
                ),
            )),
        }
    };
    let Some(url) = bucket_path(at) else {
        let entries = std::fs::read_dir(at).map_err(|e| DataError::io(at, e))?;
        let names = entries.flatten().filter_map(|e| e.file_name().to_str().map(str::to_string)).collect();
        let name = pick(names, &at.display().to_string())?;
        return Ok((at.join(name), Vec::new()));
    };
    let url = url.trim_end_matches('/').to_string();
    let gcs = match Location::parse(&url) {
        Ok(Location::Gcs(gcs)) => gcs,
        Ok(_) => return Err(DataError::config("prepared", &url, "gs://BUCKET/PREFIX")),
        Err(e) => return Err(DataError::config("prepared", &url, e.to_string())),
    };
    let local_dir = cache_dir.join("gcs").join(&gcs.bucket).join(&gcs.prefix);
    let remote = |message: String| DataError::Remote { url: url.clone(), local: local_dir.clone(), message };
    let storage = StorageConfig::from_env(|| {
        crate::google::auth::credentials(&crate::google::AuthConfig::default()).map_err(|e| StorageError::Credentials { message: e.to_string() })
    })
    .map_err(|e| remote(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| DataError::io(&local_dir, e))?;
    let names: Vec<String> = runtime
        .block_on(async {
            let bucket = Bucket::connect(&gcs, storage.clone()).await?;
            bucket.list("").await
        })
        .map_err(|e| remote(e.to_string()))?
        .into_iter()
        .map(|o| o.key)
        .filter(|k| !k.contains('/'))
        .collect();
    let name = pick(names, &url)?;
    let file = local_dir.join(&name);
    let object = format!("{url}/{name}");
    let copy = runtime.block_on(copy_source(&object, true, &file, storage)).map_err(|message| DataError::Remote {
        url: object.clone(),
        local: file.clone(),
        message,
    })?;
    Ok((file, vec![copy]))
}

/// Calls `f` on every data path of the config, with whether it names one
/// file (`.npy`) rather than a folder.
fn visit_paths(config: &mut DataConfig, f: &mut dyn FnMut(&mut PathBuf, bool)) {
    let mut real = |r: &mut super::config::RealSources| {
        for p in [&mut r.lfw, &mut r.sun397, &mut r.kdef, &mut r.akdef].into_iter().flatten() {
            f(p, false);
        }
        for p in &mut r.folders {
            f(p, false);
        }
        for n in &mut r.npy {
            f(&mut n.path, true);
        }
    };
    match &mut config.source {
        SourceConfig::Real(r) => real(r),
        SourceConfig::Mixed(parts) => {
            for part in parts {
                if let Some(r) = &mut part.real {
                    real(r);
                }
            }
        }
        SourceConfig::Synthetic(_) => {}
    }
}

/// One line of a journal: an object as it was copied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    key: String,
    generation: i64,
    size: u64,
    crc32c: u32,
}

fn journal_path(local: &Path) -> PathBuf {
    let mut name = local.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(JOURNAL_SUFFIX);
    crate::fsutil::parent_dir(local).join(name)
}

/// The journal's entries by key (later lines win; unreadable lines, such as
/// one torn by a kill, are skipped).
fn read_journal(path: &Path) -> HashMap<String, Entry> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str::<Entry>(l).ok()).map(|e| (e.key.clone(), e)).collect()
}

/// Copies one source; errors are messages naming what failed.
async fn copy_source(url: &str, single: bool, local: &Path, storage: StorageConfig) -> std::result::Result<SourceCopy, String> {
    let Ok(Location::Gcs(gcs)) = Location::parse(url) else { return Err(format!("{url} is not a gs:// location")) };
    // A single object is listed from its folder, by its name.
    let (listed_at, only) = if single {
        let (parent, name) = gcs.prefix.rsplit_once('/').unwrap_or(("", gcs.prefix.as_str()));
        (GcsPath { bucket: gcs.bucket.clone(), prefix: parent.to_string() }, Some(name.to_string()))
    } else {
        (gcs.clone(), None)
    };
    let explain = |e: StorageError| -> String {
        match &e {
            StorageError::Service { status: Some(403 | 401), .. } => format!(
                "{e}. The credentials in use may not read this bucket: grant them roles/storage.objectViewer on it \
                 (storage.objects.list and storage.objects.get), or name a bucket they can read"
            ),
            _ => e.to_string(),
        }
    };
    let bucket = Bucket::connect(&listed_at, storage).await.map_err(explain)?;
    let objects: Vec<ObjectInfo> = match &only {
        Some(name) => bucket.list(name).await.map_err(explain)?.into_iter().filter(|o| o.key == *name).collect(),
        None => bucket.list("").await.map_err(explain)?.into_iter().filter(|o| !o.key.ends_with('/')).collect(),
    };
    if objects.is_empty() {
        return Err(match only {
            Some(_) => format!("{url} does not exist (or the credentials in use cannot see it)"),
            None => format!("no objects under {url}/ (check the bucket and prefix, e.g. `gcloud storage ls {url}/`)"),
        });
    }
    // Each object's local file; keys that are no safe relative path are refused.
    let mut targets: Vec<(ObjectInfo, PathBuf)> = Vec::new();
    for o in objects {
        let file = if only.is_some() {
            local.to_path_buf()
        } else {
            let rel =
                safe_relative(&o.key).ok_or_else(|| format!("{url}/{}: an object name that is no safe relative path ('..', '.' or an empty part)", o.key))?;
            local.join(rel)
        };
        targets.push((o, file));
    }
    let journal_file = journal_path(local);
    let journal = read_journal(&journal_file);
    let fresh = |o: &ObjectInfo, file: &Path| {
        journal.get(&o.key).is_some_and(|e| e.generation == o.generation && e.size == o.size)
            && std::fs::metadata(file).is_ok_and(|m| m.is_file() && m.len() == o.size)
    };
    let todo: Vec<(ObjectInfo, PathBuf)> = targets.iter().filter(|(o, f)| !fresh(o, f)).cloned().collect();
    let parent = crate::fsutil::parent_dir(&journal_file);
    std::fs::create_dir_all(&parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&journal_file)
        .map_err(|e| format!("cannot open the copy's journal {}: {e}", journal_file.display()))?;
    let bucket = Arc::new(bucket);
    let mut entries: HashMap<String, Entry> =
        targets.iter().filter(|(o, f)| fresh(o, f)).filter_map(|(o, _)| journal.get(&o.key).cloned()).map(|e| (e.key.clone(), e)).collect();
    let (mut downloaded, mut bytes) = (0, 0u64);
    let mut queue = todo.into_iter();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < PARALLEL_DOWNLOADS {
            let Some((object, file)) = queue.next() else { break };
            let bucket = Arc::clone(&bucket);
            running.spawn(async move { download(&bucket, object, &file).await });
        }
        let Some(done) = running.join_next().await else { break };
        let entry = done.map_err(|e| format!("a download task failed: {e}"))?.map_err(explain)?;
        // One line per finished object: what a resumed copy may skip.
        let line = serde_json::to_string(&entry).map_err(|e| e.to_string())?;
        writeln!(log, "{line}").map_err(|e| format!("cannot write the copy's journal {}: {e}", journal_file.display()))?;
        downloaded += 1;
        bytes += entry.size;
        entries.insert(entry.key.clone(), entry);
    }
    drop(log);
    let keep: std::collections::HashSet<PathBuf> = targets.iter().map(|(_, f)| f.clone()).collect();
    let removed = if only.is_some() { 0 } else { remove_others(local, &keep).map_err(|e| format!("cleaning {}: {e}", local.display()))? };
    let mut lines: Vec<String> = targets.iter().filter_map(|(o, _)| entries.get(&o.key)).filter_map(|e| serde_json::to_string(e).ok()).collect();
    lines.push(String::new());
    crate::fsutil::write_atomic(&journal_file, lines.join("\n").as_bytes()).map_err(|e| e.to_string())?;
    Ok(SourceCopy { url: url.to_string(), local: local.to_path_buf(), objects: targets.len(), downloaded, bytes, removed })
}

/// Downloads one object to `file` (whole, or nothing replaced).
async fn download(bucket: &Bucket, object: ObjectInfo, file: &Path) -> std::result::Result<Entry, StorageError> {
    let Some((data, generation)) = bucket.get(&object.key).await? else {
        return Err(StorageError::NotFound { url: bucket.url(&object.key) });
    };
    // Listed then changed: what we have is the generation we read.
    if generation == object.generation && data.len() as u64 != object.size {
        return Err(StorageError::Service {
            action: "reading",
            url: bucket.url(&object.key),
            status: None,
            message: format!("got {} bytes of an object listed with {}", data.len(), object.size),
        });
    }
    let path = file.to_path_buf();
    let entry = Entry { key: object.key, generation, size: data.len() as u64, crc32c: crc32c::crc32c(&data) };
    tokio::task::spawn_blocking(move || crate::fsutil::write_atomic(&path, &data).map_err(|e| StorageError::io(&path, std::io::Error::other(e.to_string()))))
        .await
        .map_err(|e| StorageError::io(file, std::io::Error::other(e.to_string())))??;
    Ok(entry)
}

/// Removes every file under `dir` not in `keep` (and folders left empty).
fn remove_others(dir: &Path, keep: &std::collections::HashSet<PathBuf>) -> std::io::Result<usize> {
    let mut removed = 0;
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(0) };
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            removed += remove_others(&path, keep)?;
            if std::fs::read_dir(&path)?.next().is_none() {
                std::fs::remove_dir(&path)?;
            }
        } else if !keep.contains(&path) {
            std::fs::remove_file(&path)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// `key` as a relative path of normal parts only.
fn safe_relative(key: &str) -> Option<PathBuf> {
    let parts: Vec<&str> = key.split('/').collect();
    if parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        return None;
    }
    Some(parts.iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_paths_are_found_in_every_kind_of_source_and_rewritten_under_the_cache() {
        let yaml = "cache_dir: /tmp/c\nsource:\n  mixed:\n    - synthetic: {}\n    - real: {lfw: gs://b/data/lfw, npy: [{path: gs://b/arrays/x.npy, faces: [0, 2]}], folders: [local/f]}\n";
        let config: DataConfig = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(bucket_sources(&config), ["gs://b/data/lfw", "gs://b/arrays/x.npy"]);
        assert_eq!(journal_path(Path::new("/tmp/c/gcs/b/data/lfw")), Path::new("/tmp/c/gcs/b/data/lfw.emotionet-sync"));
        assert!(safe_relative("a/../b").is_none() && safe_relative("a//b").is_none());
        assert_eq!(safe_relative("Aaron/Aaron_0001.jpg").unwrap(), Path::new("Aaron/Aaron_0001.jpg"));
    }

    #[test]
    fn a_torn_journal_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        std::fs::write(&path, "{\"key\":\"a\",\"generation\":1,\"size\":2,\"crc32c\":3}\n{\"key\":\"b\",\"gener").unwrap();
        let j = read_journal(&path);
        assert_eq!(j.len(), 1);
        assert_eq!(j["a"].generation, 1);
    }
}
