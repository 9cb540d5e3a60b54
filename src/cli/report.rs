//! `emotionet report RUNS_DIR --out DIR`: the Markdown + SVG report of every
//! run record under a runs directory.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use crate::lock::OutputLock;
use crate::report::{self, ReportOptions};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Directory searched recursively for run records (record.json,
    /// metrics.jsonl) and hierarchy evaluations (hierarchy.json).
    pub runs_dir: PathBuf,
    /// Where to write report.md, report.json and the SVG charts. Replaced
    /// as a whole, and only if it is empty or an earlier report.
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

pub fn run(args: ReportArgs) -> anyhow::Result<()> {
    // The report folder is replaced as a whole, so its lock lives beside it.
    let _lock = OutputLock::acquire_beside(&args.out, "writing the report", args.wait.into())?;
    let summary = report::write_report(&args.runs_dir, &args.out, ReportOptions { skip_invalid: args.skip_invalid }).with_context(|| {
        format!(
            "cannot build the report of {} (fix or remove the file named above, or pass --skip-invalid to list invalid files as skipped)",
            args.runs_dir.display()
        )
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
    Ok(())
}
