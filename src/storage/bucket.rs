//! One bucket prefix: atomic puts, gets, listing, folders up and down.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use google_cloud_storage::client::Storage;

use super::location::GcsPath;
use super::{EMULATOR_ENV, GCS_ENDPOINT, Result, StorageError};

/// What must hold for a put to happen: Cloud Storage's `ifGenerationMatch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Write whatever is there.
    None,
    /// Only if no live object has the name (`ifGenerationMatch=0`).
    DoesNotExist,
    /// Only if the live object is still this generation (compare and swap).
    GenerationIs(i64),
}

/// An object under the bucket prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The name relative to the prefix, `/`-separated.
    pub key: String,
    pub size: u64,
    /// Cloud Storage's version number of the object's content.
    pub generation: i64,
}

#[derive(Clone, Debug)]
pub struct StorageConfig {
    /// Scheme, host and port of the JSON API.
    pub endpoint: String,
    /// Credentials to use; `None` means Application Default Credentials
    /// (anonymous when an emulator is configured).
    pub credentials: Option<Credentials>,
}

impl StorageConfig {
    /// The real service with ADC, or the emulator named by `STORAGE_EMULATOR_HOST`
    /// (with anonymous credentials, as Google's own clients do).
    pub fn from_env(credentials: impl FnOnce() -> Result<Credentials>) -> Result<Self> {
        match std::env::var(EMULATOR_ENV).ok().filter(|v| !v.trim().is_empty()) {
            Some(host) => Ok(StorageConfig::emulator(&host)),
            None => Ok(StorageConfig { endpoint: GCS_ENDPOINT.to_string(), credentials: Some(credentials()?) }),
        }
    }

    /// An emulator at `host:port` or a URL, anonymous.
    pub fn emulator(host: &str) -> Self {
        let endpoint = if host.contains("://") { host.trim_end_matches('/').to_string() } else { format!("http://{}", host.trim_end_matches('/')) };
        StorageConfig { endpoint, credentials: Some(google_cloud_auth::credentials::anonymous::Builder::new().build()) }
    }
}

/// A bucket prefix, ready to read and write.
#[derive(Clone, Debug)]
pub struct Bucket {
    path: GcsPath,
    storage: Storage,
    credentials: Credentials,
    http: reqwest::Client,
    endpoint: String,
}

/// Files up to this size go up in one multipart request; larger ones
/// through a resumable session (initiate, then chunks). Either way nothing
/// is visible until the upload completes, so a killed upload leaves no
/// object. A multipart upload carries its CRC32C, computed here first, in
/// the metadata part: left to compute it on the fly, google-cloud-storage
/// 1.21 appends it as a third multipart part, which the emulator the tests
/// run (fake-gcs-server 1.54) misreads as the object's content. Conditional
/// writes (the lease, state files) are small, so they take the multipart
/// path, where the emulator, like Cloud Storage, checks `ifGenerationMatch`.
const RESUMABLE_THRESHOLD: usize = 8 << 20;

