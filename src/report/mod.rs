//! The report: a runs directory's records in, `report.md` + SVG charts +
//! `report.json` out.
//!
//! - [`model`]: scan the runs directory, group repeats, compute statistics,
//!   speedups and comparisons with the paper;
//! - [`paper`]: the paper's published figures, as labelled constants;
//! - [`charts`] and [`svg`]: hand-written SVG charts;
//! - [`markdown`]: the text of the report.
//!
//! The report is built in a sibling staging directory and moved into place
//! only when complete, so a failed run never replaces a good report. This
//! module only reads records; it never writes into the runs directory.

use std::fs;
use std::path::{Path, PathBuf};

use crate::fsutil::{self, FsError};
use crate::records::RecordError;

pub mod charts;
pub mod markdown;
pub mod model;
pub mod paper;
pub mod svg;

pub use model::{Analysis, Scan, analyse, scan};

/// Written into `report.json`; marks a directory as ours to replace.
pub const GENERATOR: &str = "emotionet report";
pub const REPORT_MD: &str = "report.md";
pub const REPORT_JSON: &str = "report.json";

/// Why a report could not be made. Every variant names the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot open the runs directory {path}: {source}")]
    RunsDir { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("cannot list {path}: {source}")]
    Walk { path: PathBuf, source: std::io::Error },
    #[error("no run records (record.json) or hierarchy evaluations (hierarchy.json) under {path}{}", if *skipped > 0 { format!(" ({skipped} invalid files skipped)") } else { String::new() })]
    NothingFound { path: PathBuf, skipped: usize },
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("cannot read the TPU prediction {path}: {message}")]
    Prediction { path: PathBuf, message: String },
    #[error("run id `{run_id}` appears twice: {first} and {second}")]
    DuplicateRun { run_id: String, first: PathBuf, second: PathBuf },
    #[error("refusing to replace {path}: it exists and is not an emotionet report directory ({reason})")]
    NotAReportDir { path: PathBuf, reason: String },
    #[error("the output directory {out} would contain or equal the runs directory {runs}")]
    OutContainsRuns { out: PathBuf, runs: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot encode {path}: {source}")]
    Json { path: PathBuf, source: serde_json::Error },
    #[error(transparent)]
    Fs(#[from] FsError),
}

/// How `write_report` treats invalid record files.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReportOptions {
    /// List invalid `record.json`/`hierarchy.json`/`metrics.jsonl` files as
    /// skipped in the report instead of failing.
    pub skip_invalid: bool,
}

/// What `write_report` produced.
#[derive(Clone, Debug)]
pub struct ReportSummary {
    pub out_dir: PathBuf,
    pub runs: usize,
    pub hierarchies: usize,
    pub skipped: usize,
    /// File names inside `out_dir`.
    pub files: Vec<String>,
}

/// Scans `runs_dir`, renders the report and replaces `out_dir` with it.
///
/// `out_dir` must not exist, be empty, or hold only a previous report
/// (`report.md`, `report.json` naming [`GENERATOR`], `*.svg`); anything else
/// is refused rather than deleted.
pub fn write_report(runs_dir: &Path, out_dir: &Path, options: ReportOptions) -> Result<ReportSummary, ReportError> {
    check_out_dir(runs_dir, out_dir)?;
    let found = scan(runs_dir, options.skip_invalid)?;
    let analysis = analyse(&found);
    let rendered = markdown::render(&found, &analysis, &crate::records::now_rfc3339());

    let parent = fsutil::parent_dir(out_dir);
    fs::create_dir_all(&parent).map_err(|source| ReportError::Write { path: parent.clone(), source })?;
    let name = out_dir.file_name().ok_or_else(|| FsError::BadPath { path: out_dir.to_path_buf() })?;
    let mut staged_name = name.to_os_string();
    staged_name.push(format!(".tmp-{}", std::process::id()));
    let staged = parent.join(staged_name);
    if staged.exists() {
        fs::remove_dir_all(&staged).map_err(|source| ReportError::Write { path: staged.clone(), source })?;
    }
    let result = (|| {
        fs::create_dir(&staged).map_err(|source| ReportError::Write { path: staged.clone(), source })?;
        let mut files = Vec::new();
        let mut write = |file: &str, bytes: &[u8]| -> Result<(), ReportError> {
            let path = staged.join(file);
            fs::write(&path, bytes).map_err(|source| ReportError::Write { path: path.clone(), source })?;
            fs::File::open(&path).and_then(|f| f.sync_all()).map_err(|source| ReportError::Write { path, source })?;
            files.push(file.to_string());
            Ok(())
        };
        write(REPORT_MD, rendered.markdown.as_bytes())?;
        for (file, svg) in &rendered.charts {
            write(file, svg.as_bytes())?;
        }
        let json_path = staged.join(REPORT_JSON);
        let mut json = serde_json::to_string_pretty(&rendered.json).map_err(|source| ReportError::Json { path: json_path, source })?;
        json.push('\n');
        write(REPORT_JSON, json.as_bytes())?;
        fsutil::sync_dir(&staged)?;
        fsutil::replace_dir(&staged, out_dir)?;
        Ok(files)
    })();
    match result {
        Ok(files) => Ok(ReportSummary {
            out_dir: out_dir.to_path_buf(),
            runs: found.runs.len(),
            hierarchies: found.hierarchies.len(),
            skipped: found.skipped.len(),
            files,
        }),
        Err(e) => {
            let _ = fs::remove_dir_all(&staged);
            Err(e)
        }
    }
}

/// Refuses an output directory that is not ours to replace, or that would
/// swallow the runs directory.
fn check_out_dir(runs_dir: &Path, out_dir: &Path) -> Result<(), ReportError> {
    let absolute = |p: &Path| fs::canonicalize(p).ok();
    if let (Some(out), Some(runs)) = (absolute(out_dir), absolute(runs_dir))
        && runs.starts_with(&out)
    {
        return Err(ReportError::OutContainsRuns { out: out_dir.to_path_buf(), runs: runs_dir.to_path_buf() });
    }
    let entries = match fs::read_dir(out_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            return Err(ReportError::NotAReportDir { path: out_dir.to_path_buf(), reason: "it is a file".into() });
        }
        Err(source) => return Err(ReportError::Write { path: out_dir.to_path_buf(), source }),
    };
    let refuse = |reason: String| Err(ReportError::NotAReportDir { path: out_dir.to_path_buf(), reason });
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| ReportError::Write { path: out_dir.to_path_buf(), source })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if !is_file || !(name == REPORT_MD || name == REPORT_JSON || name.ends_with(".svg")) {
            return refuse(format!("it holds `{name}`"));
        }
        names.push(name);
    }
    if names.is_empty() {
        return Ok(());
    }
    let marker = fs::read(out_dir.join(REPORT_JSON)).ok().and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    match marker {
        Some(v) if v.get("generator").and_then(|g| g.as_str()) == Some(GENERATOR) => Ok(()),
        _ => refuse(format!("no {REPORT_JSON} written by {GENERATOR}")),
    }
}
