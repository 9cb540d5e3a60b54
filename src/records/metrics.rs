//! The training curve: `metrics.jsonl`, one JSON object per logged point.
//!
//! The file is appended to while a run trains, so a crash can leave a last
//! line cut short. Readers drop such a tail (and say so); writers cut it off
//! before appending again, and on resume drop points logged after the
//! checkpoint the run restarts from, so the curve never holds a step twice.

use std::fs::{self, File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::RecordError;
use crate::fsutil;

/// Which data a metric was measured on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Eval,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
        }
    }
}

impl std::fmt::Display for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One logged point of the training curve.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricPoint {
    /// Optimizer steps completed when the metric was taken (1 after the first step).
    pub step: u64,
    /// The epoch this step falls in, counting from 1: `ceil(step / steps_per_epoch)`.
    pub epoch: u64,
    /// Seconds since the run started (its `started_at`).
    pub wall_s: f64,
    pub split: Split,
    /// Mean softmax cross-entropy over the logged window (train) or eval set.
    /// A diverged (NaN or infinite) loss is stored as `null` and read back as NaN.
    #[serde(deserialize_with = "super::null_as_nan")]
    pub loss: f64,
    /// Fraction of examples classified correctly, in [0, 1].
    #[serde(deserialize_with = "super::null_as_nan")]
    pub accuracy: f64,
}

/// What [`read_metrics`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricsFile {
    pub points: Vec<MetricPoint>,
    /// A last line without its newline that did not parse: a write cut short
    /// by a crash. It was dropped.
    pub truncated_tail: bool,
}

/// Reads a `metrics.jsonl` file. Blank lines are skipped; a malformed line is
/// an error naming the file and line, except an unterminated last line,
/// which is dropped and reported in [`MetricsFile::truncated_tail`].
pub fn read_metrics(path: &Path) -> Result<MetricsFile, RecordError> {
    let text = fs::read_to_string(path).map_err(|source| RecordError::Read { path: path.to_path_buf(), source })?;
    parse_metrics(path, &text)
}

fn parse_metrics(path: &Path, text: &str) -> Result<MetricsFile, RecordError> {
    let mut out = MetricsFile::default();
    let ends_clean = text.is_empty() || text.ends_with('\n');
    let lines: Vec<&str> = text.split_terminator('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<MetricPoint>(line) {
            Ok(point) => out.points.push(point),
            Err(_) if i + 1 == lines.len() && !ends_clean => out.truncated_tail = true,
            Err(source) => return Err(RecordError::MetricsLine { path: path.to_path_buf(), line: i + 1, source }),
        }
    }
    Ok(out)
}

/// Appends points to a run's `metrics.jsonl`, one `write` per line.
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens (creating if needed) the log for appending, first cutting off an
    /// unterminated last line left by a crash.
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let io = |source| RecordError::Write { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path).map_err(io)?;
        let text = fs::read(path).map_err(io)?;
        let keep = match text.iter().rposition(|&b| b == b'\n') {
            Some(last_newline) => last_newline + 1,
            None => 0,
        };
        if keep != text.len() {
            tracing::warn!("{}: dropping an unterminated last line ({} bytes) left by an interrupted write", path.display(), text.len() - keep);
            file.set_len(keep as u64).map_err(io)?;
        }
        file.seek(SeekFrom::End(0)).map_err(io)?;
        Ok(MetricsLog { path: path.to_path_buf(), file })
    }

    /// Opens the log of a run resumed from a checkpoint at `step`: points
    /// after `step` were logged by the interrupted attempt and will be logged
    /// again, so they are removed (atomically) before appending.
    pub fn open_resumed(path: &Path, step: u64) -> Result<Self, RecordError> {
        if path.exists() {
            let existing = read_metrics(path)?;
            let mut text = String::new();
            for point in existing.points.iter().filter(|p| p.step <= step) {
                text.push_str(&to_line(path, point)?);
            }
            fsutil::write_atomic(path, text.as_bytes())?;
        }
        Self::open(path)
    }

    /// Appends one point as a single line and flushes it to the OS.
    pub fn append(&mut self, point: &MetricPoint) -> Result<(), RecordError> {
        let line = to_line(&self.path, point)?;
        self.file.write_all(line.as_bytes()).map_err(|source| RecordError::Write { path: self.path.clone(), source })?;
        self.file.flush().map_err(|source| RecordError::Write { path: self.path.clone(), source })
    }

    /// Forces the appended lines to disk (call at checkpoints).
    pub fn sync(&mut self) -> Result<(), RecordError> {
        self.file.sync_data().map_err(|source| RecordError::Write { path: self.path.clone(), source })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn to_line(path: &Path, point: &MetricPoint) -> Result<String, RecordError> {
    if !point.wall_s.is_finite() {
        return Err(RecordError::NonFinite { path: path.to_path_buf(), what: format!("wall_s of metric point at step {}", point.step) });
    }
    let mut line = serde_json::to_string(point).map_err(|source| RecordError::Serialize { path: path.to_path_buf(), source })?;
    line.push('\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(step: u64, split: Split) -> MetricPoint {
        MetricPoint { step, epoch: step.div_ceil(15), wall_s: step as f64 * 0.5, split, loss: 1.0 / step as f64, accuracy: 0.5 }
    }

    #[test]
    fn a_truncated_tail_is_dropped_and_flagged() {
        let p = Path::new("m.jsonl");
        let full = serde_json::to_string(&point(1, Split::Train)).unwrap();
        let text = format!("{full}\n{}", &full[..10]);
        let read = parse_metrics(p, &text).unwrap();
        assert_eq!(read.points.len(), 1);
        assert!(read.truncated_tail);
    }

    #[test]
    fn a_bad_middle_line_is_an_error_with_its_number() {
        let full = serde_json::to_string(&point(1, Split::Train)).unwrap();
        let text = format!("{full}\n{{oops\n{full}\n");
        let err = parse_metrics(Path::new("runs/a/metrics.jsonl"), &text).unwrap_err().to_string();
        assert!(err.contains("runs/a/metrics.jsonl") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn append_repairs_a_cut_line_and_resume_drops_later_points() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&path).unwrap();
        for step in [100, 200, 300] {
            log.append(&point(step, Split::Train)).unwrap();
        }
        drop(log);
        // A crash mid-write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"step\":40").unwrap();
        drop(f);
        assert!(read_metrics(&path).unwrap().truncated_tail);
        let mut log = MetricsLog::open_resumed(&path, 200).unwrap();
        log.append(&point(300, Split::Eval)).unwrap();
        let read = read_metrics(&path).unwrap();
        assert!(!read.truncated_tail);
        let steps: Vec<_> = read.points.iter().map(|p| (p.step, p.split)).collect();
        assert_eq!(steps, vec![(100, Split::Train), (200, Split::Train), (300, Split::Eval)]);
    }

    #[test]
    fn a_diverged_loss_survives_as_nan() {
        let mut p = point(3, Split::Train);
        p.loss = f64::NAN;
        let line = to_line(Path::new("m"), &p).unwrap();
        assert!(line.contains("\"loss\":null"), "{line}");
        let back = parse_metrics(Path::new("m"), &line).unwrap();
        assert!(back.points[0].loss.is_nan());
    }

    #[test]
    fn open_cuts_an_unterminated_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        fs::write(&path, "{\"step\":1").unwrap();
        let mut log = MetricsLog::open(&path).unwrap();
        log.append(&point(2, Split::Train)).unwrap();
        let read = read_metrics(&path).unwrap();
        assert_eq!(read.points, vec![point(2, Split::Train)]);
    }
}
