//! `.npy` arrays of images (NumPy format 1.0-3.0, C order): float64,
//! float32 (values in [0, 1], clamped) or uint8, shaped (N, H, W),
//! (N, H, W, 1) or (N, H, W, 3). scikit-image's `lfw_subset.npy` is the real
//! case: float64 (200, 25, 25), the first 100 faces, the last 100 not.

use std::io::Read;
use std::path::Path;

use crate::data::config::NpySource;
use crate::data::error::{DataError, Result};
use crate::data::sample::{Catalog, DatasetTag, FileStamp, Sample, SampleSource};

/// Element types we import.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NpyDtype {
    F64 { big_endian: bool },
    F32 { big_endian: bool },
    U8,
}

impl NpyDtype {
    fn size(self) -> usize {
        match self {
            NpyDtype::F64 { .. } => 8,
            NpyDtype::F32 { .. } => 4,
            NpyDtype::U8 => 1,
        }
    }
}

/// An `.npy` header: element type, shape, and where the data starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyHeader {
    pub dtype: NpyDtype,
    pub shape: Vec<usize>,
    pub data_offset: usize,
}

impl NpyHeader {
    /// (count, height, width, channels).
    pub fn images(&self) -> (usize, usize, usize, usize) {
        let channels = self.shape.get(3).copied().unwrap_or(1);
        (self.shape[0], self.shape[1], self.shape[2], channels)
    }
}

/// Grey u8 images decoded from an `.npy` file, row-major, `count * height * width` bytes.
#[derive(Clone, Debug)]
pub struct NpyArray {
    pub count: usize,
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<u8>,
}

impl NpyArray {
    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.height * self.width;
        &self.pixels[index * n..(index + 1) * n]
    }
}

fn bad(path: &Path, reason: impl Into<String>) -> DataError {
    DataError::BadNpy { path: path.to_path_buf(), reason: reason.into() }
}

/// Parses the header only (cheap: the first few hundred bytes).
pub fn read_npy_header(path: &Path) -> Result<NpyHeader> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut prefix = [0u8; 12];
    let got = read_up_to(&mut file, &mut prefix).map_err(|e| DataError::io(path, e))?;
    if got < 10 || &prefix[..6] != b"\x93NUMPY" {
        return Err(bad(path, "missing the \\x93NUMPY magic"));
    }
    let major = prefix[6];
    let (header_len, start) = match major {
        1 => (usize::from(u16::from_le_bytes([prefix[8], prefix[9]])), 10),
        2 | 3 if got >= 12 => (u32::from_le_bytes([prefix[8], prefix[9], prefix[10], prefix[11]]) as usize, 12),
        _ => return Err(bad(path, format!("unsupported format version {major}"))),
    };
    if header_len > 1 << 20 {
        return Err(bad(path, format!("header of {header_len} bytes is implausibly large")));
    }
    let mut header = vec![0u8; start + header_len];
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    file.read_exact(&mut header).map_err(|_| bad(path, "truncated header"))?;
    let text = String::from_utf8_lossy(&header[start..]).into_owned();
    parse_header_dict(&text, start + header_len).map_err(|reason| bad(path, reason))
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        let n = file.read(&mut buf[total..])?;
        if n == 0 {
            break;
        }
        total += n;
    }
    Ok(total)
}

/// Parses `{'descr': '<f8', 'fortran_order': False, 'shape': (200, 25, 25), }`.
fn parse_header_dict(text: &str, data_offset: usize) -> Result<NpyHeader, String> {
    let value_after = |key: &str| -> Result<&str, String> {
        let at = text.find(&format!("'{key}'")).ok_or_else(|| format!("header has no '{key}'"))?;
        let rest = &text[at + key.len() + 2..];
        let colon = rest.find(':').ok_or_else(|| format!("header '{key}' has no value"))?;
        Ok(rest[colon + 1..].trim_start())
    };
    let descr_text = value_after("descr")?;
    let descr = descr_text.strip_prefix('\'').and_then(|r| r.split('\'').next()).ok_or("header 'descr' is not a string")?;
    let dtype = match descr {
        "<f8" | "=f8" => NpyDtype::F64 { big_endian: false },
        ">f8" => NpyDtype::F64 { big_endian: true },
        "<f4" | "=f4" => NpyDtype::F32 { big_endian: false },
        ">f4" => NpyDtype::F32 { big_endian: true },
        "|u1" | "<u1" | ">u1" | "u1" | "=u1" => NpyDtype::U8,
        other => return Err(format!("element type `{other}` is not supported (allowed: float64, float32, uint8)")),
    };
    let fortran = value_after("fortran_order")?;
    if fortran.starts_with("True") {
        return Err("Fortran-order arrays are not supported; save with np.ascontiguousarray".into());
    }
    let shape_text = value_after("shape")?;
    let inner = shape_text.strip_prefix('(').and_then(|r| r.split(')').next()).ok_or("header 'shape' is not a tuple")?;
    let shape: Vec<usize> = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>().map_err(|_| format!("shape entry `{s}` is not an integer")))
        .collect::<Result<_, _>>()?;
    let ok = match shape.len() {
        3 => true,
        4 => matches!(shape[3], 1 | 3),
        _ => false,
    };
    if !ok {
        return Err(format!("shape {shape:?} is not (N, H, W), (N, H, W, 1) or (N, H, W, 3)"));
    }
    if shape[1] == 0 || shape[2] == 0 {
        return Err(format!("shape {shape:?} has empty images"));
    }
    Ok(NpyHeader { dtype, shape, data_offset })
}

