//! SUN397: `SUN397/<letter>/<category>[/<sub>]/sun_<id>.jpg`, with
//! `ClassName.txt` listing the categories as `/a/abbey`. Every picture is a
//! non-face; identity = the image id (`sun_aaaxyz...`).

use std::path::Path;

use super::{EntryKind, descend_into_single, has_image_extension, no_images, read_entries, require_dir};
use crate::data::error::{DataError, Result};
use crate::data::sample::{Catalog, DatasetTag, Sample, SampleSource, Skipped};

/// Lists every scene. With `ClassName.txt` present, exactly its categories
/// are read (a listed category whose folder is missing is an error: the
/// archive is incomplete); without it, every `<letter>/<category>[/<sub>]`
/// folder is. Categories in `exclude` (written `/a/abbey`) are left out,
/// e.g. scene types that often contain faces.
pub fn load_sun397(root: &Path, exclude: &[String]) -> Result<Catalog> {
    require_dir("SUN397", root)?;
    let root = descend_into_single(root, &["SUN397"]);
    let mut catalog = Catalog::default();
    let class_file = root.join("ClassName.txt");
    let categories: Vec<String> = if class_file.is_file() {
        let text = std::fs::read_to_string(&class_file).map_err(|e| DataError::io(&class_file, e))?;
        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(normalize_category).collect()
    } else {
        let mut found = Vec::new();
        walk_categories(&root, &root, 0, &mut found, &mut catalog);
        found
    };
    let excluded: Vec<String> = exclude.iter().map(|c| normalize_category(c)).collect();
    for category in categories {
        let dir = root.join(category.trim_start_matches('/'));
        if !dir.is_dir() {
            return Err(DataError::MissingFolder { what: "SUN397 category (listed in ClassName.txt)", path: dir });
        }
        let Some(entries) = read_entries(&dir, &mut catalog) else { continue };
        let is_excluded = excluded.contains(&category);
        for entry in entries {
            let EntryKind::File(stamp) = entry.kind else { continue };
            if !has_image_extension(&entry.path) {
                catalog.skipped.push(Skipped::new(entry.path.display(), "not a .jpg/.jpeg/.png file"));
                continue;
            }
            if is_excluded {
                catalog.filter_out("SUN397 category excluded by sun397_exclude", 1);
                continue;
            }
            let identity = entry.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            catalog.samples.push(Sample {
                source: SampleSource::File { path: entry.path },
                face: false,
                expression: None,
                identity,
                dataset: DatasetTag::Sun397,
                kdef: None,
                stamp,
                origin: 0,
            });
        }
    }
    if catalog.samples.is_empty() {
        return Err(no_images("SUN397", &root));
    }
    Ok(catalog)
}

/// `a/abbey/` or `/a/abbey` -> `/a/abbey`.
fn normalize_category(text: &str) -> String {
    format!("/{}", text.trim().trim_matches('/'))
}

/// Without `ClassName.txt`: a category is any folder 2 or 3 levels below the
/// root that directly holds files. Files elsewhere are reported.
fn walk_categories(root: &Path, dir: &Path, depth: usize, found: &mut Vec<String>, catalog: &mut Catalog) {
    let Some(entries) = read_entries(dir, catalog) else { return };
    let mut holds_files = false;
    for entry in entries {
        match entry.kind {
            EntryKind::Dir if depth < 3 => walk_categories(root, &entry.path, depth + 1, found, catalog),
            EntryKind::Dir => catalog.skipped.push(Skipped::new(entry.path.display(), "folder nested deeper than SUN397/<letter>/<category>/<sub>/")),
            EntryKind::File(_) if depth >= 2 => holds_files = true,
            EntryKind::File(_) if depth == 0 && entry.name.to_ascii_lowercase().ends_with(".txt") => {}
            EntryKind::File(_) => catalog.skipped.push(Skipped::new(entry.path.display(), "file outside a SUN397 category folder (<letter>/<category>/)")),
        }
    }
    if holds_files {
        if let Ok(rel) = dir.strip_prefix(root) {
            let parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
            found.push(format!("/{}", parts.join("/")));
        }
    }
}
