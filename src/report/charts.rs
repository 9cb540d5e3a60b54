//! The report's charts as SVG documents: training time per model and
//! platform (the paper's Figure 5), training curves, and confusion-matrix
//! heatmaps. Each function takes already computed values and returns the
//! document text; none reads files.

use super::svg::{self, Anchor, GRID, INK, MUTED, PAPER_GREY, Scale, Svg, fmt_duration, fmt_pct, fmt_tick, shade};
use crate::records::{Backend, Confusion};

/// One bar of the timing chart.
#[derive(Clone, Debug)]
pub struct TimeBar {
    /// Under the bar, e.g. "CPU · smoke · 32x32".
    pub label: String,
    /// `None` for the paper's reference bars (drawn hatched grey).
    pub backend: Option<Backend>,
    /// Stacked from the bottom: compile, training steps, other. A paper bar
    /// has one segment, its total.
    pub segments: Vec<f64>,
    pub total: f64,
}

/// Bars of one model.
#[derive(Clone, Debug)]
pub struct BarGroup {
    pub title: String,
    pub bars: Vec<TimeBar>,
}

/// Segment names, bottom to top, and their shade of the platform colour.
const SEGMENTS: [(&str, f64); 3] = [("compile", -0.45), ("training steps", 0.0), ("other (eval, checkpoints, input)", 0.6)];

/// Whether values from `lo` to `hi` need a log axis (over two decades).
pub fn needs_log(lo: f64, hi: f64) -> bool {
    lo > 0.0 && hi / lo > 100.0
}

/// Compact duration for labels on bars: "14 h 17 min", "5.3 min", "12.4 s".
fn short_duration(s: f64) -> String {
    if s >= 3600.0 {
        let m = (s / 60.0).round() as u64;
        format!("{} h {} min", m / 60, m % 60)
    } else {
        fmt_duration(s)
    }
}

