//! A small SVG writer: elements, escaping, scales, ticks, the palette and
//! number formatting shared by the charts. No plotting library: every chart
//! is a handful of rectangles, lines and text.

use std::fmt::Write;

use crate::records::Backend;

pub const FONT: &str = "Helvetica, Arial, sans-serif";
pub const INK: &str = "#222222";
pub const MUTED: &str = "#666666";
pub const GRID: &str = "#e3e3e3";
pub const PAPER_GREY: &str = "#8a8a8a";

/// Okabe-Ito colour-blind-safe palette: one fixed hue per backend so CPU,
/// GPU and TPU look the same in every chart.
pub fn backend_color(backend: Backend) -> &'static str {
    match backend {
        Backend::Cpu => "#0072B2",
        Backend::Gpu => "#009E73",
        Backend::Tpu => "#D55E00",
    }
}

/// Mixes a `#rrggbb` colour towards white (`amount` > 0) or black (< 0).
pub fn shade(color: &str, amount: f64) -> String {
    let hex = color.trim_start_matches('#');
    let channel = |i: usize| u8::from_str_radix(hex.get(i..i + 2).unwrap_or("80"), 16).unwrap_or(128) as f64;
    let mix = |c: f64| {
        let v = if amount >= 0.0 { c + (255.0 - c) * amount } else { c * (1.0 + amount) };
        v.round().clamp(0.0, 255.0) as u8
    };
    format!("#{:02x}{:02x}{:02x}", mix(channel(0)), mix(channel(2)), mix(channel(4)))
}

/// Escapes text for use in XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Rough width of `text` at `size` px in a sans-serif font, for layout.
pub fn text_width(text: &str, size: f64) -> f64 {
    text.chars().count() as f64 * size * 0.56
}

/// Horizontal text anchor.
#[derive(Clone, Copy)]
pub enum Anchor {
    Start,
    Middle,
    End,
}

impl Anchor {
    fn as_str(self) -> &'static str {
        match self {
            Anchor::Start => "start",
            Anchor::Middle => "middle",
            Anchor::End => "end",
        }
    }
}

/// An SVG document under construction.
pub struct Svg {
    width: f64,
    height: f64,
    defs: String,
    body: String,
}

// Drawing primitives take coordinates plus style; bundling them into structs
// would only move the argument lists elsewhere.
#[allow(clippy::too_many_arguments)]
impl Svg {
    pub fn new(width: f64, height: f64) -> Self {
        Svg { width, height, defs: String::new(), body: String::new() }
    }

