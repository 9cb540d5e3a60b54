//! `emotionet data synth|prep|fetch`: the synthetic set, preparing a task's
//! data (decode, split, cache, report), and downloading the public datasets.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use crate::data::fetch::{self, FetchOptions};
use crate::data::{DataConfig, EmotionGrouping, NpySource, PrepOptions, RealSources, ResizeMode, SourceConfig, SynthConfig, Task};

#[derive(Args, Debug)]
pub struct DataArgs {
    #[command(subcommand)]
    pub command: DataCommand,
}

// Parsed once per run, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Write the synthetic face/scene set as JPEGs in the LFW, KDEF and SUN397 layouts.
    Synth(SynthArgs),
    /// Decode, crop, split by identity and cache a task's data; print a report.
    Prep(PrepArgs),
    /// Download and unpack LFW or SUN397 (KDEF/AKDEF: prints how to get them).
    Fetch(FetchArgs),
}

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output folder (new, empty, or an earlier synthetic set to replace).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = SynthConfig::default().seed)]
    pub seed: u64,
    /// Face pictures (half in the KDEF tree, up to 4,900; the rest in the LFW tree).
    #[arg(long, default_value_t = SynthConfig::default().faces)]
    pub faces: usize,
    /// Scene pictures (the SUN397 tree).
    #[arg(long = "non-faces", default_value_t = SynthConfig::default().non_faces)]
    pub non_faces: usize,
    /// Picture size in pixels (KDEF-style pictures are portrait, this wide).
    #[arg(long, default_value_t = SynthConfig::default().size)]
    pub size: u32,
    /// 0 (easy) .. 1 (hard): noise, blur, rotation, occlusion, subtler expressions, clutter.
    #[arg(long, default_value_t = SynthConfig::default().difficulty)]
    pub difficulty: f32,
    /// Share of scenes that are round objects with two dark spots.
    #[arg(long = "confuser-fraction", default_value_t = SynthConfig::default().confuser_fraction)]
    pub confuser_fraction: f32,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TaskName {
    Face,
    Emotion,
    Hierarchy,
}

#[derive(Args, Debug)]
pub struct PrepArgs {
    /// A YAML or JSON data config (a bare one, or an experiment file with a `data:` section).
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "face")]
    pub task: TaskName,
    /// Any skipped file is an error naming it.
    #[arg(long)]
    pub strict: bool,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Model input size in pixels (overrides the config).
    #[arg(long = "image-size")]
    pub image_size: Option<u32>,
    #[arg(long, value_enum)]
    pub resize: Option<ResizeArg>,
    #[arg(long = "cache-dir")]
    pub cache_dir: Option<PathBuf>,
    #[arg(long = "eval-fraction")]
    pub eval_fraction: Option<f64>,
    #[arg(long = "split-seed")]
    pub split_seed: Option<u64>,
    #[arg(long, value_enum)]
    pub grouping: Option<GroupingArg>,
    /// KDEF/AKDEF angles to keep, comma-separated (S,HL,HR,FL,FR).
    #[arg(long = "kdef-angles", value_delimiter = ',')]
    pub kdef_angles: Option<Vec<crate::data::Angle>>,
    /// Real data folders (any of these switches the source to real data).
    #[arg(long)]
    pub lfw: Option<PathBuf>,
    #[arg(long)]
    pub sun397: Option<PathBuf>,
    #[arg(long)]
    pub kdef: Option<PathBuf>,
    #[arg(long)]
    pub akdef: Option<PathBuf>,
    /// A folder-per-class dataset (ROOT/<face|non_face|happy|...>/images); repeatable.
    #[arg(long = "folder")]
    pub folders: Vec<PathBuf>,
    /// A .npy array of images; give its face and non-face index ranges.
    #[arg(long)]
    pub npy: Option<PathBuf>,
    /// Faces in --npy, as START..END (e.g. 0..100 for scikit-image's lfw_subset.npy).
    #[arg(long = "npy-faces", value_parser = parse_range)]
    pub npy_faces: Option<[usize; 2]>,
    /// Non-faces in --npy, as START..END (e.g. 100..200).
    #[arg(long = "npy-non-faces", value_parser = parse_range)]
    pub npy_non_faces: Option<[usize; 2]>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ResizeArg {
    CenterCrop,
    Pad,
    Stretch,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum GroupingArg {
    HappySadNeither,
    JoyfulNot,
}

fn parse_range(text: &str) -> Result<[usize; 2], String> {
    let (a, b) = text.split_once("..").ok_or_else(|| format!("`{text}` is not START..END"))?;
    let a: usize = a.trim().parse().map_err(|_| format!("`{a}` is not a non-negative integer"))?;
    let b: usize = b.trim().parse().map_err(|_| format!("`{b}` is not a non-negative integer"))?;
    if a >= b {
        return Err(format!("`{text}` is empty (START must be below END)"));
    }
    Ok([a, b])
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FetchDataset {
    Lfw,
    LfwFunneled,
    LfwDeepfunneled,
    Sun397,
    Kdef,
    Akdef,
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    #[arg(value_enum)]
    pub dataset: FetchDataset,
    /// Folder to download and unpack into.
    #[arg(long, default_value = "data")]
    pub dest: PathBuf,
    /// Expected SHA-256 of the archive (required for lfw-deepfunneled and sun397).
    #[arg(long)]
    pub sha256: Option<String>,
    /// Fetch `<URL>/<archive name>` instead of the official URL (a mirror).
    #[arg(long = "base-url")]
    pub base_url: Option<String>,
    /// Download and verify only.
    #[arg(long = "no-extract")]
    pub no_extract: bool,
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: DataArgs) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Synth(a) => synth(a),
        DataCommand::Prep(a) => prep(a),
        DataCommand::Fetch(a) => fetch_cmd(a),
    }
}

