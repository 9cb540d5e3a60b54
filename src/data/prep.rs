//! `prep`: from a [`DataConfig`] and a [`Task`] to a [`PreparedSet`] of
//! `size x size` grey u8 images split by identity, through the on-disk cache.
//!
//! Steps: load the catalog (generating the synthetic set first if that is
//! the source) -> label for the task -> split by identity -> hash inputs and
//! settings into the cache key -> on a hit, read the cache; on a miss,
//! decode in parallel (rayon, progress bar), write the cache atomically ->
//! write the report (JSON and a table) next to the cache file.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cache;
use super::config::{DataConfig, RealSources, SourceConfig, SourceKind, SyntheticSource};
use super::decode::{DecodeSettings, decode_file, fit_pixels};
use super::error::{DataError, Result};
use super::kdef::Expression;
use super::loaders::{self, NpyArray};
use super::sample::{Catalog, DatasetTag, Sample, SampleSource, Skipped, SourceSummary};
use super::split::{Split, cap_per_dataset, split_by_identity};
use super::synth;
use super::task::Task;

/// Bumped whenever decoding or splitting changes what a key's output is.
/// 2: samples carry their source (mixed sources), split per source.
const PREP_VERSION: u32 = 2;

/// What prep needs besides the config.
#[derive(Clone, Debug)]
pub struct PrepOptions {
    pub task: Task,
    /// Turn any skipped file into an error naming it.
    pub strict: bool,
    /// Draw progress bars on stderr (only when it is a terminal).
    pub progress: bool,
}

impl PrepOptions {
    pub fn new(task: Task) -> PrepOptions {
        PrepOptions { task, strict: false, progress: false }
    }
}

/// Per-sample metadata kept next to the pixels (for reports and confusion
/// matrices; the pipeline needs only labels).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SampleInfo {
    pub source: String,
    pub face: bool,
    pub expression: Option<Expression>,
    pub identity: String,
    pub dataset: DatasetTag,
    /// The configured source it came from (`synthetic`, `lfw_subset`, ...).
    #[serde(default)]
    pub source_name: String,
}

/// One split of a prepared set: `len()` grey images of `image_size` squared.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedSplit {
    pub split: Split,
    pub image_size: u32,
    /// `len() * image_size * image_size` bytes, image after image, row-major.
    pub pixels: Vec<u8>,
    pub labels: Vec<i32>,
    pub info: Vec<SampleInfo>,
}

impl PreparedSplit {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn pixels_per_image(&self) -> usize {
        (self.image_size as usize) * (self.image_size as usize)
    }

    /// The grey pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.pixels_per_image();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// The configured source of each image, in order (empty names when the
    /// split was built without them).
    pub fn source_names(&self) -> Vec<&str> {
        (0..self.len()).map(|i| self.info.get(i).map_or("", |info| info.source_name.as_str())).collect()
    }

    /// Images per configured source.
    pub fn source_counts(&self) -> BTreeMap<&str, usize> {
        let mut counts = BTreeMap::new();
        for name in self.source_names() {
            *counts.entry(name).or_default() += 1;
        }
        counts
    }

    /// Images per class label (labels outside `0..num_classes` are ignored).
    pub fn class_counts(&self, num_classes: usize) -> Vec<usize> {
        let mut counts = vec![0; num_classes];
        for &l in &self.labels {
            if let Some(c) = usize::try_from(l).ok().and_then(|l| counts.get_mut(l)) {
                *c += 1;
            }
        }
        counts
    }
}

/// A task's data, ready for the input pipeline.
#[derive(Clone, Debug, PartialEq)]
pub struct PreparedSet {
    pub task: Task,
    pub class_names: Vec<String>,
    pub image_size: u32,
    pub train: PreparedSplit,
    pub eval: PreparedSplit,
    pub report: PrepReport,
    /// The configured sources, in configuration order.
    pub sources: Vec<SourceSummary>,
}

impl PreparedSet {
    pub fn num_classes(&self) -> usize {
        self.class_names.len()
    }

