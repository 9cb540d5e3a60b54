//! Where output goes: a local folder (the default) or a Cloud Storage prefix
//! written `gs://BUCKET/PREFIX`.

use std::path::{Path, PathBuf};

use super::StorageError;

/// A bucket and a prefix inside it (no leading or trailing `/`; may be empty).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GcsPath {
    pub bucket: String,
    pub prefix: String,
}

impl GcsPath {
    /// The object name of `key` (a `/`-separated path relative to the prefix).
    pub fn object(&self, key: &str) -> String {
        let key = key.trim_start_matches('/');
        match (self.prefix.is_empty(), key.is_empty()) {
            (true, _) => key.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{key}", self.prefix),
        }
    }

    /// The same bucket, `key` further down.
    pub fn join(&self, key: &str) -> GcsPath {
        GcsPath { bucket: self.bucket.clone(), prefix: self.object(key).trim_end_matches('/').to_string() }
    }
}

impl std::fmt::Display for GcsPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() { write!(f, "gs://{}", self.bucket) } else { write!(f, "gs://{}/{}", self.bucket, self.prefix) }
    }
}

/// An output location as the user wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Location {
    Local(PathBuf),
    Gcs(GcsPath),
}

impl Location {
    /// `gs://BUCKET[/PREFIX]` is a bucket; anything else is a local path.
    pub fn parse(text: &str) -> Result<Location, StorageError> {
        let Some(rest) = text.strip_prefix("gs://") else {
            return Ok(Location::Local(PathBuf::from(text)));
        };
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket, text)?;
        // A trailing slash is harmless; one right after the bucket is an empty part.
        let prefix = prefix.trim_end_matches('/');
        if prefix.split('/').any(|part| part.is_empty() || part == "." || part == "..") && !prefix.is_empty() {
            return Err(StorageError::InvalidLocation {
                text: text.to_string(),
                rule: "the prefix after the bucket must not contain empty, `.` or `..` parts".into(),
            });
        }
        Ok(Location::Gcs(GcsPath { bucket: bucket.to_string(), prefix: prefix.to_string() }))
    }

    /// A path that may be a `gs://` URL written as a path (clap and serde hand us `PathBuf`s).
    pub fn from_path(path: &Path) -> Result<Location, StorageError> {
        match path.to_str() {
            Some(text) if text.starts_with("gs://") => Location::parse(text),
            // A bucket URL joined onto a folder (`campaigns/gs://b/p`), or
            // with a slash lost (`gs:/b/p`): a mistake, never a local folder.
            _ if path.components().any(|c| c.as_os_str() == "gs:") => Err(StorageError::InvalidLocation {
                text: path.display().to_string(),
                rule: "write a bucket as gs://BUCKET/PREFIX (two slashes), never relative to another folder".into(),
            }),
            _ => Ok(Location::Local(path.to_path_buf())),
        }
    }

    pub fn gcs(&self) -> Option<&GcsPath> {
        match self {
            Location::Gcs(path) => Some(path),
            Location::Local(_) => None,
        }
    }
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Local(path) => write!(f, "{}", path.display()),
            Location::Gcs(path) => write!(f, "{path}"),
        }
    }
}

/// Cloud Storage's bucket naming rules (the common subset: no dotted names
/// over 63 characters, which need domain verification anyway).
fn check_bucket(bucket: &str, text: &str) -> Result<(), StorageError> {
    let ok_chars = bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'));
    let ok_ends =
        bucket.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()) && bucket.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if (3..=63).contains(&bucket.len()) && ok_chars && ok_ends && !bucket.starts_with("goog") {
        return Ok(());
    }
    Err(StorageError::InvalidLocation {
        text: text.to_string(),
        rule: format!(
            "bucket {bucket:?} is not a Cloud Storage bucket name: 3-63 characters, lowercase letters, digits, '-', '_' and '.', \
             starting and ending with a letter or digit, not starting with \"goog\""
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_local_paths() {
        assert_eq!(Location::parse("runs/x").unwrap(), Location::Local(PathBuf::from("runs/x")));
        let gcs = Location::parse("gs://my-bucket/runs/tpu/").unwrap();
        let path = gcs.gcs().unwrap();
        assert_eq!((path.bucket.as_str(), path.prefix.as_str()), ("my-bucket", "runs/tpu"));
        assert_eq!(path.object("a/b.json"), "runs/tpu/a/b.json");
        assert_eq!(gcs.to_string(), "gs://my-bucket/runs/tpu");
        assert_eq!(Location::parse("gs://b12").unwrap().gcs().unwrap().object("x"), "x");
        assert_eq!(Location::from_path(Path::new("gs://b12/p")).unwrap().to_string(), "gs://b12/p");
    }

    #[test]
    fn bad_buckets_say_what_is_allowed() {
        for bad in ["gs://", "gs://A-Bucket/x", "gs://ab/x", "gs://b12/../x", "gs://b12//x", "gs://-b12"] {
            let err = Location::parse(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{err}");
        }
        assert!(Location::from_path(&Path::new("campaigns").join("gs://b12/x")).unwrap_err().to_string().contains("two slashes"));
    }
}
