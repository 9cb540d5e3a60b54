//! A lock for a bucket prefix: one small object, taken and renewed with
//! generation preconditions (compare and swap), so two writers never share
//! one output prefix. A holder that dies stops renewing; once its lease has
//! expired, the next writer takes it over.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::bucket::{Bucket, Precondition};
use super::{Result, StorageError};

/// What the lease object says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    /// Who holds it: host, process and a random tag, for messages and for
    /// telling our own lease from another's.
    pub holder: String,
    /// Until when (Unix seconds); 0 once released.
    pub expires_unix: i64,
}

#[derive(Debug)]
pub struct Lease {
    bucket: Bucket,
    key: String,
    holder: String,
    ttl: Duration,
    generation: i64,
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `host:pid:random`, unique enough to tell two writers apart.
pub fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "unknown-host".into());
    format!("{host}:{}:{:08x}", std::process::id(), fastrand::u32(..))
}

impl Lease {
    /// Takes the lease `key`, free or expired; fails with [`StorageError::Locked`] when another holds it.
    pub async fn acquire(bucket: &Bucket, key: &str, holder: &str, ttl: Duration) -> Result<Lease> {
        let body = |expires: i64| Bytes::from(serde_json::to_vec(&LeaseHolder { holder: holder.to_string(), expires_unix: expires }).unwrap_or_default());
        // Two rounds: a lease that changes hands between our read and our write is someone else's now.
        for _ in 0..2 {
            let expires = now_unix() + ttl.as_secs() as i64;
            match bucket.put(key, body(expires), Precondition::DoesNotExist).await {
                Ok(generation) => return Ok(Lease { bucket: bucket.clone(), key: key.to_string(), holder: holder.to_string(), ttl, generation }),
                Err(StorageError::PreconditionFailed { .. }) => {}
                Err(e) => return Err(e),
            }
            let Some((bytes, generation)) = bucket.get(key).await? else { continue };
            // An unreadable lease object is treated as expired: it protects nothing.
            let current: Option<LeaseHolder> = serde_json::from_slice(&bytes).ok();
            if let Some(current) = &current {
                if current.expires_unix > now_unix() && current.holder != holder {
                    return Err(StorageError::Locked {
                        url: bucket.url(key),
                        holder: current.holder.clone(),
                        expires: current.expires_unix,
                        advice: "another run writes to this output; wait for it, or use another --out".into(),
                    });
                }
            }
            match bucket.put(key, body(expires), Precondition::GenerationIs(generation)).await {
                Ok(generation) => return Ok(Lease { bucket: bucket.clone(), key: key.to_string(), holder: holder.to_string(), ttl, generation }),
                Err(StorageError::PreconditionFailed { .. }) => continue,
                Err(e) => return Err(e),
            }
        }
        let current = bucket.get(key).await?.and_then(|(b, _)| serde_json::from_slice::<LeaseHolder>(&b).ok());
        Err(StorageError::Locked {
            url: bucket.url(key),
            holder: current.as_ref().map(|c| c.holder.clone()).unwrap_or_else(|| "another writer".into()),
            expires: current.map(|c| c.expires_unix).unwrap_or(0),
            advice: "it changed hands while we tried to take it; try again".into(),
        })
    }

    /// Extends the lease; fails with [`StorageError::PreconditionFailed`] if it was taken over.
    pub async fn renew(&mut self) -> Result<()> {
        let body = LeaseHolder { holder: self.holder.clone(), expires_unix: now_unix() + self.ttl.as_secs() as i64 };
        let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        self.generation = self.bucket.put(&self.key, bytes, Precondition::GenerationIs(self.generation)).await?;
        Ok(())
    }

    /// Gives the lease up (marks it expired, only if it is still ours).
    pub async fn release(self) -> Result<()> {
        let body = LeaseHolder { holder: self.holder.clone(), expires_unix: 0 };
        let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
        self.bucket.put(&self.key, bytes, Precondition::GenerationIs(self.generation)).await.map(|_| ())
    }

    pub fn generation(&self) -> i64 {
        self.generation
    }

    pub fn url(&self) -> String {
        self.bucket.url(&self.key)
    }
}
