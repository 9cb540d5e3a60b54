//! Turning one input (an image file or an `.npy` slice) into `size x size`
//! grey u8 pixels: decode with memory caps, convert to grey, crop/pad/stretch.
//! Failures come back as a human reason string, because a bad file is a
//! skip to report, not an error that stops the run.

use std::io::Cursor;
use std::path::Path;

use image::imageops::FilterType;
use image::{GrayImage, ImageFormat, ImageReader};

use super::config::{DecodeLimits, ResizeMode};

/// What every decode of one prep shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeSettings {
    pub size: u32,
    pub resize: ResizeMode,
    pub limits: DecodeLimits,
}

/// Reads, decodes and fits one image file. `Err` is the reason to report.
pub fn decode_file(path: &Path, settings: &DecodeSettings) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read file: {e}"))?;
    let grey = decode_bytes(&bytes, &settings.limits)?;
    Ok(fit(&grey, settings.size, settings.resize))
}

/// Decodes JPEG or PNG bytes (grey, RGB, RGBA, CMYK, 8 or 16 bit) to grey.
pub fn decode_bytes(bytes: &[u8], limits: &DecodeLimits) -> Result<GrayImage, String> {
    if bytes.is_empty() {
        return Err("empty file (0 bytes)".into());
    }
    let mut reader = ImageReader::new(Cursor::new(bytes)).with_guessed_format().map_err(|e| format!("cannot read file: {e}"))?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Jpeg | ImageFormat::Png)) => f,
        Some(other) => return Err(format!("{other:?} images are not supported (only JPEG and PNG)")),
        None => return Err("not an image: the content is neither JPEG nor PNG".into()),
    };
    if format == ImageFormat::Jpeg && !jpeg_has_end_marker(bytes) {
        // zune-jpeg fills a truncated scan with grey instead of failing; a
        // half-grey face would silently poison training, so we refuse it.
        return Err("truncated JPEG: no end-of-image marker after the last scan".into());
    }
    let mut caps = image::Limits::default();
    caps.max_image_width = Some(limits.max_side);
    caps.max_image_height = Some(limits.max_side);
    caps.max_alloc = Some(limits.max_alloc_mib.saturating_mul(1 << 20));
    reader.limits(caps);
    let image = reader.decode().map_err(|e| match e {
        image::ImageError::Limits(l) => {
            format!("refused to decode: over the decode limits ({} px per side, {} MiB): {l}", limits.max_side, limits.max_alloc_mib)
        }
        other => format!("corrupt or truncated {format:?}: {other}"),
    })?;
    if image.width() == 0 || image.height() == 0 {
        return Err("image has no pixels".into());
    }
    Ok(image.to_luma8())
}

/// True when an end-of-image marker (FF D9) follows the last start-of-scan
/// (FF DA). Inside entropy-coded data every FF is followed by 00 or a restart
/// marker, so neither marker can appear there by accident; an embedded EXIF
/// thumbnail's own markers come before the main image's scans.
fn jpeg_has_end_marker(bytes: &[u8]) -> bool {
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let last_eoi = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    match (last_sos, last_eoi) {
        (Some(sos), Some(eoi)) => eoi > sos,
        (None, _) => true, // no scan at all: let the decoder report it
        (Some(_), None) => false,
    }
}

/// Grey pixels (row-major, `width * height`) to a `size x size` square.
pub fn fit_pixels(pixels: &[u8], width: u32, height: u32, size: u32, mode: ResizeMode) -> Result<Vec<u8>, String> {
    let grey = GrayImage::from_raw(width, height, pixels.to_vec()).ok_or_else(|| format!("{} bytes do not make a {width}x{height} image", pixels.len()))?;
    Ok(fit(&grey, size, mode))
}

/// Fits a grey image into `size x size` (bilinear, with the filter widened
/// when shrinking so that downscaling averages instead of aliasing).
pub fn fit(grey: &GrayImage, size: u32, mode: ResizeMode) -> Vec<u8> {
    let (w, h) = grey.dimensions();
    if w == size && h == size {
        return grey.as_raw().clone();
    }
    let out = match mode {
        ResizeMode::Stretch => image::imageops::resize(grey, size, size, FilterType::Triangle),
        ResizeMode::CenterCrop => {
            let side = w.min(h);
            let square = image::imageops::crop_imm(grey, (w - side) / 2, (h - side) / 2, side, side).to_image();
            if side == size { square } else { image::imageops::resize(&square, size, size, FilterType::Triangle) }
        }
        ResizeMode::Pad => {
            let scale = f64::from(size) / f64::from(w.max(h));
            let nw = ((f64::from(w) * scale).round() as u32).clamp(1, size);
            let nh = ((f64::from(h) * scale).round() as u32).clamp(1, size);
            let scaled = image::imageops::resize(grey, nw, nh, FilterType::Triangle);
            let mut canvas = GrayImage::new(size, size);
            image::imageops::replace(&mut canvas, &scaled, i64::from((size - nw) / 2), i64::from((size - nh) / 2));
            canvas
        }
    };
    out.into_raw()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(w: u32, h: u32) -> GrayImage {
        GrayImage::from_fn(w, h, |x, y| image::Luma([((x * 7 + y * 3) % 256) as u8]))
    }

    #[test]
    fn every_mode_gives_a_square_of_the_requested_size() {
        for mode in [ResizeMode::CenterCrop, ResizeMode::Pad, ResizeMode::Stretch] {
            for (w, h) in [(40, 30), (30, 40), (25, 25), (300, 200)] {
                assert_eq!(fit(&ramp(w, h), 32, mode).len(), 32 * 32, "{mode:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn pad_keeps_black_borders_and_crop_keeps_the_centre() {
        let white = GrayImage::from_pixel(40, 20, image::Luma([255]));
        let padded = fit(&white, 20, ResizeMode::Pad);
        assert_eq!(padded[0], 0, "top rows are padding");
        assert_eq!(padded[10 * 20 + 10], 255);
        let mut centre = GrayImage::new(30, 10);
        for y in 0..10 {
            for x in 10..20 {
                centre.put_pixel(x, y, image::Luma([200]));
            }
        }
        let cropped = fit(&centre, 10, ResizeMode::CenterCrop);
        assert!(cropped.iter().all(|&p| p == 200));
    }

    #[test]
    fn rejects_empty_and_non_image_bytes() {
        let limits = DecodeLimits::default();
        assert!(decode_bytes(&[], &limits).unwrap_err().contains("0 bytes"));
        assert!(decode_bytes(b"hello, I am text", &limits).unwrap_err().contains("neither JPEG nor PNG"));
    }
}