impl Bucket {
    pub async fn connect(path: &GcsPath, config: StorageConfig) -> Result<Bucket> {
        crate::google::tls::install_crypto_provider();
        let setup = |message: String| StorageError::Setup { endpoint: config.endpoint.clone(), message };
        let credentials = match config.credentials.clone() {
            Some(c) => c,
            None => {
                crate::google::auth::adc_credentials(&crate::google::AuthConfig::default()).map_err(|e| StorageError::Credentials { message: e.to_string() })?
            }
        };
        let storage = Storage::builder()
            .with_endpoint(config.endpoint.clone())
            .with_credentials(credentials.clone())
            .with_resumable_upload_threshold(RESUMABLE_THRESHOLD)
            .build()
            .await
            .map_err(|e| setup(crate::errors::chain_text(&e)))?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| setup(crate::errors::chain_text(&e)))?;
        Ok(Bucket { path: path.clone(), storage, credentials, http, endpoint: config.endpoint })
    }

    pub fn path(&self) -> &GcsPath {
        &self.path
    }

    /// `gs://bucket/prefix/key`, for messages.
    pub fn url(&self, key: &str) -> String {
        format!("gs://{}/{}", self.path.bucket, self.path.object(key))
    }

    fn bucket_name(&self) -> String {
        format!("projects/_/buckets/{}", self.path.bucket)
    }

    /// Writes `bytes` as the object `key`, whole or not at all; returns its generation.
    pub async fn put(&self, key: &str, bytes: Bytes, precondition: Precondition) -> Result<i64> {
        let crc = crc32c::crc32c(&bytes);
        let mut write = self.storage.write_object(self.bucket_name(), self.path.object(key), bytes).with_known_crc32c(crc);
        write = match precondition {
            Precondition::None => write,
            Precondition::DoesNotExist => write.set_if_generation_match(0_i64),
            Precondition::GenerationIs(generation) => write.set_if_generation_match(generation),
        };
        let object = write.send_unbuffered().await.map_err(|e| self.service_error("writing", key, e))?;
        Ok(object.generation)
    }

    /// Uploads a local file as the object `key` (streamed, whole or not at all).
    pub async fn put_file(&self, key: &str, file: &Path) -> Result<i64> {
        self.put_file_if(key, file, Precondition::None).await
    }

    /// [`Bucket::put_file`] only if `precondition` holds
    /// ([`StorageError::PreconditionFailed`] otherwise).
    pub async fn put_file_if(&self, key: &str, file: &Path, precondition: Precondition) -> Result<i64> {
        let size = tokio::fs::metadata(file).await.map_err(|e| StorageError::io(file, e))?.len();
        if size <= RESUMABLE_THRESHOLD as u64 {
            let bytes = tokio::fs::read(file).await.map_err(|e| StorageError::io(file, e))?;
            return self.put(key, Bytes::from(bytes), precondition).await;
        }
        let payload = tokio::fs::File::open(file).await.map_err(|e| StorageError::io(file, e))?;
        let mut write = self.storage.write_object(self.bucket_name(), self.path.object(key), payload).with_checksum_precomputation(true);
        write = match precondition {
            Precondition::None => write,
            Precondition::DoesNotExist => write.set_if_generation_match(0_i64),
            Precondition::GenerationIs(generation) => write.set_if_generation_match(generation),
        };
        let object = write.send_unbuffered().await.map_err(|e| self.service_error("uploading to", key, e))?;
        Ok(object.generation)
    }

    /// The object's bytes and generation; `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<(Bytes, i64)>> {
        let mut response = match self.storage.read_object(self.bucket_name(), self.path.object(key)).send().await {
            Ok(response) => response,
            Err(e) if e.http_status_code() == Some(404) => return Ok(None),
            Err(e) => return Err(self.service_error("reading", key, e)),
        };
        let generation = response.object().generation;
        let mut data = Vec::new();
        while let Some(chunk) = response.next().await {
            data.extend_from_slice(&chunk.map_err(|e| self.service_error("reading", key, e))?);
        }
        Ok(Some((Bytes::from(data), generation)))
    }

    /// Downloads `key` to `dest` through a temporary sibling and a rename:
    /// `dest` is the whole object or what it was before. Returns the
    /// generation it downloaded.
    pub async fn get_to_file(&self, key: &str, dest: &Path) -> Result<i64> {
        let Some((bytes, generation)) = self.get(key).await? else {
            return Err(StorageError::NotFound { url: self.url(key) });
        };
        let dir = crate::fsutil::parent_dir(dest);
        std::fs::create_dir_all(&dir).map_err(|e| StorageError::io(&dir, e))?;
        crate::fsutil::write_atomic(dest, &bytes).map_err(|e| StorageError::io(dest, std::io::Error::other(e.to_string())))?;
        Ok(generation)
    }

    /// Every object whose key starts with `key_prefix`, in name order.
    ///
    /// Hand-written (`GET /storage/v1/b/{bucket}/o`): `google-cloud-storage`
    /// 1.21 lists objects only through `StorageControl`, which speaks gRPC
    /// (`google.storage.v2.Storage/ListObjects`); the emulator our tests run
    /// (fake-gcs-server 1.54) serves the JSON API and only the older
    /// `google.storage.v1` gRPC service, so that path could never be tested
    /// here. Same token, same endpoint as the official client.
    pub async fn list(&self, key_prefix: &str) -> Result<Vec<ObjectInfo>> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Page {
            #[serde(default)]
            items: Vec<Item>,
            #[serde(default)]
            next_page_token: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Item {
            name: String,
            // int64 and uint64 travel as strings in Google's JSON.
            #[serde(default)]
            size: Option<String>,
            #[serde(default)]
            generation: Option<String>,
        }
        let url = format!("{}/storage/v1/b/{}/o", self.endpoint, self.path.bucket);
        let base = if self.path.prefix.is_empty() { String::new() } else { format!("{}/", self.path.prefix) };
        // The prefix `runs/a` must not also list `runs/a2/...`: list below `runs/a/`.
        let full_prefix = if key_prefix.is_empty() { base.clone() } else { self.path.object(key_prefix) };
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = vec![("prefix", full_prefix.clone()), ("fields", "items(name,size,generation),nextPageToken".to_string())];
            if let Some(t) = token.take() {
                query.push(("pageToken", t));
            }
            let headers = self.auth_headers().await?;
            let response = self.http.get(&url).headers(headers).query(&query).send().await.map_err(|e| StorageError::Service {
                action: "listing",
                url: self.url(key_prefix),
                status: None,
                message: crate::errors::chain_text(&e),
            })?;
            let status = response.status();
            let text = response.text().await.unwrap_or_default();
            if !status.is_success() {
                return Err(StorageError::Service { action: "listing", url: self.url(key_prefix), status: Some(status.as_u16()), message: snippet(&text) });
            }
            let page: Page = serde_json::from_str(&text).map_err(|e| StorageError::Service {
                action: "listing",
                url: self.url(key_prefix),
                status: Some(status.as_u16()),
                message: format!("unreadable answer: {e}"),
            })?;
            for item in page.items {
                let Some(key) = item.name.strip_prefix(&base) else { continue };
                all.push(ObjectInfo {
                    key: key.to_string(),
                    size: item.size.and_then(|s| s.parse().ok()).unwrap_or(0),
                    generation: item.generation.and_then(|s| s.parse().ok()).unwrap_or(0),
                });
            }
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        all.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(all)
    }

    /// Deletes the object `key` if it is still `generation` (a newer upload
    /// by someone else stays); an object already gone is not an error.
    ///
    /// Hand-written (`DELETE /storage/v1/b/{bucket}/o/{object}`) for the same
    /// reason as [`Bucket::list`]: the client deletes only through gRPC.
    /// Cloud Storage checks `ifGenerationMatch` on the delete itself; the
    /// emulator the tests run (fake-gcs-server 1.54) ignores it there, so the
    /// generation is also read first, which is what those tests exercise.
    pub async fn delete(&self, key: &str, generation: i64) -> Result<()> {
        let name: String = self
            .path
            .object(key)
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let url = format!("{}/storage/v1/b/{}/o/{name}", self.endpoint, self.path.bucket);
        let headers = self.auth_headers().await?;
        let failed = |status: Option<u16>, message: String| StorageError::Service { action: "deleting", url: self.url(key), status, message };
        let stale = || StorageError::PreconditionFailed { url: self.url(key), message: format!("it is no longer generation {generation}") };
        let current = self
            .http
            .get(&url)
            .headers(headers.clone())
            .query(&[("fields", "generation")])
            .send()
            .await
            .map_err(|e| failed(None, crate::errors::chain_text(&e)))?;
        match current.status().as_u16() {
            404 => return Ok(()),
            200 => {
                #[derive(serde::Deserialize)]
                struct Generation {
                    generation: String,
                }
                let text = current.text().await.unwrap_or_default();
                let live: Option<Generation> = serde_json::from_str(&text).ok();
                if live.and_then(|g| g.generation.parse::<i64>().ok()) != Some(generation) {
                    return Err(stale());
                }
            }
            status => return Err(failed(Some(status), snippet(&current.text().await.unwrap_or_default()))),
        }
        let response = self
            .http
            .delete(&url)
            .headers(headers)
            .query(&[("ifGenerationMatch", generation.to_string())])
            .send()
            .await
            .map_err(|e| failed(None, crate::errors::chain_text(&e)))?;
        let status = response.status().as_u16();
        match status {
            200..=299 | 404 => Ok(()),
            412 => Err(stale()),
            _ => Err(failed(Some(status), snippet(&response.text().await.unwrap_or_default()))),
        }
    }

    async fn auth_headers(&self) -> Result<http::HeaderMap> {
        match self.credentials.headers(http::Extensions::new()).await {
            Ok(CacheableResource::New { data, .. }) => Ok(data),
            Ok(CacheableResource::NotModified) => Ok(http::HeaderMap::new()),
            Err(e) => Err(StorageError::Credentials { message: e.to_string() }),
        }
    }

    /// Downloads every object under `key_prefix` into `dir` (keys become
    /// relative paths); returns how many. Each file lands whole.
    pub async fn download_tree(&self, key_prefix: &str, dir: &Path) -> Result<usize> {
        let prefix = key_prefix.trim_matches('/');
        let mut count = 0;
        let below = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
        for object in self.list(&below).await? {
            let rel = if prefix.is_empty() { object.key.as_str() } else { object.key.strip_prefix(prefix).unwrap_or(&object.key).trim_start_matches('/') };
            let Some(rel) = safe_relative(rel) else {
                tracing::warn!("skipping {}: not a safe relative path", self.url(&object.key));
                continue;
            };
            if rel.as_os_str().is_empty() || object.key.ends_with('/') {
                continue;
            }
            match self.get_to_file(&object.key, &dir.join(rel)).await {
                Ok(_) => count += 1,
                // Listed, then deleted before its download: the prefix no longer has it.
                Err(StorageError::NotFound { url }) => tracing::debug!("{url} was listed, then deleted before its download: skipped"),
                Err(e) => return Err(e),
            }
        }
        Ok(count)
    }

    fn service_error(&self, action: &'static str, key: &str, e: google_cloud_storage::Error) -> StorageError {
        let url = self.url(key);
        let status = e.http_status_code();
        let message = e.status().map(|s| s.message.clone()).filter(|m| !m.is_empty()).unwrap_or_else(|| crate::errors::chain_text(&e));
        match status {
            Some(412) => StorageError::PreconditionFailed { url, message },
            Some(404) => StorageError::NotFound { url },
            _ if e.is_authentication() => StorageError::Credentials { message },
            _ => StorageError::Service { action, url, status, message },
        }
    }
}

/// `a/b/c` as a relative path, refusing `..`, absolute paths and empty parts.
fn safe_relative(key: &str) -> Option<PathBuf> {
    let mut path = PathBuf::new();
    for part in key.split('/') {
        if part.is_empty() || part == "." || part == ".." || part.contains('\\') {
            return None;
        }
        path.push(part);
    }
    Some(path)
}

fn snippet(text: &str) -> String {
    let text = text.trim();
    if text.is_empty() { "(empty body)".into() } else { text.chars().take(300).collect() }
}