fn synth(args: SynthArgs) -> anyhow::Result<()> {
    let config = SynthConfig {
        seed: args.seed,
        faces: args.faces,
        non_faces: args.non_faces,
        size: args.size,
        difficulty: args.difficulty,
        confuser_fraction: args.confuser_fraction,
        ..SynthConfig::default()
    };
    let m = crate::data::generate_dataset(&config, &args.out, !args.quiet)
        .with_context(|| format!("cannot write the synthetic set to {}; pick an empty folder with --out", args.out.display()))?;
    let total = m.lfw_images + m.kdef_images + m.sun_images;
    let mut out = std::io::stdout().lock();
    writeln!(out, "wrote {total} JPEGs to {} in {:.2} s ({:.0} images/s)", args.out.display(), m.seconds, total as f64 / m.seconds.max(1e-9))?;
    writeln!(out, "  lfw/     {:>7} faces of {} people", m.lfw_images, m.lfw_people)?;
    writeln!(out, "  KDEF/    {:>7} faces of {} subjects (7 expressions, 5 angles)", m.kdef_images, m.kdef_subjects)?;
    writeln!(out, "  SUN397/  {:>7} scenes in {} categories ({}% confusers)", m.sun_images, m.sun_categories, (config.confuser_fraction * 100.0).round())?;
    writeln!(out, "prep it with: emotionet data prep --lfw {0}/lfw --kdef {0}/KDEF --sun397 {0}/SUN397", args.out.display())?;
    Ok(())
}

fn build_config(args: &PrepArgs) -> anyhow::Result<DataConfig> {
    let mut config = match &args.config {
        Some(path) => DataConfig::from_file(path).with_context(|| format!("fix the data config {}", path.display()))?,
        None => DataConfig::default(),
    };
    if let Some(v) = args.image_size {
        config.image_size = v;
    }
    if let Some(r) = args.resize {
        config.resize = match r {
            ResizeArg::CenterCrop => ResizeMode::CenterCrop,
            ResizeArg::Pad => ResizeMode::Pad,
            ResizeArg::Stretch => ResizeMode::Stretch,
        };
    }
    if let Some(v) = &args.cache_dir {
        config.cache_dir = v.clone();
    }
    if let Some(v) = args.eval_fraction {
        config.eval_fraction = v;
    }
    if let Some(v) = args.split_seed {
        config.split_seed = v;
    }
    if let Some(g) = args.grouping {
        config.grouping = match g {
            GroupingArg::HappySadNeither => EmotionGrouping::HappySadNeither,
            GroupingArg::JoyfulNot => EmotionGrouping::JoyfulNot,
        };
    }
    if let Some(a) = &args.kdef_angles {
        config.kdef_angles = a.clone();
    }
    let real_flags =
        args.lfw.is_some() || args.sun397.is_some() || args.kdef.is_some() || args.akdef.is_some() || !args.folders.is_empty() || args.npy.is_some();
    if real_flags {
        let mut real = match &config.source {
            SourceConfig::Real(r) => r.clone(),
            SourceConfig::Synthetic(_) => RealSources::default(),
            SourceConfig::Mixed(_) => anyhow::bail!(
                "--lfw, --sun397, --kdef, --akdef, --folder and --npy replace the data source, but {} has a mixed source; edit its `source.mixed` list instead",
                args.config.as_ref().map_or_else(|| "the configuration".to_string(), |p| p.display().to_string())
            ),
        };
        real.lfw = args.lfw.clone().or(real.lfw);
        real.sun397 = args.sun397.clone().or(real.sun397);
        real.kdef = args.kdef.clone().or(real.kdef);
        real.akdef = args.akdef.clone().or(real.akdef);
        real.folders.extend(args.folders.iter().cloned());
        if let Some(path) = &args.npy {
            if args.npy_faces.is_none() && args.npy_non_faces.is_none() {
                anyhow::bail!(
                    "--npy {} needs --npy-faces START..END and/or --npy-non-faces START..END (for scikit-image's lfw_subset.npy: 0..100 and 100..200)",
                    path.display()
                );
            }
            real.npy.push(NpySource { path: path.clone(), faces: args.npy_faces, non_faces: args.npy_non_faces, expression: None });
        }
        config.source = SourceConfig::Real(real);
    }
    config.validate().context("fix the option this message names")?;
    Ok(config)
}

