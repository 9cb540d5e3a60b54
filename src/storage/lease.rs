//! One writer per bucket output: the `gs://` side of [`crate::lock`].
//!
//! A local output folder is locked with `flock`, which the kernel drops when
//! its holder dies. A bucket prefix has no such thing, so its lock is a small
//! object (the lease) that names its holder the way the local lock's holder
//! file does ([`Holder`]: PID, host, start time, command line, purpose) and
//! says until when it holds. It is taken and renewed only with generation
//! preconditions (compare and swap): of two writers racing for it, exactly
//! one wins. A holder renews it while it works and marks it expired when it
//! ends.
//!
//! A holder that dies stops renewing; the next writer takes the lease over
//! once it has expired, or at once when the holder was a process on this
//! same host that no longer exists (a `kill -9` followed by a resume on the
//! same machine need not wait out the lease). A reused PID only makes us
//! wait, never take over a live holder's lease.
//!
//! The lease is also the writer's fence. Cloud Storage has no precondition
//! that spans two objects, so nothing on the server stops an upload that
//! lands after another writer took the lease over. What stops it is time:
//! a lease is ours until its expiry, and another writer may take it only
//! after that (by its own clock). [`Lease::vouch`] confirms the lease before
//! each upload, and [`Lease::guard`] lets an upload run (its retries
//! included) only while the lease is vouched for: until its expiry less a
//! safety margin ([`Lease::margin`]: clock skew, a request still on the
//! wire), renewing it meanwhile for a long upload. An upload still running
//! then is dropped, connection and retries with it.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::bucket::{Bucket, Precondition};
use super::{Result, StorageError};
use crate::lock::{Holder, HolderInfo, Wait};

/// What the lease object holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseBody {
    #[serde(flatten)]
    pub holder: Holder,
    /// A random tag, so that two holders with equal details (a PID reused
    /// on another machine of the same name) are still told apart.
    pub tag: String,
    /// Until when the lease holds (Unix seconds); 0 once released.
    pub expires_unix: i64,
}

#[derive(Debug)]
pub struct Lease {
    bucket: Bucket,
    key: String,
    body: LeaseBody,
    ttl: Duration,
    generation: i64,
    /// When (on this machine's monotonic clock) `body.expires_unix` passes.
    valid_until: Instant,
    /// When the body of the last successful write (take or renewal) was made.
    renewed_at: Instant,
}

/// How often a waiting writer looks at the lease again.
const WAIT_POLL: Duration = Duration::from_secs(2);

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The monotonic instant at which the wall clock reaches `expires_unix`
/// (taken when the body is made, before it is sent: never later than the
/// expiry the other writers will read).
fn expiry_instant(expires_unix: i64) -> Instant {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    Instant::now() + Duration::from_secs_f64((expires_unix as f64 - now).max(0.0))
}

fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64)).to_string()
}

/// Whether `holder` is a process of this host that has ended.
fn dead_here(holder: &Holder) -> bool {
    holder.host == crate::records::host_name() && holder.pid != std::process::id() && !std::path::Path::new(&format!("/proc/{}", holder.pid)).exists()
}

