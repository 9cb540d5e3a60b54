//! `--out gs://BUCKET/PREFIX` (or `output: gs://...`) for the commands that
//! write or read run folders: `run`, `train`, `eval`, `report`, and
//! `cloud fetch`.
//!
//! A bucket output is a local staging folder mirrored to the bucket: the
//! trainer and the orchestrator keep writing ordinary local files (each
//! checkpoint and record whole, through a rename) and a [`Uploader`] thread
//! uploads each new or changed file as one object: as soon as the run writer
//! has finished it (it calls the [`SyncHandle`] after every checkpoint and
//! flush), and otherwise every `EMOTIONET_SYNC_SECS` seconds (default 2:
//! the files a campaign's children, logs and state write), and once more at
//! the end. Before the command starts, whatever the bucket has that the
//! staging folder lacks is downloaded, so a fresh VM after a preemption
//! resumes from the newest checkpoint that reached the bucket. The bucket's
//! lease (`.emotionet-lock`, see [`crate::storage::Lease`]) keeps two
//! writers off one prefix, as [`crate::lock`] does for a local folder. A
//! local `--out` is used as is.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

use crate::lock::{Holder, Wait};
use crate::storage::{Bucket, GcsPath, LOCK_KEY, Lease, Location, Mirror, StorageConfig, SyncHandle, Uploader};

/// How long a lease lasts without renewal (renewed every third of it);
/// `EMOTIONET_LEASE_SECS` sets another (whole seconds, at least 3).
const LEASE_TTL: Duration = Duration::from_secs(300);

fn lease_ttl() -> anyhow::Result<Duration> {
    match std::env::var("EMOTIONET_LEASE_SECS") {
        Ok(text) => {
            let secs: u64 = text
                .trim()
                .parse()
                .ok()
                .filter(|s| *s >= 3)
                .with_context(|| format!("EMOTIONET_LEASE_SECS={text:?}: expected whole seconds, at least 3, that a bucket lease lasts unrenewed"))?;
            Ok(Duration::from_secs(secs))
        }
        Err(_) => Ok(LEASE_TTL),
    }
}

/// Where a command writes: the local folder to hand to the trainer, and the
/// uploader that carries it to a bucket, if any.
pub struct Output {
    pub local: PathBuf,
    pub location: Location,
    uploader: Option<Uploader>,
}

/// `EMOTIONET_STAGING`, else `$XDG_CACHE_HOME/emotionet/gs`, else `~/.cache/emotionet/gs`.
fn staging_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("EMOTIONET_STAGING").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("emotionet").join("gs")
}

/// The staging folder of a bucket prefix.
pub fn staging_dir(path: &GcsPath) -> PathBuf {
    let mut dir = staging_root().join(&path.bucket);
    for part in path.prefix.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
    }
    dir
}

fn sync_interval() -> anyhow::Result<Duration> {
    match std::env::var("EMOTIONET_SYNC_SECS") {
        Ok(text) => {
            let secs: f64 = text
                .trim()
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite() && *s > 0.0)
                .with_context(|| format!("EMOTIONET_SYNC_SECS={text:?}: expected a positive number of seconds between looks for changed files"))?;
            Ok(Duration::from_secs_f64(secs))
        }
        Err(_) => Ok(Duration::from_secs(2)),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the async runtime for Cloud Storage")
}

async fn connect(path: &GcsPath) -> anyhow::Result<Bucket> {
    let config = StorageConfig::from_env(|| {
        crate::google::auth::credentials(&crate::google::AuthConfig::default())
            .map_err(|e| crate::storage::StorageError::Credentials { message: e.to_string() })
    })?;
    Ok(Bucket::connect(path, config).await?)
}

