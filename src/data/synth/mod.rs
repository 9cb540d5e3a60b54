//! The synthetic data set: drawn faces and scenes written as real JPEG files
//! in the LFW, KDEF and SUN397 layouts, so the real loaders read it end to
//! end. Deterministic: one seed gives the same files, byte for byte, on any
//! number of threads (every image has its own keyed RNG stream).
//!
//! ```text
//! OUT/lfw/<First_Last>/<First_Last>_0001.jpg     faces with identities, no expression label
//! OUT/KDEF/<AF01>/<AF01HAS>.JPG                  faces with expression and angle codes
//! OUT/SUN397/ClassName.txt, <l>/<category>[/<sub>]/sun_<id>.jpg   non-faces
//! OUT/synth.json                                 the settings and counts (written last)
//! ```
//!
//! Difficulty knobs (all in [`SynthConfig`]):
//! - `difficulty` (0 easy .. 1 hard, default 0.5) scales together: pixel
//!   noise (std 0.02 + 0.08 d), blur (radius up to (0.5 + 2.5 d) px at 128
//!   px), rotation (up to 5 + 25 d degrees; KDEF-style studio pictures
//!   2 + 6 d), position and scale jitter (small for KDEF-style pictures, which
//!   like the real KDEF are centred on a plain backdrop), occlusion
//!   (probability 0.35 d on LFW-style faces and scenes, 0.1 d on KDEF), lighting
//!   gradient (up to 0.1 + 0.4 d) and contrast loss (up to 0.5 d), how faint
//!   an expression may be (intensity drawn from [1 - 0.6 d, 1]), each
//!   person's resting mouth and brow bias, how often an LFW-style face sits
//!   on cluttered scenery (0.5 + 0.4 d), and how often confusers get a
//!   mouth-like bar.
//! - `confuser_fraction` (default 0.15): share of non-faces that are round
//!   objects with two dark spots.
//! - `size`: the pixel size; smaller images hide the brows and mouth detail.
//!
//! Faces: half go to the KDEF tree (at most the 4,900 codes KDEF has: 2
//! sessions x 70 subjects x 7 expressions x 5 angles), the rest to LFW.

mod face;
mod raster;
mod scene;

use std::path::{Path, PathBuf};
use std::time::Instant;

use image::ExtendedColorType;
use image::codecs::jpeg::JpegEncoder;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use self::face::{IdentityLook, Pose, draw_face};
use self::raster::{Canvas, Frame};
use self::scene::{SceneKind, draw_scene};
use super::error::{DataError, Result};
use super::kdef::{Angle, Expression, KDEF_SUBJECTS_PER_SEX, KdefCode, Session, Sex};
use crate::rng::{Rng, hash_str};

pub const LFW_DIR: &str = "lfw";
pub const KDEF_DIR: &str = "KDEF";
pub const SUN_DIR: &str = "SUN397";
pub const MANIFEST: &str = "synth.json";
const IN_PROGRESS: &str = ".synth-in-progress";

const JOB_STREAM: u64 = 0x4A4F_4253;
const IDENTITY_STREAM: u64 = 0x4944_454E;
const LAYOUT_STREAM: u64 = 0x4C41_594F;

/// KDEF's portrait pictures are 562 x 762.
const KDEF_ASPECT: f32 = 762.0 / 562.0;

/// Settings of the synthetic set. See the module docs for the difficulty knobs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    pub seed: u64,
    pub faces: usize,
    pub non_faces: usize,
    /// Side of the LFW-style pictures (KDEF-style ones are portrait with this
    /// width; SUN-style ones vary from 0.8 to 1.4 times it per side).
    pub size: u32,
    pub difficulty: f32,
    pub confuser_fraction: f32,
    /// Share of faces written in the KDEF layout (the rest go to LFW).
    pub kdef_share: f32,
    pub jpeg_quality: u8,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig { seed: 0, faces: 2000, non_faces: 2000, size: 128, difficulty: 0.5, confuser_fraction: 0.15, kdef_share: 0.5, jpeg_quality: 90 }
    }
}

