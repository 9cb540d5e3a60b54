//! Drawing synthetic non-faces (and the backgrounds behind faces): textures,
//! gradients, random shapes, scene-like clutter, and confusers (round objects
//! with two dark spots, the kind the paper says slipped through its filter).

use super::raster::{Canvas, Frame, ValueNoise};
use crate::rng::Rng;

/// The kinds of scene the generator draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SceneKind {
    Texture,
    Gradient,
    Shapes,
    Clutter,
    Confuser,
}

/// Fills the whole canvas with a scene of `kind`. `difficulty` in [0, 1]
/// makes confusers more face-like.
pub fn draw_scene(canvas: &mut Canvas, kind: SceneKind, rng: &mut Rng, difficulty: f32) {
    match kind {
        SceneKind::Texture => texture(canvas, rng),
        SceneKind::Gradient => gradient(canvas, rng),
        SceneKind::Shapes => {
            gradient(canvas, rng);
            let count = 4 + rng.index(14);
            shapes(canvas, rng, count);
        }
        SceneKind::Clutter => clutter(canvas, rng),
        SceneKind::Confuser => {
            match rng.index(3) {
                0 => texture(canvas, rng),
                1 => clutter(canvas, rng),
                _ => gradient(canvas, rng),
            }
            for _ in 0..1 + rng.index(2) {
                confuser(canvas, rng, difficulty);
            }
        }
    }
}

fn pixel_frame(canvas: &Canvas) -> Frame {
    Frame::new(0.0, 0.0, canvas.width.max(canvas.height) as f32, 0.0)
}

fn texture(canvas: &mut Canvas, rng: &mut Rng) {
    let (w, h) = (canvas.width, canvas.height);
    match rng.index(3) {
        0 => {
            // Foliage, rock, water: fractal value noise.
            let noise = ValueNoise::new(rng);
            let freq = rng.range(3.0, 14.0) / w.max(h) as f32;
            let (lo, hi) = (rng.range(0.0, 0.4), rng.range(0.5, 1.0));
            let octaves = 3 + rng.index(3);
            let (ox, oy) = (rng.range(0.0, 64.0), rng.range(0.0, 64.0));
            for y in 0..h {
                for x in 0..w {
                    let n = noise.fbm(ox + x as f32 * freq, oy + y as f32 * freq, octaves);
                    canvas.data[y * w + x] = lo + (hi - lo) * n;
                }
            }
        }
        1 => {
            // Stripes: fields, fences, shelves.
            let angle = rng.range(0.0, std::f32::consts::PI);
            let period = rng.range(4.0, 30.0);
            let (s, c) = angle.sin_cos();
            let (a, b) = (rng.range(0.1, 0.5), rng.range(0.5, 0.95));
            for y in 0..h {
                for x in 0..w {
                    let t = ((c * x as f32 + s * y as f32) / period * std::f32::consts::TAU).sin() * 0.5 + 0.5;
                    canvas.data[y * w + x] = a + (b - a) * t;
                }
            }
        }
        _ => {
            // Tiles and bricks.
            let (cw, ch) = (rng.range(6.0, 30.0), rng.range(6.0, 30.0));
            let (a, b) = (rng.range(0.1, 0.5), rng.range(0.5, 0.95));
            let stagger = rng.chance(0.5);
            for y in 0..h {
                let row = (y as f32 / ch) as i64;
                let off = if stagger && row % 2 == 1 { cw / 2.0 } else { 0.0 };
                for x in 0..w {
                    let col = ((x as f32 + off) / cw) as i64;
                    let mortar = ((x as f32 + off) % cw) < 1.5 || (y as f32 % ch) < 1.5;
                    canvas.data[y * w + x] = if mortar {
                        a * 0.6
                    } else if (row + col) % 2 == 0 {
                        a
                    } else {
                        b
                    };
                }
            }
        }
    }
}

fn gradient(canvas: &mut Canvas, rng: &mut Rng) {
    // Sky above a horizon, ground below, a rolling skyline between.
    let (w, h) = (canvas.width, canvas.height);
    let horizon = rng.range(0.3, 0.75) * h as f32;
    let (sky_top, sky_low) = (rng.range(0.5, 1.0), rng.range(0.4, 0.95));
    let (ground_a, ground_b) = (rng.range(0.1, 0.6), rng.range(0.1, 0.6));
    let (amp, freq, phase) = (rng.range(0.0, 0.12) * h as f32, rng.range(1.0, 6.0) / w as f32, rng.range(0.0, 6.3));
    for y in 0..h {
        for x in 0..w {
            let edge = horizon + amp * (x as f32 * freq * std::f32::consts::TAU + phase).sin();
            let yf = y as f32;
            canvas.data[y * w + x] = if yf < edge {
                sky_top + (sky_low - sky_top) * yf / edge.max(1.0)
            } else {
                ground_a + (ground_b - ground_a) * (yf - edge) / (h as f32 - edge).max(1.0)
            };
        }
    }
}

