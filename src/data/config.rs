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
//!   image_size: 100          # 100 for the paper's CPU runs, 256 for TPU
//!   resize: center_crop      # center_crop | pad | stretch
//!   eval_fraction: 0.3
//!   split_seed: 0
//!   kdef_angles: [S, HL, HR, FL, FR]
//!   grouping: happy_sad_neither   # or joyful_not
//!   cache_dir: data/cache
//!   augment: { flip: false, max_shift_px: 0 }
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

/// Training-time augmentation. Off by default; eval batches are never augmented.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augmentation {
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
    /// Shift by up to this many pixels in x and y (edges repeat); 0 = off.
    pub max_shift_px: u32,
}

impl Augmentation {
    pub fn is_off(&self) -> bool {
        !self.flip && self.max_shift_px == 0
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
    pub fn is_empty(&self) -> bool {
        self.lfw.is_none() && self.sun397.is_none() && self.kdef.is_none() && self.akdef.is_none() && self.npy.is_empty() && self.folders.is_empty()
    }
}

/// Where the images come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceConfig {
    Synthetic(SyntheticSource),
    Real(RealSources),
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig::Synthetic(SyntheticSource::default())
    }
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
    /// map (`synthetic: {...}` or `real: {...}`), not a YAML tag.
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
        if self.augment.max_shift_px * 2 >= self.image_size {
            return Err(DataError::config("augment.max_shift_px", self.augment.max_shift_px, format!("less than half of image_size ({})", self.image_size)));
        }
        if self.max_images_per_dataset == Some(0) {
            return Err(DataError::config("max_images_per_dataset", 0, "a positive integer, or leave it out to use all images"));
        }
        if self.decode_limits.max_side < 16 {
            return Err(DataError::config("decode_limits.max_side", self.decode_limits.max_side, "at least 16 pixels"));
        }
        if self.decode_limits.max_alloc_mib == 0 {
            return Err(DataError::config("decode_limits.max_alloc_mib", 0, "at least 1 MiB"));
        }
        match &self.source {
            SourceConfig::Synthetic(s) => s.synth_config().validate().map_err(|e| match e {
                DataError::InvalidConfig { key, value, allowed } => DataError::InvalidConfig { key: format!("source.synthetic.{key}"), value, allowed },
                other => other,
            }),
            SourceConfig::Real(r) => {
                if r.is_empty() {
                    return Err(DataError::config("source.real", "{}", "at least one of lfw, sun397, kdef, akdef, npy, folders"));
                }
                for (i, n) in r.npy.iter().enumerate() {
                    for (key, range) in [("faces", n.faces), ("non_faces", n.non_faces)] {
                        if let Some([a, b]) = range {
                            if a >= b {
                                return Err(DataError::config(
                                    format!("source.real.npy[{i}].{key}"),
                                    format!("[{a}, {b}]"),
                                    "a half-open range [start, end) with start < end",
                                ));
                            }
                        }
                    }
                    if n.faces.is_none() && n.non_faces.is_none() {
                        return Err(DataError::config(format!("source.real.npy[{i}]"), n.path.display(), "give faces and/or non_faces index ranges"));
                    }
                }
                Ok(())
            }
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
}