impl SynthConfig {
    pub fn validate(&self) -> Result<()> {
        if self.faces == 0 && self.non_faces == 0 {
            return Err(DataError::config("faces", 0, "faces and non_faces cannot both be 0"));
        }
        if self.faces > 1_000_000 || self.non_faces > 1_000_000 {
            return Err(DataError::config("faces", self.faces.max(self.non_faces), "at most 1,000,000 of each"));
        }
        if !(16..=2048).contains(&self.size) {
            return Err(DataError::config("size", self.size, "an integer from 16 to 2048 pixels"));
        }
        if !(0.0..=1.0).contains(&self.difficulty) {
            return Err(DataError::config("difficulty", self.difficulty, "a number from 0 (easy) to 1 (hard)"));
        }
        if !(0.0..=1.0).contains(&self.confuser_fraction) {
            return Err(DataError::config("confuser_fraction", self.confuser_fraction, "a number from 0 to 1"));
        }
        if !(0.0..=1.0).contains(&self.kdef_share) {
            return Err(DataError::config("kdef_share", self.kdef_share, "a number from 0 to 1"));
        }
        if !(10..=100).contains(&self.jpeg_quality) {
            return Err(DataError::config("jpeg_quality", self.jpeg_quality, "an integer from 10 to 100"));
        }
        Ok(())
    }

    /// A short hash of the settings (names the default output folder).
    pub fn fingerprint(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        Sha256::digest(&json).iter().take(6).map(|b| format!("{b:02x}")).collect()
    }

    /// How many faces go to KDEF (capped by KDEF's 4,900 codes) and to LFW.
    pub fn face_counts(&self) -> (usize, usize) {
        let kdef = ((self.faces as f64 * f64::from(self.kdef_share)).round() as usize).min(KDEF_CODES);
        (kdef, self.faces - kdef)
    }
}

const KDEF_CODES: usize = 2 * 2 * KDEF_SUBJECTS_PER_SEX as usize * 7 * 5;

/// What a generation wrote (saved as `synth.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SynthManifest {
    pub config: SynthConfig,
    pub lfw_images: usize,
    pub lfw_people: usize,
    pub kdef_images: usize,
    pub kdef_subjects: usize,
    pub sun_images: usize,
    pub sun_categories: usize,
    pub seconds: f64,
}

