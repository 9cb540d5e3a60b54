//! A background thread that keeps a bucket prefix in step with a local
//! folder while a command writes it, and holds the prefix's lease meanwhile.
//!
//! It uploads ([`Mirror::sync`]) whenever it is asked to through a
//! [`SyncHandle`] (the run writer asks after every checkpoint and every
//! flush of its record, metrics and events, so those files go up as soon as
//! they are whole on disk), and otherwise every `poll` (for files other
//! processes write: a campaign's children, its state file, logs). Requests
//! that arrive during an upload are merged into the next round. Requests
//! never wait for the upload: training goes on while its checkpoint travels.
//! What a `kill -9` (or a lost VM) can therefore lose from the bucket is the
//! files written since the last round that completed; the local files are
//! whole, and a resume on the same machine uploads them.
//!
//! Every round begins with the lease: renewed when a third of its time to
//! live has passed, otherwise checked (one read of the lease object); a
//! round whose renewal or check fails uploads nothing (a failing upload
//! never keeps the lease from being renewed). Each file of a round is
//! vouched for again before its upload starts, and its upload (the storage
//! client's retries included) is dropped when the lease's expiry less a
//! margin comes without a renewal ([`Lease::guard`]): an upload begun under
//! a valid lease cannot land after another writer took the lease over. A lease taken over by someone
//! else (ours ran out while this machine was paused or cut off) stops the
//! uploads for good, and [`LeaseWatch`] tells the writer, which must stop
//! too: two writers must never mix their files.

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use super::lease::Lease;
use super::mirror::Mirror;
use super::{Result, StorageError};

enum Msg {
    Sync,
    Stop,
}

/// Asks the uploader for a round now. Cheap, never blocks; does nothing when
/// the output is a local folder.
#[derive(Clone, Debug, Default)]
pub struct SyncHandle {
    tx: Option<mpsc::Sender<Msg>>,
}

impl SyncHandle {
    /// A handle for a local output: requests go nowhere.
    pub fn none() -> Self {
        SyncHandle { tx: None }
    }

    pub fn request(&self) {
        if let Some(tx) = &self.tx {
            // The uploader has ended: its final round has the file anyway.
            let _ = tx.send(Msg::Sync);
        }
    }

    /// The request as a callback for the run writer; `None` for a local output.
    pub fn hook(&self) -> Option<Arc<dyn Fn() + Send + Sync>> {
        let tx = self.tx.clone()?;
        Some(Arc::new(move || {
            let _ = tx.send(Msg::Sync);
        }))
    }
}

/// Whether the uploader has lost its lease (or found its objects changed
/// by another writer), and why: for the writer to stop at its next step.
#[derive(Clone, Debug, Default)]
pub struct LeaseWatch {
    lost: Arc<OnceLock<String>>,
}

impl LeaseWatch {
    /// Why the output may no longer be written (naming the other writer), once it may not.
    pub fn lost(&self) -> Option<String> {
        self.lost.get().cloned()
    }
}

/// The running uploader; [`Uploader::finish`] makes the last round.
pub struct Uploader {
    tx: mpsc::Sender<Msg>,
    done: std::thread::JoinHandle<Result<()>>,
    watch: LeaseWatch,
}

impl Uploader {
    /// Starts the thread. `mirror` says what goes where, `lease` is held
    /// (renewed, then released at the end), `poll` is the longest wait
    /// between rounds.
    pub fn start(mirror: Mirror, lease: Option<Lease>, poll: Duration) -> std::io::Result<Uploader> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (tx, rx) = mpsc::channel();
        let watch = LeaseWatch::default();
        let lost = watch.clone();
        let done = std::thread::Builder::new().name("gs-upload".into()).spawn(move || run(runtime, mirror, lease, poll, rx, &lost))?;
        Ok(Uploader { tx, done, watch })
    }

    pub fn handle(&self) -> SyncHandle {
        SyncHandle { tx: Some(self.tx.clone()) }
    }

    /// Tells whether the lease was lost; the writer checks it at every step.
    pub fn watch(&self) -> LeaseWatch {
        self.watch.clone()
    }

    /// Uploads whatever is left, releases the lease and ends the thread.
    pub fn finish(self) -> Result<()> {
        let _ = self.tx.send(Msg::Stop);
        match self.done.join() {
            Ok(result) => result,
            Err(_) => Err(StorageError::io("gs-upload", std::io::Error::other("the upload thread panicked"))),
        }
    }
}

fn run(
    runtime: tokio::runtime::Runtime,
    mut mirror: Mirror,
    mut lease: Option<Lease>,
    poll: Duration,
    rx: mpsc::Receiver<Msg>,
    watch: &LeaseWatch,
) -> Result<()> {
    let label = mirror.bucket().url("");
    loop {
        let mut last = match rx.recv_timeout(poll) {
            Ok(Msg::Sync) | Err(mpsc::RecvTimeoutError::Timeout) => false,
            Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => true,
        };
        // Requests queued meanwhile are served by this one round.
        while let Ok(msg) = rx.try_recv() {
            last |= matches!(msg, Msg::Stop);
        }
        let round = runtime.block_on(async {
            // The lease first (renewed or checked even when nothing is to
            // upload); then each file is vouched for again, and guarded.
            if let Some(lease) = lease.as_mut() {
                lease.keep().await?;
            }
            let report = mirror.sync(lease.as_mut()).await?;
            if report.uploaded > 0 || report.deleted > 0 {
                tracing::info!("uploaded {} file(s), {} bytes, to {label}; deleted {} removed here", report.uploaded, report.bytes, report.deleted);
            }
            Ok::<_, StorageError>(())
        });
        match round {
            Ok(()) if !last => {}
            Err(e @ (StorageError::LeaseLost { .. } | StorageError::PreconditionFailed { .. })) => {
                tracing::error!("{e}");
                let _ = watch.lost.set(e.to_string());
                return Err(e);
            }
            // A failed round is tried again at the next one: the local files are all still there.
            Err(e) if !last => tracing::warn!("uploading to {label} failed (trying again within {}s): {e}", poll.as_secs_f64()),
            result => {
                result?;
                if let Some(lease) = lease.take() {
                    runtime.block_on(lease.release())?;
                }
                return Ok(());
            }
        }
    }
}
