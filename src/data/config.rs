//! `DataConfig`: the `data:` section of an experiment file, self-contained,
//! every field optional with a documented default. Parsing and checking
//! happen here (stage one: what the user wrote); touching the file system is
//! left to the loaders and `prep` (stage two).
//!
//! ```yaml
//! data:
//!   source:
//!     synthetic: { seed: 7, faces: 4000, non_faces: 4000, size: 128, difficulty: 0.5 }
//!   # or: source: { real: { lfw: /data/lfw, sun397: /data/SUN397, kdef: /data/KDEF } }
//!   # or several at once, each with an optional weight or share of a batch:
//!   # source:
//!   #   mixed:
//!   #     - synthetic: { faces: 2400, non_faces: 1600 }
//!   #     - { name: lfw_subset, real: { npy: [...] }, share: 0.25 }
//!   image_size: 100          # 100 for the paper's CPU runs, 256 for TPU
//!   resize: center_crop      # center_crop | pad | stretch
//!   eval_fraction: 0.3
//!   split_seed: 0
//!   kdef_angles: [S, HL, HR, FL, FR]
//!   grouping: happy_sad_neither   # or joyful_not
//!   cache_dir: data/cache
//!   augment: { flip: false, max_shift_px: 0, scale: 0, rotate_deg: 0, blur_sigma: 0,
//!              contrast: 0, brightness: 0, gamma: 0, noise: 0 }
//!   balance_classes: false
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{DataError, Result};
use super::kdef::{Angle, Expression};
use super::task::EmotionGrouping;

/// How a picture of any shape becomes a `image_size` x `image_size` square.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// Cut the largest centred square, then scale it (keeps aspect, loses edges).
    #[default]
    CenterCrop,
    /// Scale the longer side to fit and pad the rest with black (keeps everything).
    Pad,
    /// Scale each side independently (keeps everything, distorts the aspect).
    Stretch,
}

impl ResizeMode {
    pub const fn name(self) -> &'static str {
        match self {
            ResizeMode::CenterCrop => "center_crop",
            ResizeMode::Pad => "pad",
            ResizeMode::Stretch => "stretch",
        }
    }
}

/// How u8 grey pixels become the f32 values the model sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// p / 255, in [0, 1] (the default).
    #[default]
    ZeroOne,
    /// p / 127.5 - 1, in [-1, 1].
    MinusOneOne,
}

impl Normalization {
    /// The model's value of a grey level given on the [0, 1] scale (for
    /// augmented pixels, which are no longer whole grey levels).
    pub fn of_unit(self, v: f32) -> f32 {
        match self {
            Normalization::ZeroOne => v,
            Normalization::MinusOneOne => v * 2.0 - 1.0,
        }
    }

    /// The f32 value of each of the 256 grey levels (a lookup table is both
    /// faster and exactly reproducible).
    pub fn table(self) -> [f32; 256] {
        let mut t = [0f32; 256];
        for (i, v) in t.iter_mut().enumerate() {
            *v = match self {
                Normalization::ZeroOne => i as f32 / 255.0,
                Normalization::MinusOneOne => i as f32 / 127.5 - 1.0,
            };
        }
        t
    }
}

/// Training-time augmentation. Every transform is off by default; eval
/// batches are never augmented. Each image draws its random values from the
/// pipeline's seeded stream in a fixed order (flip, shift x, shift y, scale,
/// rotation, blur, contrast, brightness, gamma, noise; only the transforms
/// that are on draw), so a resumed run sees exactly the same pixels.
///
/// Geometric transforms keep the image size: the picture is flipped,
/// scaled and rotated about its centre, then shifted; pixels that come
/// from outside repeat the nearest edge. Photometric ones work on values in
/// [0, 1] before normalization and clamp to that range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augmentation {
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
    /// Shift by up to this many pixels in x and y (edges repeat); 0 = off.
    pub max_shift_px: u32,
    /// Scale by a factor drawn from [1 - scale, 1 + scale]; 0 = off, at most 0.5.
    pub scale: f32,
    /// Rotate by an angle drawn from [-rotate_deg, rotate_deg] degrees; 0 = off, at most 45.
    pub rotate_deg: f32,
    /// Gaussian blur with a sigma drawn from [0, blur_sigma] pixels; 0 = off, at most 3.
    pub blur_sigma: f32,
    /// Scale each pixel's distance from the image mean by a factor from
    /// [1 - contrast, 1 + contrast]; 0 = off, at most 0.9.
    pub contrast: f32,
    /// Add a value drawn from [-brightness, brightness] (on the [0, 1]
    /// scale) to every pixel; 0 = off, at most 0.5.
    pub brightness: f32,
    /// Raise each value to a power drawn (log-uniformly) from
    /// [1 / (1 + gamma), 1 + gamma]; 0 = off, at most 2.
    pub gamma: f32,
    /// Add Gaussian noise with a standard deviation drawn from [0, noise]
    /// (on the [0, 1] scale); 0 = off, at most 0.25.
    pub noise: f32,
}