/// One picture to draw.
#[derive(Clone, Debug)]
enum Job {
    Lfw { person: String, number: usize },
    Kdef { code: KdefCode },
    Sun { category: &'static str, id: String },
}

impl Job {
    fn relative_path(&self) -> PathBuf {
        match self {
            Job::Lfw { person, number } => Path::new(LFW_DIR).join(person).join(format!("{person}_{number:04}.jpg")),
            Job::Kdef { code } => Path::new(KDEF_DIR).join(code.folder()).join(format!("{}.JPG", code.stem())),
            Job::Sun { category, id } => Path::new(SUN_DIR).join(category.trim_start_matches('/')).join(format!("{id}.jpg")),
        }
    }
}

/// SUN397 categories we imitate, each with the scene kind it mostly shows.
const CATEGORIES: [(&str, SceneKind); 16] = [
    ("/a/abbey", SceneKind::Clutter),
    ("/b/bakery/shop", SceneKind::Shapes),
    ("/b/beach", SceneKind::Gradient),
    ("/c/coast", SceneKind::Gradient),
    ("/f/forest/broadleaf", SceneKind::Texture),
    ("/h/highway", SceneKind::Clutter),
    ("/k/kitchen", SceneKind::Shapes),
    ("/l/library/indoor", SceneKind::Clutter),
    ("/m/mountain", SceneKind::Gradient),
    ("/o/office", SceneKind::Shapes),
    ("/p/parking_lot", SceneKind::Shapes),
    ("/s/sky", SceneKind::Gradient),
    ("/s/street", SceneKind::Clutter),
    ("/t/tree_farm", SceneKind::Texture),
    ("/w/wheat_field", SceneKind::Texture),
    ("/w/wave", SceneKind::Texture),
];

const FIRST: [&str; 32] = [
    "Ada", "Bruno", "Carla", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kofi", "Lena", "Marek", "Nadia", "Omar", "Paula", "Quentin",
    "Rosa", "Sven", "Tariq", "Uma", "Viktor", "Wen", "Ximena", "Yusuf", "Zora", "Amara", "Bjorn", "Chen", "Dalia", "Emil", "Freya",
];
const LAST: [&str; 32] = [
    "Abara",
    "Berg",
    "Costa",
    "Dubois",
    "Eriksen",
    "Fischer",
    "Garcia",
    "Horvat",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lindqvist",
    "Moreau",
    "Novak",
    "Okafor",
    "Petrov",
    "Quispe",
    "Rossi",
    "Sato",
    "Tanaka",
    "Umarov",
    "Varga",
    "Weber",
    "Xu",
    "Yilmaz",
    "Zhang",
    "Almeida",
    "Brennan",
    "Castillo",
    "Duarte",
    "Esposito",
    "Fontaine",
];

fn person_name(i: usize) -> String {
    let (f, l) = (FIRST[i % 32], LAST[(i / 32) % 32]);
    match i / 1024 {
        0 => format!("{f}_{l}"),
        // Beyond 1,024 people, middle initials (A..Z, AA..) keep names unique.
        n => {
            let (mut k, mut initials) = (n, String::new());
            while k > 0 {
                k -= 1;
                initials.insert(0, (b'A' + (k % 26) as u8) as char);
                k /= 26;
            }
            format!("{f}_{initials}_{l}")
        }
    }
}

/// The full list of pictures, in a fixed order.
fn plan(config: &SynthConfig) -> Vec<Job> {
    let (kdef, lfw) = config.face_counts();
    let mut jobs = Vec::with_capacity(config.faces + config.non_faces);
    let mut layout = Rng::keyed(config.seed, &[LAYOUT_STREAM]);
    // LFW: people with 1 to 6 pictures each, like LFW's long tail.
    let mut person = 0;
    let mut left = lfw;
    while left > 0 {
        let n = (1 + layout.index(6)).min(left);
        let name = person_name(person);
        jobs.extend((1..=n).map(|number| Job::Lfw { person: name.clone(), number }));
        left -= n;
        person += 1;
    }
    // KDEF: rounds of (session, angle) so small sets still cover every
    // expression; within a round, subject by subject, all 7 expressions each.
    let rounds = [
        (Session::A, Angle::Straight),
        (Session::A, Angle::HalfLeft),
        (Session::A, Angle::HalfRight),
        (Session::B, Angle::Straight),
        (Session::A, Angle::FullLeft),
        (Session::A, Angle::FullRight),
        (Session::B, Angle::HalfLeft),
        (Session::B, Angle::HalfRight),
        (Session::B, Angle::FullLeft),
        (Session::B, Angle::FullRight),
    ];
    'kdef: for (session, angle) in rounds {
        for subject in 1..=KDEF_SUBJECTS_PER_SEX {
            for sex in [Sex::Female, Sex::Male] {
                for expression in Expression::ALL {
                    if jobs.len() >= lfw + kdef {
                        break 'kdef;
                    }
                    jobs.push(Job::Kdef { code: KdefCode { session, sex, subject, expression, angle } });
                }
            }
        }
    }
    for i in 0..config.non_faces {
        let category = CATEGORIES[layout.index(CATEGORIES.len())].0;
        let mut idr = Rng::keyed(config.seed, &[LAYOUT_STREAM, i as u64]);
        let id: String = (0..16).map(|_| (b'a' + idr.index(26) as u8) as char).collect();
        jobs.push(Job::Sun { category, id: format!("sun_{id}") });
    }
    jobs
}

/// A rendered picture: RGB or grey bytes.
struct Picture {
    width: u32,
    height: u32,
    bytes: Vec<u8>,
    color: ExtendedColorType,
}

