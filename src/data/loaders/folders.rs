//! A generic folder-per-class dataset: `ROOT/<class>/<image>`. The class
//! folder's name says what its images are: `face`, `non_face` (or
//! `background`), or an expression (`happy`, `HA`, `sad`, ...), which makes
//! them faces with that expression. Identity = the file stem with a trailing
//! `_<digits>` removed, so `Jane_Doe_0003.jpg` and `Jane_Doe_0007.jpg` stay
//! on one side of the split.

use std::path::Path;

use super::{EntryKind, has_image_extension, no_images, read_entries, require_dir};
use crate::data::error::{DataError, Result};
use crate::data::kdef::Expression;
use crate::data::sample::{Catalog, DatasetTag, Sample, SampleSource, Skipped};

/// What a class folder's name means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolderClass {
    Face,
    NonFace,
    Expression(Expression),
}

const ALLOWED: &str = "allowed class folder names: face, faces, non_face, non-face, nonface, not_face, not_a_face, background, or an expression (afraid, angry, disgusted, happy, neutral, sad, surprised, or the KDEF codes AF, AN, DI, HA, NE, SA, SU)";

impl FolderClass {
    pub fn from_folder_name(name: &str) -> Option<FolderClass> {
        match name.to_ascii_lowercase().as_str() {
            "face" | "faces" => Some(FolderClass::Face),
            "non_face" | "non-face" | "nonface" | "non_faces" | "non-faces" | "nonfaces" | "not_face" | "not_a_face" | "background" => {
                Some(FolderClass::NonFace)
            }
            _ => Expression::from_name_or_code(name).map(FolderClass::Expression),
        }
    }
}

/// Lists a folder-per-class dataset. An unknown class folder name and a
/// class folder without images are errors (a typo would otherwise silently
/// drop a class).
pub fn load_folder(root: &Path) -> Result<Catalog> {
    require_dir("class-folder dataset", root)?;
    let mut catalog = Catalog::default();
    let Some(classes) = read_entries(root, &mut catalog) else { return Err(no_images("class-folder dataset", root)) };
    for class_dir in classes {
        if let EntryKind::File(_) = class_dir.kind {
            catalog.skipped.push(Skipped::new(class_dir.path.display(), "file outside a class folder (expected ROOT/<class>/<image>)"));
            continue;
        }
        let class = FolderClass::from_folder_name(&class_dir.name)
            .ok_or_else(|| DataError::UnknownClassFolder { path: class_dir.path.clone(), allowed: ALLOWED.to_string() })?;
        let Some(files) = read_entries(&class_dir.path, &mut catalog) else { continue };
        let before = catalog.samples.len();
        for file in files {
            let EntryKind::File(stamp) = file.kind else {
                catalog.skipped.push(Skipped::new(file.path.display(), "unexpected folder inside a class folder"));
                continue;
            };
            if !has_image_extension(&file.path) {
                catalog.skipped.push(Skipped::new(file.path.display(), "not a .jpg/.jpeg/.png file"));
                continue;
            }
            let stem = file.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let (face, expression) = match class {
                FolderClass::Face => (true, None),
                FolderClass::NonFace => (false, None),
                FolderClass::Expression(e) => (true, Some(e)),
            };
            catalog.samples.push(Sample {
                source: SampleSource::File { path: file.path },
                face,
                expression,
                identity: identity_of(&stem),
                dataset: DatasetTag::Folder,
                kdef: None,
                stamp,
                origin: 0,
            });
        }
        if catalog.samples.len() == before {
            return Err(no_images("class", &class_dir.path));
        }
    }
    Ok(catalog)
}

/// `Jane_Doe_0003` -> `Jane_Doe`; `img42` -> `img42`.
fn identity_of(stem: &str) -> String {
    match stem.rsplit_once('_') {
        Some((person, number)) if !person.is_empty() && !number.is_empty() && number.bytes().all(|b| b.is_ascii_digit()) => person.to_string(),
        _ => stem.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_strips_a_trailing_image_number() {
        assert_eq!(identity_of("Jane_Doe_0003"), "Jane_Doe");
        assert_eq!(identity_of("img42"), "img42");
        assert_eq!(identity_of("_0003"), "_0003");
    }

    #[test]
    fn class_folder_names() {
        assert_eq!(FolderClass::from_folder_name("HA"), Some(FolderClass::Expression(Expression::Happy)));
        assert_eq!(FolderClass::from_folder_name("Background"), Some(FolderClass::NonFace));
        assert_eq!(FolderClass::from_folder_name("cats"), None);
    }
}