impl Augmentation {
    pub fn is_off(&self) -> bool {
        *self == Augmentation::default()
    }

    /// Only flip and whole-pixel shifts: the exact u8 path, no resampling.
    pub fn is_flip_and_shift_only(&self) -> bool {
        Augmentation { flip: false, max_shift_px: 0, ..*self } == Augmentation::default()
    }

    /// The upper bound of every continuous setting, with its key.
    fn limits(&self) -> [(&'static str, f32, f32); 7] {
        [
            ("scale", self.scale, 0.5),
            ("rotate_deg", self.rotate_deg, 45.0),
            ("blur_sigma", self.blur_sigma, 3.0),
            ("contrast", self.contrast, 0.9),
            ("brightness", self.brightness, 0.5),
            ("gamma", self.gamma, 2.0),
            ("noise", self.noise, 0.25),
        ]
    }

    /// Checks the ranges; `image_size` bounds the shift.
    pub fn validate(&self, image_size: u32) -> Result<()> {
        if self.max_shift_px * 2 >= image_size {
            return Err(DataError::config("augment.max_shift_px", self.max_shift_px, format!("less than half of image_size ({image_size})")));
        }
        for (key, value, max) in self.limits() {
            if !(value.is_finite() && (0.0..=max).contains(&value)) {
                return Err(DataError::config(format!("augment.{key}"), value, format!("a number from 0 (off) to {max}")));
            }
        }
        Ok(())
    }
}

/// The generated data set (see `synth`); written once into `dir` and then read
/// through the real LFW / SUN397 / KDEF loaders.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticSource {
    /// Where the JPEGs go; default `<cache_dir>/synth-<hash of these settings>`.
    pub dir: Option<PathBuf>,
    pub seed: u64,
    /// Face pictures (split between the LFW-style and the KDEF-style tree).
    pub faces: usize,
    /// Scene pictures (the SUN397-style tree).
    pub non_faces: usize,
    /// Side of the square LFW-style pictures in pixels (KDEF-style ones are
    /// portrait, SUN-style ones vary around it).
    pub size: u32,
    /// 0 = easy ... 1 = hard: scales noise, blur, rotation, occlusion, the
    /// subtlety of expressions and the share of face-like confusers.
    pub difficulty: f32,
    /// Share of non-faces that are round objects with two dark spots.
    pub confuser_fraction: f32,
}

impl Default for SyntheticSource {
    fn default() -> Self {
        let s = super::synth::SynthConfig::default();
        SyntheticSource {
            dir: None,
            seed: s.seed,
            faces: s.faces,
            non_faces: s.non_faces,
            size: s.size,
            difficulty: s.difficulty,
            confuser_fraction: s.confuser_fraction,
        }
    }
}

impl SyntheticSource {
    pub fn synth_config(&self) -> super::synth::SynthConfig {
        super::synth::SynthConfig {
            seed: self.seed,
            faces: self.faces,
            non_faces: self.non_faces,
            size: self.size,
            difficulty: self.difficulty,
            confuser_fraction: self.confuser_fraction,
            ..super::synth::SynthConfig::default()
        }
    }
}

