//! A tiny grey-level rasterizer for the synthetic set: anti-aliased shapes
//! given as signed distance functions in a local frame, plus whole-image
//! effects (lighting gradient, contrast, blur, noise). Values are in [0, 1].

use crate::rng::Rng;

/// A grey image with f32 pixels in [0, 1].
#[derive(Clone, Debug)]
pub struct Canvas {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

/// A similarity transform from a local frame (unit = `scale` pixels, rotated
/// by `angle`) to canvas pixels; faces are drawn in a frame whose unit is the
/// head's half-height.
#[derive(Clone, Copy, Debug)]
pub struct Frame {
    pub cx: f32,
    pub cy: f32,
    pub scale: f32,
    sin: f32,
    cos: f32,
}

impl Frame {
    pub fn new(cx: f32, cy: f32, scale: f32, angle: f32) -> Frame {
        let (sin, cos) = angle.sin_cos();
        Frame { cx, cy, scale, sin, cos }
    }

    pub fn to_canvas(self, u: f32, v: f32) -> (f32, f32) {
        (self.cx + self.scale * (self.cos * u - self.sin * v), self.cy + self.scale * (self.sin * u + self.cos * v))
    }

    pub fn to_local(self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = ((x - self.cx) / self.scale, (y - self.cy) / self.scale);
        (self.cos * dx + self.sin * dy, -self.sin * dx + self.cos * dy)
    }
}

impl Canvas {
    pub fn new(width: usize, height: usize, value: f32) -> Canvas {
        Canvas { width, height, data: vec![value; width * height] }
    }