    /// The kind (synthetic or real) of the source named `name`.
    pub fn source_kind(&self, name: &str) -> Option<SourceKind> {
        self.sources.iter().find(|s| s.name == name).map(|s| s.kind)
    }
}

/// Counts of one class.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCount {
    pub class: String,
    pub train: usize,
    pub eval: usize,
}

/// What prep did: the counts per class and split, and every file left out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrepReport {
    pub task: String,
    pub cache_key: String,
    pub image_size: u32,
    pub resize: String,
    pub eval_fraction: f64,
    pub split_seed: u64,
    pub classes: Vec<ClassCount>,
    /// dataset -> [train, eval] images.
    pub datasets: BTreeMap<String, [usize; 2]>,
    /// configured source -> [train, eval] images.
    #[serde(default)]
    pub sources: BTreeMap<String, [usize; 2]>,
    /// Distinct identities on each side (never shared).
    pub identities: [usize; 2],
    pub skipped: Vec<Skipped>,
    /// Skips grouped by the kind of reason.
    pub skipped_by_reason: BTreeMap<String, usize>,
    /// Good files left out on purpose (angle filter, exclusions, caps), by reason.
    pub filtered: BTreeMap<String, usize>,
    /// Images present but unused by this task (e.g. LFW faces for emotion).
    pub unused_by_task: usize,
    pub warnings: Vec<String>,
    /// Images decoded by the run that built the cache.
    pub decoded: usize,
    pub decode_seconds: f64,
}

impl PrepReport {
    pub fn total(&self) -> [usize; 2] {
        self.classes.iter().fold([0, 0], |acc, c| [acc[0] + c.train, acc[1] + c.eval])
    }

    /// The human-readable table printed by `emotionet data prep`.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "task {} | {}x{} {} | eval fraction {} | split seed {}",
            self.task, self.image_size, self.image_size, self.resize, self.eval_fraction, self.split_seed
        );
        let _ = writeln!(s, "{:<14} {:>8} {:>8} {:>8}", "class", "train", "eval", "total");
        for c in &self.classes {
            let _ = writeln!(s, "{:<14} {:>8} {:>8} {:>8}", c.class, c.train, c.eval, c.train + c.eval);
        }
        let [t, e] = self.total();
        let _ = writeln!(s, "{:<14} {:>8} {:>8} {:>8}", "total", t, e, t + e);
        for (d, [t, e]) in &self.datasets {
            let _ = writeln!(s, "  from {d:<9} {t:>8} {e:>8} {:>8}", t + e);
        }
        if self.sources.len() > 1 {
            for (name, [t, e]) in &self.sources {
                let _ = writeln!(s, "  source {name:<14} {t:>8} {e:>8} {:>8}", t + e);
            }
        }
        let _ = writeln!(s, "identities: {} train, {} eval, none in both", self.identities[0], self.identities[1]);
        if self.unused_by_task > 0 {
            let _ = writeln!(s, "unused by this task: {} images (no label for it, e.g. faces without an expression)", self.unused_by_task);
        }
        for (reason, n) in &self.filtered {
            let _ = writeln!(s, "filtered: {n} ({reason})");
        }
        let _ = writeln!(s, "skipped files: {}", self.skipped.len());
        for (reason, n) in &self.skipped_by_reason {
            let _ = writeln!(s, "  {n:>6}  {reason}");
        }
        for k in self.skipped.iter().take(20) {
            let _ = writeln!(s, "  {}: {}", k.path, k.reason);
        }
        if self.skipped.len() > 20 {
            let _ = writeln!(s, "  ... {} more in the JSON report", self.skipped.len() - 20);
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        if self.decoded > 0 && self.decode_seconds > 0.0 {
            let _ = writeln!(s, "decoded {} images in {:.2} s ({:.0} images/s)", self.decoded, self.decode_seconds, self.decoded as f64 / self.decode_seconds);
        }
        s
    }
}