    /// Raw markup for `<defs>` (patterns); the caller escapes its content.
    pub fn def(&mut self, markup: &str) {
        self.defs.push_str(markup);
        self.defs.push('\n');
    }

    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, extra: &str) {
        let _ =
            writeln!(self.body, r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{}" {extra}/>"#, n(x), n(y), n(w.max(0.0)), n(h.max(0.0)), escape(fill));
    }

    /// A rectangle with a tooltip.
    pub fn rect_titled(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, extra: &str, title: &str) {
        let _ = writeln!(
            self.body,
            r#"<rect x="{}" y="{}" width="{}" height="{}" fill="{}" {extra}><title>{}</title></rect>"#,
            n(x),
            n(y),
            n(w.max(0.0)),
            n(h.max(0.0)),
            escape(fill),
            escape(title)
        );
    }

    pub fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str, width: f64, extra: &str) {
        let _ = writeln!(
            self.body,
            r#"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="{}" stroke-width="{}" {extra}/>"#,
            n(x1),
            n(y1),
            n(x2),
            n(y2),
            escape(stroke),
            n(width)
        );
    }

    pub fn polyline(&mut self, points: &[(f64, f64)], stroke: &str, width: f64, extra: &str) {
        let pts: Vec<String> = points.iter().map(|(x, y)| format!("{},{}", n(*x), n(*y))).collect();
        let _ = writeln!(
            self.body,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="{}" stroke-linejoin="round" {extra}/>"#,
            pts.join(" "),
            escape(stroke),
            n(width)
        );
    }

    pub fn circle(&mut self, x: f64, y: f64, r: f64, fill: &str, extra: &str) {
        let _ = writeln!(self.body, r#"<circle cx="{}" cy="{}" r="{}" fill="{}" {extra}/>"#, n(x), n(y), n(r), escape(fill));
    }

    /// Text at (x, y) baseline; `extra` may add e.g. `font-weight="bold"`.
    pub fn text(&mut self, x: f64, y: f64, size: f64, anchor: Anchor, fill: &str, extra: &str, content: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{}" y="{}" font-size="{}" text-anchor="{}" fill="{}" {extra}>{}</text>"#,
            n(x),
            n(y),
            n(size),
            anchor.as_str(),
            escape(fill),
            escape(content)
        );
    }

    /// Text rotated by `degrees` about its anchor point.
    pub fn text_rotated(&mut self, x: f64, y: f64, degrees: f64, size: f64, anchor: Anchor, fill: &str, content: &str) {
        let extra = format!(r#"transform="rotate({} {} {})""#, n(degrees), n(x), n(y));
        self.text(x, y, size, anchor, fill, &extra, content);
    }

    /// The finished document, with a white background and a title for
    /// screen readers.
    pub fn finish(self, title: &str) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{FONT}" role="img">"#,
            w = n(self.width),
            h = n(self.height)
        );
        let _ = writeln!(out, "<title>{}</title>", escape(title));
        if !self.defs.is_empty() {
            let _ = writeln!(out, "<defs>\n{}</defs>", self.defs);
        }
        let _ = writeln!(out, r#"<rect x="0" y="0" width="{}" height="{}" fill="white"/>"#, n(self.width), n(self.height));
        out.push_str(&self.body);
        out.push_str("</svg>\n");
        out
    }
}

/// Coordinates with at most two decimals, no trailing zeros.
fn n(v: f64) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".to_string() } else { s.to_string() }
}

/// A map from data values to pixels along one axis, linear or log10.
#[derive(Clone, Copy, Debug)]
pub struct Scale {
    pub lo: f64,
    pub hi: f64,
    pub px_lo: f64,
    pub px_hi: f64,
    pub log: bool,
}

impl Scale {
    pub fn map(&self, v: f64) -> f64 {
        let (lo, hi, v) = if self.log { (self.lo.log10(), self.hi.log10(), v.max(self.lo).log10()) } else { (self.lo, self.hi, v) };
        let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.0 };
        self.px_lo + t * (self.px_hi - self.px_lo)
    }

    /// Major ticks: decades on a log scale, 1-2-5 steps on a linear one.
    pub fn ticks(&self) -> Vec<f64> {
        if self.log {
            let (a, b) = (self.lo.log10().floor() as i32, self.hi.log10().ceil() as i32);
            (a..=b).map(|e| 10f64.powi(e)).filter(|v| *v >= self.lo * 0.999 && *v <= self.hi * 1.001).collect()
        } else {
            let step = nice_step((self.hi - self.lo) / 5.0);
            let first = (self.lo / step).ceil() as i64;
            let last = (self.hi / step + 1e-9).floor() as i64;
            // Rounded so 3 * 0.2 prints as 0.6, not 0.6000000000000001.
            (first..=last).map(|i| ((i as f64 * step) * 1e9).round() / 1e9).collect()
        }
    }

    /// Minor ticks (2..9 times each decade) of a log scale; none for linear.
    pub fn minor_ticks(&self) -> Vec<f64> {
        if !self.log {
            return Vec::new();
        }
        let mut out = Vec::new();
        for v in self.ticks() {
            for k in 2..10 {
                let m = v * k as f64;
                if m < self.hi {
                    out.push(m);
                }
            }
        }
        out
    }
}