    /// Paints a shape given by its signed distance (local units, negative
    /// inside) over the local box `[u0, u1] x [v0, v1]`, with colour
    /// `value(u, v)` and overall `opacity`. Edges are anti-aliased over one pixel.
    pub fn paint(&mut self, frame: &Frame, bounds: [f32; 4], opacity: f32, sdf: impl Fn(f32, f32) -> f32, value: impl Fn(f32, f32) -> f32) {
        let [u0, v0, u1, v1] = bounds;
        let corners = [frame.to_canvas(u0, v0), frame.to_canvas(u1, v0), frame.to_canvas(u0, v1), frame.to_canvas(u1, v1)];
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for (x, y) in corners {
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        let xs = (x0.floor().max(0.0) as usize, (x1.ceil() + 1.0).clamp(0.0, self.width as f32) as usize);
        let ys = (y0.floor().max(0.0) as usize, (y1.ceil() + 1.0).clamp(0.0, self.height as f32) as usize);
        let pixel = 1.0 / frame.scale;
        for y in ys.0..ys.1 {
            for x in xs.0..xs.1 {
                let (u, v) = frame.to_local(x as f32 + 0.5, y as f32 + 0.5);
                let d = sdf(u, v);
                if d > pixel {
                    continue;
                }
                let coverage = (0.5 - d / pixel).clamp(0.0, 1.0) * opacity;
                let p = &mut self.data[y * self.width + x];
                *p += (value(u, v) - *p) * coverage;
            }
        }
    }

    /// Filled ellipse centred at (u, v) with radii (a, b), rotated by `tilt`.
    pub fn ellipse(&mut self, frame: &Frame, (u, v): (f32, f32), (a, b): (f32, f32), tilt: f32, value: f32, opacity: f32) {
        let r = a.max(b) + 2.0 / frame.scale;
        let (s, c) = tilt.sin_cos();
        self.paint(frame, [u - r, v - r, u + r, v + r], opacity, |x, y| ellipse_sdf(c * (x - u) + s * (y - v), -s * (x - u) + c * (y - v), a, b), |_, _| value);
    }

    /// Ellipse outline of half-thickness `t`.
    pub fn ring(&mut self, frame: &Frame, (u, v): (f32, f32), (a, b): (f32, f32), t: f32, value: f32, opacity: f32) {
        let r = a.max(b) + t + 2.0 / frame.scale;
        self.paint(frame, [u - r, v - r, u + r, v + r], opacity, |x, y| ellipse_sdf(x - u, y - v, a, b).abs() - t, |_, _| value);
    }

    /// A polyline of half-thickness `t` with round caps.
    pub fn stroke(&mut self, frame: &Frame, points: &[(f32, f32)], t: f32, value: f32, opacity: f32) {
        if points.len() < 2 {
            return;
        }
        let pad = t + 2.0 / frame.scale;
        let u0 = points.iter().map(|p| p.0).fold(f32::MAX, f32::min) - pad;
        let u1 = points.iter().map(|p| p.0).fold(f32::MIN, f32::max) + pad;
        let v0 = points.iter().map(|p| p.1).fold(f32::MAX, f32::min) - pad;
        let v1 = points.iter().map(|p| p.1).fold(f32::MIN, f32::max) + pad;
        self.paint(frame, [u0, v0, u1, v1], opacity, |x, y| polyline_distance(points, x, y) - t, |_, _| value);
    }

    /// A filled, rotated rectangle centred at (u, v) with half-sides (a, b).
    pub fn rect(&mut self, frame: &Frame, (u, v): (f32, f32), (a, b): (f32, f32), tilt: f32, value: f32, opacity: f32) {
        let r = (a * a + b * b).sqrt() + 2.0 / frame.scale;
        let (s, c) = tilt.sin_cos();
        self.paint(
            frame,
            [u - r, v - r, u + r, v + r],
            opacity,
            |x, y| {
                let (px, py) = ((c * (x - u) + s * (y - v)).abs() - a, (-s * (x - u) + c * (y - v)).abs() - b);
                px.max(py).min(0.0) + (px.max(0.0).powi(2) + py.max(0.0).powi(2)).sqrt()
            },
            |_, _| value,
        );
    }

    /// A filled triangle.
    pub fn triangle(&mut self, frame: &Frame, p: [(f32, f32); 3], value: f32, opacity: f32) {
        let pad = 2.0 / frame.scale;
        let u0 = p.iter().map(|q| q.0).fold(f32::MAX, f32::min) - pad;
        let u1 = p.iter().map(|q| q.0).fold(f32::MIN, f32::max) + pad;
        let v0 = p.iter().map(|q| q.1).fold(f32::MAX, f32::min) - pad;
        let v1 = p.iter().map(|q| q.1).fold(f32::MIN, f32::max) + pad;
        let closed = [p[0], p[1], p[2], p[0]];
        self.paint(
            frame,
            [u0, v0, u1, v1],
            opacity,
            |x, y| {
                let d = polyline_distance(&closed, x, y);
                if inside_triangle(p, x, y) { -d } else { d }
            },
            |_, _| value,
        );
    }

    /// Multiplies by a linear lighting ramp `1 + strength * (direction . centred position)`.
    pub fn light_gradient(&mut self, angle: f32, strength: f32) {
        let (s, c) = angle.sin_cos();
        let (w, h) = (self.width as f32, self.height as f32);
        for y in 0..self.height {
            for x in 0..self.width {
                let t = c * (x as f32 / w - 0.5) + s * (y as f32 / h - 0.5);
                self.data[y * self.width + x] *= 1.0 + strength * 2.0 * t;
            }
        }
    }

    /// `mean + contrast * (p - mean) + offset` around the image mean.
    pub fn contrast(&mut self, contrast: f32, offset: f32) {
        let mean = self.data.iter().sum::<f32>() / self.data.len().max(1) as f32;
        for p in &mut self.data {
            *p = mean + contrast * (*p - mean) + offset;
        }
    }

    /// Approximately Gaussian blur: three separable box passes of radius `r`.
    pub fn blur(&mut self, r: usize) {
        if r == 0 {
            return;
        }
        for _ in 0..3 {
            box_pass(&mut self.data, self.width, self.height, r, true);
            box_pass(&mut self.data, self.width, self.height, r, false);
        }
    }

    /// Adds Gaussian noise of standard deviation `std` (Box-Muller, both
    /// values of each pair used).
    pub fn noise(&mut self, rng: &mut Rng, std: f32) {
        for pair in self.data.chunks_mut(2) {
            let u1 = rng.next_f64().max(1e-300);
            let u2 = rng.next_f64();
            let r = (-2.0 * u1.ln()).sqrt() as f32 * std;
            let (s, c) = ((std::f64::consts::TAU * u2) as f32).sin_cos();
            pair[0] += r * c;
            if let Some(p) = pair.get_mut(1) {
                *p += r * s;
            }
        }
    }

    /// Clamped 8-bit pixels.
    pub fn to_u8(&self) -> Vec<u8> {
        self.data.iter().map(|p| (p.clamp(0.0, 1.0) * 255.0).round() as u8).collect()
    }
}

fn box_pass(data: &mut [f32], w: usize, h: usize, r: usize, horizontal: bool) {
    let (lines, len) = if horizontal { (h, w) } else { (w, h) };
    let mut line = vec![0f32; len];
    let norm = 1.0 / (2 * r + 1) as f32;
    for l in 0..lines {
        let idx = |i: usize| if horizontal { l * w + i } else { i * w + l };
        for (i, v) in line.iter_mut().enumerate() {
            *v = data[idx(i)];
        }
        let at = |i: isize| line[i.clamp(0, len as isize - 1) as usize];
        let mut sum: f32 = (-(r as isize)..=r as isize).map(at).sum();
        for i in 0..len {
            data[idx(i)] = sum * norm;
            sum += at(i as isize + r as isize + 1) - at(i as isize - r as isize);
        }
    }
}

/// Approximate signed distance to an axis-aligned ellipse (exact on circles).
pub fn ellipse_sdf(x: f32, y: f32, a: f32, b: f32) -> f32 {
    let k = ((x / a).powi(2) + (y / b).powi(2)).sqrt();
    (k - 1.0) * a.min(b)
}

fn polyline_distance(points: &[(f32, f32)], x: f32, y: f32) -> f32 {
    let mut best = f32::MAX;
    for w in points.windows(2) {
        let ((ax, ay), (bx, by)) = (w[0], w[1]);
        let (dx, dy) = (bx - ax, by - ay);
        let len2 = dx * dx + dy * dy;
        let t = if len2 > 0.0 { (((x - ax) * dx + (y - ay) * dy) / len2).clamp(0.0, 1.0) } else { 0.0 };
        let (px, py) = (ax + t * dx - x, ay + t * dy - y);
        best = best.min((px * px + py * py).sqrt());
    }
    best
}

fn inside_triangle(p: [(f32, f32); 3], x: f32, y: f32) -> bool {
    let sign = |a: (f32, f32), b: (f32, f32)| (x - b.0) * (a.1 - b.1) - (a.0 - b.0) * (y - b.1);
    let (d1, d2, d3) = (sign(p[0], p[1]), sign(p[1], p[2]), sign(p[2], p[0]));
    let neg = d1 < 0.0 || d2 < 0.0 || d3 < 0.0;
    let pos = d1 > 0.0 || d2 > 0.0 || d3 > 0.0;
    !(neg && pos)
}

/// Points of a quadratic Bezier curve.
pub fn bezier(p0: (f32, f32), p1: (f32, f32), p2: (f32, f32), steps: usize) -> Vec<(f32, f32)> {
    (0..=steps)
        .map(|i| {
            let t = i as f32 / steps as f32;
            let m = 1.0 - t;
            (m * m * p0.0 + 2.0 * m * t * p1.0 + t * t * p2.0, m * m * p0.1 + 2.0 * m * t * p1.1 + t * t * p2.1)
        })
        .collect()
}

/// Smooth value noise (fractal sum of `octaves` bilinear lattices), in [0, 1].
pub struct ValueNoise {
    grid: Vec<f32>,
    n: usize,
}

impl ValueNoise {
    pub fn new(rng: &mut Rng) -> ValueNoise {
        let n = 64;
        ValueNoise { grid: (0..n * n).map(|_| rng.unit()).collect(), n }
    }