fn shapes(canvas: &mut Canvas, rng: &mut Rng, count: usize) {
    let frame = pixel_frame(canvas);
    let (w, h) = (canvas.width as f32 / frame.scale, canvas.height as f32 / frame.scale);
    for _ in 0..count {
        let c = (rng.range(0.0, w), rng.range(0.0, h));
        let size = rng.range(0.03, 0.25);
        let value = rng.unit();
        match rng.index(4) {
            0 => canvas.rect(&frame, c, (size, size * rng.range(0.3, 1.5)), rng.range(0.0, 3.2), value, 1.0),
            1 => canvas.ellipse(&frame, c, (size, size * rng.range(0.3, 1.0)), rng.range(0.0, 3.2), value, 1.0),
            2 => {
                let p = |rng: &mut Rng| (c.0 + rng.range(-size, size), c.1 + rng.range(-size, size));
                let tri = [p(rng), p(rng), p(rng)];
                canvas.triangle(&frame, tri, value, 1.0);
            }
            _ => {
                let end = (c.0 + rng.range(-0.4, 0.4), c.1 + rng.range(-0.4, 0.4));
                canvas.stroke(&frame, &[c, end], rng.range(0.003, 0.015), value, 1.0);
            }
        }
    }
}

fn clutter(canvas: &mut Canvas, rng: &mut Rng) {
    gradient(canvas, rng);
    let frame = pixel_frame(canvas);
    let (w, h) = (canvas.width as f32 / frame.scale, canvas.height as f32 / frame.scale);
    let ground = rng.range(0.55, 0.85) * h;
    // Buildings with window grids.
    let mut x = rng.range(-0.1, 0.1);
    while x < w {
        let bw = rng.range(0.1, 0.3);
        let bh = rng.range(0.15, 0.6);
        let value = rng.range(0.15, 0.75);
        canvas.rect(&frame, (x + bw / 2.0, ground - bh / 2.0), (bw / 2.0, bh / 2.0), 0.0, value, 1.0);
        let window = rng.range(0.015, 0.035);
        let win_value = if value > 0.45 { value - 0.3 } else { value + 0.3 };
        let mut wy = ground - bh + window * 2.0;
        while wy < ground - window * 2.0 {
            let mut wx = x + window * 1.5;
            while wx < x + bw - window * 1.5 {
                canvas.rect(&frame, (wx, wy), (window * 0.5, window * 0.7), 0.0, win_value, 1.0);
                wx += window * 2.5;
            }
            wy += window * 3.0;
        }
        x += bw + rng.range(0.0, 0.1);
    }
    // Trees: trunk and a crown of overlapping blobs.
    for _ in 0..rng.index(4) {
        let tx = rng.range(0.0, w);
        let th = rng.range(0.08, 0.2);
        canvas.stroke(&frame, &[(tx, ground), (tx, ground - th)], 0.01, rng.range(0.1, 0.3), 1.0);
        let crown = rng.range(0.15, 0.5);
        for _ in 0..3 {
            canvas.ellipse(
                &frame,
                (tx + rng.range(-0.04, 0.04), ground - th - rng.range(0.0, 0.06)),
                (rng.range(0.04, 0.09), rng.range(0.04, 0.08)),
                0.0,
                crown + rng.range(-0.05, 0.05),
                1.0,
            );
        }
    }
    // Poles, cars, signs.
    let count = rng.index(6);
    shapes(canvas, rng, count);
}

/// A round object with two dark spots (a clock, a socket, a ball with
/// stickers...), sized like a face; at higher difficulty sometimes a bar
/// below the spots makes it even more face-like.
fn confuser(canvas: &mut Canvas, rng: &mut Rng, difficulty: f32) {
    let (w, h) = (canvas.width as f32, canvas.height as f32);
    let r = rng.range(0.15, 0.38) * w.min(h);
    let frame = Frame::new(rng.range(0.25, 0.75) * w, rng.range(0.25, 0.75) * h, r, rng.range(-0.6, 0.6));
    let aspect = rng.range(0.7, 1.1);
    let value = rng.range(0.35, 0.85);
    canvas.ellipse(&frame, (0.0, 0.0), (aspect, 1.0), 0.0, value, 1.0);
    if rng.chance(0.4) {
        canvas.ring(&frame, (0.0, 0.0), (aspect, 1.0), 0.03, value * 0.5, 1.0);
    }
    let dx = rng.range(0.2, 0.4) * aspect;
    let dy = rng.range(-0.3, 0.05);
    let spot = rng.range(0.06, 0.15);
    let dark = rng.range(0.0, 0.25);
    for side in [-1.0f32, 1.0] {
        canvas.ellipse(&frame, (side * dx, dy), (spot, spot * rng.range(0.6, 1.2)), 0.0, dark, 1.0);
    }
    if rng.chance(0.5 * difficulty) {
        let y = rng.range(0.3, 0.55);
        let half = rng.range(0.1, 0.3);
        canvas.stroke(&frame, &[(-half, y), (half, y)], 0.03, dark, 1.0);
    }
}