fn prep(args: PrepArgs) -> anyhow::Result<()> {
    let config = build_config(&args)?;
    let task = match args.task {
        TaskName::Face => Task::Face,
        TaskName::Emotion => Task::Emotion { grouping: config.grouping },
        TaskName::Hierarchy => Task::Hierarchy { grouping: config.grouping },
    };
    let options = PrepOptions { task, strict: args.strict, progress: !args.quiet };
    let hint = if args.strict {
        "fix or remove the file in this message, or run without --strict to skip such files"
    } else {
        "check the folder or setting this message names"
    };
    let outcome = crate::data::prepare(&config, &options).with_context(|| format!("data prep for the {task} task failed ({hint})"))?;
    let mut out = std::io::stdout().lock();
    for c in &outcome.copies {
        // On stderr with --json, so that stdout stays one JSON document.
        let line =
            format!("{}: {} object(s), {} downloaded ({} bytes), {} removed, in {}", c.url, c.objects, c.downloaded, c.bytes, c.removed, c.local.display());
        if args.json {
            eprintln!("{line}");
        } else {
            writeln!(out, "{line}")?;
        }
    }
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&outcome.set.report)?)?;
        return Ok(());
    }
    write!(out, "{}", outcome.set.report.table())?;
    if outcome.cache_hit {
        writeln!(out, "cache: hit, nothing decoded ({})", outcome.cache_path.display())?;
    } else {
        writeln!(out, "cache: written ({})", outcome.cache_path.display())?;
    }
    writeln!(out, "report: {} and {}", outcome.report_json.display(), outcome.report_table.display())?;
    Ok(())
}

fn fetch_cmd(args: FetchArgs) -> anyhow::Result<()> {
    let spec = match args.dataset {
        FetchDataset::Lfw => fetch::LFW,
        FetchDataset::LfwFunneled => fetch::LFW_FUNNELED,
        FetchDataset::LfwDeepfunneled => fetch::LFW_DEEPFUNNELED,
        FetchDataset::Sun397 => fetch::SUN397,
        FetchDataset::Kdef | FetchDataset::Akdef => {
            print!("{}", fetch::KDEF_INSTRUCTIONS);
            return Ok(());
        }
    };
    let options = FetchOptions {
        dest: args.dest.clone(),
        base_url: args.base_url.clone(),
        sha256: args.sha256.clone(),
        progress: !args.quiet,
        extract: !args.no_extract,
    };
    let outcome = fetch::fetch_blocking(&spec, &options)
        .with_context(|| format!("fetching {} failed; rerun the same command to resume, or check --sha256 / the network", spec.name))?;
    let mut out = std::io::stdout().lock();
    if outcome.resumed_from > 0 {
        writeln!(out, "resumed at byte {}", outcome.resumed_from)?;
    }
    writeln!(out, "{}: {} (sha256 verified, {} bytes downloaded now)", spec.name, outcome.archive.display(), outcome.downloaded)?;
    if let Some(dir) = outcome.extracted_to {
        writeln!(out, "extracted to {}", dir.display())?;
    }
    Ok(())
}
