//! Renders the analysis as `report.md`, the SVG charts and `report.json`.
//! Every number printed comes from the [`Analysis`] (hence from records) or
//! from [`super::paper`], and paper figures are always labelled as such.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use serde_json::json;

use super::charts::{self, BarGroup, CurveMetric, CurveSeries, TimeBar};
use super::model::{Analysis, Group, RanOn, Scan, Stat};
use super::paper::{self, PAPER_SETUPS, PAPER_TABLE_I};
use super::svg::{self, fmt_duration, fmt_pct, fmt_sig};
use crate::records::{Backend, Confusion, MetricPoint, ModelKind, RunStatus, Split};

/// The report's files, before they are written.
pub struct Rendered {
    pub markdown: String,
    pub json: serde_json::Value,
    /// (file name, SVG text).
    pub charts: Vec<(String, String)>,
}

/// A Markdown table built row by row.
struct Table {
    header: Vec<String>,
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// Columns whose name starts with '>' are right-aligned (numbers).
    fn new(columns: &[&str]) -> Self {
        Table {
            header: columns.iter().map(|c| c.trim_start_matches('>').to_string()).collect(),
            right: columns.iter().map(|c| c.starts_with('>')).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self) -> String {
        let cell = |s: &str| s.replace('|', "\\|").replace('\n', " ");
        let mut out = format!("| {} |\n|", self.header.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | "));
        for &r in &self.right {
            out.push_str(if r { " ---: |" } else { " --- |" });
        }
        out.push('\n');
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | "));
        }
        out
    }
}

const NONE: &str = "—";

/// "median (min–max)" over several repeats, the value alone for one.
fn stat(s: Option<Stat>, f: impl Fn(f64) -> String) -> String {
    match s {
        None => NONE.to_string(),
        Some(s) if s.n > 1 && s.min != s.max => format!("{} ({}–{})", f(s.median), f(s.min), f(s.max)),
        Some(s) => f(s.median),
    }
}

fn backend_name(b: Backend) -> String {
    b.to_string().to_uppercase()
}

fn model_title(m: ModelKind) -> &'static str {
    match m {
        ModelKind::Face => "Face model",
        ModelKind::Emotion => "Emotion model",
    }
}

/// A file-name-safe slug, unique among `taken`.
fn file_name(taken: &mut BTreeSet<String>, parts: &[&str]) -> String {
    let slug: String = parts.join("-").chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c.to_ascii_lowercase() } else { '-' }).collect();
    let mut name = format!("{slug}.svg");
    let mut k = 2;
    while !taken.insert(name.clone()) {
        name = format!("{slug}-{k}.svg");
        k += 1;
    }
    name
}