/// Reads a whole `.npy` file into grey u8 images. Floats are taken to be in
/// [0, 1] (scikit-image's convention): scaled by 255, rounded and clamped;
/// NaN becomes 0. RGB becomes grey with the Rec. 709 weights the `image`
/// crate uses, so both import paths agree.
pub fn read_npy(path: &Path) -> Result<NpyArray> {
    let header = read_npy_header(path)?;
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let (count, height, width, channels) = header.images();
    let elements =
        count.checked_mul(height).and_then(|v| v.checked_mul(width)).and_then(|v| v.checked_mul(channels)).ok_or_else(|| bad(path, "shape overflows"))?;
    let need = elements.checked_mul(header.dtype.size()).ok_or_else(|| bad(path, "shape overflows"))?;
    let data = bytes.get(header.data_offset..).unwrap_or(&[]);
    if data.len() < need {
        return Err(bad(path, format!("truncated: shape {:?} needs {need} data bytes, file has {}", header.shape, data.len())));
    }
    let to_unit = |i: usize| -> f64 {
        match header.dtype {
            NpyDtype::U8 => f64::from(data[i]) / 255.0,
            NpyDtype::F64 { big_endian } => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&data[i * 8..i * 8 + 8]);
                if big_endian { f64::from_be_bytes(b) } else { f64::from_le_bytes(b) }
            }
            NpyDtype::F32 { big_endian } => {
                let mut b = [0u8; 4];
                b.copy_from_slice(&data[i * 4..i * 4 + 4]);
                f64::from(if big_endian { f32::from_be_bytes(b) } else { f32::from_le_bytes(b) })
            }
        }
    };
    let quantize = |v: f64| -> u8 { if v.is_nan() { 0 } else { (v * 255.0).round().clamp(0.0, 255.0) as u8 } };
    let pixels_per_image = height * width;
    let mut pixels = Vec::with_capacity(count * pixels_per_image);
    for p in 0..count * pixels_per_image {
        let v = if channels == 3 { 0.2126 * to_unit(p * 3) + 0.7152 * to_unit(p * 3 + 1) + 0.0722 * to_unit(p * 3 + 2) } else { to_unit(p * channels) };
        pixels.push(quantize(v));
    }
    Ok(NpyArray { count, height, width, pixels })
}

/// Lists the images of an `.npy` source as samples (reads the header only).
/// Each image is its own identity (`<file stem>#<index>`): the array carries
/// no person labels.
pub fn load_npy(source: &NpySource) -> Result<Catalog> {
    let path = &source.path;
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => DataError::MissingFile {
            what: ".npy array",
            path: path.clone(),
            // The one array experiments ship with comes from `make setup`.
            hint: if path.ends_with("lfw_subset.npy") {
                " (scikit-image's LFW subset: `make setup` installs it as .deps/data/lfw_subset.npy; run from the project folder)".into()
            } else {
                String::new()
            },
        },
        _ => DataError::io(path, e),
    })?;
    let header = read_npy_header(path)?;
    let count = header.shape[0];
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let stamp = FileStamp::of(&meta);
    let mut catalog = Catalog::default();
    let mut add = |range: [usize; 2], face: bool, key: &str| -> Result<()> {
        if range[0] >= range[1] || range[1] > count {
            return Err(DataError::config(
                format!("npy.{key}"),
                format!("[{}, {}]", range[0], range[1]),
                format!("a half-open index range [start, end) with start < end <= {count} (the array's length) in {}", path.display()),
            ));
        }
        for index in range[0]..range[1] {
            catalog.samples.push(Sample {
                source: SampleSource::Npy { path: path.clone(), index },
                face,
                expression: if face { source.expression } else { None },
                identity: format!("{stem}#{index}"),
                dataset: DatasetTag::Npy,
                kdef: None,
                stamp,
                origin: 0,
            });
        }
        Ok(())
    };
    if let Some(r) = source.faces {
        add(r, true, "faces")?;
    }
    if let Some(r) = source.non_faces {
        add(r, false, "non_faces")?;
    }
    if catalog.samples.is_empty() {
        return Err(DataError::config("npy", path.display(), "give `faces` and/or `non_faces` index ranges, e.g. faces: [0, 100], non_faces: [100, 200]"));
    }
    Ok(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numpy_header_dicts() {
        let h = parse_header_dict("{'descr': '<f8', 'fortran_order': False, 'shape': (200, 25, 25), }   \n", 128).unwrap();
        assert_eq!(h.dtype, NpyDtype::F64 { big_endian: false });
        assert_eq!(h.shape, vec![200, 25, 25]);
        assert!(parse_header_dict("{'descr': '<i8', 'fortran_order': False, 'shape': (2, 3, 3), }", 0).unwrap_err().contains("not supported"));
        assert!(parse_header_dict("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3, 3), }", 0).unwrap_err().contains("Fortran"));
        assert!(parse_header_dict("{'descr': '|u1', 'fortran_order': False, 'shape': (5,), }", 0).unwrap_err().contains("shape"));
        assert_eq!(parse_header_dict("{'descr': '|u1', 'fortran_order': False, 'shape': (5, 4, 4, 3), }", 0).unwrap().images(), (5, 4, 4, 3));
    }
}