/// The result of [`prepare`].
#[derive(Debug)]
pub struct PrepOutcome {
    pub set: PreparedSet,
    /// True when the set came from the cache (nothing was decoded).
    pub cache_hit: bool,
    /// Images decoded by this call (0 on a cache hit).
    pub decoded: usize,
    pub cache_path: PathBuf,
    pub report_json: PathBuf,
    pub report_table: PathBuf,
    /// The bucket sources copied into the cache folder first (see `remote`).
    pub copies: Vec<super::remote::SourceCopy>,
}

/// Groups a skip reason into its kind: `misnamed KDEF file `X`: ...` ->
/// `misnamed KDEF file`.
fn reason_kind(reason: &str) -> String {
    let head = reason.split(':').next().unwrap_or(reason);
    let mut out = String::new();
    let mut quoted = false;
    for c in head.chars() {
        if c == '`' {
            quoted = !quoted;
        } else if !quoted {
            out.push(c);
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Lists the samples of the configured sources (generating a synthetic set
/// first when one is configured and not on disk yet). Each sample's
/// `origin` is the index of its source in [`Catalog::sources`].
pub fn load_catalog(config: &DataConfig, progress: bool) -> Result<Catalog> {
    let mut catalog = Catalog::default();
    for (origin, part) in config.source.parts().iter().enumerate() {
        let mut found = match (&part.synthetic, &part.real) {
            (Some(s), _) => load_synthetic(config, s, progress)?,
            (None, Some(r)) => load_real(config, r)?,
            (None, None) => Catalog::default(),
        };
        let origin = u16::try_from(origin).map_err(|_| DataError::config("source.mixed", origin + 1, "at most 65536 sources"))?;
        for s in &mut found.samples {
            s.origin = origin;
        }
        catalog.extend(found);
        catalog.sources.push(SourceSummary { name: part.resolved_name(), kind: part.kind() });
    }
    if let Some(max) = config.max_images_per_dataset {
        let dropped = cap_per_dataset(&mut catalog.samples, max, config.split_seed);
        catalog.filter_out("over max_images_per_dataset", dropped);
    }
    Ok(catalog)
}

fn load_synthetic(config: &DataConfig, s: &SyntheticSource, progress: bool) -> Result<Catalog> {
    let mut catalog = Catalog::default();
    let synth_config = s.synth_config();
    let dir = s.dir.clone().unwrap_or_else(|| config.cache_dir.join(format!("synth-{}", synth_config.fingerprint())));
    let manifest = synth::ensure_dataset(&synth_config, &dir, progress)?;
    if manifest.lfw_images > 0 {
        catalog.extend(loaders::load_lfw(&dir.join(synth::LFW_DIR))?);
    }
    if manifest.kdef_images > 0 {
        catalog.extend(loaders::load_kdef(&dir.join(synth::KDEF_DIR), &config.kdef_angles)?);
    }
    if manifest.sun_images > 0 {
        catalog.extend(loaders::load_sun397(&dir.join(synth::SUN_DIR), &[])?);
    }
    Ok(catalog)
}

fn load_real(config: &DataConfig, r: &RealSources) -> Result<Catalog> {
    let mut catalog = Catalog::default();
    if let Some(p) = &r.lfw {
        catalog.extend(loaders::load_lfw(p)?);
    }
    if let Some(p) = &r.sun397 {
        catalog.extend(loaders::load_sun397(p, &r.sun397_exclude)?);
    }
    if let Some(p) = &r.kdef {
        catalog.extend(loaders::load_kdef(p, &config.kdef_angles)?);
    }
    if let Some(p) = &r.akdef {
        catalog.extend(loaders::load_akdef(p, &config.kdef_angles)?);
    }
    for n in &r.npy {
        catalog.extend(loaders::load_npy(n)?);
    }
    for f in &r.folders {
        catalog.extend(loaders::load_folder(f)?);
    }
    Ok(catalog)
}

/// The settings that change what prep produces (pipeline-only settings such
/// as augmentation, normalization and the cache folder are left out, so
/// changing them does not force a re-decode).
#[derive(Serialize)]
struct KeySettings<'a> {
    version: u32,
    task: &'a Task,
    image_size: u32,
    resize: super::config::ResizeMode,
    eval_fraction: f64,
    split_seed: u64,
    kdef_angles: &'a [super::kdef::Angle],
    max_images_per_dataset: Option<usize>,
    decode_limits: super::config::DecodeLimits,
    /// The sources without their weights and shares (those only change
    /// the order of training batches).
    source: SourceConfig,
}

fn cache_key(config: &DataConfig, task: &Task, catalog: &Catalog) -> Result<String> {
    let settings = KeySettings {
        version: PREP_VERSION,
        task,
        image_size: config.image_size,
        resize: config.resize,
        eval_fraction: config.eval_fraction,
        split_seed: config.split_seed,
        kdef_angles: &config.kdef_angles,
        max_images_per_dataset: config.max_images_per_dataset,
        decode_limits: config.decode_limits,
        source: match &config.source {
            SourceConfig::Mixed(parts) => {
                SourceConfig::Mixed(parts.iter().map(|p| super::config::SourcePart { weight: None, share: None, ..p.clone() }).collect())
            }
            other => other.clone(),
        },
    };
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&settings).map_err(|e| DataError::config("data", e, "serializable settings"))?);
    for s in &catalog.samples {
        h.update(serde_json::to_vec(s).map_err(|e| DataError::config("data", e, "serializable samples"))?);
        h.update(b"\n");
    }
    for k in &catalog.skipped {
        h.update(k.path.as_bytes());
        h.update(k.reason.as_bytes());
        h.update(b"\n");
    }
    let digest = h.finalize();
    Ok(digest.iter().take(12).map(|b| format!("{b:02x}")).collect())
}

#[derive(Serialize, Deserialize)]
struct CacheMeta {
    task: Task,
    class_names: Vec<String>,
    image_size: u32,
    train_labels: Vec<i32>,
    train_info: Vec<SampleInfo>,
    eval_labels: Vec<i32>,
    eval_info: Vec<SampleInfo>,
    report: PrepReport,
    #[serde(default)]
    sources: Vec<SourceSummary>,
}

fn progress_bar(len: usize, enabled: bool, message: &'static str) -> ProgressBar {
    let target = if enabled { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
    let bar = ProgressBar::with_draw_target(Some(len as u64), target);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({per_sec}, eta {eta})") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message);
    bar
}

fn strict_check(strict: bool, skipped: &[Skipped]) -> Result<()> {
    match skipped.first() {
        Some(k) if strict => Err(DataError::StrictSkip { path: k.path.clone(), reason: k.reason.clone() }),
        _ => Ok(()),
    }
}

/// Prepares a task's data set, from the cache when its key matches.
pub fn prepare(config: &DataConfig, options: &PrepOptions) -> Result<PrepOutcome> {
    config.validate()?;
    if let Some(prepared) = &config.prepared {
        return from_prepared(config, options, prepared);
    }
    // Sources in a bucket are copied into the cache folder first (see `remote`).
    let localized = super::remote::localize(config)?;
    let config = &localized.config;
    let task = options.task;
    let catalog = load_catalog(config, options.progress)?;
    strict_check(options.strict, &catalog.skipped)?;

    let key = cache_key(config, &task, &catalog)?;
    let cache_path = cache::cache_path(&config.cache_dir, task.name(), &key);
    let report_json = cache_path.with_extension("report.json");
    let report_table = cache_path.with_extension("report.txt");

    if let Some(set) = read_cache(&cache_path)? {
        strict_check(options.strict, &set.report.skipped)?;
        write_reports(&set.report, &report_json, &report_table)?;
        return Ok(PrepOutcome { set, cache_hit: true, decoded: 0, cache_path, report_json, report_table, copies: localized.copies });
    }

    let class_names: Vec<String> = task.class_names().iter().map(|s| s.to_string()).collect();
    let splits = split_by_identity(&catalog.samples, config.eval_fraction, config.split_seed);
    let mut chosen: Vec<(usize, i32)> = Vec::new();
    let mut unused = 0;
    for (i, s) in catalog.samples.iter().enumerate() {
        match task.label(s) {
            Some(label) => chosen.push((i, label)),
            None => unused += 1,
        }
    }
    check_classes(&task, &class_names, chosen.iter().map(|&(i, l)| (l, splits[i])))?;

    let settings = DecodeSettings { size: config.image_size, resize: config.resize, limits: config.decode_limits };
    let npy = load_npy_arrays(&catalog.samples, &chosen);
    let started = Instant::now();
    let bar = progress_bar(chosen.len(), options.progress, "decoding");
    let decoded: Vec<std::result::Result<Vec<u8>, String>> = chosen
        .par_iter()
        .map(|&(i, _)| {
            let out = decode_sample(&catalog.samples[i], &settings, &npy);
            bar.inc(1);
            out
        })
        .collect();
    bar.finish_and_clear();
    let seconds = started.elapsed().as_secs_f64();

    let mut skipped = catalog.skipped.clone();
    let size = config.image_size;
    let mut train = PreparedSplit { split: Split::Train, image_size: size, pixels: Vec::new(), labels: Vec::new(), info: Vec::new() };
    let mut eval = PreparedSplit { split: Split::Eval, image_size: size, pixels: Vec::new(), labels: Vec::new(), info: Vec::new() };
    let mut datasets: BTreeMap<String, [usize; 2]> = BTreeMap::new();
    let mut sources: BTreeMap<String, [usize; 2]> = BTreeMap::new();
    let mut ids: [BTreeSet<String>; 2] = [BTreeSet::new(), BTreeSet::new()];
    for (&(i, label), result) in chosen.iter().zip(decoded) {
        let s = &catalog.samples[i];
        let pixels = match result {
            Ok(p) => p,
            Err(reason) => {
                skipped.push(Skipped::new(&s.source, reason));
                continue;
            }
        };
        let side = splits[i];
        let target = if side == Split::Train { &mut train } else { &mut eval };
        target.pixels.extend_from_slice(&pixels);
        target.labels.push(label);
        let source_name = catalog.sources.get(usize::from(s.origin)).map(|o| o.name.clone()).unwrap_or_default();
        let side_index = usize::from(side == Split::Eval);
        sources.entry(source_name.clone()).or_default()[side_index] += 1;
        target.info.push(SampleInfo {
            source: s.source.to_string(),
            face: s.face,
            expression: s.expression,
            identity: s.identity.clone(),
            dataset: s.dataset,
            source_name,
        });
        datasets.entry(s.dataset.to_string()).or_default()[side_index] += 1;
        ids[side_index].insert(s.split_key());
    }
    strict_check(options.strict, &skipped[catalog.skipped.len()..])?;
    let mut warnings =
        check_classes(&task, &class_names, train.labels.iter().map(|&l| (l, Split::Train)).chain(eval.labels.iter().map(|&l| (l, Split::Eval))))?;
    if catalog.sources.len() > 1 {
        for source in &catalog.sources {
            match sources.get(&source.name) {
                None => warnings.push(format!("source `{}` has no image with a label for task {task}; this task does without it", source.name)),
                Some([_, 0]) => warnings.push(format!("source `{}` has no eval images for task {task} (too few identities?)", source.name)),
                Some(_) => {}
            }
        }
    }

    let train_counts = train.class_counts(class_names.len());
    let eval_counts = eval.class_counts(class_names.len());
    let mut skipped_by_reason = BTreeMap::new();
    for k in &skipped {
        *skipped_by_reason.entry(reason_kind(&k.reason)).or_insert(0) += 1;
    }
    let report = PrepReport {
        task: task.to_string(),
        cache_key: key,
        image_size: size,
        resize: config.resize.name().to_string(),
        eval_fraction: config.eval_fraction,
        split_seed: config.split_seed,
        classes: class_names.iter().enumerate().map(|(c, name)| ClassCount { class: name.clone(), train: train_counts[c], eval: eval_counts[c] }).collect(),
        datasets,
        sources,
        identities: [ids[0].len(), ids[1].len()],
        skipped,
        skipped_by_reason,
        filtered: catalog.filtered.clone(),
        unused_by_task: unused,
        warnings,
        decoded: chosen.len(),
        decode_seconds: seconds,
    };
    let set = PreparedSet { task, class_names, image_size: size, train, eval, report, sources: catalog.sources.clone() };
    write_cache(&cache_path, &set)?;
    write_reports(&set.report, &report_json, &report_table)?;
    let decoded = set.report.decoded;
    Ok(PrepOutcome { set, cache_hit: false, decoded, cache_path, report_json, report_table, copies: localized.copies })
}

/// The task's set from `data.prepared` (a folder or a bucket prefix that
/// `data prep --out` filled): its one `prep-TASK-*.emods` file, copied here
/// first from a bucket, read whole and checked (checksum, task, image size).
fn from_prepared(config: &DataConfig, options: &PrepOptions, at: &Path) -> Result<PrepOutcome> {
    let task = options.task;
    let (cache_path, copies) = super::remote::locate_prepared(at, task.name(), &config.cache_dir)?;
    let bytes = std::fs::read(&cache_path).map_err(|e| DataError::io(&cache_path, e))?;
    // Unlike our own cache, a prepared set is not rebuilt here: damage is an error.
    let set = decode_set(&cache_path, &bytes)?;
    if set.task != task {
        return Err(DataError::config("prepared", cache_path.display(), format!("a prepared set of the {task} task; this file holds the {} task", set.task)));
    }
    if set.image_size != config.image_size {
        return Err(DataError::config(
            "image_size",
            config.image_size,
            format!("{} (the size of the prepared set {}), or a set prepared at {}", set.image_size, cache_path.display(), config.image_size),
        ));
    }
    strict_check(options.strict, &set.report.skipped)?;
    let report_json = cache_path.with_extension("report.json");
    let report_table = cache_path.with_extension("report.txt");
    write_reports(&set.report, &report_json, &report_table)?;
    Ok(PrepOutcome { set, cache_hit: true, decoded: 0, cache_path, report_json, report_table, copies })
}

/// Errors when a class has no samples at all or none for training; returns
/// warnings for classes missing only from eval.
fn check_classes(task: &Task, names: &[String], labels: impl Iterator<Item = (i32, Split)>) -> Result<Vec<String>> {
    let mut counts = vec![[0usize; 2]; names.len()];
    for (l, s) in labels {
        if let Some(c) = usize::try_from(l).ok().and_then(|l| counts.get_mut(l)) {
            c[usize::from(s == Split::Eval)] += 1;
        }
    }
    let mut warnings = Vec::new();
    for (name, [train, eval]) in names.iter().zip(&counts) {
        if train + eval == 0 {
            return Err(DataError::EmptyClass { task: task.to_string(), class: name.clone(), split: "" });
        }
        if *train == 0 {
            return Err(DataError::EmptyClass { task: task.to_string(), class: name.clone(), split: "training " });
        }
        if *eval == 0 {
            warnings.push(format!("class `{name}` has no eval samples (too few identities?)"));
        }
    }
    Ok(warnings)
}

type NpyCache = HashMap<PathBuf, std::result::Result<Arc<NpyArray>, String>>;

fn load_npy_arrays(samples: &[Sample], chosen: &[(usize, i32)]) -> NpyCache {
    let mut arrays = NpyCache::new();
    for &(i, _) in chosen {
        if let SampleSource::Npy { path, .. } = &samples[i].source {
            arrays.entry(path.clone()).or_insert_with(|| loaders::read_npy(path).map(Arc::new).map_err(|e| e.to_string()));
        }
    }
    arrays
}

fn decode_sample(sample: &Sample, settings: &DecodeSettings, npy: &NpyCache) -> std::result::Result<Vec<u8>, String> {
    match &sample.source {
        SampleSource::File { path } => decode_file(path, settings),
        SampleSource::Npy { path, index } => {
            let array = npy.get(path).ok_or("npy array was not loaded")?.as_ref().map_err(|e| e.clone())?;
            if *index >= array.count {
                return Err(format!("index {index} is past the array's {} images", array.count));
            }
            fit_pixels(array.image(*index), array.width as u32, array.height as u32, settings.size, settings.resize)
        }
    }
}

fn read_cache(path: &Path) -> Result<Option<PreparedSet>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DataError::io(path, e)),
    };
    // A damaged cache is rebuilt, not fatal: it holds nothing that the inputs cannot reproduce.
    match decode_set(path, &bytes) {
        Ok(set) => Ok(Some(set)),
        Err(e) => {
            tracing::warn!("{e}; rebuilding it");
            Ok(None)
        }
    }
}

