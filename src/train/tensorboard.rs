//! TensorBoard event files, written without TensorFlow.
//!
//! A file `events.out.tfevents.<unix-seconds>.<host>` is a sequence of
//! TFRecords, each framed as
//! `u64 length | u32 masked_crc32c(length) | data | u32 masked_crc32c(data)`
//! (all little-endian), whose data is one protobuf `tensorboard.Event`. The
//! first event carries `file_version = "brain.Event:2"`; the others carry a
//! `Summary` of scalar values. The protobuf is encoded by hand; the field
//! numbers below are those of TensorBoard's `compat/proto/event.proto` and
//! `summary.proto`:
//!
//! ```text
//! Event      { double wall_time = 1; int64 step = 2; string file_version = 3;
//!              Summary summary = 5; SessionLog session_log = 7; }
//! Summary    { repeated Value value = 1; }
//! Value      { string tag = 1; float simple_value = 2; }
//! SessionLog { SessionStatus status = 1; string msg = 3; }   // START = 1
//! ```
//!
//! This module owns the file format only; what to log and when is the
//! trainer's business. [`read_scalars`] decodes our own files back (CRCs
//! checked) for tests and tools.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::records::MetricPoint;

/// Why an event file could not be written or read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum TensorBoardError {
    #[error("cannot create TensorBoard log directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot write TensorBoard event file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot read TensorBoard event file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: corrupt record at byte {offset}: {reason}")]
    Corrupt { path: PathBuf, offset: usize, reason: String },
    #[error("step {step} does not fit TensorBoard's int64 step")]
    StepRange { step: u64 },
}

/// The version string TensorBoard expects in a file's first event.
pub const FILE_VERSION: &str = "brain.Event:2";

/// Appends events to one TensorBoard event file. Buffered; call
/// [`EventWriter::flush`] to make events visible (also done on drop).
pub struct EventWriter {
    path: PathBuf,
    out: BufWriter<File>,
}

impl EventWriter {
    /// Creates `log_dir` if needed and a new event file in it named
    /// `events.out.tfevents.<unix-seconds>.<host>` (with `.1`, `.2`... added
    /// if a file of that name exists, e.g. a resume in the same second), and
    /// writes the file-version event.
    pub fn create(log_dir: &Path) -> Result<Self, TensorBoardError> {
        fs::create_dir_all(log_dir).map_err(|source| TensorBoardError::CreateDir { path: log_dir.to_path_buf(), source })?;
        let seconds = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let host: String = crate::records::host_name().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
        let base = format!("events.out.tfevents.{seconds}.{host}");
        let mut attempt = 0u32;
        let (path, file) = loop {
            let name = if attempt == 0 { base.clone() } else { format!("{base}.{attempt}") };
            let path = log_dir.join(name);
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 1000 => attempt += 1,
                Err(source) => return Err(TensorBoardError::Write { path, source }),
            }
        };
        let mut writer = EventWriter { path, out: BufWriter::new(file) };
        let mut event = Vec::new();
        put_double(&mut event, 1, now_seconds());
        put_bytes(&mut event, 3, FILE_VERSION.as_bytes());
        writer.write_record(&event)?;
        writer.flush()?;
        Ok(writer)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One scalar at `step`, stamped with the current time.
    pub fn add_scalar(&mut self, tag: &str, step: u64, value: f32) -> Result<(), TensorBoardError> {
        self.add_scalars_at(step, now_seconds(), &[(tag, value)])
    }

    /// Several scalars in one event at `step`, stamped with the current time.
    pub fn add_scalars(&mut self, step: u64, values: &[(&str, f32)]) -> Result<(), TensorBoardError> {
        self.add_scalars_at(step, now_seconds(), values)
    }