/// The nearest 1, 2 or 5 times a power of ten at or above `raw`.
pub fn nice_step(raw: f64) -> f64 {
    if !raw.is_finite() || raw <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(raw.log10().floor());
    let f = raw / p;
    let m = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    m * p
}

/// The smallest "nice" value at or above `v` for an axis end.
pub fn nice_ceil(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let step = nice_step(v / 5.0);
    (v / step).ceil() * step
}

/// A number with `sig` significant digits, without exponent for everyday
/// magnitudes and with thousands separators for large ones.
pub fn fmt_sig(v: f64, sig: usize) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (sig as i32 - 1 - magnitude).max(0) as usize;
    let text = format!("{v:.decimals$}");
    if decimals == 0 { group_thousands(&text) } else { text }
}

/// An axis tick: as few digits as needed, thousands grouped: "0.8", "10", "1,000".
pub fn fmt_tick(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    if v.abs() >= 1.0 && (v - v.round()).abs() < 1e-9 {
        return fmt_int(v);
    }
    let text = format!("{v:.6}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A number rounded to an integer, with thousands separators: "51,441".
pub fn fmt_int(v: f64) -> String {
    if v.is_finite() { group_thousands(&format!("{v:.0}")) } else { "n/a".into() }
}

fn group_thousands(int_text: &str) -> String {
    let (sign, digits) = int_text.strip_prefix('-').map(|d| ("-", d)).unwrap_or(("", int_text));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{sign}{out}")
}

/// A duration for people: "850 ms", "12.4 s", "5.3 min", "2 h 38 min 22 s".
pub fn fmt_duration(seconds: f64) -> String {
    if !seconds.is_finite() {
        return "n/a".into();
    }
    if seconds < 1.0 {
        return format!("{} ms", fmt_sig(seconds * 1000.0, 3));
    }
    if seconds < 60.0 {
        return format!("{} s", fmt_sig(seconds, 3));
    }
    if seconds < 3600.0 {
        return format!("{:.1} min", seconds / 60.0);
    }
    let total = seconds.round() as u64;
    format!("{} h {} min {} s", total / 3600, (total % 3600) / 60, total % 60)
}

/// A fraction as a percentage with one decimal: 0.8734 -> "87.3%".
pub fn fmt_pct(v: f64) -> String {
    if v.is_finite() { format!("{:.1}%", v * 100.0) } else { "n/a".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers_for_people() {
        assert_eq!(fmt_duration(9502.0), "2 h 38 min 22 s");
        assert_eq!(fmt_duration(51441.0), "14 h 17 min 21 s");
        assert_eq!(fmt_duration(318.0), "5.3 min");
        assert_eq!(fmt_duration(12.44), "12.4 s");
        assert_eq!(fmt_duration(0.0123), "12.3 ms");
        assert_eq!(fmt_sig(51441.0, 3), "51,441");
        assert_eq!(fmt_sig(0.012345, 3), "0.0123");
        assert_eq!(fmt_pct(0.8734), "87.3%");
        assert_eq!(fmt_tick(100000.0), "100,000");
        assert_eq!(fmt_tick(0.8), "0.8");
        assert_eq!(fmt_tick(0.01), "0.01");
    }

    #[test]
    fn ticks_are_nice() {
        let s = Scale { lo: 0.0, hi: 1.0, px_lo: 0.0, px_hi: 100.0, log: false };
        assert_eq!(s.ticks(), vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        let l = Scale { lo: 0.1, hi: 100000.0, px_lo: 400.0, px_hi: 0.0, log: true };
        assert_eq!(l.ticks().len(), 7);
        assert_eq!(l.map(0.1), 400.0);
        assert_eq!(l.map(100000.0), 0.0);
        assert_eq!(nice_ceil(0.73), 0.8);
    }

    #[test]
    fn escapes_markup_and_shades_colours() {
        assert_eq!(escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
        assert_eq!(shade("#000000", 0.5), "#808080");
        assert_eq!(shade("#ffffff", -1.0), "#000000");
    }
}