fn render(job: &Job, index: usize, config: &SynthConfig) -> Picture {
    let d = config.difficulty;
    let size = config.size as f32;
    let mut rng = Rng::keyed(config.seed, &[JOB_STREAM, index as u64]);
    let (w, h) = match job {
        Job::Lfw { .. } => (config.size as usize, config.size as usize),
        Job::Kdef { .. } => (config.size as usize, (size * KDEF_ASPECT).round() as usize),
        Job::Sun { .. } => ((size * rng.range(0.8, 1.4)).round() as usize, (size * rng.range(0.8, 1.4)).round() as usize),
    };
    let mut canvas = Canvas::new(w, h, 0.5);
    let face: Option<(String, Option<KdefCode>)> = match job {
        Job::Lfw { person, .. } => Some((person.clone(), None)),
        Job::Kdef { code } => Some((code.identity(), Some(*code))),
        Job::Sun { .. } => None,
    };
    match (job, face) {
        (Job::Sun { category, .. }, _) => {
            let kind = if rng.chance(config.confuser_fraction) {
                SceneKind::Confuser
            } else if rng.chance(0.7) {
                CATEGORIES.iter().find(|(c, _)| c == category).map(|(_, k)| *k).unwrap_or(SceneKind::Shapes)
            } else {
                *rng.pick(&[SceneKind::Texture, SceneKind::Gradient, SceneKind::Shapes, SceneKind::Clutter])
            };
            draw_scene(&mut canvas, kind, &mut rng, d);
        }
        (_, Some((identity, code))) => {
            // KDEF was shot in a studio: plain backdrop, centred, upright
            // heads at one scale. LFW pictures are news photos: scenery,
            // off-centre, tilted, at varied scales.
            let studio = code.is_some();
            if !studio && rng.chance(0.5 + 0.4 * d) {
                let kind = *rng.pick(&[SceneKind::Texture, SceneKind::Gradient, SceneKind::Shapes, SceneKind::Clutter]);
                draw_scene(&mut canvas, kind, &mut rng, d);
                canvas.contrast(rng.range(0.4, 0.9), 0.0);
            } else {
                let v = rng.range(0.2, 0.8);
                canvas.data.iter_mut().for_each(|p| *p = v);
            }
            let look = IdentityLook::new(&mut Rng::keyed(config.seed, &[IDENTITY_STREAM, hash_str(&identity)]), d);
            let expression = match code {
                Some(c) => c.expression,
                // LFW has no expression labels; people there mostly look neutral or happy.
                None => *rng.pick(&[Expression::Neutral, Expression::Neutral, Expression::Happy, Expression::Happy, Expression::Surprised, Expression::Sad]),
            };
            let yaw = match code {
                Some(c) => c.angle.yaw() + rng.range(-0.08, 0.08),
                None => rng.range(-0.35, 0.35),
            };
            let pose = Pose { expression, intensity: rng.range(1.0 - 0.6 * d, 1.0), yaw: yaw.clamp(-1.0, 1.0), open_smile: rng.chance(0.5) };
            let minimum = w.min(h) as f32;
            let (head, jitter, tilt) = if studio {
                (minimum * rng.range(0.38 - 0.03 * d, 0.41 + 0.02 * d), minimum * (0.01 + 0.03 * d), 2.0 + 6.0 * d)
            } else {
                (minimum * rng.range(0.36 - 0.1 * d, 0.42 + 0.04 * d), minimum * (0.03 + 0.12 * d), 5.0 + 25.0 * d)
            };
            let cx = w as f32 / 2.0 + rng.range(-jitter, jitter);
            let cy = h as f32 / 2.0 + rng.range(-jitter, jitter);
            let frame = Frame::new(cx, cy, head, rng.range(-1.0, 1.0) * tilt.to_radians());
            draw_face(&mut canvas, &frame, &look, &pose);
        }
        (_, None) => {}
    }
    // Studio pictures are rarely occluded; news photos and scenes often are.
    let occlusion = if matches!(job, Job::Kdef { .. }) { 0.1 * d } else { 0.35 * d };
    finish(&mut canvas, &mut rng, d, occlusion, config.size);
    // Colour: real LFW, KDEF and most SUN pictures are RGB; some SUN ones
    // are greyscale. The tint is drawn the same way for faces and scenes so
    // it carries no label information.
    let grey = matches!(job, Job::Sun { .. }) && rng.chance(0.15);
    let pixels = canvas.to_u8();
    if grey {
        return Picture { width: w as u32, height: h as u32, bytes: pixels, color: ExtendedColorType::L8 };
    }
    let tint = [1.0 + rng.range(-0.12, 0.12), 1.0, 1.0 + rng.range(-0.12, 0.12)];
    let bytes = pixels.iter().flat_map(|&p| tint.map(|t| (f32::from(p) * t).round().clamp(0.0, 255.0) as u8)).collect();
    Picture { width: w as u32, height: h as u32, bytes, color: ExtendedColorType::Rgb8 }
}