/// A prepared set from the bytes of its cache file (checksum, lengths and counts checked).
fn decode_set(path: &Path, bytes: &[u8]) -> Result<PreparedSet> {
    cache::decode(path, bytes).and_then(|(meta, pixels)| {
        let meta: CacheMeta = serde_json::from_slice(&meta).map_err(|e| DataError::CorruptCache { path: path.to_path_buf(), reason: e.to_string() })?;
        let n = (meta.image_size as usize).pow(2);
        let train_len = meta.train_labels.len() * n;
        if pixels.len() != train_len + meta.eval_labels.len() * n
            || meta.train_info.len() != meta.train_labels.len()
            || meta.eval_info.len() != meta.eval_labels.len()
        {
            return Err(DataError::CorruptCache { path: path.to_path_buf(), reason: "pixel block does not match the sample counts".into() });
        }
        let mut pixels = pixels;
        let eval_pixels = pixels.split_off(train_len);
        Ok(PreparedSet {
            task: meta.task,
            class_names: meta.class_names,
            image_size: meta.image_size,
            train: PreparedSplit { split: Split::Train, image_size: meta.image_size, pixels, labels: meta.train_labels, info: meta.train_info },
            eval: PreparedSplit { split: Split::Eval, image_size: meta.image_size, pixels: eval_pixels, labels: meta.eval_labels, info: meta.eval_info },
            report: meta.report,
            sources: meta.sources,
        })
    })
}

