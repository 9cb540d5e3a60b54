//! Training-time augmentation of one grey image (see [`Augmentation`] for
//! the settings): flip, whole-pixel shift, scale and rotation about the
//! centre, Gaussian blur, contrast, brightness, gamma and Gaussian noise.
//!
//! Each image draws its random values from the pipeline's RNG in a fixed
//! order, and only for the transforms that are on: flip, shift x, shift y,
//! scale, angle, blur sigma, contrast, brightness, gamma, noise sigma, then
//! one normal value per pixel for the noise. The output is therefore a pure
//! function of the image, the settings and the RNG state, which is what
//! lets a resumed run see bit-identical batches. Nothing here is used for
//! evaluation.
//!
//! Every path ends in u8 grey levels, the type batches travel to the device
//! in (the programs normalize): flip and shift are exact in u8; the others
//! work in f32 on the [0, 1] scale and round back to the nearest grey
//! level (an error of at most 1/510, far below what any of them changes).

use super::config::Augmentation;
use crate::rng::Rng;

/// Flip and whole-pixel shift in u8 (edge pixels repeat into the uncovered
/// border): exact, no resampling. Draws flip, dx, dy.
pub fn flip_and_shift(src: &[u8], side: usize, aug: &Augmentation, rng: &mut Rng, out: &mut [u8]) {
    let (flip, dx, dy) = draw_flip_and_shift(aug, rng);
    let last = side as i64 - 1;
    for y in 0..side {
        let sy = (y as i64 - dy).clamp(0, last) as usize;
        for x in 0..side {
            let mut sx = (x as i64 - dx).clamp(0, last);
            if flip {
                sx = last - sx;
            }
            out[y * side + x] = src[sy * side + sx as usize];
        }
    }
}

fn draw_flip_and_shift(aug: &Augmentation, rng: &mut Rng) -> (bool, i64, i64) {
    let flip = aug.flip && rng.chance(0.5);
    let m = i64::from(aug.max_shift_px);
    let (dx, dy) = if m > 0 { (rng.below((2 * m + 1) as u64) as i64 - m, rng.below((2 * m + 1) as u64) as i64 - m) } else { (0, 0) };
    (flip, dx, dy)
}

/// The random values of one image's transforms.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Draw {
    flip: bool,
    dx: i64,
    dy: i64,
    scale: f32,
    angle: f32,
    blur_sigma: f32,
    contrast: f32,
    brightness: f32,
    gamma: f32,
    noise_sigma: f32,
}

impl Draw {
    fn new(aug: &Augmentation, rng: &mut Rng) -> Draw {
        let (flip, dx, dy) = draw_flip_and_shift(aug, rng);
        let symmetric = |rng: &mut Rng, on: f32| if on > 0.0 { rng.range(-on, on) } else { 0.0 };
        let scale = 1.0 + symmetric(rng, aug.scale);
        let angle = symmetric(rng, aug.rotate_deg).to_radians();
        let blur_sigma = if aug.blur_sigma > 0.0 { rng.range(0.0, aug.blur_sigma) } else { 0.0 };
        let contrast = 1.0 + symmetric(rng, aug.contrast);
        let brightness = symmetric(rng, aug.brightness);
        // Log-uniform, so darkening and lightening are equally likely.
        let gamma = if aug.gamma > 0.0 { symmetric(rng, (1.0 + aug.gamma).ln()).exp() } else { 1.0 };
        let noise_sigma = if aug.noise > 0.0 { rng.range(0.0, aug.noise) } else { 0.0 };
        Draw { flip, dx, dy, scale, angle, blur_sigma, contrast, brightness, gamma, noise_sigma }
    }
}

/// Every transform: writes the augmented image to `out` as grey levels,
/// working in f32 in `unit` (scratch of `side * side` values) and rounding
/// back to the nearest level at the end.
pub fn augment(src: &[u8], side: usize, aug: &Augmentation, rng: &mut Rng, unit: &mut [f32], out: &mut [u8]) {
    augment_unit(src, side, aug, rng, unit);
    for (o, v) in out.iter_mut().zip(unit.iter()) {
        // In [0, 255] after the clamp, so the cast neither wraps nor saturates.
        *o = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
    }
}

/// Every transform, in f32: writes the augmented image to `out` on the
/// [0, 1] scale (not yet clamped after the noise).
fn augment_unit(src: &[u8], side: usize, aug: &Augmentation, rng: &mut Rng, out: &mut [f32]) {
    let d = Draw::new(aug, rng);
    geometric(src, side, &d, out);
    if d.blur_sigma >= 0.05 {
        gaussian_blur(out, side, d.blur_sigma);
    }
    if d.contrast != 1.0 || d.brightness != 0.0 || d.gamma != 1.0 {
        let mean = out.iter().sum::<f32>() / out.len().max(1) as f32;
        for v in out.iter_mut() {
            let x = ((*v - mean) * d.contrast + mean + d.brightness).clamp(0.0, 1.0);
            *v = if d.gamma != 1.0 { x.powf(d.gamma) } else { x };
        }
    }
    if aug.noise > 0.0 {
        for v in out.iter_mut() {
            *v += d.noise_sigma * rng.normal();
        }
    }
}

