//! Folder walkers for the layouts users have on disk (LFW, SUN397, KDEF,
//! AKDEF, a folder per class) and the `.npy` import. A loader lists files
//! and labels them; it never decodes pixels. Every file it cannot use is
//! recorded in [`Catalog::skipped`] with the reason, so nothing vanishes
//! silently; a missing root folder is an error.
//!
//! Output order is deterministic (entries sorted by name), which the split,
//! the cache key and the prepared sets rely on.

mod folders;
mod kdef;
mod lfw;
mod npy;
mod sun397;

use std::path::{Path, PathBuf};

pub use folders::{FolderClass, load_folder};
pub use kdef::{load_akdef, load_kdef};
pub use lfw::load_lfw;
pub use npy::{NpyArray, NpyDtype, load_npy, read_npy, read_npy_header};
pub use sun397::load_sun397;

use super::error::{DataError, Result};
use super::sample::{Catalog, FileStamp, Skipped};

/// File extensions we decode (compared case-insensitively).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["jpg", "jpeg", "png"];

pub(crate) fn has_image_extension(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// One directory entry, with symlinks followed.
pub(crate) struct Entry {
    pub path: PathBuf,
    pub name: String,
    pub kind: EntryKind,
}

pub(crate) enum EntryKind {
    Dir,
    File(FileStamp),
}

/// Checks that a dataset root exists and is a folder.
pub(crate) fn require_dir(what: &'static str, path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(DataError::MissingFolder { what, path: path.to_path_buf() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(DataError::MissingFolder { what, path: path.to_path_buf() }),
        Err(e) => Err(DataError::io(path, e)),
    }
}

/// Lists a folder sorted by name. A folder that cannot be read, and entries
/// whose type cannot be read (dangling links, permissions), are recorded as
/// skipped and left out; hidden entries (`.DS_Store`, `._x.jpg`) are counted
/// as filtered. Returns `None` when the folder itself could not be read.
pub(crate) fn read_entries(dir: &Path, catalog: &mut Catalog) -> Option<Vec<Entry>> {
    let reader = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) => {
            catalog.skipped.push(Skipped::new(dir.display(), format!("cannot read folder: {e}")));
            return None;
        }
    };
    let mut entries = Vec::new();
    for item in reader {
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                catalog.skipped.push(Skipped::new(dir.display(), format!("cannot list folder entry: {e}")));
                continue;
            }
        };
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            catalog.filter_out("hidden file or folder", 1);
            continue;
        }
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => entries.push(Entry { path, name, kind: EntryKind::Dir }),
            Ok(m) if m.is_file() => entries.push(Entry { path, name, kind: EntryKind::File(FileStamp::of(&m)) }),
            Ok(_) => catalog.skipped.push(Skipped::new(path.display(), "not a regular file or folder")),
            Err(e) => catalog.skipped.push(Skipped::new(path.display(), format!("cannot read: {e}"))),
        }
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Some(entries)
}

/// When `root` holds exactly one sub-folder named like the dataset itself
/// (what extracting an archive into `--dest` gives), returns that folder, so
/// users may point at either level.
pub(crate) fn descend_into_single(root: &Path, names: &[&str]) -> PathBuf {
    let Ok(reader) = std::fs::read_dir(root) else { return root.to_path_buf() };
    let visible: Vec<_> = reader.filter_map(|e| e.ok()).filter(|e| !e.file_name().to_string_lossy().starts_with('.')).collect();
    if visible.len() == 1 {
        let name = visible[0].file_name().to_string_lossy().into_owned();
        if names.iter().any(|n| n.eq_ignore_ascii_case(&name)) && visible[0].path().is_dir() {
            return visible[0].path();
        }
    }
    root.to_path_buf()
}

pub(crate) fn no_images(what: &'static str, path: &Path) -> DataError {
    DataError::NoImages { what, path: path.to_path_buf() }
}