    /// Several scalars in one event with an explicit wall time (Unix seconds).
    pub fn add_scalars_at(&mut self, step: u64, wall_time: f64, values: &[(&str, f32)]) -> Result<(), TensorBoardError> {
        let step = i64::try_from(step).map_err(|_| TensorBoardError::StepRange { step })?;
        let mut summary = Vec::new();
        for (tag, value) in values {
            let mut v = Vec::new();
            put_bytes(&mut v, 1, tag.as_bytes());
            put_fixed32(&mut v, 2, value.to_bits());
            put_bytes(&mut summary, 1, &v);
        }
        let mut event = Vec::new();
        put_double(&mut event, 1, wall_time);
        put_varint_field(&mut event, 2, step as u64);
        put_bytes(&mut event, 5, &summary);
        self.write_record(&event)
    }

    /// Logs a training-curve point as `<split>/loss` and `<split>/accuracy`
    /// (`train/loss`, `eval/accuracy`, ...) plus any `extra` scalars, all at
    /// the point's step.
    pub fn add_metric_point(&mut self, point: &MetricPoint, extra: &[(&str, f32)]) -> Result<(), TensorBoardError> {
        let loss_tag = format!("{}/loss", point.split);
        let accuracy_tag = format!("{}/accuracy", point.split);
        let mut values: Vec<(&str, f32)> = vec![(&loss_tag, point.loss as f32), (&accuracy_tag, point.accuracy as f32)];
        values.extend_from_slice(extra);
        self.add_scalars(point.step, &values)
    }

    /// Marks a restart: call after resuming from the checkpoint taken at
    /// `checkpoint_step`. Writes a `SessionLog START` event at the next step,
    /// on which TensorBoard discards every event at or after that step that
    /// the interrupted attempt had logged, so curves never double back.
    pub fn mark_restart(&mut self, checkpoint_step: u64) -> Result<(), TensorBoardError> {
        let step = checkpoint_step.saturating_add(1);
        let step_i = i64::try_from(step).map_err(|_| TensorBoardError::StepRange { step })?;
        let mut session_log = Vec::new();
        put_varint_field(&mut session_log, 1, 1); // SessionStatus START
        put_bytes(&mut session_log, 3, format!("resumed from the checkpoint at step {checkpoint_step}").as_bytes());
        let mut event = Vec::new();
        put_double(&mut event, 1, now_seconds());
        put_varint_field(&mut event, 2, step_i as u64);
        put_bytes(&mut event, 7, &session_log);
        self.write_record(&event)
    }

    /// Pushes buffered events to the file.
    pub fn flush(&mut self) -> Result<(), TensorBoardError> {
        self.out.flush().map_err(|source| TensorBoardError::Write { path: self.path.clone(), source })
    }

    fn write_record(&mut self, data: &[u8]) -> Result<(), TensorBoardError> {
        let len = (data.len() as u64).to_le_bytes();
        let mut frame = Vec::with_capacity(data.len() + 16);
        frame.extend_from_slice(&len);
        frame.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
        frame.extend_from_slice(data);
        frame.extend_from_slice(&masked_crc32c(data).to_le_bytes());
        self.out.write_all(&frame).map_err(|source| TensorBoardError::Write { path: self.path.clone(), source })
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if let Err(e) = self.flush() {
            tracing::warn!("{e}");
        }
    }
}

fn now_seconds() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

// --- protobuf wire format -------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
fn put_key(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_key(out, field, 0);
    put_varint(out, v);
}