/// Grouped, stacked bars of training time with the paper's bars for
/// reference; a log axis when the values span more than two decades.
pub fn training_time(groups: &[BarGroup]) -> String {
    let slot = 86.0;
    let bar_w = 44.0;
    let group_gap = 36.0;
    let (left, right, top, bottom) = (110.0, 290.0, 92.0, 160.0);
    let plot_h = 360.0;
    let n_bars: usize = groups.iter().map(|g| g.bars.len()).sum();
    let plot_w = (n_bars as f64 * slot + groups.len().saturating_sub(1) as f64 * group_gap).max(320.0);
    let (width, height) = (left + plot_w + right, top + plot_h + bottom);
    let mut doc = Svg::new(width, height);
    doc.def(&format!(
        r##"<pattern id="paper-hatch" patternUnits="userSpaceOnUse" width="7" height="7" patternTransform="rotate(45)"><rect width="7" height="7" fill="#e4e4e4"/><line x1="0" y1="0" x2="0" y2="7" stroke="{PAPER_GREY}" stroke-width="3"/></pattern>"##
    ));

    let positives: Vec<f64> =
        groups.iter().flat_map(|g| g.bars.iter()).flat_map(|b| b.segments.iter().copied().chain([b.total])).filter(|v| *v > 0.0 && v.is_finite()).collect();
    let hi_v = positives.iter().copied().fold(0.0, f64::max);
    let lo_v = positives.iter().copied().fold(f64::INFINITY, f64::min);
    let log = needs_log(lo_v, hi_v);
    let (plot_top, plot_bottom) = (top, top + plot_h);
    let scale = if log {
        Scale { lo: 10f64.powf(lo_v.log10().floor()), hi: 10f64.powf(hi_v.log10().ceil()), px_lo: plot_bottom, px_hi: plot_top, log: true }
    } else {
        Scale { lo: 0.0, hi: svg::nice_ceil(hi_v.max(1e-9)), px_lo: plot_bottom, px_hi: plot_top, log: false }
    };

    doc.text(left, 30.0, 18.0, Anchor::Start, INK, r#"font-weight="bold""#, "Training time per model and platform");
    let subtitle = if log {
        "Ours (median of finished repeats) beside the paper's reported times (hatched). Log scale: each gridline is 10x."
    } else {
        "Ours (median of finished repeats) beside the paper's reported times (hatched)."
    };
    doc.text(left, 52.0, 12.5, Anchor::Start, MUTED, "", subtitle);

    // Group bands first, then gridlines over the whole width, then bars.
    let mut x = left;
    for (gi, group) in groups.iter().enumerate() {
        let group_w = group.bars.len() as f64 * slot;
        doc.rect(x, plot_top - 26.0, group_w, plot_h + 26.0, if gi % 2 == 0 { "#f4f7fa" } else { "#faf6f2" }, "");
        doc.text(x + group_w / 2.0, plot_top - 9.0, 14.0, Anchor::Middle, INK, r#"font-weight="bold""#, &group.title);
        x += group_w + group_gap;
    }
    for v in scale.minor_ticks() {
        let y = scale.map(v);
        doc.line(left, y, left + plot_w, y, "#ececec", 0.8, "");
    }
    for v in scale.ticks() {
        let y = scale.map(v);
        doc.line(left, y, left + plot_w, y, "#d4d4d4", 1.0, "");
        doc.text(left - 8.0, y + 4.0, 12.0, Anchor::End, INK, "", &format!("{} s", fmt_tick(v)));
    }
    let axis_title = if log { "Training time (seconds, log scale)" } else { "Training time (seconds)" };
    doc.text_rotated(30.0, (plot_top + plot_bottom) / 2.0, -90.0, 13.0, Anchor::Middle, INK, axis_title);

    let mut x = left;
    for group in groups {
        for bar in &group.bars {
            let cx = x + slot / 2.0;
            let bx = cx - bar_w / 2.0;
            let mut base = 0.0f64;
            for (si, &value) in bar.segments.iter().enumerate() {
                if value.is_nan() || value <= 0.0 {
                    continue;
                }
                let top_v = base + value;
                let y0 = if base > 0.0 { scale.map(base) } else { plot_bottom };
                let y1 = scale.map(top_v);
                let (fill, extra, name) = match bar.backend {
                    Some(b) => (shade(svg::backend_color(b), SEGMENTS[si.min(2)].1), String::new(), SEGMENTS[si.min(2)].0),
                    None => ("url(#paper-hatch)".to_string(), format!(r#"stroke="{PAPER_GREY}" stroke-width="1""#), "reported total"),
                };
                doc.rect_titled(bx, y1, bar_w, y0 - y1, &fill, &extra, &format!("{}: {name} {}", bar.label, fmt_duration(value)));
                base = top_v;
            }
            let y_top = scale.map(bar.total);
            doc.text(cx, y_top - 6.0, 11.5, Anchor::Middle, INK, r#"font-weight="bold""#, &short_duration(bar.total));
            doc.text_rotated(cx + 4.0, plot_bottom + 14.0, -35.0, 11.5, Anchor::End, INK, &bar.label);
            x += slot;
        }
        x += group_gap;
    }
    doc.line(left, plot_bottom, left + plot_w, plot_bottom, INK, 1.2, "");
    doc.line(left, plot_top, left, plot_bottom, INK, 1.2, "");

    // Legend.
    let lx = left + plot_w + 28.0;
    let mut ly = plot_top;
    doc.text(lx, ly, 13.0, Anchor::Start, INK, r#"font-weight="bold""#, "Platform");
    ly += 20.0;
    let mut seen: Vec<Backend> = groups.iter().flat_map(|g| g.bars.iter()).filter_map(|b| b.backend).collect();
    seen.sort_by_key(|b| b.to_string());
    seen.dedup();
    for b in seen {
        doc.rect(lx, ly - 11.0, 16.0, 14.0, svg::backend_color(b), "");
        doc.text(lx + 24.0, ly, 12.5, Anchor::Start, INK, "", &format!("{} (ours)", b.to_string().to_uppercase()));
        ly += 22.0;
    }
    doc.rect(lx, ly - 11.0, 16.0, 14.0, "url(#paper-hatch)", &format!(r#"stroke="{PAPER_GREY}""#));
    doc.text(lx + 24.0, ly, 12.5, Anchor::Start, INK, "", "Paper, as reported");
    ly += 34.0;
    doc.text(lx, ly, 13.0, Anchor::Start, INK, r#"font-weight="bold""#, "Segments (ours)");
    ly += 20.0;
    for (name, amount) in SEGMENTS.iter().rev() {
        doc.rect(lx, ly - 11.0, 16.0, 14.0, &shade("#7a7a7a", *amount), "");
        doc.text(lx + 24.0, ly, 12.5, Anchor::Start, INK, "", name);
        ly += 22.0;
    }
    if log {
        ly += 10.0;
        doc.text(lx, ly, 11.0, Anchor::Start, MUTED, "", "On a log axis segment heights");
        doc.text(lx, ly + 15.0, 11.0, Anchor::Start, MUTED, "", "are not proportional: read the");
        doc.text(lx, ly + 30.0, 11.0, Anchor::Start, MUTED, "", "figures in the table.");
    }
    doc.finish("Training time per model and platform, with the paper's reported times")
}

/// One line pair (train solid, eval dashed) of a curve chart.
#[derive(Clone, Debug)]
pub struct CurveSeries {
    pub label: String,
    pub color: String,
    pub train: Vec<(f64, f64)>,
    pub eval: Vec<(f64, f64)>,
}

/// Which metric a curve chart shows.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CurveMetric {
    Loss,
    Accuracy,
}

/// Loss or accuracy against step, one colour per run.
pub fn curves(title: &str, metric: CurveMetric, series: &[CurveSeries]) -> String {
    let (left, right, top, bottom) = (78.0, 270.0, 70.0, 58.0);
    let (plot_w, plot_h) = (560.0, 320.0);
    let mut doc = Svg::new(left + plot_w + right, top + plot_h + bottom);
    doc.text(left, 30.0, 17.0, Anchor::Start, INK, r#"font-weight="bold""#, title);
    doc.text(left, 50.0, 12.5, Anchor::Start, MUTED, "", "Solid: training batches. Dashed with dots: evaluation set.");

    let all = || series.iter().flat_map(|s| s.train.iter().chain(s.eval.iter())).filter(|(x, y)| x.is_finite() && y.is_finite());
    let max_x = all().map(|p| p.0).fold(0.0, f64::max);
    let max_y = all().map(|p| p.1).fold(0.0, f64::max);
    let xs = Scale { lo: 0.0, hi: svg::nice_ceil(max_x.max(1.0)), px_lo: left, px_hi: left + plot_w, log: false };
    let ys = match metric {
        CurveMetric::Accuracy => Scale { lo: 0.0, hi: 1.0, px_lo: top + plot_h, px_hi: top, log: false },
        CurveMetric::Loss => Scale { lo: 0.0, hi: svg::nice_ceil(max_y.max(1e-6)), px_lo: top + plot_h, px_hi: top, log: false },
    };
    for v in ys.ticks() {
        let y = ys.map(v);
        doc.line(left, y, left + plot_w, y, GRID, 1.0, "");
        let label = if metric == CurveMetric::Accuracy { format!("{:.0}%", v * 100.0) } else { fmt_tick(v) };
        doc.text(left - 8.0, y + 4.0, 12.0, Anchor::End, INK, "", &label);
    }
    for v in xs.ticks() {
        let x = xs.map(v);
        doc.line(x, top + plot_h, x, top + plot_h + 5.0, INK, 1.0, "");
        doc.text(x, top + plot_h + 20.0, 12.0, Anchor::Middle, INK, "", &fmt_tick(v));
    }
    doc.line(left, top + plot_h, left + plot_w, top + plot_h, INK, 1.2, "");
    doc.line(left, top, left, top + plot_h, INK, 1.2, "");
    doc.text(left + plot_w / 2.0, top + plot_h + 44.0, 13.0, Anchor::Middle, INK, "", "Training step");
    let y_title = if metric == CurveMetric::Accuracy { "Accuracy" } else { "Cross-entropy loss" };
    doc.text_rotated(24.0, top + plot_h / 2.0, -90.0, 13.0, Anchor::Middle, INK, y_title);

    for s in series {
        let map = |pts: &[(f64, f64)]| -> Vec<(f64, f64)> {
            pts.iter().filter(|(x, y)| x.is_finite() && y.is_finite()).map(|&(x, y)| (xs.map(x), ys.map(y))).collect()
        };
        let train = map(&s.train);
        let eval = map(&s.eval);
        if train.len() > 1 {
            doc.polyline(&train, &s.color, 2.0, "");
        }
        if train.len() <= 30 {
            for &(x, y) in &train {
                doc.circle(x, y, 2.2, &s.color, "");
            }
        }
        if eval.len() > 1 {
            doc.polyline(&eval, &s.color, 2.0, r#"stroke-dasharray="6 4""#);
        }
        for &(x, y) in &eval {
            doc.circle(x, y, 3.0, "white", &format!(r#"stroke="{}" stroke-width="1.6""#, svg::escape(&s.color)));
        }
    }

    let lx = left + plot_w + 26.0;
    let mut ly = top + 4.0;
    doc.text(lx, ly, 13.0, Anchor::Start, INK, r#"font-weight="bold""#, "Run");
    ly += 20.0;
    for s in series {
        doc.line(lx, ly - 4.0, lx + 24.0, ly - 4.0, &s.color, 3.0, "");
        let label: String = if s.label.chars().count() > 34 { format!("{}…", s.label.chars().take(33).collect::<String>()) } else { s.label.clone() };
        doc.text(lx + 32.0, ly, 12.0, Anchor::Start, INK, "", &label);
        ly += 20.0;
    }
    ly += 12.0;
    doc.line(lx, ly - 4.0, lx + 24.0, ly - 4.0, MUTED, 2.0, "");
    doc.text(lx + 32.0, ly, 12.0, Anchor::Start, MUTED, "", "train");
    ly += 20.0;
    doc.line(lx, ly - 4.0, lx + 24.0, ly - 4.0, MUTED, 2.0, r#"stroke-dasharray="6 4""#);
    doc.circle(lx + 12.0, ly - 4.0, 3.0, "white", &format!(r#"stroke="{MUTED}" stroke-width="1.6""#));
    doc.text(lx + 32.0, ly, 12.0, Anchor::Start, MUTED, "", "eval");
    doc.finish(title)
}

/// A confusion matrix as a heatmap: cell colour is the row fraction (the
/// recall of the true class), the text the count and that fraction.
pub fn confusion_heatmap(title: &str, subtitle: &str, c: &Confusion, color: &str) -> String {
    let n = c.size().max(1);
    let cell = if n <= 4 { 84.0 } else { (336.0 / n as f64).max(36.0) };
    let label_w = c.labels.iter().map(|l| svg::text_width(l, 12.5)).fold(60.0, f64::max) + 16.0;
    let left = 40.0 + label_w;
    let top = 104.0;
    let grid = cell * n as f64;
    let width = (left + grid + 40.0).max(svg::text_width(title, 15.0) + 40.0).max(svg::text_width(subtitle, 12.0) + 40.0);
    let mut doc = Svg::new(width, top + grid + 56.0);
    doc.text(20.0, 26.0, 15.0, Anchor::Start, INK, r#"font-weight="bold""#, title);
    doc.text(20.0, 46.0, 12.0, Anchor::Start, MUTED, "", subtitle);
    doc.text(left + grid / 2.0, 72.0, 13.0, Anchor::Middle, INK, r#"font-weight="bold""#, "Predicted");
    doc.text_rotated(18.0, top + grid / 2.0, -90.0, 13.0, Anchor::Middle, INK, "True class");
    for (j, label) in c.labels.iter().enumerate() {
        doc.text(left + cell * (j as f64 + 0.5), top - 10.0, 12.5, Anchor::Middle, INK, "", label);
    }
    for (i, label) in c.labels.iter().enumerate() {
        let y = top + cell * i as f64;
        doc.text(left - 10.0, y + cell / 2.0 + 4.0, 12.5, Anchor::End, INK, "", label);
        let row_total = c.truth_total(i);
        for j in 0..n {
            let count = c.cell(i, j);
            let frac = if row_total > 0 { count as f64 / row_total as f64 } else { 0.0 };
            let x = left + cell * j as f64;
            let fill = shade(color, 0.94 - 0.94 * frac);
            let tooltip = format!("true {label}, predicted {}: {count} ({})", c.labels.get(j).map(String::as_str).unwrap_or("?"), fmt_pct(frac));
            doc.rect_titled(x, y, cell, cell, &fill, r#"stroke="white" stroke-width="2""#, &tooltip);
            let ink = if frac > 0.5 { "white" } else { INK };
            let weight = if i == j { r#"font-weight="bold""# } else { "" };
            doc.text(x + cell / 2.0, y + cell / 2.0 + 2.0, (cell * 0.22).min(18.0), Anchor::Middle, ink, weight, &count.to_string());
            if row_total > 0 && cell >= 48.0 {
                doc.text(x + cell / 2.0, y + cell / 2.0 + 18.0, 11.0, Anchor::Middle, ink, "", &fmt_pct(frac));
            }
        }
    }
    doc.rect(left, top, grid, grid, "none", &format!(r#"stroke="{INK}" stroke-width="1""#));
    doc.text(left, top + grid + 24.0, 11.0, Anchor::Start, MUTED, "", "Cell shade: share of the true class (row). Diagonal: correct.");
    doc.finish(title)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_axis_only_past_two_decades() {
        assert!(needs_log(3.0, 51441.0));
        assert!(!needs_log(3.0, 200.0));
        assert!(!needs_log(0.0, 10.0));
    }

    #[test]
    fn short_durations() {
        assert_eq!(short_duration(51441.0), "14 h 17 min");
        assert_eq!(short_duration(318.0), "5.3 min");
    }
}