/// One `.npy` array of images and which indices are faces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NpySource {
    pub path: PathBuf,
    /// Half-open index range [start, end) of faces.
    #[serde(default)]
    pub faces: Option<[usize; 2]>,
    /// Half-open index range [start, end) of non-faces.
    #[serde(default)]
    pub non_faces: Option<[usize; 2]>,
    /// The expression of every face in the array, if known.
    #[serde(default)]
    pub expression: Option<Expression>,
}

impl NpySource {
    /// scikit-image's `lfw_subset.npy`: 100 faces, then 100 non-faces.
    pub fn skimage_lfw_subset(path: impl Into<PathBuf>) -> NpySource {
        NpySource { path: path.into(), faces: Some([0, 100]), non_faces: Some([100, 200]), expression: None }
    }
}

/// Folders of the real data sets; any subset may be given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealSources {
    /// `lfw/`, `lfw_funneled/` or `lfw-deepfunneled/` (or the folder holding one).
    pub lfw: Option<PathBuf>,
    /// `SUN397/` (with or without `ClassName.txt`).
    pub sun397: Option<PathBuf>,
    /// SUN397 categories to leave out, written `/a/abbey` (e.g. scenes with people).
    pub sun397_exclude: Vec<String>,
    /// `KDEF/` holding `AF01/AF01ANS.JPG` ...
    pub kdef: Option<PathBuf>,
    /// The AKDEF folder (`FAFFL.JPG` ...).
    pub akdef: Option<PathBuf>,
    /// `.npy` arrays of images.
    pub npy: Vec<NpySource>,
    /// Folder-per-class data sets (`ROOT/<face|non_face|happy|...>/<image>`).
    pub folders: Vec<PathBuf>,
}

impl RealSources {
    /// Every file and folder these sources read, as written (a campaign
    /// ships the relative ones with its TPU runs to the VM).
    pub fn paths(&self) -> Vec<PathBuf> {
        let folders = [&self.lfw, &self.sun397, &self.kdef, &self.akdef].into_iter().flatten().cloned();
        folders.chain(self.npy.iter().map(|n| n.path.clone())).chain(self.folders.iter().cloned()).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.lfw.is_none() && self.sun397.is_none() && self.kdef.is_none() && self.akdef.is_none() && self.npy.is_empty() && self.folders.is_empty()
    }

    /// The name a real source gets when its part gives none: the data set
    /// when there is one (`lfw`, `sun397`, `kdef`, `akdef`, the `.npy`
    /// file's stem, the folder's name), else `real`.
    pub fn default_name(&self) -> String {
        let stem = |p: &Path| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let mut kinds: Vec<String> = Vec::new();
        if self.lfw.is_some() {
            kinds.push("lfw".into());
        }
        if self.sun397.is_some() {
            kinds.push("sun397".into());
        }
        if self.kdef.is_some() {
            kinds.push("kdef".into());
        }
        if self.akdef.is_some() {
            kinds.push("akdef".into());
        }
        kinds.extend(self.npy.iter().map(|n| stem(&n.path)));
        kinds.extend(self.folders.iter().map(|f| f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()));
        match kinds.as_slice() {
            [one] if is_source_name(one) => one.clone(),
            _ => "real".into(),
        }
    }
}

/// Whether a source is drawn by us or photographed: reports keep the two apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    Synthetic,
    Real,
}

impl SourceKind {
    pub const fn name(self) -> &'static str {
        match self {
            SourceKind::Synthetic => "synthetic",
            SourceKind::Real => "real",
        }
    }
}

impl std::fmt::Display for SourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One source of a mixed data set: exactly one of `synthetic` and `real`,
/// an optional name, and how much of the training stream it makes up
/// (`weight` or `share`, not both; neither means weight 1).
///
/// ```yaml
/// source:
///   mixed:
///     - synthetic: {seed: 1, faces: 2400, non_faces: 1600, size: 96}
///     - name: lfw_subset
///       real: {npy: [{path: .deps/data/lfw_subset.npy, faces: [0, 100], non_faces: [100, 200]}]}
///       share: 0.25
/// ```
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourcePart {
    /// Names the source in prep reports, run records and the report
    /// (letters, digits, `_`, `-`, `.`). Default: `synthetic`, or the real
    /// data set's name (see [`RealSources::default_name`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synthetic: Option<SyntheticSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real: Option<RealSources>,
    /// How often each of this source's training images is drawn per epoch,
    /// relative to the other unshared sources: 2 = twice, 0.5 = a seeded
    /// half of them each epoch. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// The fraction of every training batch that comes from this source
    /// (its images cycled in a fresh seeded order), whatever its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<f64>,
}

