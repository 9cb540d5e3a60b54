//! What the TPU compiler said about a program, kept so it is asked once:
//! a small JSON file (`$XDG_CACHE_HOME/emotionet/tpu-compile-cache.json`,
//! else `~/.cache/emotionet/...`) that `emotionet compile` writes and the
//! cloud preflight reads and writes.
//!
//! An answer is keyed by the program's hash (its StableHLO text and replica
//! count, [`super::PlannedProgram::hash`]), the libtpu that compiled it (the
//! SHA-256 of `libtpu.so`, which fixes its version) and the topology with its
//! create options: the compiler's answer is a function of exactly these.
//! Hashing the 640 MB library takes seconds, so its digest is remembered by
//! path, size and modification time. The compiler's rejections are kept
//! too (they are as deterministic as its figures); a worker that failed as
//! a whole (no libtpu, a crash) leaves nothing.
//!
//! This module owns the file and nothing else: it never runs the compiler.
//! The file is replaced whole ([`crate::fsutil::write_atomic`]), so a crash
//! leaves the old cache or the new one; an unreadable file is treated as
//! empty (with a warning) and replaced, since all it holds can be recomputed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::worker::{ProgramResult, Response};
use crate::pjrt::TopologyDevice;

const VERSION: u32 = 1;
const FILE_NAME: &str = "tpu-compile-cache.json";

/// The default cache file.
pub fn default_path() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    base.join("emotionet").join(FILE_NAME)
}

/// One libtpu file's digest, valid while its size and mtime stay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LibraryDigest {
    path: PathBuf,
    size: u64,
    mtime_ns: u128,
    sha256: String,
}

/// What a topology is, as the worker described it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyEntry {
    pub platform_name: String,
    pub platform_version: String,
    pub plugin_attributes: Vec<(String, String)>,
    pub devices: Vec<TopologyDevice>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    version: u32,
    #[serde(default)]
    libraries: Vec<LibraryDigest>,
    /// Keyed by [`topology_key`].
    #[serde(default)]
    topologies: BTreeMap<String, TopologyEntry>,
    /// Keyed by [`program_key`].
    #[serde(default)]
    programs: BTreeMap<String, ProgramResult>,
}

/// Errors of the cache file (reading it never fails: see the module docs).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("reading {path} to hash it: {source}")]
    Library { path: PathBuf, source: std::io::Error },
    #[error("writing the compile cache {path}: {source}")]
    Write { path: PathBuf, source: crate::fsutil::FsError },
}

/// The cache, loaded.
pub struct CompileCache {
    path: PathBuf,
    file: CacheFile,
    changed: bool,
}

/// `v3:2x2` with its create options: what a topology key and a program key share.
fn topology_part(libtpu_sha256: &str, topology: &str, create_options: &[(String, String)]) -> String {
    let options: Vec<String> = create_options.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("libtpu-sha256={libtpu_sha256} topology={topology} options=[{}]", options.join(","))
}

pub fn topology_key(libtpu_sha256: &str, topology: &str, create_options: &[(String, String)]) -> String {
    topology_part(libtpu_sha256, topology, create_options)
}

pub fn program_key(program_hash: &str, libtpu_sha256: &str, topology: &str, create_options: &[(String, String)]) -> String {
    format!("program={program_hash} {}", topology_part(libtpu_sha256, topology, create_options))
}