/// Renders everything. `generated_at` is an RFC 3339 time, `runs_dir` as
/// the user gave it.
pub fn render(scan: &Scan, analysis: &Analysis, generated_at: &str) -> Rendered {
    let mut md = String::new();
    let mut charts: Vec<(String, String)> = Vec::new();
    let mut taken = BTreeSet::new();
    let runs = &scan.runs;
    // Each run as it is now: a `running` record whose process died is "interrupted".
    let mut by_state: std::collections::BTreeMap<crate::records::Observed, usize> = std::collections::BTreeMap::new();
    for r in runs {
        *by_state.entry(r.record.status.observed()).or_default() += 1;
    }
    let states = by_state.iter().map(|(state, n)| format!("{n} {}", state.label())).collect::<Vec<_>>().join(", ");

    let _ = writeln!(md, "# EMOTIONET training report\n");
    let _ = writeln!(
        md,
        "Generated {generated_at} by `emotionet report` from `{}`: {} runs ({states}) in {} groups{}, and {} hierarchy evaluation{}.\n",
        scan.runs_dir.display(),
        runs.len(),
        analysis.groups.len() + analysis.stand_ins.len(),
        match analysis.stand_ins.len() {
            0 => String::new(),
            n => format!(" ({n} of them stand-ins, counted as nothing)"),
        },
        scan.hierarchies.len(),
        if scan.hierarchies.len() == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        md,
        "Every figure below comes from the run records (`record.json`, `metrics.jsonl`, `hierarchy.json`) listed in the appendix, except those marked **paper**, which are the figures published in EMOTIONET (D'Agostino & Schmidt). Repeats of the same experiment, model and platform are summarised as median (min–max).\n"
    );
    md.push_str("1. [Training time (Figure 5)](#1-training-time-per-model-and-platform-figure-5)\n2. [Speedups](#2-speedups)\n3. [Runs](#3-runs)\n4. [Accuracy next to the paper's](#4-accuracy-next-to-the-papers)\n5. [Training curves](#5-training-curves)\n6. [Confusion matrices](#6-confusion-matrices)\n7. [The hierarchy: Table I and Figures 2-4](#7-the-hierarchy-table-i-and-figures-2-4)\n8. [Missing or incomplete](#8-missing-or-incomplete)\n9. [Appendix: every run](#appendix-every-run)\n\n");

    // 1. Training time.
    let _ = writeln!(md, "## 1. Training time per model and platform (Figure 5)\n");
    let mut bar_groups = Vec::new();
    for model in ModelKind::ALL {
        let mut bars = Vec::new();
        for g in analysis.groups.iter().filter(|g| g.model == model) {
            let Some(total) = g.total_wall_s else { continue };
            let compile = g.compile_s.map_or(0.0, |s| s.median);
            let steps = g.train_wall_s.map_or(0.0, |s| s.median);
            bars.push(TimeBar {
                label: match g.precision {
                    Some(crate::records::Precision::Bf16) => format!("{} · {} · {} · bf16", backend_name(g.backend), g.experiment, g.image_size),
                    _ => format!("{} · {} · {}", backend_name(g.backend), g.experiment, g.image_size),
                },
                backend: Some(g.backend),
                segments: vec![compile, steps, (total.median - compile - steps).max(0.0)],
                total: total.median,
            });
        }
        for setup in PAPER_SETUPS {
            let t = setup.time_s(model);
            bars.push(TimeBar { label: setup.label.to_string(), backend: None, segments: vec![t], total: t });
        }
        bar_groups.push(BarGroup { title: model_title(model).to_string(), bars });
    }
    let time_chart = "training-time.svg".to_string();
    taken.insert(time_chart.clone());
    charts.push((time_chart.clone(), charts::training_time(&bar_groups)));
    let _ = writeln!(md, "![Training time per model and platform, with the paper's times]({time_chart})\n");
    let _ = writeln!(
        md,
        "Each of our bars is the median total wall time of a group's finished runs, stacked as compile time, time in training steps (device time), and the rest (waiting for input, evaluation, checkpoints). Hatched bars are the paper's reported training times; the paper does not split them. The paper trained at 100x100 on its CPU cluster and at 256x256 on the TPU.\n"
    );
    let mut t =
        Table::new(&["Model", "Platform", "Experiment", "Image", ">Steps", ">Compile", ">Training steps", ">Input wait", ">Other", ">Total", ">Finished runs"]);
    // Stand-in rows follow, labelled, and stay out of the chart above.
    for g in analysis.groups.iter().chain(&analysis.stand_ins) {
        t.row(vec![
            g.model.to_string(),
            g.platform_label(),
            g.experiment.clone(),
            g.image_size.clone(),
            g.total_steps.clone(),
            stat(g.compile_s, fmt_duration),
            stat(g.train_wall_s, fmt_duration),
            stat(g.input_wait_s, fmt_duration),
            stat(g.other_s, fmt_duration),
            stat(g.total_wall_s, fmt_duration),
            format!("{} of {}", g.finished_ids.len(), g.run_ids.len()),
        ]);
    }
    for model in ModelKind::ALL {
        for setup in PAPER_SETUPS {
            t.row(vec![
                model.to_string(),
                format!("**paper**: {}", setup.hardware),
                NONE.into(),
                format!("{0}x{0}", setup.image_size),
                paper::paper_total_steps(model).to_string(),
                NONE.into(),
                NONE.into(),
                NONE.into(),
                NONE.into(),
                format!("{} ({} s)", setup.time_text(model), svg::fmt_int(setup.time_s(model))),
                "paper".into(),
            ]);
        }
    }
    md.push_str(&t.render());
    md.push('\n');
    predictions(&mut md, &analysis.predictions);

    // 2. Speedups.
    let _ = writeln!(md, "## 2. Speedups\n\n### Our platforms against our CPU\n");
    if analysis.speedups.is_empty() {
        let _ = writeln!(md, "No experiment has finished runs of the same model on CPU and on another platform, so there is no speedup to report yet.\n");
    } else {
        let _ = writeln!(md, "Same experiment file, same model; ratio of medians (CPU ÷ platform), above 1 means faster than our CPU.\n");
        let mut t = Table::new(&["Model", "Experiment", "Platform", ">Total time", ">Speedup (total)", ">Steady step", ">Speedup (per step)"]);
        for s in &analysis.speedups {
            let g = analysis.groups.iter().find(|g| g.model == s.model && g.experiment == s.experiment && g.backend == s.backend && g.precision == s.precision);
            t.row(vec![
                s.model.to_string(),
                s.experiment.clone(),
                g.map_or_else(|| backend_name(s.backend), Group::platform_label),
                stat(g.and_then(|g| g.total_wall_s), fmt_duration),
                s.total_time.map_or(NONE.into(), |v| format!("{}×", fmt_sig(v, 3))),
                stat(g.and_then(|g| g.steady_step_s), |v| format!("{} ms", fmt_sig(v * 1000.0, 3))),
                s.step_time.map_or(NONE.into(), |v| format!("{}×", fmt_sig(v, 3))),
            ]);
        }
        md.push_str(&t.render());
        md.push('\n');
    }
    let _ = writeln!(md, "### Ours against the paper's\n");
    if analysis.paper_comparisons.is_empty() {
        let _ = writeln!(md, "No finished run has timing yet, so there is nothing to set against the paper's times.\n");
    } else {
        let _ = writeln!(
            md,
            "Paper time ÷ our median total time: above 1 means our run took less time than the paper reports. Only rows marked *yes* used the paper's image size and step count (15 steps per epoch, 30 epochs face, 40 emotion); the others compare different amounts of work.\n"
        );
        let mut t = Table::new(&["Model", "Ours", "Image", ">Steps", ">Our total", "Paper set-up", ">Paper time", ">Paper ÷ ours", "Same size and steps"]);
        for c in &analysis.paper_comparisons {
            let g = analysis.groups.iter().find(|g| g.model == c.model && g.experiment == c.experiment && g.backend == c.backend && g.precision == c.precision);
            t.row(vec![
                c.model.to_string(),
                format!("{} · {}", g.map_or_else(|| backend_name(c.backend), Group::platform_label), c.experiment),
                g.map_or(NONE.into(), |g| g.image_size.clone()),
                g.map_or(NONE.into(), |g| g.total_steps.clone()),
                fmt_duration(c.our_total_s),
                format!("**{}**", c.paper),
                fmt_duration(c.paper_s),
                format!("{}×", fmt_sig(c.paper_over_ours, 3)),
                if c.like_for_like { "yes".into() } else { "no".into() },
            ]);
        }
        md.push_str(&t.render());
        md.push('\n');
    }

    // 3. Runs.
    let _ = writeln!(md, "## 3. Runs\n");
    let _ = writeln!(
        md,
        "One row per experiment, model and platform; timing and accuracy over its finished runs. Steady step is the median device time of a step after the first (from launching it to its outputs being ready on every replica); images/s is the global batch over it. Input wait is the median time a step waited for its batch (input pipeline and upload not hidden behind the previous step); a group whose devices waited for input {:.0}% of the training loop or more is marked **input-bound**. Precision is what the network computed in, with the element types the compiled train step's convolutions and dots take (its proof); bf16 and f32 runs are separate rows.\n",
        crate::records::INPUT_BOUND_SHARE * 100.0
    );
    let mut t = Table::new(&[
        "Model",
        "Platform",
        "Device × count",
        "Experiment",
        "Image",
        "Precision",
        ">Batch",
        ">Steps",
        ">Compile (s)",
        ">First step (s)",
        ">Steady step (ms)",
        ">Input wait (ms)",
        ">Images/s",
        ">Total time",
        ">Train acc.",
        ">Eval acc.",
        ">Finished runs",
    ]);
    for g in analysis.groups.iter().chain(&analysis.stand_ins) {
        t.row(vec![
            g.model.to_string(),
            format!("{} ({})", g.ran_on().label(), g.platform),
            g.device.clone(),
            g.experiment.clone(),
            g.image_size.clone(),
            g.precision_text.clone(),
            g.batch.clone(),
            g.total_steps.clone(),
            stat(g.compile_s, |v| fmt_sig(v, 3)),
            stat(g.first_step_s, |v| fmt_sig(v, 3)),
            stat(g.steady_step_s, |v| fmt_sig(v * 1000.0, 3)),
            match g.input_share {
                Some(share) if share.median >= crate::records::INPUT_BOUND_SHARE => {
                    format!("{} **input-bound** ({:.0}%)", stat(g.input_step_s, |v| fmt_sig(v * 1000.0, 3)), share.median * 100.0)
                }
                _ => stat(g.input_step_s, |v| fmt_sig(v * 1000.0, 3)),
            },
            stat(g.images_per_s, |v| fmt_sig(v, 3)),
            stat(g.total_wall_s, fmt_duration),
            stat(g.train_accuracy, fmt_pct),
            stat(g.eval_accuracy, fmt_pct),
            format!("{} of {}", g.finished_ids.len(), g.run_ids.len()),
        ]);
    }
    md.push_str(&t.render());
    md.push('\n');
    if !analysis.stand_ins.is_empty() {
        let _ = writeln!(
            md,
            "Rows labelled *standing in for* ran on another platform through a stand-in description (tests only); they appear here, in section 1's table, in the curves and in the appendix, and nowhere else: no chart bar, speedup, paper comparison or \"present\" check counts them.\n"
        );
    }
    achieved_flops(&mut md, analysis);
    tpu_costs(&mut md, runs);

    // 4. Accuracy.
    let _ = writeln!(md, "## 4. Accuracy next to the paper's\n");
    let mut t = Table::new(&["Model", "Source", "Image", ">Train accuracy", ">Eval accuracy"]);
    for model in ModelKind::ALL {
        for setup in PAPER_SETUPS {
            let (train, eval) = setup.accuracy(model);
            t.row(vec![
                model.to_string(),
                format!("**{}**", setup.label),
                format!("{0}x{0}", setup.image_size),
                format!("{:.0}%", train * 100.0),
                format!("{:.0}%", eval * 100.0),
            ]);
        }
        for g in analysis.groups.iter().filter(|g| g.model == model && !g.finished_ids.is_empty()) {
            t.row(vec![
                model.to_string(),
                format!("ours: {} · {}{}", g.platform_label(), g.experiment, if g.source_eval_accuracy.is_empty() { "" } else { ", all sources" }),
                g.image_size.clone(),
                stat(g.train_accuracy, fmt_pct),
                stat(g.eval_accuracy, fmt_pct),
            ]);
            for s in &g.source_eval_accuracy {
                t.row(vec![
                    model.to_string(),
                    format!("ours: {} · {}, only `{}` ({}, {} eval images)", g.platform_label(), g.experiment, s.source, s.kind, s.examples),
                    g.image_size.clone(),
                    NONE.into(),
                    stat(Some(s.accuracy), fmt_pct),
                ]);
            }
        }
    }
    md.push_str(&t.render());
    let _ = writeln!(
        md,
        "\nOur train accuracy is the last logged training value; eval accuracy is the final evaluation. Where an experiment mixes data sources (the synthetic set and real photographs), the rows marked *only* give the eval accuracy on one source's held-out images. Our data set may differ from the paper's (see each run's notes).\n"
    );

    // 5. Curves.
    let _ = writeln!(md, "## 5. Training curves\n");
    let colors = run_colors(scan);
    for model in ModelKind::ALL {
        let curve_runs: Vec<usize> = runs.iter().enumerate().filter(|(_, r)| r.record.model == model && !r.curve.is_empty()).map(|(i, _)| i).collect();
        if curve_runs.is_empty() {
            let _ = writeln!(md, "No training curve was recorded for the {model} model.\n");
            continue;
        }
        let make = |metric: CurveMetric| -> Vec<CurveSeries> {
            curve_runs
                .iter()
                .map(|&i| {
                    let r = &runs[i];
                    let value = |p: &MetricPoint| if metric == CurveMetric::Loss { p.loss } else { p.accuracy };
                    let pick = |split: Split| r.curve.iter().filter(|p| p.split == split).map(|p| (p.step as f64, value(p))).collect::<Vec<_>>();
                    CurveSeries {
                        label: match &r.record.status {
                            RunStatus::Finished => format!("{} · {} · r{}", RanOn::of(&r.record).label(), r.record.experiment, r.record.repeat),
                            other => {
                                format!("{} · {} · r{} ({})", RanOn::of(&r.record).label(), r.record.experiment, r.record.repeat, other.observed().label())
                            }
                        },
                        color: colors.get(&i).cloned().unwrap_or_else(|| "#444444".into()),
                        train: pick(Split::Train),
                        eval: pick(Split::Eval),
                    }
                })
                .collect()
        };
        let (series, acc_series) = (make(CurveMetric::Loss), make(CurveMetric::Accuracy));
        let loss_name = file_name(&mut taken, &["curves", model.as_str(), "loss"]);
        let acc_name = file_name(&mut taken, &["curves", model.as_str(), "accuracy"]);
        charts.push((loss_name.clone(), charts::curves(&format!("{}: loss", model_title(model)), CurveMetric::Loss, &series)));
        charts.push((acc_name.clone(), charts::curves(&format!("{}: accuracy", model_title(model)), CurveMetric::Accuracy, &acc_series)));
        let _ = writeln!(md, "### {}\n\n![{} loss]({loss_name})\n\n![{} accuracy]({acc_name})\n", model_title(model), model_title(model), model_title(model));
    }

    // 6. Confusion matrices.
    let _ = writeln!(md, "## 6. Confusion matrices\n");
    let _ = writeln!(md, "The final evaluation of one finished run per group (the latest); rows are the true class, columns the prediction.\n");
    let mut any_confusion = false;
    for g in &analysis.groups {
        let Some(i) = g.confusion_run else { continue };
        let run = &runs[i].record;
        let Some(c) = &run.confusion else { continue };
        any_confusion = true;
        let name = file_name(&mut taken, &["confusion", g.model.as_str(), &g.experiment, &g.backend.to_string()]);
        let title = format!("{} · {} · {}", model_title(g.model), backend_name(g.backend), g.experiment);
        let subtitle = format!("run {} · accuracy {} ({} of {})", run.run_id, c.accuracy().map_or(NONE.into(), fmt_pct), c.correct(), c.total());
        charts.push((name.clone(), charts::confusion_heatmap(&title, &subtitle, c, svg::backend_color(g.backend))));
        let _ = writeln!(md, "### {title}\n\n![{title}]({name})\n");
        md.push_str(&per_class_table(&[("", c)]));
        md.push('\n');
        if !run.per_source.is_empty() {
            let _ = writeln!(md, "The same evaluation per data source:\n");
            let mut t = Table::new(&["Source", "Kind", ">Eval images", ">Correct", ">Accuracy"]);
            for s in &run.per_source {
                t.row(vec![format!("`{}`", s.source), s.kind.clone(), s.examples.to_string(), s.confusion.correct().to_string(), fmt_pct(s.accuracy)]);
            }
            md.push_str(&t.render());
            md.push('\n');
            let mut images = Vec::new();
            for s in &run.per_source {
                let name = file_name(&mut taken, &["confusion", g.model.as_str(), &g.experiment, &g.backend.to_string(), &s.source]);
                let title = format!("{} · {} · only {} ({})", model_title(g.model), g.experiment, s.source, s.kind);
                let subtitle = format!("run {} · accuracy {} ({} of {})", run.run_id, fmt_pct(s.accuracy), s.confusion.correct(), s.confusion.total());
                charts.push((name.clone(), charts::confusion_heatmap(&title, &subtitle, &s.confusion, svg::backend_color(g.backend))));
                images.push(format!("![{title}]({name})"));
            }
            let _ = writeln!(md, "{}\n", images.join(" "));
        }
    }
    if !any_confusion {
        let _ = writeln!(md, "No finished run recorded a confusion matrix.\n");
    }

    // 7. Hierarchy.
    let _ = writeln!(md, "## 7. The hierarchy: Table I and Figures 2-4\n");
    let _ = writeln!(
        md,
        "The emotion model alone against the face filter followed by the emotion model, on a mixed set of faces and non-faces. **Paper** rows are as printed (its second row sums to 101).\n"
    );
    let mut t = Table::new(&["System", "Source", ">Correct", ">Wrong", ">Accuracy"]);
    for row in PAPER_TABLE_I {
        t.row(vec![
            row.system.to_string(),
            "**paper** (100-image validation set)".into(),
            row.correct.to_string(),
            row.wrong.to_string(),
            format!("{:.0}%", row.accuracy * 100.0),
        ]);
    }
    for h in &scan.hierarchies {
        for row in &h.eval.table {
            t.row(vec![
                row.system.clone(),
                format!("ours: `{}`, trained on {}; {}", h.eval.eval_id, h.eval.trained_on, h.eval.dataset),
                row.correct.to_string(),
                row.wrong.to_string(),
                fmt_pct(row.accuracy),
            ]);
        }
        for source in &h.eval.per_source {
            for row in &source.table {
                t.row(vec![
                    row.system.clone(),
                    format!("ours: `{}`, only the `{}` images ({})", h.eval.eval_id, source.source, source.kind),
                    row.correct.to_string(),
                    row.wrong.to_string(),
                    fmt_pct(row.accuracy),
                ]);
            }
        }
    }
    md.push_str(&t.render());
    md.push('\n');
    if scan.hierarchies.is_empty() {
        let _ = writeln!(md, "No hierarchy evaluation (`hierarchy.json`) was found: there are no rows of ours yet.\n");
    }
    for h in &scan.hierarchies {
        let e = &h.eval;
        let alone = file_name(&mut taken, &["hierarchy", &e.eval_id, "emotion-alone"]);
        let filtered = file_name(&mut taken, &["hierarchy", &e.eval_id, "with-face-filter"]);
        let sub = |c: &Confusion| format!("{} · accuracy {} ({} of {})", e.eval_id, c.accuracy().map_or(NONE.into(), fmt_pct), c.correct(), c.total());
        charts.push((alone.clone(), charts::confusion_heatmap("Emotion model alone", &sub(&e.emotion_alone), &e.emotion_alone, "#6a3d9a")));
        charts.push((filtered.clone(), charts::confusion_heatmap("Face filter + emotion model", &sub(&e.with_face_filter), &e.with_face_filter, "#1b7837")));
        let _ = writeln!(
            md,
            "### Evaluation `{}` ({})\n\nFace model `{}`, emotion model `{}`, trained on {}; data: {}. File: `{}`.\n\n![Emotion model alone]({alone}) ![Face filter + emotion model]({filtered})\n",
            e.eval_id,
            e.created_at,
            e.face_run,
            e.emotion_run,
            e.trained_on,
            e.dataset,
            h.path.display()
        );
        md.push_str(&per_class_table(&[("alone", &e.emotion_alone), ("with filter", &e.with_face_filter)]));
        md.push('\n');
        for (what, tables) in [("per source", &e.per_source), ("face or not, per source", &e.face_level)] {
            if tables.is_empty() {
                continue;
            }
            if what == "per source" {
                let _ = writeln!(md, "#### Table I per source\n\nThe same images, split by the data source they came from.\n");
            } else {
                let _ = writeln!(
                    md,
                    "#### Face filter against no filter, per source (faces and non-faces)\n\nOn the face task's eval split, which also holds the faces that carry no expression label (real LFW photographs) and so cannot be scored for emotion: correct means the right answer to \"is this a face?\". The emotion model alone calls every image a face.\n"
                );
            }
            let mut t = Table::new(&["Source", "System", ">Correct", ">Wrong", ">Accuracy"]);
            for source in tables.iter() {
                for row in &source.table {
                    t.row(vec![
                        format!("`{}` ({})", source.source, source.kind),
                        row.system.clone(),
                        row.correct.to_string(),
                        row.wrong.to_string(),
                        fmt_pct(row.accuracy),
                    ]);
                }
            }
            md.push_str(&t.render());
            md.push('\n');
            let mut images = Vec::new();
            for source in tables.iter() {
                let slug = if what == "per source" { "source" } else { "face-level" };
                for (system, c, color) in [("emotion-alone", &source.emotion_alone, "#6a3d9a"), ("with-face-filter", &source.with_face_filter, "#1b7837")] {
                    let name = file_name(&mut taken, &["hierarchy", &e.eval_id, slug, &source.source, system]);
                    let title = format!(
                        "{} · {} ({})",
                        if system == "emotion-alone" { "Emotion model alone" } else { "Face filter + emotion model" },
                        source.source,
                        source.kind
                    );
                    charts.push((name.clone(), charts::confusion_heatmap(&title, &sub(c), c, color)));
                    images.push(format!("![{title}]({name})"));
                }
            }
            let _ = writeln!(md, "{}\n", images.join(" "));
        }
    }

    // 8. Missing.
    let _ = writeln!(md, "## 8. Missing or incomplete\n");
    if analysis.missing.is_empty() {
        let _ = writeln!(md, "Nothing: every platform, both models and a hierarchy evaluation are present, and every run finished.\n");
    } else {
        for m in &analysis.missing {
            let _ = writeln!(md, "- {}", m.replace('\n', " "));
        }
        md.push('\n');
    }

    // Appendix.
    let _ = writeln!(md, "## Appendix: every run\n");
    let mut t = Table::new(&["Run", "Directory", "Ran on", "Status", ">Steps", "Started", "Finished", "Host", "Plugin", "PJRT API", ">Resumes"]);
    for r in runs {
        let rec = &r.record;
        t.row(vec![
            format!("`{}`", rec.run_id),
            format!("`{}`", r.dir.display()),
            RanOn::of(rec).label(),
            rec.status.observed().label().to_string(),
            format!("{} of {}", rec.steps_done, rec.config.total_steps),
            rec.started_at.clone(),
            rec.finished_at.clone().unwrap_or_else(|| NONE.into()),
            rec.platform.host.clone(),
            format!("`{}`", rec.platform.plugin),
            rec.platform.pjrt_api_version.clone(),
            rec.resumes.to_string(),
        ]);
    }
    md.push_str(&t.render());

    let json = json!({
        "schema": crate::records::SCHEMA_VERSION,
        "generator": super::GENERATOR,
        "generated_at": generated_at,
        "runs_dir": scan.runs_dir.display().to_string(),
        "runs": runs.iter().map(|r| json!({
            "run_id": r.record.run_id,
            "dir": r.dir.display().to_string(),
            "experiment": r.record.experiment,
            "model": r.record.model,
            "backend": r.record.backend,
            "ran_on": RanOn::of(&r.record),
            "status": r.record.status.observed().label(),
        })).collect::<Vec<_>>(),
        "groups": analysis.groups,
        "stand_in_groups": analysis.stand_ins,
        "speedups": analysis.speedups,
        "paper_comparisons": analysis.paper_comparisons,
        "hierarchy": scan.hierarchies.iter().map(|h| json!({
            "path": h.path.display().to_string(),
            "eval_id": h.eval.eval_id,
            "trained_on": h.eval.trained_on,
            "table": h.eval.table,
            "per_source": h.eval.per_source.iter().map(|t| json!({"source": t.source, "kind": t.kind, "table": t.table})).collect::<Vec<_>>(),
            "face_level": h.eval.face_level.iter().map(|t| json!({"source": t.source, "kind": t.kind, "table": t.table})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "tpu_predictions": analysis.predictions,
        "missing": analysis.missing,
        "skipped": scan.skipped,
        "charts": charts.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
    });
    Rendered { markdown: md, json, charts }
}

/// The TPU predictions, each labelled as one, beside the measured TPU group
/// of the same experiment, model and precision when there is one. They are
/// kept out of the chart, the speedups and the paper comparisons: only
/// `Analysis::groups` feed those.
fn predictions(md: &mut String, rows: &[super::model::PredictedRow]) {
    use crate::cloud::cost;
    use crate::cloud::spec::Capacity;
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "### Predicted TPU time: a prediction, not a measurement
"
    );
    let _ = writeln!(
        md,
        "From a TPU prediction file (`tpu-prediction-TYPE.json`, written by the cloud preflight or `emotionet compile --out`): the pinned libtpu compiled the training step for the accelerator type on a machine without a TPU. It counts {}. It is never drawn as a bar and never enters a speedup. Where a measured TPU group of the same experiment, model and precision exists, it follows its prediction with measured ÷ predicted.\n",
        crate::tpu::PREDICTION_NOTE.trim_start_matches("predicted, not measured: ")
    );
    let mut t = Table::new(&[
        "Model",
        "Experiment",
        "Row",
        "Image",
        ">Batch × replicas",
        ">Steps",
        ">Step",
        ">Training steps",
        ">On demand (est.)",
        ">Spot (est.)",
        ">Memory per core",
        ">Measured ÷ predicted (step)",
        ">Measured ÷ predicted (training)",
    ]);
    for r in rows {
        let memory = r.memory_bytes.map_or(NONE.to_string(), |m| format!("{} of {}", crate::tpu::gib(m as f64), crate::tpu::gib(r.hbm_bytes)));
        let bound = r.bound.as_deref().map_or(String::new(), |b| format!(" ({b}-bound)"));
        t.row(vec![
            r.model.to_string(),
            r.experiment.clone(),
            r.label.clone(),
            format!("{0}x{0}", r.image_size),
            format!("{} × {}", r.batch, r.replicas),
            r.steps.to_string(),
            format!("{} ms{bound}", fmt_sig(r.step_s * 1000.0, 3)),
            fmt_duration(r.train_s),
            cost::estimate(&r.accelerator_type, "us-central1-a", Capacity::OnDemand, r.train_s),
            cost::estimate(&r.accelerator_type, "us-central1-a", Capacity::Spot, r.train_s),
            memory,
            NONE.into(),
            NONE.into(),
        ]);
        if let Some(m) = &r.measured {
            t.row(vec![
                r.model.to_string(),
                r.experiment.clone(),
                format!("measured: {}", m.platform),
                format!("{0}x{0}", r.image_size),
                NONE.into(),
                NONE.into(),
                m.steady_step_s.map_or(NONE.into(), |s| format!("{} ms", fmt_sig(s * 1000.0, 3))),
                m.train_wall_s.map_or(NONE.into(), fmt_duration),
                NONE.into(),
                NONE.into(),
                NONE.into(),
                m.step_ratio.map_or(NONE.into(), |v| format!("{}×", fmt_sig(v, 3))),
                m.train_ratio.map_or(NONE.into(), |v| format!("{}×", fmt_sig(v, 3))),
            ]);
        }
    }
    md.push_str(&t.render());
    let _ = writeln!(
        md,
        "\nCosts: the predicted training time at the list price of the type in us-central1 ({}); `-` where the table has no price.\n",
        cost::PRICE_SOURCE
    );
}

/// Achieved FLOP/s per group: the train step's flops per device from the
/// cost analysis of the compiler that ran it, times the devices, over the
/// steady step; and for TPUs the share of the peak table's FLOP/s (MFU).
fn achieved_flops(md: &mut String, analysis: &Analysis) {
    let groups: Vec<&Group> = analysis.groups.iter().chain(&analysis.stand_ins).filter(|g| g.achieved_flops_per_s.is_some()).collect();
    if groups.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "### Achieved FLOP/s
"
    );
    let _ = writeln!(
        md,
        "Flops of one train step per device as the compiler that ran it counts them (the executable's cost analysis, recorded by the run), times the devices, over the median steady step. MFU is that over the peak FLOP/s of the devices from the TPU peak table (`src/tpu/targets.rs`); there is no GPU table, and a CPU's measured matmul peak is `emotionet bench`'s, not in the record, so those rows have none.\n"
    );
    let mut t = Table::new(&["Model", "Experiment", "Platform", "Device × count", ">Flops / step / device", ">Steady step (ms)", ">Achieved GFLOP/s", ">MFU"]);
    for g in groups {
        t.row(vec![
            g.model.to_string(),
            g.experiment.clone(),
            g.platform_label(),
            g.device.clone(),
            stat(g.train_step_flops, |v| format!("{v:.3e}")),
            stat(g.steady_step_s, |v| fmt_sig(v * 1000.0, 3)),
            stat(g.achieved_flops_per_s, |v| fmt_sig(v / 1e9, 3)),
            stat(g.mfu, fmt_pct),
        ]);
    }
    md.push_str(&t.render());
    md.push('\n');
}

/// Per-class precision and recall of one or more matrices over the same labels.
fn per_class_table(matrices: &[(&str, &Confusion)]) -> String {
    let Some((_, first)) = matrices.first() else { return String::new() };
    let mut columns = vec!["Class".to_string(), ">Examples".to_string()];
    for (name, _) in matrices {
        let suffix = if name.is_empty() { String::new() } else { format!(" ({name})") };
        columns.push(format!(">Precision{suffix}"));
        columns.push(format!(">Recall{suffix}"));
    }
    let cols: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut t = Table::new(&cols);
    for (i, label) in first.labels.iter().enumerate() {
        let mut row = vec![label.clone(), first.truth_total(i).to_string()];
        for (_, c) in matrices {
            row.push(c.precision(i).map_or(NONE.into(), fmt_pct));
            row.push(c.recall(i).map_or(NONE.into(), fmt_pct));
        }
        t.row(row);
    }
    t.render()
}

/// One colour per run: its backend's hue, darker or lighter for the second,
/// third... run of that backend, so a platform keeps its colour everywhere.
fn run_colors(scan: &Scan) -> BTreeMap<usize, String> {
    const SHADES: [f64; 6] = [0.0, -0.35, 0.4, -0.6, 0.6, -0.15];
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (i, r) in scan.runs.iter().enumerate() {
        // The colour of the platform that ran it: a CPU standing in for a TPU is a CPU.
        let ran = RanOn::of(&r.record).backend;
        let key = format!("{}/{}", r.record.model, ran);
        let k = count.entry(key).or_insert(0);
        out.insert(i, svg::shade(svg::backend_color(ran), SHADES[*k % SHADES.len()]));
        *k += 1;
    }
    out
}

/// Each TPU run's estimated cost: its total wall time at the price table's
/// on-demand and spot rates. Runs do not record their zone or capacity, so
/// both rates are shown, for the cheapest region in the table.
fn tpu_costs(md: &mut String, runs: &[super::model::RunEntry]) {
    use crate::cloud::cost;
    use crate::cloud::spec::Capacity;
    // Runs that ran on a TPU: a stand-in filed under tpu ran on something else and cost no TPU time.
    let tpu_runs: Vec<_> = runs.iter().filter(|r| RanOn::of(&r.record) == RanOn { backend: Backend::Tpu, stand_in_for: None }).collect();
    if tpu_runs.is_empty() {
        return;
    }
    let _ = writeln!(md, "### Estimated cost of the TPU runs\n");
    let mut t = Table::new(&["Run", "Device × count", ">Total time", ">On demand (est.)", ">Spot (est.)"]);
    for run in tpu_runs {
        let platform = &run.record.platform;
        // Only a v3-8 has a price in the table; anything else is left blank, never guessed.
        let accelerator = if platform.device_kind.to_ascii_lowercase().contains("v3") && platform.device_count <= 8 { "v3-8" } else { "" };
        let wall = run.record.timing.as_ref().map(|t| t.total_wall_s);
        let price = |capacity| match wall {
            Some(s) => cost::estimate(accelerator, "us-central1-a", capacity, s),
            None => NONE.to_string(),
        };
        t.row(vec![
            run.record.run_id.clone(),
            format!("{} × {}", platform.device_kind, platform.device_count),
            wall.map(fmt_duration).unwrap_or_else(|| NONE.to_string()),
            price(Capacity::OnDemand),
            price(Capacity::Spot),
        ]);
    }
    md.push_str(&t.render());
    let _ = writeln!(
        md,
        "\nEstimates, not bills: each run's total wall time (compile and evaluation included, VM setup not) times the list price of a v3-8 in us-central1 \
         from {}; europe-west4 is 10% dearer. The billing report is the authority.\n",
        cost::PRICE_SOURCE
    );
}