fn put_double(out: &mut Vec<u8>, field: u32, v: f64) {
    put_key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_fixed32(out: &mut Vec<u8>, field: u32, bits: u32) {
    put_key(out, field, 5);
    out.extend_from_slice(&bits.to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

// --- CRC32C (Castagnoli), as TFRecord uses it ------------------------------

const CRC32C_TABLE: [u32; 256] = {
    // Reflected polynomial 0x1EDC6F41.
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32C of `data`.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// TFRecord's masked CRC: rotate right by 15 and add a constant, so that a
/// CRC of data that itself holds CRCs stays well distributed.
pub fn masked_crc32c(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

// --- reading our files back ------------------------------------------------

/// A scalar as stored in an event file.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalarEvent {
    pub wall_time: f64,
    pub step: i64,
    pub tag: String,
    pub value: f32,
}

/// What [`read_scalars`] found in one event file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventFileContents {
    pub file_version: Option<String>,
    pub scalars: Vec<ScalarEvent>,
    /// Steps at which a `SessionLog START` (restart) was recorded.
    pub restarts: Vec<i64>,
}

/// Reads every record of an event file, checking both CRCs of each, and
/// decodes the scalar summaries, file version and restarts. Other event
/// kinds are skipped. A truncated final record (a crash mid-write) is an
/// error, as it is for TensorBoard's own strict reader.
pub fn read_scalars(path: &Path) -> Result<EventFileContents, TensorBoardError> {
    let bytes = fs::read(path).map_err(|source| TensorBoardError::Read { path: path.to_path_buf(), source })?;
    let corrupt = |offset: usize, reason: &str| TensorBoardError::Corrupt { path: path.to_path_buf(), offset, reason: reason.to_string() };
    let mut out = EventFileContents::default();
    let mut pos = 0;
    while pos < bytes.len() {
        let header = bytes.get(pos..pos + 12).ok_or_else(|| corrupt(pos, "truncated length header"))?;
        let (len_bytes, len_crc) = header.split_at(8);
        if masked_crc32c(len_bytes) != u32::from_le_bytes([len_crc[0], len_crc[1], len_crc[2], len_crc[3]]) {
            return Err(corrupt(pos, "length CRC mismatch"));
        }
        let len =
            usize::try_from(u64::from_le_bytes(len_bytes.try_into().map_err(|_| corrupt(pos, "length"))?)).map_err(|_| corrupt(pos, "length too large"))?;
        let data_start = pos + 12;
        let data_end = data_start.checked_add(len).ok_or_else(|| corrupt(pos, "length overflows"))?;
        let data = bytes.get(data_start..data_end).ok_or_else(|| corrupt(pos, "truncated data"))?;
        let crc = bytes.get(data_end..data_end + 4).ok_or_else(|| corrupt(pos, "truncated data CRC"))?;
        if masked_crc32c(data) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
            return Err(corrupt(pos, "data CRC mismatch"));
        }
        decode_event(data, &mut out).map_err(|reason| corrupt(pos, &reason))?;
        pos = data_end + 4;
    }
    Ok(out)
}

/// One protobuf field: number and value.
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

fn fields(mut buf: &[u8]) -> impl Iterator<Item = Result<(u32, Field<'_>), String>> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let mut next = || -> Result<(u32, Field<'_>), String> {
            let key = take_varint(&mut buf)?;
            let field = u32::try_from(key >> 3).map_err(|_| "field number too large".to_string())?;
            let value = match key & 7 {
                0 => Field::Varint(take_varint(&mut buf)?),
                1 => Field::Fixed64(u64::from_le_bytes(take(&mut buf, 8)?.try_into().map_err(|_| "fixed64")?)),
                2 => {
                    let n = usize::try_from(take_varint(&mut buf)?).map_err(|_| "length too large")?;
                    Field::Bytes(take(&mut buf, n)?)
                }
                5 => Field::Fixed32(u32::from_le_bytes(take(&mut buf, 4)?.try_into().map_err(|_| "fixed32")?)),
                t => return Err(format!("unsupported wire type {t}")),
            };
            Ok((field, value))
        };
        let item = next();
        if item.is_err() {
            buf = &[];
        }
        Some(item)
    })
}

fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if buf.len() < n {
        return Err("truncated protobuf field".into());
    }
    let (head, tail) = buf.split_at(n);
    *buf = tail;
    Ok(head)
}

fn take_varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *take(buf, 1)?.first().ok_or("empty")?;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("varint longer than 10 bytes".into())
}

