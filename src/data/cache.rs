//! The on-disk cache of prepared sets: one file per (inputs, settings) key.
//!
//! Format (all integers little-endian):
//! ```text
//! magic    8 bytes  "EMODATA\0"
//! version  u32      FORMAT_VERSION
//! meta_len u64      length of the JSON metadata
//! pix_len  u64      length of the pixel block
//! meta     JSON     task, classes, image size, per-sample labels and info, report
//! pixels   u8       train images then eval images, each size*size, row-major
//! sha256   32 bytes of everything above
//! ```
//! Files are written to a temporary name, fsynced, then renamed, so a crash
//! leaves either the old state or a complete file, never a torn one that
//! looks valid; the checksum catches what the file system does not.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::error::{DataError, Result};

pub const MAGIC: &[u8; 8] = b"EMODATA\0";
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 8 + 8;

/// The cache file for a key.
pub fn cache_path(cache_dir: &Path, task_name: &str, key: &str) -> PathBuf {
    cache_dir.join(format!("prep-{task_name}-{key}.emods"))
}

/// Serializes metadata and pixels into the format above.
pub fn encode(meta: &[u8], pixels: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + meta.len() + pixels.len() + 32);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(meta.len() as u64).to_le_bytes());
    out.extend_from_slice(&(pixels.len() as u64).to_le_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(pixels);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Checks magic, version, lengths and checksum; returns (meta, pixels).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
    let corrupt = |reason: &str| DataError::CorruptCache { path: path.to_path_buf(), reason: reason.to_string() };
    if bytes.len() < HEADER_LEN + 32 || &bytes[..8] != MAGIC {
        return Err(corrupt("not an emotionet data cache file (bad magic or too short)"));
    }
    let word = |at: usize| -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != FORMAT_VERSION {
        return Err(corrupt(&format!("format version {version}, this build reads {FORMAT_VERSION}")));
    }
    let meta_len = usize::try_from(word(12)).map_err(|_| corrupt("metadata length overflows"))?;
    let pix_len = usize::try_from(word(20)).map_err(|_| corrupt("pixel length overflows"))?;
    let body_end = HEADER_LEN.checked_add(meta_len).and_then(|v| v.checked_add(pix_len)).ok_or_else(|| corrupt("lengths overflow"))?;
    if bytes.len() != body_end + 32 {
        return Err(corrupt(&format!("length {} does not match its header ({} expected)", bytes.len(), body_end + 32)));
    }
    let digest = Sha256::digest(&bytes[..body_end]);
    if digest.as_slice() != &bytes[body_end..] {
        return Err(corrupt("checksum mismatch"));
    }
    Ok((bytes[HEADER_LEN..HEADER_LEN + meta_len].to_vec(), bytes[HEADER_LEN + meta_len..body_end].to_vec()))
}

/// Writes `bytes` to `path` atomically (the crate's one recipe:
/// [`crate::fsutil::write_atomic`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    Ok(crate::fsutil::write_atomic(path, bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_detects_every_kind_of_damage() {
        let p = Path::new("x.emods");
        let bytes = encode(b"{\"a\":1}", &[1, 2, 3, 4]);
        let (meta, pix) = decode(p, &bytes).unwrap();
        assert_eq!((meta.as_slice(), pix.as_slice()), (&b"{\"a\":1}"[..], &[1u8, 2, 3, 4][..]));
        let mut flipped = bytes.clone();
        flipped[HEADER_LEN + 8] ^= 1;
        assert!(decode(p, &flipped).unwrap_err().to_string().contains("checksum"));
        assert!(decode(p, &bytes[..bytes.len() - 5]).unwrap_err().to_string().contains("length"));
        assert!(decode(p, b"nonsense file contents that are long enough to pass the size check").unwrap_err().to_string().contains("magic"));
    }
}