impl SourcePart {
    pub fn kind(&self) -> SourceKind {
        if self.synthetic.is_some() { SourceKind::Synthetic } else { SourceKind::Real }
    }

    /// The given name, else the default one.
    pub fn resolved_name(&self) -> String {
        match (&self.name, &self.synthetic, &self.real) {
            (Some(n), _, _) => n.clone(),
            (None, Some(_), _) => "synthetic".into(),
            (None, None, Some(r)) => r.default_name(),
            (None, None, None) => String::new(),
        }
    }
}

/// Where the images come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceConfig {
    Synthetic(SyntheticSource),
    Real(RealSources),
    /// Several sources in one data set; see [`SourcePart`].
    Mixed(Vec<SourcePart>),
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Synthetic(SyntheticSource::default())
    }
}

impl SourceConfig {
    /// Every source as a part of a mix: a plain `synthetic:` or `real:`
    /// source is a mix of one (weight 1).
    pub fn parts(&self) -> Vec<SourcePart> {
        match self {
            SourceConfig::Synthetic(s) => vec![SourcePart { synthetic: Some(s.clone()), ..SourcePart::default() }],
            SourceConfig::Real(r) => vec![SourcePart { real: Some(r.clone()), ..SourcePart::default() }],
            SourceConfig::Mixed(parts) => parts.clone(),
        }
    }

    /// The name and kind of each source, in order.
    pub fn summaries(&self) -> Vec<(String, SourceKind)> {
        self.parts().iter().map(|p| (p.resolved_name(), p.kind())).collect()
    }

    /// How each source enters the training stream, in order.
    pub fn mix(&self) -> Vec<SourceMix> {
        self.parts().iter().map(|p| SourceMix { name: p.resolved_name(), weight: p.weight.unwrap_or(1.0), share: p.share }).collect()
    }
}

/// How one source enters the training stream (see [`SourcePart`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceMix {
    pub name: String,
    pub weight: f64,
    pub share: Option<f64>,
}

/// Source names are used in file names, tables and JSON keys.
fn is_source_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

fn validate_real(r: &RealSources, key: &str) -> Result<()> {
    if r.is_empty() {
        return Err(DataError::config(key, "{}", "at least one of lfw, sun397, kdef, akdef, npy, folders"));
    }
    for (i, n) in r.npy.iter().enumerate() {
        for (k, range) in [("faces", n.faces), ("non_faces", n.non_faces)] {
            if let Some([a, b]) = range
                && a >= b
            {
                return Err(DataError::config(format!("{key}.npy[{i}].{k}"), format!("[{a}, {b}]"), "a half-open range [start, end) with start < end"));
            }
        }
        if n.faces.is_none() && n.non_faces.is_none() {
            return Err(DataError::config(format!("{key}.npy[{i}]"), n.path.display(), "give faces and/or non_faces index ranges"));
        }
    }
    Ok(())
}

fn validate_synthetic(s: &SyntheticSource, key: &str) -> Result<()> {
    s.synth_config().validate().map_err(|e| match e {
        DataError::InvalidConfig { key: k, value, allowed } => DataError::InvalidConfig { key: format!("{key}.{k}"), value, allowed },
        other => other,
    })
}

