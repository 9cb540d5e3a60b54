//! LFW: `lfw/<Person_Name>/<Person_Name>_0001.jpg`; the same layout for
//! `lfw_funneled/` and `lfw-deepfunneled/`. Identity = the person folder.

use std::path::Path;

use super::{Entry, EntryKind, descend_into_single, has_image_extension, no_images, read_entries, require_dir};
use crate::data::error::Result;
use crate::data::sample::{Catalog, DatasetTag, Sample, SampleSource, Skipped};

/// Lists every face in an LFW tree. `root` is the `lfw` folder (or a folder
/// holding only `lfw`, `lfw_funneled` or `lfw-deepfunneled`).
pub fn load_lfw(root: &Path) -> Result<Catalog> {
    require_dir("LFW", root)?;
    let root = descend_into_single(root, &["lfw", "lfw_funneled", "lfw-deepfunneled"]);
    let mut catalog = Catalog::default();
    let Some(people) = read_entries(&root, &mut catalog) else { return Err(no_images("LFW", &root)) };
    for Entry { path, name, kind } in people {
        match kind {
            EntryKind::File(_) => {
                catalog.skipped.push(Skipped::new(path.display(), "file outside a person folder (LFW expects lfw/<Person_Name>/<Person_Name>_0001.jpg)"))
            }
            EntryKind::Dir => {
                let Some(files) = read_entries(&path, &mut catalog) else { continue };
                for file in files {
                    match file.kind {
                        EntryKind::Dir => catalog.skipped.push(Skipped::new(file.path.display(), "unexpected folder inside an LFW person folder")),
                        EntryKind::File(_) if !has_image_extension(&file.path) => {
                            catalog.skipped.push(Skipped::new(file.path.display(), "not a .jpg/.jpeg/.png file"))
                        }
                        EntryKind::File(stamp) => catalog.samples.push(Sample {
                            source: SampleSource::File { path: file.path },
                            face: true,
                            expression: None,
                            identity: name.clone(),
                            dataset: DatasetTag::Lfw,
                            kdef: None,
                            stamp,
                            origin: 0,
                        }),
                    }
                }
            }
        }
    }
    if catalog.samples.is_empty() {
        return Err(no_images("LFW", &root));
    }
    Ok(catalog)
}