/// Flip, scale and rotation about the centre, then the shift; values in
/// [0, 1]. Without scale and rotation it is the exact whole-pixel mapping
/// of [`flip_and_shift`]; otherwise bilinear, edges repeating.
fn geometric(src: &[u8], side: usize, d: &Draw, out: &mut [f32]) {
    let last = side as i64 - 1;
    let px = |x: i64, y: i64| f32::from(src[(y.clamp(0, last) as usize) * side + x.clamp(0, last) as usize]) / 255.0;
    if d.scale == 1.0 && d.angle == 0.0 {
        for y in 0..side {
            for x in 0..side {
                let mut sx = (x as i64 - d.dx).clamp(0, last);
                if d.flip {
                    sx = last - sx;
                }
                out[y * side + x] = px(sx, y as i64 - d.dy);
            }
        }
        return;
    }
    let c = (side as f32 - 1.0) / 2.0;
    let (sin, cos) = d.angle.sin_cos();
    for y in 0..side {
        for x in 0..side {
            // Output pixel -> undo the shift -> undo rotation and scale -> undo the flip.
            let u = (x as i64 - d.dx) as f32 - c;
            let v = (y as i64 - d.dy) as f32 - c;
            let mut sx = (cos * u + sin * v) / d.scale + c;
            let sy = (-sin * u + cos * v) / d.scale + c;
            if d.flip {
                sx = last as f32 - sx;
            }
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as i64, y0 as i64);
            let top = px(x0, y0) * (1.0 - fx) + px(x0 + 1, y0) * fx;
            let bottom = px(x0, y0 + 1) * (1.0 - fx) + px(x0 + 1, y0 + 1) * fx;
            out[y * side + x] = top * (1.0 - fy) + bottom * fy;
        }
    }
}

/// Separable Gaussian blur in place, edges repeating; radius 2.5 sigma.
fn gaussian_blur(img: &mut [f32], side: usize, sigma: f32) {
    let radius = ((2.5 * sigma).ceil() as usize).clamp(1, side.saturating_sub(1).max(1));
    let mut kernel: Vec<f32> = (0..=2 * radius).map(|i| (-((i as f32 - radius as f32).powi(2)) / (2.0 * sigma * sigma)).exp()).collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    let last = side as i64 - 1;
    let mut tmp = vec![0f32; img.len()];
    for y in 0..side {
        for x in 0..side {
            tmp[y * side + x] = kernel.iter().enumerate().map(|(i, k)| k * img[y * side + (x as i64 + i as i64 - radius as i64).clamp(0, last) as usize]).sum();
        }
    }
    for y in 0..side {
        for x in 0..side {
            img[y * side + x] = kernel.iter().enumerate().map(|(i, k)| k * tmp[(y as i64 + i as i64 - radius as i64).clamp(0, last) as usize * side + x]).sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flip_moves_pixels_as_documented() {
        let src: Vec<u8> = (0..9).collect();
        let mut out = vec![0u8; 9];
        let flip_only = Augmentation { flip: true, ..Augmentation::default() };
        // Find a seed whose first draw flips, then check the mirror image.
        let mut rng = (0..100).map(Rng::new).find(|r| r.clone().chance(0.5)).unwrap();
        flip_and_shift(&src, 3, &flip_only, &mut rng, &mut out);
        assert_eq!(out, vec![2, 1, 0, 5, 4, 3, 8, 7, 6]);
    }

    #[test]
    fn the_f32_path_without_resampling_equals_the_exact_one() {
        let side = 6;
        let src: Vec<u8> = (0..36).map(|i| (i * 7 % 256) as u8).collect();
        let aug = Augmentation { flip: true, max_shift_px: 2, ..Augmentation::default() };
        for seed in 0..20 {
            let mut exact = vec![0u8; 36];
            flip_and_shift(&src, side, &aug, &mut Rng::new(seed), &mut exact);
            let mut back = vec![0u8; 36];
            augment(&src, side, &aug, &mut Rng::new(seed), &mut [0f32; 36], &mut back);
            assert_eq!(back, exact, "seed {seed}");
        }
    }

    #[test]
    fn photometric_transforms_keep_values_in_range_and_change_them() {
        let side = 16;
        let src: Vec<u8> = (0..side * side).map(|i| (i % 251) as u8).collect();
        let aug =
            Augmentation { scale: 0.2, rotate_deg: 15.0, blur_sigma: 1.5, contrast: 0.5, brightness: 0.3, gamma: 0.5, noise: 0.1, ..Augmentation::default() };
        let mut unit = vec![0f32; side * side];
        let mut a = vec![0u8; side * side];
        augment(&src, side, &aug, &mut Rng::new(3), &mut unit, &mut a);
        assert!(a.iter().zip(&src).any(|(x, y)| x.abs_diff(*y) > 6));
        // The grey levels are the f32 image rounded: never more than half a level off.
        let mut f = vec![0f32; side * side];
        augment_unit(&src, side, &aug, &mut Rng::new(3), &mut f);
        assert!(a.iter().zip(&f).all(|(q, v)| (f32::from(*q) - v.clamp(0.0, 1.0) * 255.0).abs() <= 0.5));
        let mut b = vec![0u8; side * side];
        augment(&src, side, &aug, &mut Rng::new(3), &mut unit, &mut b);
        assert_eq!(a, b, "the same RNG state gives the same pixels");
    }

    #[test]
    fn a_small_rotation_of_a_flat_image_stays_flat() {
        let src = vec![128u8; 64];
        let aug = Augmentation { rotate_deg: 30.0, scale: 0.3, ..Augmentation::default() };
        let mut out = vec![0u8; 64];
        augment(&src, 8, &aug, &mut Rng::new(1), &mut [0f32; 64], &mut out);
        assert!(out.iter().all(|&v| v == 128), "edges repeat, so nothing dark comes in");
    }
}