impl Output {
    /// The output `out` for a command that writes there for `purpose`
    /// ("training"): a bucket's lease is taken (or waited for, with
    /// [`Wait::Yes`]) and what it holds is downloaded first.
    pub fn for_writing(out: &Path, purpose: &str, wait: Wait) -> anyhow::Result<Output> {
        let location = Location::from_path(out)?;
        let Location::Gcs(path) = &location else {
            return Ok(Output { local: out.to_path_buf(), location, uploader: None });
        };
        let local = staging_dir(path);
        std::fs::create_dir_all(&local).with_context(|| format!("cannot create the staging folder {} for {location}", local.display()))?;
        let interval = sync_interval()?;
        let ttl = lease_ttl()?;
        let (mirror, lease) = runtime()?.block_on(async {
            let bucket = connect(path).await?;
            let lease = Lease::acquire(&bucket, LOCK_KEY, Holder::this_process(purpose), ttl, wait).await?;
            let mut mirror = Mirror::new(bucket, &local);
            let restored = mirror.restore().await.with_context(|| format!("cannot download {location} into {}", local.display()))?;
            if restored > 0 {
                eprintln!("restored {restored} file(s) from {location} into {}", local.display());
            }
            anyhow::Ok((mirror, lease))
        })?;
        tracing::info!("{location}: staging in {}, uploading as files are written (and every {}s)", local.display(), interval.as_secs_f64());
        let uploader = Uploader::start(mirror, Some(lease), interval).context("starting the upload thread")?;
        Ok(Output { local, location, uploader: Some(uploader) })
    }

    /// Why the output may no longer be written (its lease was taken over),
    /// for the trainer to ask at every step; `None` for a local output.
    pub fn halt(&self) -> Option<crate::train::Halt> {
        let watch = self.uploader.as_ref()?.watch();
        Some(crate::train::Halt(std::sync::Arc::new(move || watch.lost())))
    }

    /// Asks for an upload now (the run writer's hook); a no-op for a local output.
    pub fn sync_handle(&self) -> SyncHandle {
        self.uploader.as_ref().map(Uploader::handle).unwrap_or_default()
    }

    /// Uploads what is left and releases the lease. Call on every way out,
    /// errors included: whatever was written locally then reaches the bucket.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.finish_upload()
    }

    fn finish_upload(&mut self) -> anyhow::Result<()> {
        let Some(uploader) = self.uploader.take() else { return Ok(()) };
        uploader.finish().with_context(|| format!("the last upload to {} failed; the files are in {}", self.location, self.local.display()))
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        if let Err(e) = self.finish_upload() {
            eprintln!("warning: {e:#}");
        }
    }
}

/// A folder to read runs from: a local one as is, a bucket prefix downloaded
/// (what is missing) into its staging folder.
pub fn for_reading(src: &Path) -> anyhow::Result<PathBuf> {
    let location = Location::from_path(src)?;
    let Location::Gcs(path) = &location else { return Ok(src.to_path_buf()) };
    let local = staging_dir(path);
    let count = runtime()?.block_on(async {
        let mut mirror = Mirror::new(connect(path).await?, &local);
        anyhow::Ok(mirror.restore().await?)
    })?;
    eprintln!("downloaded {count} new file(s) from {location} into {}", local.display());
    Ok(local)
}

/// Downloads what `dest` lacks of a bucket prefix; returns how many files.
pub async fn download(src: &GcsPath, dest: &Path) -> anyhow::Result<usize> {
    let mut mirror = Mirror::new(connect(src).await?, dest);
    mirror.restore().await.with_context(|| format!("cannot download {src} into {}", dest.display()))
}

/// Uploads a finished local folder (a report) to `dest`, if it is a bucket.
pub fn publish(local: &Path, dest: &Location) -> anyhow::Result<()> {
    let Location::Gcs(path) = dest else { return Ok(()) };
    let report = runtime()?.block_on(async {
        let mut mirror = Mirror::new(connect(path).await?, local);
        anyhow::Ok(mirror.sync(None).await?)
    })?;
    eprintln!("uploaded {} file(s) to {dest}", report.uploaded);
    Ok(())
}