fn validate_mix(parts: &[SourcePart]) -> Result<()> {
    if parts.is_empty() {
        return Err(DataError::config("source.mixed", "[]", "a list of at least one source, each `synthetic: {...}` or `real: {...}`"));
    }
    let mut names: Vec<String> = Vec::new();
    let mut share_sum = 0.0;
    for (i, p) in parts.iter().enumerate() {
        let key = format!("source.mixed[{i}]");
        match (&p.synthetic, &p.real) {
            (Some(s), None) => validate_synthetic(s, &format!("{key}.synthetic"))?,
            (None, Some(r)) => validate_real(r, &format!("{key}.real"))?,
            (Some(_), Some(_)) => {
                return Err(DataError::config(&key, "both synthetic and real", "exactly one of `synthetic: {...}` and `real: {...}`; make two entries"));
            }
            (None, None) => return Err(DataError::config(&key, "neither synthetic nor real", "exactly one of `synthetic: {...}` and `real: {...}`")),
        }
        let name = p.resolved_name();
        if !is_source_name(&name) {
            return Err(DataError::config(format!("{key}.name"), format!("{name:?}"), "1 to 64 letters, digits, '_', '-' or '.'"));
        }
        if names.contains(&name) {
            return Err(DataError::config(
                format!("{key}.name"),
                &name,
                "a name no other source has (two sources are named alike: give at least one of them `name: ...`)",
            ));
        }
        names.push(name);
        if p.weight.is_some() && p.share.is_some() {
            return Err(DataError::config(&key, "both weight and share", "at most one of `weight` (relative, per epoch) and `share` (of each batch)"));
        }
        if let Some(w) = p.weight
            && !(w.is_finite() && w > 0.0 && w <= 1000.0)
        {
            return Err(DataError::config(format!("{key}.weight"), w, "a number above 0 and at most 1000 (1 = each image once an epoch)"));
        }
        if let Some(s) = p.share {
            if !(s.is_finite() && s > 0.0 && s <= 1.0) {
                return Err(DataError::config(format!("{key}.share"), s, "a fraction of each batch above 0 and at most 1"));
            }
            share_sum += s;
        }
    }
    let shares: Vec<String> = parts.iter().filter_map(|p| p.share.map(|s| format!("{} {s}", p.resolved_name()))).collect();
    if share_sum > 1.0 + 1e-9 {
        return Err(DataError::config("source.mixed[].share", shares.join(", "), format!("shares that add up to at most 1 (these add up to {share_sum})")));
    }
    if parts.iter().all(|p| p.share.is_some()) && (share_sum - 1.0).abs() > 1e-9 {
        return Err(DataError::config(
            "source.mixed[].share",
            shares.join(", "),
            format!("shares that add up to 1 when every source has one (these add up to {share_sum}), or one source without a share to fill the rest"),
        ));
    }
    Ok(())
}

/// Caps that keep a hostile or broken file from exhausting memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DecodeLimits {
    /// Largest width or height we agree to decode.
    pub max_side: u32,
    /// Largest allocation one decode may make, in MiB.
    pub max_alloc_mib: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        // SUN397's largest pictures are a few thousand pixels wide; 16384 and
        // 512 MiB leave a wide margin while still refusing bombs.
        DecodeLimits { max_side: 16384, max_alloc_mib: 512 }
    }
}

