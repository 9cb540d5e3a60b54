//! `emotionet report RUNS_DIR --out DIR`: the Markdown + SVG report of every
//! run record under a runs directory.

use std::path::PathBuf;

use clap::Args;

use crate::lock::OutputLock;
use crate::report::{self, ReportOptions};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Directory searched recursively for run records (record.json,
    /// metrics.jsonl) and hierarchy evaluations (hierarchy.json); or
    /// gs://BUCKET/PREFIX, downloaded first.
    pub runs_dir: PathBuf,
    /// Where to write report.md, report.json and the SVG charts. Replaced
    /// as a whole, and only if it is empty or an earlier report; gs://...
    /// uploads it there.
    #[arg(long, default_value = "reports/latest")]
    pub out: PathBuf,
    /// Report invalid record files as skipped (named in the report)
    /// instead of stopping with an error.
    #[arg(long)]
    pub skip_invalid: bool,
    /// If another emotionet command is writing the same folder, wait for
    /// it to end instead of stopping with an error.
    #[arg(long)]
    pub wait: bool,
}

/// What to type when the runs folder holds nothing to report.
const RUNS_HINT: &str = "give the folder a campaign (`emotionet run`) or `emotionet train` wrote its runs into \
                         (`make demo` writes runs/demo), or gs://BUCKET/PREFIX";

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    if matches!(crate::storage::Location::from_path(&args.runs_dir)?, crate::storage::Location::Local(_)) && !args.runs_dir.exists() {
        anyhow::bail!("there is no runs folder {}: it does not exist; {RUNS_HINT}", args.runs_dir.display());
    }
    let runs_dir = super::output::for_reading(&args.runs_dir)?;
    let dest = crate::storage::Location::from_path(&args.out)?;
    let out = match &dest {
        crate::storage::Location::Gcs(path) => super::output::staging_dir(path),
        crate::storage::Location::Local(dir) => dir.clone(),
    };
    // The report folder is replaced as a whole, so its lock lives beside it.
    let _lock = OutputLock::acquire_beside(&out, "writing the report", args.wait.into())?;
    let summary = report::write_report(&runs_dir, &out, ReportOptions { skip_invalid: args.skip_invalid }).map_err(|e| {
        // Only an invalid record file can be fixed, removed or skipped.
        let hint = match &e {
            report::ReportError::Record(_) => "; fix or remove that file, or pass --skip-invalid to list invalid files as skipped".to_string(),
            report::ReportError::RunsDir { .. } | report::ReportError::NotADirectory { .. } | report::ReportError::NothingFound { .. } => {
                format!("; {RUNS_HINT}")
            }
            _ => String::new(),
        };
        anyhow::anyhow!("cannot build the report of {}: {}{hint}", args.runs_dir.display(), crate::errors::chain_text(&e))
    })?;
    if summary.skipped > 0 {
        eprintln!("warning: {} invalid file(s) skipped; they are listed in the report", summary.skipped);
    }
    outln!(
        "report of {} runs and {} hierarchy evaluation(s): {} ({} charts)",
        summary.runs,
        summary.hierarchies,
        summary.out_dir.join(report::REPORT_MD).display(),
        summary.files.iter().filter(|f| f.ends_with(".svg")).count()
    )?;
    super::output::publish(&summary.out_dir, &dest)?;
    Ok(())
}
