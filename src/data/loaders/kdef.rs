//! KDEF (`KDEF/AF01/AF01ANS.JPG`) and AKDEF (`FAFFL.JPG`): faces with an
//! expression and a camera angle in the file name. A file whose name does not
//! parse, or that sits in the wrong subject folder, is reported and skipped:
//! the public KDEF release has a few such files.

use std::path::Path;

use super::{EntryKind, descend_into_single, has_image_extension, no_images, read_entries, require_dir};
use crate::data::error::Result;
use crate::data::kdef::{AkdefCode, Angle, KdefCode};
use crate::data::sample::{Catalog, DatasetTag, Sample, SampleSource, Skipped};

/// Lists KDEF pictures whose angle is in `angles`.
pub fn load_kdef(root: &Path, angles: &[Angle]) -> Result<Catalog> {
    require_dir("KDEF", root)?;
    let root = descend_into_single(root, &["KDEF"]);
    let mut catalog = Catalog::default();
    let Some(folders) = read_entries(&root, &mut catalog) else { return Err(no_images("KDEF", &root)) };
    for folder in folders {
        if let EntryKind::File(_) = folder.kind {
            if !folder.name.to_ascii_lowercase().ends_with(".txt") {
                catalog.skipped.push(Skipped::new(folder.path.display(), "file outside a KDEF subject folder (KDEF expects KDEF/AF01/AF01ANS.JPG)"));
            }
            continue;
        }
        let Some(files) = read_entries(&folder.path, &mut catalog) else { continue };
        for file in files {
            let EntryKind::File(stamp) = file.kind else {
                catalog.skipped.push(Skipped::new(file.path.display(), "unexpected folder inside a KDEF subject folder"));
                continue;
            };
            if !has_image_extension(&file.path) {
                catalog.skipped.push(Skipped::new(file.path.display(), "not a .jpg/.jpeg/.png file"));
                continue;
            }
            let stem = file.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let code = match KdefCode::parse(&stem) {
                Ok(code) => code,
                Err(reason) => {
                    catalog.skipped.push(Skipped::new(file.path.display(), reason));
                    continue;
                }
            };
            if !code.folder().eq_ignore_ascii_case(&folder.name) {
                catalog.skipped.push(Skipped::new(
                    file.path.display(),
                    format!("misnamed KDEF file `{stem}`: its code says folder {} but it is in {}", code.folder(), folder.name),
                ));
                continue;
            }
            if !angles.contains(&code.angle) {
                catalog.filter_out("KDEF/AKDEF angle not in kdef_angles", 1);
                continue;
            }
            catalog.samples.push(Sample {
                source: SampleSource::File { path: file.path },
                face: true,
                expression: Some(code.expression),
                identity: code.identity(),
                dataset: DatasetTag::Kdef,
                kdef: Some(code),
                stamp,
                origin: 0,
            });
        }
    }
    if catalog.samples.is_empty() && catalog.filtered.is_empty() {
        return Err(no_images("KDEF", &root));
    }
    Ok(catalog)
}

/// Lists AKDEF pictures (any folder depth up to 2) whose angle is in `angles`.
pub fn load_akdef(root: &Path, angles: &[Angle]) -> Result<Catalog> {
    require_dir("AKDEF", root)?;
    let root = descend_into_single(root, &["AKDEF"]);
    let mut catalog = Catalog::default();
    walk_akdef(&root, 0, angles, &mut catalog);
    if catalog.samples.is_empty() && catalog.filtered.is_empty() {
        return Err(no_images("AKDEF", &root));
    }
    Ok(catalog)
}

fn walk_akdef(dir: &Path, depth: usize, angles: &[Angle], catalog: &mut Catalog) {
    let Some(entries) = read_entries(dir, catalog) else { return };
    for entry in entries {
        let stamp = match entry.kind {
            EntryKind::Dir if depth < 2 => {
                walk_akdef(&entry.path, depth + 1, angles, catalog);
                continue;
            }
            EntryKind::Dir => {
                catalog.skipped.push(Skipped::new(entry.path.display(), "folder nested too deep for AKDEF"));
                continue;
            }
            EntryKind::File(stamp) => stamp,
        };
        if !has_image_extension(&entry.path) {
            if !entry.name.to_ascii_lowercase().ends_with(".txt") {
                catalog.skipped.push(Skipped::new(entry.path.display(), "not a .jpg/.jpeg/.png file"));
            }
            continue;
        }
        let stem = entry.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let code = match AkdefCode::parse(&stem) {
            Ok(code) => code,
            Err(reason) => {
                catalog.skipped.push(Skipped::new(entry.path.display(), reason));
                continue;
            }
        };
        if !angles.contains(&code.angle) {
            catalog.filter_out("KDEF/AKDEF angle not in kdef_angles", 1);
            continue;
        }
        catalog.samples.push(Sample {
            source: SampleSource::File { path: entry.path },
            face: true,
            expression: Some(code.expression),
            identity: code.identity(),
            dataset: DatasetTag::Akdef,
            kdef: None,
            stamp,
            origin: 0,
        });
    }
}