/// The data section of an experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Default: the synthetic set with its defaults. Written as a one-key
    /// map (`synthetic: {...}`, `real: {...}` or `mixed: [...]`), not a YAML tag.
    #[serde(with = "serde_yaml::with::singleton_map")]
    pub source: SourceConfig,
    /// Side of the square model input, in pixels. Default 100 (the paper's
    /// CPU runs); the TPU runs used 256. Any size from 8 to 4096.
    pub image_size: u32,
    /// Default center_crop.
    pub resize: ResizeMode,
    /// Share of identities' images held out for evaluation. Default 0.3.
    pub eval_fraction: f64,
    /// Seed of the identity split. Default 0. Keep it equal across the face,
    /// emotion and hierarchy preps so the hierarchy's eval set holds no
    /// person either model trained on.
    pub split_seed: u64,
    /// KDEF/AKDEF camera angles to use. Default all five.
    pub kdef_angles: Vec<Angle>,
    /// Emotion grouping. Default happy_sad_neither.
    pub grouping: EmotionGrouping,
    /// Where prepared sets (and the default synthetic set) are cached.
    /// Default `data/cache`.
    pub cache_dir: PathBuf,
    /// Off by default.
    pub augment: Augmentation,
    /// Default zero_one.
    pub normalize: Normalization,
    /// Training batches oversample smaller classes so each epoch is
    /// class-balanced (see `pipeline`). Default false.
    pub balance_classes: bool,
    /// Use at most this many images of each dataset (a seeded, identity-aware
    /// pick); default: all.
    pub max_images_per_dataset: Option<usize>,
    pub decode_limits: DecodeLimits,
    /// Threads making each training batch (shuffle, augmentation,
    /// normalization); default: the host's cores. The batches are the
    /// same whatever the count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_threads: Option<usize>,
    /// Train from a prepared set instead of `source`: the folder, or the
    /// `gs://BUCKET/PREFIX`, where `emotionet data prep ... --out` put it.
    /// It holds one `prep-TASK-KEY.emods` file per task the experiment uses
    /// (face, emotion; hierarchy for the hierarchy evaluation). That one
    /// file is read (from a bucket: copied into `cache_dir` first, and not
    /// again while its generation is unchanged); no raw image is listed or
    /// decoded. Its image size must be `image_size`. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepared: Option<PathBuf>,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            source: SourceConfig::default(),
            image_size: 100,
            resize: ResizeMode::CenterCrop,
            eval_fraction: 0.3,
            split_seed: 0,
            kdef_angles: Angle::ALL.to_vec(),
            grouping: EmotionGrouping::HappySadNeither,
            cache_dir: PathBuf::from("data/cache"),
            augment: Augmentation::default(),
            normalize: Normalization::ZeroOne,
            balance_classes: false,
            max_images_per_dataset: None,
            decode_limits: DecodeLimits::default(),
            input_threads: None,
            prepared: None,
        }
    }
}

