//! What a loader finds: one [`Sample`] per usable image, one [`Skipped`] per
//! file it had to leave out (and why), gathered in a [`Catalog`]. Nothing here
//! decodes pixels; that is `decode`'s job.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::config::SourceKind;
use super::kdef::{Expression, KdefCode};

/// Which dataset (layout) a sample came from. Also namespaces identities:
/// "F01" in KDEF and "F01" in a folder dataset are different people.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DatasetTag {
    Lfw,
    Sun397,
    Kdef,
    Akdef,
    Npy,
    Folder,
}

impl DatasetTag {
    pub const ALL: [DatasetTag; 6] = [DatasetTag::Lfw, DatasetTag::Sun397, DatasetTag::Kdef, DatasetTag::Akdef, DatasetTag::Npy, DatasetTag::Folder];

    pub const fn name(self) -> &'static str {
        match self {
            DatasetTag::Lfw => "lfw",
            DatasetTag::Sun397 => "sun397",
            DatasetTag::Kdef => "kdef",
            DatasetTag::Akdef => "akdef",
            DatasetTag::Npy => "npy",
            DatasetTag::Folder => "folder",
        }
    }

    pub fn index(self) -> u8 {
        self as u8
    }

    pub fn from_index(i: u8) -> Option<DatasetTag> {
        DatasetTag::ALL.get(usize::from(i)).copied()
    }
}

impl fmt::Display for DatasetTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a sample's pixels are.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleSource {
    /// An image file (JPEG or PNG).
    File { path: PathBuf },
    /// Image `index` (first axis) of a `.npy` array.
    Npy { path: PathBuf, index: usize },
}

impl SampleSource {
    pub fn path(&self) -> &Path {
        match self {
            SampleSource::File { path } | SampleSource::Npy { path, .. } => path,
        }
    }
}

impl fmt::Display for SampleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SampleSource::File { path } => write!(f, "{}", path.display()),
            SampleSource::Npy { path, index } => write!(f, "{}[{index}]", path.display()),
        }
    }
}

/// Size and modification time of an input file, part of the cache key so an
/// edited or replaced file invalidates the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct FileStamp {
    pub len: u64,
    /// Nanoseconds since the Unix epoch (0 where the platform has no mtime).
    pub mtime_ns: i128,
}

impl FileStamp {
    pub fn of(meta: &std::fs::Metadata) -> FileStamp {
        let mtime_ns = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos() as i128).unwrap_or(0);
        FileStamp { len: meta.len(), mtime_ns }
    }
}

/// One labelled image, before decoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub source: SampleSource,
    pub face: bool,
    /// The KDEF expression, where the dataset records one (KDEF, AKDEF,
    /// expression-named folders); `None` for LFW faces and every non-face.
    pub expression: Option<Expression>,
    /// The person (LFW folder name, KDEF subject like `F01`) or, for a
    /// non-face, the image id (`sun_abc...`). Train and eval never share one.
    pub identity: String,
    pub dataset: DatasetTag,
    /// The parsed KDEF code, for KDEF samples (angle filters, reports).
    pub kdef: Option<KdefCode>,
    pub stamp: FileStamp,
    /// Index of the configured source (into [`Catalog::sources`]) the
    /// sample came from; loaders leave 0, `load_catalog` sets it.
    #[serde(default)]
    pub origin: u16,
}

impl Sample {
    /// The identity namespaced by source and dataset, the unit of the
    /// train/eval split: "F01" of a synthetic KDEF tree and "F01" of the
    /// real KDEF are different people.
    pub fn split_key(&self) -> String {
        format!("{}:{}:{}", self.origin, self.dataset, self.identity)
    }
}

/// One configured source of a catalog: its name (as reports show it) and
/// whether it is drawn or photographed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSummary {
    pub name: String,
    pub kind: SourceKind,
}

/// A file a loader or the decoder left out, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The file, or `file.npy[index]`.
    pub path: String,
    pub reason: String,
}

impl Skipped {
    pub fn new(path: impl fmt::Display, reason: impl Into<String>) -> Skipped {
        Skipped { path: path.to_string(), reason: reason.into() }
    }
}

/// Everything the loaders found.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub samples: Vec<Sample>,
    pub skipped: Vec<Skipped>,
    /// Good files left out on purpose (an angle filter, a category
    /// exclusion, a per-dataset cap), counted per reason for the report.
    pub filtered: std::collections::BTreeMap<String, usize>,
    /// The configured sources, indexed by [`Sample::origin`] (empty for a
    /// loader's own catalog).
    pub sources: Vec<SourceSummary>,
}

impl Catalog {
    pub fn extend(&mut self, other: Catalog) {
        self.samples.extend(other.samples);
        self.skipped.extend(other.skipped);
        for (k, v) in other.filtered {
            *self.filtered.entry(k).or_default() += v;
        }
    }

    pub fn filter_out(&mut self, reason: &str, count: usize) {
        if count > 0 {
            *self.filtered.entry(reason.to_string()).or_default() += count;
        }
    }
}