fn decode_event(data: &[u8], out: &mut EventFileContents) -> Result<(), String> {
    let (mut wall_time, mut step) = (0.0, 0i64);
    let mut summary = None;
    let mut restart = false;
    for f in fields(data) {
        match f? {
            (1, Field::Fixed64(bits)) => wall_time = f64::from_bits(bits),
            (2, Field::Varint(v)) => step = v as i64,
            (3, Field::Bytes(b)) => out.file_version = Some(String::from_utf8_lossy(b).into_owned()),
            (5, Field::Bytes(b)) => summary = Some(b),
            (7, Field::Bytes(b)) => {
                for g in fields(b) {
                    if let (1, Field::Varint(1)) = g? {
                        restart = true;
                    }
                }
            }
            _ => {}
        }
    }
    if restart {
        out.restarts.push(step);
    }
    if let Some(summary) = summary {
        for value in fields(summary) {
            let (1, Field::Bytes(value)) = value? else { continue };
            let (mut tag, mut simple) = (None, None);
            for g in fields(value) {
                match g? {
                    (1, Field::Bytes(b)) => tag = Some(String::from_utf8_lossy(b).into_owned()),
                    (2, Field::Fixed32(bits)) => simple = Some(f32::from_bits(bits)),
                    _ => {}
                }
            }
            if let (Some(tag), Some(value)) = (tag, simple) {
                out.scalars.push(ScalarEvent { wall_time, step, tag, value });
            }
        }
    }
    Ok(())
}

/// Event files in `log_dir`, oldest name first (TensorBoard's reading order).
pub fn event_files(log_dir: &Path) -> Result<Vec<PathBuf>, TensorBoardError> {
    let entries = fs::read_dir(log_dir).map_err(|source| TensorBoardError::Read { path: log_dir.to_path_buf(), source })?;
    let mut files: Vec<PathBuf> =
        entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains("tfevents"))).collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::Split;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC-32C check value (RFC 3720 appendix B.4, "123456789").
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn the_header_event_matches_tensorflow_bytes() {
        // First 12 bytes of an event file written by TensorBoard's own
        // EventFileWriter for a 72-byte first record.
        let len = 72u64.to_le_bytes();
        assert_eq!(masked_crc32c(&len).to_le_bytes(), [0xfe, 0x92, 0x48, 0x9d]);
    }

    #[test]
    fn scalars_round_trip_through_our_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let mut w = EventWriter::create(dir.path()).unwrap();
            w.add_scalars_at(100, 1.5e9, &[("train/loss", 0.5), ("lr", 1e-3)]).unwrap();
            let point = MetricPoint { step: 200, epoch: 14, wall_s: 3.0, split: Split::Eval, loss: 0.25, accuracy: 0.875 };
            w.add_metric_point(&point, &[]).unwrap();
            w.mark_restart(150).unwrap();
            w.path().to_path_buf()
            // dropped here: flushed
        };
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        let got = read_scalars(&path).unwrap();
        assert_eq!(got.file_version.as_deref(), Some(FILE_VERSION));
        let summary: Vec<_> = got.scalars.iter().map(|s| (s.step, s.tag.as_str(), s.value)).collect();
        assert_eq!(summary, vec![(100, "train/loss", 0.5), (100, "lr", 1e-3), (200, "eval/loss", 0.25), (200, "eval/accuracy", 0.875)]);
        assert_eq!(got.scalars[0].wall_time, 1.5e9);
        assert_eq!(got.restarts, vec![151]);
    }

    #[test]
    fn a_flipped_bit_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = {
            let mut w = EventWriter::create(dir.path()).unwrap();
            w.add_scalar("train/loss", 1, 0.5).unwrap();
            w.path().to_path_buf()
        };
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let err = read_scalars(&path).unwrap_err().to_string();
        assert!(err.contains("CRC"), "{err}");
    }

    #[test]
    fn two_writers_in_one_second_get_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = EventWriter::create(dir.path()).unwrap();
        let b = EventWriter::create(dir.path()).unwrap();
        assert_ne!(a.path(), b.path());
        drop((a, b));
        assert_eq!(event_files(dir.path()).unwrap().len(), 2);
    }
}