impl CompileCache {
    /// Loads `path`; a missing file is an empty cache, and so is an
    /// unreadable one (warned about, then replaced on the next save).
    pub fn load(path: &Path) -> CompileCache {
        let file = match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice::<CacheFile>(&bytes) {
                Ok(file) if file.version == VERSION => file,
                Ok(file) => {
                    tracing::warn!("{}: compile cache version {} (this emotionet writes {VERSION}); starting it afresh", path.display(), file.version);
                    CacheFile::default()
                }
                Err(e) => {
                    tracing::warn!("{}: unreadable compile cache ({e}); starting it afresh", path.display());
                    CacheFile::default()
                }
            },
            Err(_) => CacheFile::default(),
        };
        CompileCache { path: path.to_path_buf(), file: CacheFile { version: VERSION, ..file }, changed: false }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The SHA-256 of `libtpu`, from the cache while the file's size and
    /// modification time are those it was hashed at.
    pub fn libtpu_sha256(&mut self, libtpu: &Path) -> Result<String, CacheError> {
        let err = |source| CacheError::Library { path: libtpu.to_path_buf(), source };
        let meta = std::fs::metadata(libtpu).map_err(err)?;
        let mtime_ns = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos());
        let path = std::fs::canonicalize(libtpu).unwrap_or_else(|_| libtpu.to_path_buf());
        if let Some(known) = self.file.libraries.iter().find(|d| d.path == path && d.size == meta.len() && d.mtime_ns == mtime_ns) {
            return Ok(known.sha256.clone());
        }
        let sha256 = sha256_file(libtpu).map_err(err)?;
        self.file.libraries.retain(|d| d.path != path);
        self.file.libraries.push(LibraryDigest { path, size: meta.len(), mtime_ns, sha256: sha256.clone() });
        self.changed = true;
        Ok(sha256)
    }

    pub fn topology(&self, key: &str) -> Option<&TopologyEntry> {
        self.file.topologies.get(key)
    }

    pub fn program(&self, key: &str) -> Option<&ProgramResult> {
        self.file.programs.get(key)
    }

    /// Keeps a worker's answer: the topology it described and each
    /// program's figures or compiler error, under `keys` (one per program,
    /// in the answer's order).
    pub fn remember(&mut self, topology_key: &str, response: &Response, keys: &[String]) {
        self.file.topologies.insert(
            topology_key.to_string(),
            TopologyEntry {
                platform_name: response.platform_name.clone(),
                platform_version: response.platform_version.clone(),
                plugin_attributes: response.plugin_attributes.clone(),
                devices: response.devices.clone(),
            },
        );
        for (key, result) in keys.iter().zip(&response.programs) {
            // Where an executable was written is no figure of the program.
            let kept = ProgramResult { serialized: None, serialized_bytes: None, ..result.clone() };
            self.file.programs.insert(key.clone(), kept);
        }
        self.changed = true;
    }

    /// Writes the file if anything was added, merged with what other
    /// processes wrote since it was loaded.
    pub fn save(&mut self) -> Result<(), CacheError> {
        if !self.changed {
            return Ok(());
        }
        let on_disk = CompileCache::load(&self.path).file;
        let mut merged = on_disk;
        for digest in &self.file.libraries {
            merged.libraries.retain(|d| d.path != digest.path);
            merged.libraries.push(digest.clone());
        }
        merged.topologies.extend(self.file.topologies.clone());
        merged.programs.extend(self.file.programs.clone());
        merged.version = VERSION;
        let bytes = serde_json::to_vec_pretty(&merged).expect("the cache serializes");
        crate::fsutil::write_atomic(&self.path, &bytes).map_err(|source| CacheError::Write { path: self.path.clone(), source })?;
        self.file = merged;
        self.changed = false;
        Ok(())
    }
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(super::hex(&hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(flops: f64) -> Response {
        Response {
            platform_name: "tpu".into(),
            platform_version: "v".into(),
            plugin_attributes: vec![],
            devices: vec![],
            programs: vec![ProgramResult {
                name: "face train_step".into(),
                compile_s: 2.0,
                error: None,
                memory: None,
                cost: Some(crate::pjrt::CostAnalysis { flops, bytes_accessed: 1.0, transcendentals: 0.0, properties: vec![] }),
                serialized: Some("/tmp/x.pjrt".into()),
                serialized_bytes: Some(3),
            }],
        }
    }

    #[test]
    fn answers_survive_a_reload_under_their_key_and_a_broken_file_is_an_empty_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/cache.json");
        let lib = dir.path().join("libtpu.so");
        std::fs::write(&lib, b"not really libtpu").unwrap();
        let mut cache = CompileCache::load(&path);
        let sha = cache.libtpu_sha256(&lib).unwrap();
        // sha256("not really libtpu"), as `sha256sum` prints it.
        assert_eq!(sha.len(), 64);
        let key = program_key("abc", &sha, "v3:2x2", &[]);
        cache.remember(&topology_key(&sha, "v3:2x2", &[]), &response(7.0), std::slice::from_ref(&key));
        cache.save().unwrap();

        let mut again = CompileCache::load(&path);
        assert_eq!(again.libtpu_sha256(&lib).unwrap(), sha);
        let kept = again.program(&key).unwrap();
        assert_eq!(kept.cost.as_ref().unwrap().flops, 7.0);
        assert!(kept.serialized.is_none(), "where an executable went is not cached");
        assert!(again.topology(&topology_key(&sha, "v3:2x2", &[])).is_some());
        // Another topology, options or libtpu is another key.
        assert!(again.program(&program_key("abc", &sha, "v3:2x2", &[("chip_config_name".into(), "megacore".into())])).is_none());
        assert!(again.program(&program_key("abc", "other", "v3:2x2", &[])).is_none());

        // A changed library is hashed again.
        std::fs::write(&lib, b"another libtpu, longer").unwrap();
        assert_ne!(again.libtpu_sha256(&lib).unwrap(), sha);

        std::fs::write(&path, b"{not json").unwrap();
        assert!(CompileCache::load(&path).program(&key).is_none());
    }
}