    fn lattice(&self, x: f32, y: f32) -> f32 {
        let (xf, yf) = (x.floor(), y.floor());
        let (tx, ty) = (x - xf, y - yf);
        let (tx, ty) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
        let n = self.n as i64;
        let at = |i: i64, j: i64| self.grid[(j.rem_euclid(n) * n + i.rem_euclid(n)) as usize];
        let (i, j) = (xf as i64, yf as i64);
        let top = at(i, j) + (at(i + 1, j) - at(i, j)) * tx;
        let bottom = at(i, j + 1) + (at(i + 1, j + 1) - at(i, j + 1)) * tx;
        top + (bottom - top) * ty
    }

    pub fn fbm(&self, x: f32, y: f32, octaves: usize) -> f32 {
        let (mut sum, mut amp, mut freq, mut norm) = (0.0, 1.0, 1.0, 0.0);
        for _ in 0..octaves {
            sum += amp * self.lattice(x * freq, y * freq);
            norm += amp;
            amp *= 0.5;
            freq *= 2.0;
        }
        sum / norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_painted_disc_covers_its_area() {
        let mut c = Canvas::new(40, 40, 0.0);
        let frame = Frame::new(20.0, 20.0, 10.0, 0.3);
        c.ellipse(&frame, (0.0, 0.0), (1.0, 1.0), 0.0, 1.0, 1.0);
        let area: f32 = c.data.iter().sum();
        let expected = std::f32::consts::PI * 100.0;
        assert!((area - expected).abs() < expected * 0.03, "{area} vs {expected}");
    }

    #[test]
    fn blur_preserves_the_mean() {
        let mut c = Canvas::new(16, 16, 0.0);
        c.data[8 * 16 + 8] = 1.0;
        c.blur(2);
        let total: f32 = c.data.iter().sum();
        assert!((total - 1.0).abs() < 1e-4);
        assert!(c.data[8 * 16 + 8] < 0.2);
    }
}
