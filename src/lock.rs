//! One writer per output folder.
//!
//! `train`, `run`, `eval` and `report --out` each hold an [`OutputLock`] on
//! the folder they write for as long as they run, so a second command on the
//! same folder (another terminal, a cron job, a re-run while the first is
//! still going) is refused at once, with a message naming the holder, or
//! waits for it (`--wait`).
//!
//! The lock is an advisory `flock(2)` on a small file: the kernel drops it
//! when the holder's last descriptor closes, so a holder that dies (`kill
//! -9` included) never leaves a stale lock behind, and there is no PID
//! guessing. Beside the lock file, the holder writes a JSON file naming
//! itself ([`Holder`]: PID, host, start time, command line), written while it
//! holds the lock, so a refused command can say who is in the way. That file
//! is only ever read after a refusal; a stale one (left by a killed holder)
//! is simply overwritten by the next holder.
//!
//! Where the lock file lives:
//! - [`OutputLock::acquire`]: inside the folder (`.emotionet.lock`), for run
//!   folders, campaign folders and hierarchy evaluations;
//! - [`OutputLock::acquire_beside`]: next to it (`.<name>.emotionet.lock`),
//!   for a folder that is replaced as a whole (the report), whose contents
//!   (a lock file inside included) are renamed away on every write.
//!
//! A holder that ends deletes both files, so a finished command leaves
//! nothing behind; one killed leaves them, and the next holder reuses them.
//! Deleting a `flock` file is only safe with the check [`OutputLock`] makes
//! after every lock: that the path still names the file it locked (a waiter
//! may have opened the file just before its holder deleted it); if not, it
//! tries again on the file that is there now.
//!
//! A campaign (`emotionet run`) locks its output folder; the `train` and
//! `eval` children it starts lock their own run and evaluation folders
//! inside it, which are different folders, so the campaign never blocks its
//! own children. The children do not inherit the campaign's lock: Rust opens
//! files close-on-exec. Two campaigns on one folder, or a `train` on a run
//! folder a campaign is training, are refused.
//!
//! The lock covers local folders (and NFS, where Linux maps `flock` to NFS
//! byte-range locks; not tested here). `gs://` outputs need a lease object
//! with a generation precondition, which this module does not build.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::fsutil::{self, FsError};

/// The lock file inside a locked folder.
pub const LOCK_FILE: &str = ".emotionet.lock";
/// What the holder file's name adds to the lock file's.
const HOLDER_SUFFIX: &str = ".holder.json";
/// How often a `--wait` retries.
const WAIT_POLL: Duration = Duration::from_millis(200);

/// Who holds a folder: what a refused command prints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// When the holder took the lock (RFC 3339).
    pub started_at: String,
    /// Its command line.
    pub command: String,
    /// What it is doing with the folder ("training the face model").
    pub purpose: String,
}

