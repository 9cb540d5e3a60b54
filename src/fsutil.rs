//! Crash-safe file and directory replacement.
//!
//! Everything a run leaves behind that another process reads (run records,
//! checkpoints, reports) goes through here, so a crash or a full disk never
//! replaces a good file with a half-written one. The recipe is the classic one:
//! write a temporary sibling, `fsync` it, `rename` it over the target (atomic
//! within one file system), then `fsync` the directory so the rename itself
//! survives a power cut.
//!
//! This module owns no file formats; callers hand it bytes.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a file or directory could not be written or replaced. Every variant
/// names the path it was working on.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("cannot create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot sync {path} to disk: {source}")]
    Sync { path: PathBuf, source: std::io::Error },
    #[error("cannot rename {from} to {to}: {source}")]
    Rename { from: PathBuf, to: PathBuf, source: std::io::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
    #[error("{path} has no file name or parent directory")]
    BadPath { path: PathBuf },
}

/// The directory that holds `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `fsync`s a directory so that renames and creations inside it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    let handle = File::open(dir).map_err(|source| FsError::Sync { path: dir.to_path_buf(), source })?;
    handle.sync_all().map_err(|source| FsError::Sync { path: dir.to_path_buf(), source })
}

/// Writes `bytes` to `tmp`, syncs it, renames it to `path` and syncs the
/// directory. `tmp` must be in the same directory as `path` (rename is only
/// atomic within one file system). On error the temporary file is removed
/// when possible and `path` is untouched.
pub fn write_via(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let result = (|| {
        let mut file =
            OpenOptions::new().write(true).create(true).truncate(true).open(tmp).map_err(|source| FsError::Write { path: tmp.to_path_buf(), source })?;
        file.write_all(bytes).map_err(|source| FsError::Write { path: tmp.to_path_buf(), source })?;
        file.sync_all().map_err(|source| FsError::Sync { path: tmp.to_path_buf(), source })?;
        drop(file);
        fs::rename(tmp, path).map_err(|source| FsError::Rename { from: tmp.to_path_buf(), to: path.to_path_buf(), source })
    })();
    if result.is_err() {
        // Best effort: the error that matters is the one we return.
        let _ = fs::remove_file(tmp);
        return result;
    }
    sync_dir(&parent_dir(path))
}

/// Replaces `path` atomically with `bytes`, creating its directory if needed.
///
/// The temporary sibling is `<name>.<pid>-<n>.tmp`: `*.tmp` files are
/// recognisable leftovers of a crash.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FsError> {
    let name = path.file_name().ok_or_else(|| FsError::BadPath { path: path.to_path_buf() })?;
    let dir = parent_dir(path);
    fs::create_dir_all(&dir).map_err(|source| FsError::CreateDir { path: dir.clone(), source })?;
    // Unique per process and per call, so concurrent writers of one file
    // (threads or processes) never share a temporary.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".{}-{}.tmp", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    write_via(&dir.join(tmp_name), path, bytes)
}

/// Moves the fully built directory `staged` into place at `target`.
///
/// A directory cannot be renamed over a non-empty one, so an existing
/// `target` is first renamed aside to `<target>.old-<pid>`, then `staged` is
/// renamed to `target`, then the old one is deleted. At no moment does
/// `target` hold a mix of old and new files; if the second rename fails the
/// old directory is put back. `staged` must be a sibling of `target`.
pub fn replace_dir(staged: &Path, target: &Path) -> Result<(), FsError> {
    let name = target.file_name().ok_or_else(|| FsError::BadPath { path: target.to_path_buf() })?;
    let parent = parent_dir(target);
    let mut old_name = name.to_os_string();
    old_name.push(format!(".old-{}", std::process::id()));
    let old = parent.join(old_name);
    let had_old = target.exists();
    if had_old {
        fs::rename(target, &old).map_err(|source| FsError::Rename { from: target.to_path_buf(), to: old.clone(), source })?;
    }
    if let Err(source) = fs::rename(staged, target) {
        if had_old {
            let _ = fs::rename(&old, target);
        }
        return Err(FsError::Rename { from: staged.to_path_buf(), to: target.to_path_buf(), source });
    }
    sync_dir(&parent)?;
    if had_old {
        fs::remove_dir_all(&old).map_err(|source| FsError::Remove { path: old.clone(), source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/record.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(dir.path().join("sub")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("record.json")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        write_atomic(&path, b"good").unwrap();
        // A temporary inside a missing directory cannot be created.
        let err = write_via(&dir.path().join("missing/x.tmp"), &path, b"bad").unwrap_err();
        assert!(matches!(err, FsError::Write { .. }), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"good");
    }

    #[test]
    fn replace_dir_swaps_whole_directories() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("report");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("stale.svg"), "old").unwrap();
        let staged = dir.path().join("report.new");
        fs::create_dir(&staged).unwrap();
        fs::write(staged.join("report.md"), "new").unwrap();
        replace_dir(&staged, &target).unwrap();
        assert!(!target.join("stale.svg").exists());
        assert_eq!(fs::read_to_string(target.join("report.md")).unwrap(), "new");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