/// Whole-picture effects shared by faces and scenes, so none is a label cue.
fn finish(canvas: &mut Canvas, rng: &mut Rng, d: f32, occlusion: f32, size: u32) {
    if rng.chance(occlusion) {
        // An occluder: a hand, a sign, a pole.
        let (w, h) = (canvas.width as f32, canvas.height as f32);
        let (cx, cy) = (rng.range(0.2, 0.8) * w, rng.range(0.2, 0.8) * h);
        let frame = Frame::new(cx, cy, w.min(h), rng.range(0.0, 3.2));
        let value = rng.unit();
        if rng.chance(0.5) {
            canvas.rect(&frame, (0.0, 0.0), (rng.range(0.08, 0.25), rng.range(0.04, 0.12)), 0.0, value, 1.0);
        } else {
            canvas.ellipse(&frame, (0.0, 0.0), (rng.range(0.08, 0.2), rng.range(0.06, 0.15)), 0.0, value, 1.0);
        }
    }
    canvas.light_gradient(rng.range(0.0, std::f32::consts::TAU), rng.range(0.0, 0.1 + 0.4 * d));
    canvas.contrast(rng.range(1.0 - 0.5 * d, 1.1), rng.range(-0.1, 0.1) * (0.5 + d));
    if rng.chance(0.5) {
        let max_radius = (0.5 + 2.5 * d) * size as f32 / 128.0;
        canvas.blur(rng.range(0.0, max_radius).round() as usize);
    }
    canvas.noise(rng, 0.02 + 0.08 * d);
}

fn encode_jpeg(picture: &Picture, quality: u8, path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(picture.bytes.len() / 4);
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode(&picture.bytes, picture.width, picture.height, picture.color)
        .map_err(|e| DataError::Encode { path: path.to_path_buf(), reason: e.to_string() })?;
    Ok(out)
}

/// Draws one picture of the plan and returns its JPEG bytes (for tests that
/// want an image without writing a tree).
pub fn render_jpeg(config: &SynthConfig, index: usize) -> Result<Vec<u8>> {
    let jobs = plan(config);
    let job = jobs.get(index).ok_or_else(|| DataError::config("index", index, format!("less than {} (faces + non_faces)", jobs.len())))?;
    encode_jpeg(&render(job, index, config), config.jpeg_quality, &job.relative_path())
}