impl Lease {
    /// Takes the lease `key` for `holder` when it is free, expired or left
    /// by a dead process of this host; otherwise [`StorageError::Locked`]
    /// (with [`Wait::Yes`]: waits until it can take it).
    pub async fn acquire(bucket: &Bucket, key: &str, holder: Holder, ttl: Duration, wait: Wait) -> Result<Lease> {
        let mut told = false;
        loop {
            match Self::try_acquire(bucket, key, &holder, ttl).await {
                Err(StorageError::Locked { url, holder: current, until }) if wait == Wait::Yes => {
                    if !told {
                        tracing::warn!("waiting for {url}: it is in use by {current} (its lease runs to {until} unless renewed)");
                        told = true;
                    }
                    tokio::time::sleep(WAIT_POLL).await;
                }
                Ok(lease) => {
                    if told {
                        tracing::warn!("{} is free now; going on", lease.url());
                    }
                    return Ok(lease);
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn try_acquire(bucket: &Bucket, key: &str, holder: &Holder, ttl: Duration) -> Result<Lease> {
        let tag = format!("{:016x}", fastrand::u64(..));
        let body = |expires_unix: i64| LeaseBody { holder: holder.clone(), tag: tag.clone(), expires_unix };
        let taken = |body: LeaseBody, generation: i64, made: Instant| Lease {
            bucket: bucket.clone(),
            key: key.to_string(),
            valid_until: expiry_instant(body.expires_unix),
            body,
            ttl,
            generation,
            renewed_at: made,
        };
        // Two rounds: a lease that changes hands between our read and our
        // write is someone else's now, and gets one more look.
        for _ in 0..2 {
            let made = Instant::now();
            let mine = body(now_unix() + ttl.as_secs() as i64);
            match bucket.put(key, encode(&mine), Precondition::DoesNotExist).await {
                Ok(generation) => return Ok(taken(mine, generation, made)),
                Err(StorageError::PreconditionFailed { .. }) => {}
                Err(e) => return Err(e),
            }
            let Some((bytes, generation)) = bucket.get(key).await? else { continue };
            // An unreadable lease object protects nothing: it is taken over.
            if let Ok(current) = serde_json::from_slice::<LeaseBody>(&bytes) {
                if current.expires_unix > now_unix() && !dead_here(&current.holder) {
                    return Err(StorageError::Locked {
                        url: bucket.url(key),
                        holder: Box::new(HolderInfo::Known(current.holder)),
                        until: rfc3339(current.expires_unix),
                    });
                }
                if current.expires_unix > 0 {
                    tracing::warn!("taking over {} from {} (its lease ran out or its process is gone)", bucket.url(key), current.holder);
                }
            }
            let made = Instant::now();
            let mine = body(now_unix() + ttl.as_secs() as i64);
            match bucket.put(key, encode(&mine), Precondition::GenerationIs(generation)).await {
                Ok(generation) => return Ok(taken(mine, generation, made)),
                Err(StorageError::PreconditionFailed { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        let current = bucket.get(key).await?.and_then(|(b, _)| serde_json::from_slice::<LeaseBody>(&b).ok());
        Err(StorageError::Locked {
            url: bucket.url(key),
            until: current.as_ref().map(|c| rfc3339(c.expires_unix)).unwrap_or_else(|| "unknown".into()),
            holder: Box::new(match current {
                Some(c) => HolderInfo::Known(c.holder),
                None => HolderInfo::Unknown { holder_file: bucket.url(key).into() },
            }),
        })
    }

    /// Extends the lease by its time to live; [`StorageError::LeaseLost`]
    /// (naming the new holder) if someone else has taken it since.
    pub async fn renew(&mut self) -> Result<()> {
        let made = Instant::now();
        let mut body = self.body.clone();
        body.expires_unix = now_unix() + self.ttl.as_secs() as i64;
        let valid_until = expiry_instant(body.expires_unix);
        match self.bucket.put(&self.key, encode(&body), Precondition::GenerationIs(self.generation)).await {
            Ok(generation) => {
                self.generation = generation;
                self.body = body;
                self.valid_until = valid_until;
                self.renewed_at = made;
                Ok(())
            }
            // Our own write may have landed before its answer was lost (a
            // retried request then fails its precondition): look.
            Err(StorageError::PreconditionFailed { .. }) => self.check().await,
            Err(e) => Err(e),
        }
    }

    /// Whether the lease is still ours: the object is the generation we
    /// wrote (or carries our tag); [`StorageError::LeaseLost`] otherwise.
    pub async fn check(&mut self) -> Result<()> {
        let current = self.bucket.get(&self.key).await?;
        let body = current.as_ref().and_then(|(bytes, _)| serde_json::from_slice::<LeaseBody>(bytes).ok());
        match (&current, &body) {
            (Some((_, generation)), _) if *generation == self.generation => Ok(()),
            (Some((_, generation)), Some(body)) if body.tag == self.body.tag && body.expires_unix > 0 => {
                // Our renewal landed though its answer was lost: its expiry
                // is ours, but not when it was made; count from the older one.
                self.generation = *generation;
                self.valid_until = self.valid_until.min(expiry_instant(body.expires_unix));
                self.body = body.clone();
                Ok(())
            }
            _ => Err(StorageError::LeaseLost {
                url: self.url(),
                holder: Box::new(match body {
                    Some(other) => HolderInfo::Known(other.holder),
                    None => HolderInfo::Unknown { holder_file: self.url().into() },
                }),
            }),
        }
    }

    /// Renews the lease when a third of its time to live has passed since
    /// the last renewal, otherwise checks it (one read of the lease object):
    /// either way, the lease is known to be ours now, or an error says why not.
    pub async fn keep(&mut self) -> Result<()> {
        if self.renewed_at.elapsed() >= self.ttl / 3 { self.renew().await } else { self.check().await }
    }

    /// Before one upload: [`Lease::keep`], and a renewal if that left no
    /// time to vouch for; [`StorageError::LeaseUnsure`] if there is none even
    /// then (the confirmation took longer than the lease has left).
    pub async fn vouch(&mut self) -> Result<()> {
        self.keep().await?;
        if self.vouched_for().is_zero() {
            self.renew().await?;
        }
        if self.vouched_for().is_zero() {
            return Err(self.unsure("its confirmation took longer than the lease had left"));
        }
        Ok(())
    }

    /// How long before its expiry the lease stops vouching for an upload:
    /// a fifth of its time to live, at least half a second (the clocks of
    /// two machines, a request still on the wire when it is dropped).
    pub fn margin(&self) -> Duration {
        (self.ttl / 5).max(Duration::from_millis(500))
    }

    /// How much longer an upload may run under the lease as it stands (its
    /// expiry less [`Lease::margin`]); zero once it cannot be vouched for.
    pub fn vouched_for(&self) -> Duration {
        self.valid_until.saturating_duration_since(Instant::now()).saturating_sub(self.margin())
    }

    /// Runs `work` (one upload, retries included) only while the lease
    /// vouches for it: renewed every third of its time to live meanwhile (a
    /// long upload), dropped with [`StorageError::LeaseUnsure`] once the
    /// lease's expiry less the margin comes without a renewal, or with
    /// [`StorageError::LeaseLost`] when a renewal finds it taken. A dropped
    /// upload takes its connection and its pending retries with it: it
    /// can never land after another writer may have taken over.
    pub async fn guard<T>(&mut self, work: impl Future<Output = Result<T>>) -> Result<T> {
        let mut work = std::pin::pin!(work);
        let mut next_renewal = self.renewed_at + self.ttl / 3;
        loop {
            let left = self.vouched_for();
            let unsure = self.unsure("an upload ran until the lease's expiry less its margin, and the lease could not be renewed meanwhile");
            // Checked before the select, not left to it: tokio's timer rounds
            // a deadline up to its next millisecond tick, so a deadline that
            // has just passed could still let `work` be polled (started) once.
            if left.is_zero() {
                return Err(unsure);
            }
            let deadline = tokio::time::Instant::from_std(Instant::now() + left);
            let renewal_at = tokio::time::Instant::from_std(next_renewal);
            tokio::select! {
                // The deadline first: past it, the work is not even polled (started).
                biased;
                () = tokio::time::sleep_until(deadline) => return Err(unsure),
                done = &mut work => return done,
                renewed = async {
                    tokio::time::sleep_until(renewal_at).await;
                    self.renew().await
                } => match renewed {
                    Ok(()) => next_renewal = self.renewed_at + self.ttl / 3,
                    Err(e @ StorageError::LeaseLost { .. }) => return Err(e),
                    // Tried again soon; the deadline still holds meanwhile.
                    Err(e) => {
                        tracing::warn!("renewing {} during an upload failed (trying again): {e}", self.url());
                        next_renewal = Instant::now() + (self.ttl / 10).max(Duration::from_millis(200));
                    }
                },
            }
        }
    }

    fn unsure(&self, message: &str) -> StorageError {
        StorageError::LeaseUnsure { url: self.url(), message: message.to_string() }
    }

    /// Gives the lease up (marks it expired), only if it is still ours.
    pub async fn release(self) -> Result<()> {
        let body = LeaseBody { expires_unix: 0, ..self.body.clone() };
        self.bucket.put(&self.key, encode(&body), Precondition::GenerationIs(self.generation)).await.map(|_| ())
    }

    pub fn generation(&self) -> i64 {
        self.generation
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    pub fn url(&self) -> String {
        self.bucket.url(&self.key)
    }
}

fn encode(body: &LeaseBody) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(body).expect("a lease body is plain data"))
}