impl DataConfig {
    /// Reads a YAML or JSON file holding either a bare data config or an
    /// experiment with a `data:` section; then validates it.
    pub fn from_file(path: &Path) -> Result<DataConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        DataConfig::from_text(&text).map_err(|e| match e {
            DataError::ConfigSyntax { message, .. } => DataError::ConfigSyntax { path: path.to_path_buf(), message },
            other => other,
        })
    }

    /// Parses YAML (JSON is valid YAML) text; see [`DataConfig::from_file`].
    pub fn from_text(text: &str) -> Result<DataConfig> {
        /// An experiment file: only its `data:` section is ours; the other
        /// sections belong to other modules and are checked there.
        #[derive(Deserialize)]
        struct Experiment {
            #[serde(default)]
            data: DataConfig,
        }
        let syntax = |e: serde_yaml::Error| DataError::ConfigSyntax { path: PathBuf::from("<text>"), message: e.to_string() };
        let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(syntax)?;
        let config = match &value {
            serde_yaml::Value::Null => DataConfig::default(),
            serde_yaml::Value::Mapping(m) if m.contains_key("data") => serde_yaml::from_str::<Experiment>(text).map_err(syntax)?.data,
            _ => serde_yaml::from_str::<DataConfig>(text).map_err(syntax)?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks values serde cannot: ranges and non-empty lists. Errors name
    /// the key and what is allowed.
    pub fn validate(&self) -> Result<()> {
        if !(8..=4096).contains(&self.image_size) {
            return Err(DataError::config("image_size", self.image_size, "an integer from 8 to 4096 (100 = paper CPU runs, 256 = TPU runs)"));
        }
        if !(self.eval_fraction > 0.0 && self.eval_fraction < 1.0) {
            return Err(DataError::config("eval_fraction", self.eval_fraction, "a number strictly between 0 and 1 (the paper uses 0.3)"));
        }
        if self.kdef_angles.is_empty() {
            return Err(DataError::config("kdef_angles", "[]", "a non-empty list of S, HL, HR, FL, FR"));
        }
        self.augment.validate(self.image_size)?;
        if let Some(prepared) = &self.prepared
            && self.source != SourceConfig::default()
        {
            return Err(DataError::config(
                "prepared",
                prepared.display(),
                "either `prepared` or `source`, not both: a prepared set already holds the images of its sources",
            ));
        }
        if self.max_images_per_dataset == Some(0) {
            return Err(DataError::config("max_images_per_dataset", 0, "a positive integer, or leave it out to use all images"));
        }
        if let Some(t) = self.input_threads
            && !(1..=1024).contains(&t)
        {
            return Err(DataError::config("input_threads", t, "an integer from 1 to 1024, or leave it out for the host's cores"));
        }
        if self.decode_limits.max_side < 16 {
            return Err(DataError::config("decode_limits.max_side", self.decode_limits.max_side, "at least 16 pixels"));
        }
        if self.decode_limits.max_alloc_mib == 0 {
            return Err(DataError::config("decode_limits.max_alloc_mib", 0, "at least 1 MiB"));
        }
        match &self.source {
            SourceConfig::Synthetic(s) => validate_synthetic(s, "source.synthetic"),
            SourceConfig::Real(r) => validate_real(r, "source.real"),
            SourceConfig::Mixed(parts) => validate_mix(parts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_document_is_the_documented_default() {
        let c = DataConfig::from_text("{}").unwrap();
        assert_eq!(c, DataConfig::default());
        assert_eq!(c.image_size, 100);
        assert_eq!(c.eval_fraction, 0.3);
        assert!(c.augment.is_off());
    }

    #[test]
    fn reads_the_data_section_of_an_experiment_file() {
        let c = DataConfig::from_text(
            "name: x\ndata:\n  image_size: 256\n  resize: pad\n  kdef_angles: [S, HL]\n  grouping: joyful_not\n  source:\n    real:\n      kdef: /k\n",
        )
        .unwrap();
        assert_eq!(c.image_size, 256);
        assert_eq!(c.resize, ResizeMode::Pad);
        assert_eq!(c.kdef_angles, vec![Angle::Straight, Angle::HalfLeft]);
        assert_eq!(c.grouping, EmotionGrouping::JoyfulNot);
        assert!(matches!(c.source, SourceConfig::Real(ref r) if r.kdef.as_deref() == Some(Path::new("/k"))));
    }

    #[test]
    fn errors_name_the_key_and_the_allowed_values() {
        let e = DataConfig::from_text("resize: squash").unwrap_err().to_string();
        assert!(e.contains("squash") && e.contains("center_crop"), "{e}");
        let e = DataConfig::from_text("imagesize: 3").unwrap_err().to_string();
        assert!(e.contains("imagesize") && e.contains("image_size"), "{e}");
        let e = DataConfig::from_text("eval_fraction: 1.5").unwrap_err().to_string();
        assert!(e.contains("eval_fraction") && e.contains("between 0 and 1"), "{e}");
        let e = DataConfig::from_text("source: { synthetic: { difficulty: 3 } }").unwrap_err().to_string();
        assert!(e.contains("source.synthetic.difficulty"), "{e}");
        let e = DataConfig::from_text("kdef_angles: [S, XX]").unwrap_err().to_string();
        assert!(e.contains("XX") && e.contains("HL"), "{e}");
        let e = DataConfig::from_text("source: { real: {} }").unwrap_err().to_string();
        assert!(e.contains("source.real") && e.contains("lfw"), "{e}");
    }

    #[test]
    fn a_mixed_source_reads_with_names_weights_and_shares() {
        let c = DataConfig::from_text(
            "source:\n  mixed:\n    - synthetic: {faces: 100, non_faces: 50}\n    - real: {npy: [{path: d/lfw_subset.npy, faces: [0, 100], non_faces: [100, 200]}]}\n      share: 0.25\n    - {name: more, real: {lfw: /l}, weight: 2}\n",
        )
        .unwrap();
        assert_eq!(
            c.source.summaries(),
            vec![("synthetic".to_string(), SourceKind::Synthetic), ("lfw_subset".to_string(), SourceKind::Real), ("more".to_string(), SourceKind::Real)]
        );
        let mix = c.source.mix();
        assert_eq!((mix[0].weight, mix[0].share), (1.0, None));
        assert_eq!((mix[1].weight, mix[1].share), (1.0, Some(0.25)));
        assert_eq!(mix[2].weight, 2.0);
        // A plain source is a mix of one.
        assert_eq!(DataConfig::default().source.summaries(), vec![("synthetic".to_string(), SourceKind::Synthetic)]);
    }

    #[test]
    fn impossible_mixes_name_the_entry_and_what_is_allowed() {
        let err = |text: &str| DataConfig::from_text(text).unwrap_err().to_string();
        let e = err("source: {mixed: []}");
        assert!(e.contains("source.mixed") && e.contains("at least one source"), "{e}");
        let e = err("source: {mixed: [{synthetic: {}, weigth: 2}]}");
        assert!(e.contains("weigth") && e.contains("weight"), "{e}");
        let e = err("source: {mixed: [{synthetic: {}, weight: 0}]}");
        assert!(e.contains("source.mixed[0].weight") && e.contains("above 0"), "{e}");
        let e = err("source: {mixed: [{synthetic: {}, weight: -1}]}");
        assert!(e.contains("source.mixed[0].weight") && e.contains("-1"), "{e}");
        let e = err("source: {mixed: [{synthetic: {}}, {name: b, synthetic: {seed: 2}, share: 1.5}]}");
        assert!(e.contains("source.mixed[1].share") && e.contains("1.5") && e.contains("at most 1"), "{e}");
        let e = err("source: {mixed: [{synthetic: {}}, {name: b, synthetic: {seed: 2}, share: 0.6}, {name: c, synthetic: {seed: 3}, share: 0.6}]}");
        assert!(e.contains("add up to at most 1") && e.contains("b 0.6, c 0.6"), "{e}");
        let e = err("source: {mixed: [{synthetic: {}, share: 0.5}, {name: b, synthetic: {seed: 2}, share: 0.3}]}");
        assert!(e.contains("add up to 1 when every source has one"), "{e}");
        let e = err("source: {mixed: [{synthetic: {}, share: 0.5, weight: 2}]}");
        assert!(e.contains("source.mixed[0]") && e.contains("at most one of `weight`"), "{e}");
        let e = err("source: {mixed: [{synthetic: {}}, {synthetic: {seed: 2}}]}");
        assert!(e.contains("source.mixed[1].name") && e.contains("synthetic") && e.contains("give at least one of them `name: ...`"), "{e}");
        let e = err("source: {mixed: [{name: 'a b', synthetic: {}}]}");
        assert!(e.contains("source.mixed[0].name") && e.contains("letters, digits"), "{e}");
        let e = err("source: {mixed: [{synthetic: {}, real: {lfw: /l}}]}");
        assert!(e.contains("source.mixed[0]") && e.contains("exactly one of"), "{e}");
        let e = err("source: {mixed: [{weight: 2}]}");
        assert!(e.contains("source.mixed[0]") && e.contains("exactly one of"), "{e}");
        let e = err("source: {mixed: [{synthetic: {difficulty: 3}}]}");
        assert!(e.contains("source.mixed[0].synthetic.difficulty"), "{e}");
        let e = err("source: {mixed: [{real: {npy: [{path: x.npy}]}}]}");
        assert!(e.contains("source.mixed[0].real.npy[0]"), "{e}");
    }

    #[test]
    fn augmentation_settings_are_off_by_default_and_range_checked() {
        let c = DataConfig::from_text("augment: {flip: true, rotate_deg: 10, blur_sigma: 1, noise: 0.05}").unwrap();
        assert!(!c.augment.is_off() && !c.augment.is_flip_and_shift_only());
        assert!(DataConfig::from_text("augment: {flip: true, max_shift_px: 3}").unwrap().augment.is_flip_and_shift_only());
        let e = DataConfig::from_text("augment: {rotate_deg: 90}").unwrap_err().to_string();
        assert!(e.contains("augment.rotate_deg") && e.contains("90") && e.contains("from 0 (off) to 45"), "{e}");
        let e = DataConfig::from_text("augment: {gamma: -0.5}").unwrap_err().to_string();
        assert!(e.contains("augment.gamma"), "{e}");
        let e = DataConfig::from_text("augment: {blurr: 1}").unwrap_err().to_string();
        assert!(e.contains("blurr") && e.contains("blur_sigma"), "{e}");
    }
}