/// Writes the synthetic set into `out` (created if needed). `out` must be
/// empty or hold an earlier synthetic set (its `synth.json` or an
/// interrupted run's marker), whose `lfw/`, `KDEF/` and `SUN397/` are replaced.
pub fn generate_dataset(config: &SynthConfig, out: &Path, progress: bool) -> Result<SynthManifest> {
    config.validate()?;
    let started = Instant::now();
    prepare_output(out)?;
    std::fs::write(out.join(IN_PROGRESS), b"").map_err(|e| DataError::io(out.join(IN_PROGRESS), e))?;
    let jobs = plan(config);
    let mut folders: Vec<PathBuf> = jobs.iter().filter_map(|j| j.relative_path().parent().map(Path::to_path_buf)).collect();
    folders.dedup();
    for f in &folders {
        std::fs::create_dir_all(out.join(f)).map_err(|e| DataError::io(out.join(f), e))?;
    }
    let bar = ProgressBar::with_draw_target(Some(jobs.len() as u64), if progress { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() });
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("drawing");
    jobs.par_iter().enumerate().try_for_each(|(i, job)| -> Result<()> {
        let path = out.join(job.relative_path());
        let jpeg = encode_jpeg(&render(job, i, config), config.jpeg_quality, &path)?;
        std::fs::write(&path, jpeg).map_err(|e| DataError::io(&path, e))?;
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();

    let mut categories: Vec<&str> = CATEGORIES.iter().map(|(c, _)| *c).collect();
    categories.sort_unstable();
    let used: Vec<&str> = categories.into_iter().filter(|c| jobs.iter().any(|j| matches!(j, Job::Sun { category, .. } if category == c))).collect();
    if !used.is_empty() {
        let list: String = used.iter().map(|c| format!("{c}\n")).collect();
        let path = out.join(SUN_DIR).join("ClassName.txt");
        std::fs::write(&path, list).map_err(|e| DataError::io(&path, e))?;
    }
    let count = |f: fn(&Job) -> bool| jobs.iter().filter(|j| f(j)).count();
    let mut people: Vec<&str> = jobs.iter().filter_map(|j| if let Job::Lfw { person, .. } = j { Some(person.as_str()) } else { None }).collect();
    people.dedup();
    let mut subjects: Vec<String> = jobs.iter().filter_map(|j| if let Job::Kdef { code } = j { Some(code.identity()) } else { None }).collect();
    subjects.sort();
    subjects.dedup();
    let manifest = SynthManifest {
        config: config.clone(),
        lfw_images: count(|j| matches!(j, Job::Lfw { .. })),
        lfw_people: people.len(),
        kdef_images: count(|j| matches!(j, Job::Kdef { .. })),
        kdef_subjects: subjects.len(),
        sun_images: count(|j| matches!(j, Job::Sun { .. })),
        sun_categories: used.len(),
        seconds: started.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| DataError::io(out.join(MANIFEST), std::io::Error::other(e)))?;
    super::cache::write_atomic(&out.join(MANIFEST), &json)?;
    let _ = std::fs::remove_file(out.join(IN_PROGRESS));
    Ok(manifest)
}

/// Reuses the set in `out` when its manifest has the same settings;
/// otherwise generates it.
pub fn ensure_dataset(config: &SynthConfig, out: &Path, progress: bool) -> Result<SynthManifest> {
    if let Some(m) = read_manifest(out)
        && m.config == *config
        && !out.join(IN_PROGRESS).exists()
    {
        return Ok(m);
    }
    generate_dataset(config, out, progress)
}

/// The manifest in `out`, if there is a readable one.
pub fn read_manifest(out: &Path) -> Option<SynthManifest> {
    let text = std::fs::read(out.join(MANIFEST)).ok()?;
    serde_json::from_slice(&text).ok()
}

fn prepare_output(out: &Path) -> Result<()> {
    match std::fs::read_dir(out) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(out).map_err(|e| DataError::io(out, e)),
        Err(e) => Err(DataError::io(out, e)),
        Ok(mut entries) => {
            let ours = out.join(MANIFEST).exists() || out.join(IN_PROGRESS).exists();
            if !ours {
                if entries.next().is_some() {
                    return Err(DataError::config(
                        "--out",
                        out.display(),
                        "an empty or new folder (or one holding an earlier synthetic set): this one has other files",
                    ));
                }
                return Ok(());
            }
            for sub in [LFW_DIR, KDEF_DIR, SUN_DIR] {
                let p = out.join(sub);
                if p.exists() {
                    std::fs::remove_dir_all(&p).map_err(|e| DataError::io(&p, e))?;
                }
            }
            let _ = std::fs::remove_file(out.join(MANIFEST));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plan_has_the_requested_counts_and_unique_paths() {
        let config = SynthConfig { faces: 300, non_faces: 120, ..SynthConfig::default() };
        let jobs = plan(&config);
        assert_eq!(jobs.len(), 420);
        let mut paths: Vec<PathBuf> = jobs.iter().map(Job::relative_path).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), 420);
        let kdef: Vec<&KdefCode> = jobs.iter().filter_map(|j| if let Job::Kdef { code } = j { Some(code) } else { None }).collect();
        assert_eq!(kdef.len(), 150);
        for e in Expression::ALL {
            assert!(kdef.iter().any(|c| c.expression == e), "{e} missing");
        }
    }

    #[test]
    fn names_stay_unique_past_the_first_thousand() {
        let mut names: Vec<String> = (0..40_000).map(person_name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), 40_000);
    }
}