fn write_cache(path: &Path, set: &PreparedSet) -> Result<()> {
    let meta = CacheMeta {
        task: set.task,
        class_names: set.class_names.clone(),
        image_size: set.image_size,
        train_labels: set.train.labels.clone(),
        train_info: set.train.info.clone(),
        eval_labels: set.eval.labels.clone(),
        eval_info: set.eval.info.clone(),
        report: set.report.clone(),
        sources: set.sources.clone(),
    };
    let meta = serde_json::to_vec(&meta).map_err(|e| DataError::io(path, std::io::Error::other(e)))?;
    let mut pixels = Vec::with_capacity(set.train.pixels.len() + set.eval.pixels.len());
    pixels.extend_from_slice(&set.train.pixels);
    pixels.extend_from_slice(&set.eval.pixels);
    cache::write_atomic(path, &cache::encode(&meta, &pixels))
}

fn write_reports(report: &PrepReport, json: &Path, table: &Path) -> Result<()> {
    let text = serde_json::to_vec_pretty(report).map_err(|e| DataError::io(json, std::io::Error::other(e)))?;
    cache::write_atomic(json, &text)?;
    cache::write_atomic(table, report.table().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_kinds_drop_quoted_names_and_details() {
        assert_eq!(reason_kind("misnamed KDEF file `AF01XXS`: expression `XX` is not one of ..."), "misnamed KDEF file");
        assert_eq!(reason_kind("empty file (0 bytes)"), "empty file (0 bytes)");
    }
}