impl Holder {
    /// This process, about to hold a folder for `purpose`.
    fn this_process(purpose: &str) -> Self {
        let mut args = std::env::args_os().map(|a| a.to_string_lossy().into_owned());
        // The program by its name only: the path of the binary says nothing
        // about who is in the way.
        let program = args.next().map(|p| Path::new(&p).file_name().map_or(p.clone(), |n| n.to_string_lossy().into_owned())).unwrap_or_default();
        let command = std::iter::once(program).chain(args).collect::<Vec<_>>().join(" ");
        Holder { pid: std::process::id(), host: crate::records::host_name(), started_at: crate::records::now_rfc3339(), command, purpose: purpose.to_string() }
    }
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` (pid {} on {}, since {}, {})", self.command, self.pid, self.host, self.started_at, self.purpose)
    }
}

/// The holder as far as its file tells: the file may be missing or torn
/// when the holder was killed between taking the lock and writing it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HolderInfo {
    Known(Holder),
    Unknown { holder_file: PathBuf },
}

impl std::fmt::Display for HolderInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HolderInfo::Known(h) => h.fmt(f),
            HolderInfo::Unknown { holder_file } => write!(f, "another process (its details in {} are missing or unreadable)", holder_file.display()),
        }
    }
}

/// Why a folder could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{dir} is in use by {holder}; only one emotionet command may write it at a time. Wait for that one to end (or stop it), or pass --wait to start when it does"
    )]
    Held { dir: PathBuf, holder: Box<HolderInfo> },
    #[error("cannot lock {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("cannot lock {path}: its file system does not support file locks ({source}); write to a local disk instead")]
    Unsupported { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// Whether a held folder is an error or something to wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Refuse at once with [`LockError::Held`].
    No,
    /// Wait (however long) until the holder lets go.
    Yes,
}

impl From<bool> for Wait {
    fn from(wait: bool) -> Self {
        if wait { Wait::Yes } else { Wait::No }
    }
}

/// An exclusive hold on an output folder, released on drop (or when the
/// process dies, however it dies).
#[derive(Debug)]
pub struct OutputLock {
    dir: PathBuf,
    lock_path: PathBuf,
    holder_path: PathBuf,
    /// Holds the `flock`; closing it releases the lock.
    _file: File,
}

impl OutputLock {
    /// Locks `dir` (created if missing) with a lock file inside it.
    /// `purpose` says what this process does there; it is shown to anyone
    /// refused.
    pub fn acquire(dir: &Path, purpose: &str, wait: Wait) -> Result<Self, LockError> {
        std::fs::create_dir_all(dir).map_err(|source| FsError::CreateDir { path: dir.to_path_buf(), source })?;
        Self::acquire_file(dir, dir.join(LOCK_FILE), purpose, wait)
    }

    /// Locks `dir` with a lock file next to it (`.<name>.emotionet.lock`),
    /// for a folder that is replaced as a whole; `dir` itself need not
    /// exist.
    pub fn acquire_beside(dir: &Path, purpose: &str, wait: Wait) -> Result<Self, LockError> {
        let name = dir.file_name().ok_or_else(|| FsError::BadPath { path: dir.to_path_buf() })?;
        let parent = fsutil::parent_dir(dir);
        std::fs::create_dir_all(&parent).map_err(|source| FsError::CreateDir { path: parent.clone(), source })?;
        let mut lock_name = std::ffi::OsString::from(".");
        lock_name.push(name);
        lock_name.push(LOCK_FILE);
        Self::acquire_file(dir, parent.join(lock_name), purpose, wait)
    }

    fn acquire_file(dir: &Path, lock_path: PathBuf, purpose: &str, wait: Wait) -> Result<Self, LockError> {
        let mut holder_name = lock_path.file_name().unwrap_or_default().to_os_string();
        holder_name.push(HOLDER_SUFFIX);
        let holder_path = lock_path.with_file_name(holder_name);
        let mut told = false;
        let file = loop {
            use rustix::io::Errno;
            // Opened afresh on every try: the holder deletes the file when
            // it lets go, and a waiter must lock the file that is there now.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&lock_path)
                .map_err(|source| LockError::Io { path: lock_path.clone(), source })?;
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                // Locked, but maybe a file that its holder deleted between our
                // open and our lock: then the lock guards nothing; try again.
                Ok(()) if is_current(&file, &lock_path) => break file,
                Ok(()) | Err(Errno::INTR) => continue,
                Err(Errno::WOULDBLOCK) => {
                    let holder = read_holder(&holder_path);
                    match wait {
                        Wait::No => return Err(LockError::Held { dir: dir.to_path_buf(), holder: Box::new(holder) }),
                        Wait::Yes if !told => {
                            tracing::warn!("waiting for {}: it is in use by {holder}", dir.display());
                            told = true;
                        }
                        Wait::Yes => {}
                    }
                    drop(file);
                    std::thread::sleep(WAIT_POLL);
                }
                Err(e @ (Errno::NOLCK | Errno::OPNOTSUPP | Errno::NOSYS)) => return Err(LockError::Unsupported { path: lock_path, source: e.into() }),
                Err(e) => return Err(LockError::Io { path: lock_path, source: e.into() }),
            }
        };
        if told {
            tracing::warn!("{} is free now; going on", dir.display());
        }
        let holder = Holder::this_process(purpose);
        let json = serde_json::to_vec_pretty(&holder).map_err(|e| LockError::Io { path: holder_path.clone(), source: std::io::Error::other(e) })?;
        fsutil::write_atomic(&holder_path, &json)?;
        tracing::debug!("locked {} for {purpose}", dir.display());
        Ok(OutputLock { dir: dir.to_path_buf(), lock_path, holder_path, _file: file })
    }

    /// The locked folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        // Still holding the lock here, so these are this holder's files: the
        // holder's details first, then the lock file; the lock itself goes
        // when the descriptor closes, just after.
        let _ = std::fs::remove_file(&self.holder_path);
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// Whether `path` still names the file `file` has open (same device and
/// inode).
fn is_current(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// The holder named in `path`. A holder writes its file just after taking
/// the lock, so a missing file gets a short grace period before it counts as
/// unknown.
fn read_holder(path: &Path) -> HolderInfo {
    for attempt in 0..10 {
        match std::fs::read(path) {
            Ok(bytes) => {
                if let Ok(holder) = serde_json::from_slice::<Holder>(&bytes) {
                    return HolderInfo::Known(holder);
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(_) => break,
        }
        if attempt < 9 {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    HolderInfo::Unknown { holder_file: path.to_path_buf() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_in_one_process_is_refused_and_a_dropped_one_is_free() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("runs/face/cpu-r0");
        let first = OutputLock::acquire(&dir, "training the face model", Wait::No).unwrap();
        // flock locks belong to an open file, so a second open in the same
        // process conflicts just as another process would.
        let err = OutputLock::acquire(&dir, "training again", Wait::No).unwrap_err();
        let LockError::Held { holder, .. } = &err else { panic!("{err}") };
        let HolderInfo::Known(holder) = holder.as_ref() else { panic!("{err}") };
        assert_eq!(holder.pid, std::process::id());
        assert_eq!(holder.purpose, "training the face model");
        let text = err.to_string();
        assert!(text.contains(&format!("pid {}", std::process::id())) && text.contains("--wait"), "{text}");
        drop(first);
        assert!(!dir.join(".emotionet.lock.holder.json").exists() && !dir.join(LOCK_FILE).exists(), "a holder that ends leaves nothing");
        let _again = OutputLock::acquire(&dir, "training again", Wait::No).unwrap();
    }

    #[test]
    fn a_lock_on_a_file_deleted_meanwhile_is_not_taken_for_the_lock() {
        // What a waiter sees when it opened the lock file just before its
        // holder deleted it: the file it has open is no longer the one named.
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(LOCK_FILE);
        let opened = File::create(&path).unwrap();
        assert!(is_current(&opened, &path));
        std::fs::remove_file(&path).unwrap();
        assert!(!is_current(&opened, &path));
        let _new = File::create(&path).unwrap();
        assert!(!is_current(&opened, &path), "a new file under the same name is another lock");
    }

    #[test]
    fn a_folder_replaced_as_a_whole_is_locked_from_beside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("report");
        let lock = OutputLock::acquire_beside(&dir, "writing the report", Wait::No).unwrap();
        assert!(!dir.exists(), "the folder itself is left to its writer");
        assert!(tmp.path().join(".report.emotionet.lock").exists());
        assert!(matches!(OutputLock::acquire_beside(&dir, "writing the report", Wait::No), Err(LockError::Held { .. })));
        drop(lock);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "nothing left beside the folder");
        let _ = OutputLock::acquire_beside(&dir, "writing the report", Wait::No).unwrap();
    }
}
