//! `emotionet eval`: the hierarchy of an experiment's trained face and
//! emotion models on the mixed eval set: the paper's Table I and the
//! confusion matrices of its Figures 2-4, written as `hierarchy.json` where
//! `emotionet report` finds it.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::checkpoint::META_EXPERIMENT_HASH;
use crate::data::{PrepOptions, SourceKind, Task, prepare};
use crate::experiment::Experiment;
use crate::hierarchy::{self, Hierarchy, HierarchyOutcome, PREDICTIONS_FILE, Predictions};
use crate::lock::OutputLock;
use crate::models::ModelKind;
use crate::records::{Confusion, HIERARCHY_FILE, HierarchyEval, RECORD_FILE, RunRecord, RunStatus, SourceTable};
use crate::report::paper::PAPER_TABLE_I;

use super::trained::{TrainedModels, TrainedModelsArgs};

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    pub models: TrainedModelsArgs,
    /// Evaluate a fixed-size subset of the eval split (the paper used 100
    /// images), drawn per class in proportion to the split and seeded.
    #[arg(long)]
    pub images: Option<usize>,
    /// Seed of the --images subset (default: the experiment's seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Print one JSON object instead of tables. (The evaluation is written
    /// to `<out>/<name>/hierarchy/<backend>-r<repeat>[-n<images>]/hierarchy.json`.)
    #[arg(long)]
    pub json: bool,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// If another emotionet command is writing the same folder, wait for
    /// it to end instead of stopping with an error.
    #[arg(long)]
    pub wait: bool,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    // Stage 1: what the user wrote.
    if args.images == Some(0) {
        anyhow::bail!("--images 0: ask for at least 1 image, or leave --images out to evaluate the whole eval split");
    }
    // A bucket output: read the runs from, and write the evaluation to, its local staging folder.
    let staged = super::output::Output::for_writing(&args.models.output()?, "evaluating the hierarchy", args.wait.into())?;
    let mut args = args;
    args.models.out = Some(staged.local.clone());
    let result = evaluate(&args);
    let uploaded = staged.finish();
    result.and(uploaded)
}

fn evaluate(args: &EvalArgs) -> anyhow::Result<()> {
    let TrainedModels { experiment, backend, trained_on, threshold, face_dir, emotion_dir } = args.models.resolve("the hierarchy")?;
    let dir = hierarchy::eval_dir(&experiment, trained_on, args.models.repeat, args.images);
    let _lock = OutputLock::acquire(&dir, "evaluating the hierarchy", args.wait.into())?;

    // Stage 2: data, devices, models.
    let prep = PrepOptions { task: hierarchy::task(&experiment), strict: false, progress: !args.quiet };
    let set = prepare(&experiment.data, &prep).context("preparing the hierarchy task's data (faces with an expression + non-faces)")?.set;
    let evaluated = match args.images {
        Some(n) => hierarchy::subset(&set.eval, &hierarchy::select_subset(&set.eval.labels, n, args.seed.unwrap_or(experiment.seed))?),
        None => set.eval.clone(),
    };
    let client = backend.connect()?;
    let hierarchy = Hierarchy::load(&client, &experiment, &face_dir, &emotion_dir, evaluated.len(), threshold).context("loading the trained models")?;
    warn_if_stale(&experiment, &hierarchy, &face_dir, &emotion_dir);

    let outcome = hierarchy.evaluate(&evaluated, &set.class_names)?;
    let kind = |name: &str| set.source_kind(name).map_or_else(String::new, |k| k.to_string());
    // Real faces without an expression label are not in the hierarchy task;
    // the face task's eval split (same split seed, so no one either model
    // trained on) scores them at the face / not-a-face level.
    let face_level = if set.sources.len() > 1 || set.sources.iter().any(|s| s.kind == SourceKind::Real) {
        let faces = prepare(&experiment.data, &PrepOptions { task: Task::Face, ..prep.clone() }).context("preparing the face task's data")?.set;
        hierarchy.evaluate_face_level(&faces.eval, |name| faces.source_kind(name).map_or_else(String::new, |k| k.to_string()))?
    } else {
        Vec::new()
    };
    let eval_id = format!("{}/{}", experiment.name, dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
    let mut record = outcome.to_record(
        &eval_id,
        &run_label(&face_dir, &hierarchy, ModelKind::Face),
        &run_label(&emotion_dir, &hierarchy, ModelKind::Emotion),
        &trained_on.to_string(),
        &hierarchy::describe_set(&set, &evaluated, &experiment.data),
    );
    record.per_source = outcome.per_source(kind)?;
    record.face_level = face_level;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(HIERARCHY_FILE);
    record.save(&path).with_context(|| format!("writing {}", path.display()))?;
    let predictions_path = dir.join(PREDICTIONS_FILE);
    let checkpoint = |kind: ModelKind| {
        let model = if kind == ModelKind::Face { hierarchy.face() } else { hierarchy.emotion() };
        model.source().map(|s| s.path.display().to_string())
    };
    Predictions {
        eval_id: &eval_id,
        threshold,
        class_names: &outcome.class_names,
        face_checkpoint: checkpoint(ModelKind::Face),
        emotion_checkpoint: checkpoint(ModelKind::Emotion),
        images: &outcome.images,
    }
    .save(&predictions_path)?;

    if args.json {
        outln!("{}", serde_json::to_string_pretty(&json_summary(&record, &outcome, &path, &predictions_path))?)?;
    } else {
        print!("{}", text_summary(&record, &outcome, &path, &predictions_path));
    }
    Ok(())
}

/// Both run folders must exist before any data is prepared.
/// The run's id from its record (else its folder) and the checkpoint's step.
fn run_label(dir: &Path, hierarchy: &Hierarchy, kind: ModelKind) -> String {
    let id = RunRecord::load(&dir.join(RECORD_FILE)).map(|r| r.run_id).unwrap_or_else(|_| dir.display().to_string());
    let model = if kind == ModelKind::Face { hierarchy.face() } else { hierarchy.emotion() };
    match model.source() {
        Some(s) => format!("{id} (step {})", s.step),
        None => id,
    }
}

/// Warns when a checkpoint was written under a different experiment file
/// or its run did not finish: the evaluation is still made, as asked.
fn warn_if_stale(experiment: &Experiment, hierarchy: &Hierarchy, face_dir: &Path, emotion_dir: &Path) {
    for (kind, dir, model) in [(ModelKind::Face, face_dir, hierarchy.face()), (ModelKind::Emotion, emotion_dir, hierarchy.emotion())] {
        if let Some(source) = model.source() {
            let Ok(now) = experiment.content_hash(kind) else { continue };
            if source.metadata.get(META_EXPERIMENT_HASH).is_some_and(|h| *h != now) {
                eprintln!("warning: {} was written under a different version of the experiment file; evaluating it anyway", source.path.display());
            }
        }
        match RunRecord::load(&dir.join(RECORD_FILE)) {
            Ok(r) if r.status != RunStatus::Finished => {
                eprintln!("warning: the {kind} run in {} has not finished ({:?}); evaluating its newest checkpoint", dir.display(), r.status)
            }
            _ => {}
        }
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

/// A confusion matrix as a text table, rows truth, columns prediction.
pub fn matrix_table(title: &str, c: &Confusion) -> String {
    let mut s = String::new();
    let first = c.labels.iter().map(String::len).max().unwrap_or(0).max("truth \\ predicted".len());
    let width = c.labels.iter().map(String::len).max().unwrap_or(0).max(6);
    let _ = writeln!(s, "{title} (rows: truth, columns: prediction)");
    let _ = write!(s, "{:<first$}", "truth \\ predicted");
    for l in &c.labels {
        let _ = write!(s, "  {l:>width$}");
    }
    let _ = writeln!(s, "  {:>width$}", "total");
    for (i, l) in c.labels.iter().enumerate() {
        let _ = write!(s, "{l:<first$}");
        for j in 0..c.size() {
            let _ = write!(s, "  {:>width$}", c.cell(i, j));
        }
        let _ = writeln!(s, "  {:>width$}", c.truth_total(i));
    }
    s
}

fn text_summary(record: &HierarchyEval, outcome: &HierarchyOutcome, path: &Path, predictions: &Path) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Hierarchy evaluation {} (trained on {}), face threshold {}", record.eval_id, record.trained_on, outcome.threshold);
    let _ = writeln!(s, "face model:    {}\nemotion model: {}\ndata: {}\n", record.face_run, record.emotion_run, record.dataset);
    let _ = writeln!(s, "Table I");
    let rows: Vec<(String, u64, u64, f64)> = vec![
        (format!("paper: {}", PAPER_TABLE_I[0].system), PAPER_TABLE_I[0].correct, PAPER_TABLE_I[0].wrong, PAPER_TABLE_I[0].accuracy),
        (format!("ours:  {}", record.table[0].system), record.table[0].correct, record.table[0].wrong, record.table[0].accuracy),
        (format!("paper: {}", PAPER_TABLE_I[1].system), PAPER_TABLE_I[1].correct, PAPER_TABLE_I[1].wrong, PAPER_TABLE_I[1].accuracy),
        (format!("ours:  {}", record.table[1].system), record.table[1].correct, record.table[1].wrong, record.table[1].accuracy),
        (format!("paper: {}", PAPER_TABLE_I[2].system), PAPER_TABLE_I[2].correct, PAPER_TABLE_I[2].wrong, PAPER_TABLE_I[2].accuracy),
    ];
    let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
    let _ = writeln!(s, "{:<w$}  {:>7}  {:>7}  {:>8}", "system", "correct", "wrong", "accuracy");
    for (name, correct, wrong, accuracy) in &rows {
        let _ = writeln!(s, "{name:<w$}  {correct:>7}  {wrong:>7}  {:>8}", pct(Some(*accuracy)));
    }
    let _ = writeln!(s, "(the paper's rows are on its 100-image validation set, as printed; its second row sums to 101)\n");
    s.push_str(&matrix_table("Emotion model alone", &record.emotion_alone));
    s.push('\n');
    s.push_str(&matrix_table("Face filter + emotion model", &record.with_face_filter));
    s.push('\n');
    let w = record.class_names.iter().map(String::len).max().unwrap_or(0).max("class".len());
    let _ = writeln!(s, "Per class\n{:<lead$}  {:<18}  with face filter", "", "alone", lead = w + 2 + 8);
    let _ = writeln!(s, "{:<w$}  {:>8}  {:>9}  {:>7}  {:>9}  {:>7}", "class", "examples", "precision", "recall", "precision", "recall");
    for (i, name) in record.class_names.iter().enumerate() {
        let (a, f) = (&record.emotion_alone, &record.with_face_filter);
        let _ = writeln!(
            s,
            "{name:<w$}  {:>8}  {:>9}  {:>7}  {:>9}  {:>7}",
            a.truth_total(i),
            pct(a.precision(i)),
            pct(a.recall(i)),
            pct(f.precision(i)),
            pct(f.recall(i))
        );
    }
    if !record.per_source.is_empty() {
        s.push('\n');
        s.push_str(&source_tables("Table I per source (the same images as above, split by where they came from)", &record.per_source));
    }
    if !record.face_level.is_empty() {
        s.push('\n');
        s.push_str(&source_tables(
            "Face or not, per source, on the face task's whole eval split (every face counts, also those without an expression label; the emotion model alone calls everything a face)",
            &record.face_level,
        ));
    }
    let _ = writeln!(s, "\nwrote {} and {}", path.display(), predictions.display());
    s
}

/// Table I rows per source, then each source's two matrices.
fn source_tables(title: &str, tables: &[SourceTable]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{title}");
    let name = |t: &SourceTable| format!("{} ({})", t.source, t.kind);
    let w = tables.iter().map(|t| name(t).len()).max().unwrap_or(0).max("source".len());
    let sw = tables.iter().flat_map(|t| t.table.iter().map(|r| r.system.len())).max().unwrap_or(0);
    let _ = writeln!(s, "{:<w$}  {:<sw$}  {:>7}  {:>7}  {:>8}", "source", "system", "correct", "wrong", "accuracy");
    for t in tables {
        for row in &t.table {
            let _ = writeln!(s, "{:<w$}  {:<sw$}  {:>7}  {:>7}  {:>8}", name(t), row.system, row.correct, row.wrong, pct(Some(row.accuracy)));
        }
    }
    for t in tables {
        s.push('\n');
        s.push_str(&matrix_table(&format!("{}: emotion model alone", name(t)), &t.emotion_alone));
        s.push_str(&matrix_table(&format!("{}: face filter + emotion model", name(t)), &t.with_face_filter));
    }
    s
}

fn json_summary(record: &HierarchyEval, outcome: &HierarchyOutcome, path: &Path, predictions: &Path) -> serde_json::Value {
    let per_class: Vec<serde_json::Value> = record
        .class_names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let (a, f) = (&record.emotion_alone, &record.with_face_filter);
            json!({
                "class": name,
                "examples": a.truth_total(i),
                "emotion_alone": {"precision": a.precision(i), "recall": a.recall(i)},
                "with_face_filter": {"precision": f.precision(i), "recall": f.recall(i)},
            })
        })
        .collect();
    let paper: Vec<serde_json::Value> =
        PAPER_TABLE_I.iter().map(|r| json!({"system": r.system, "correct": r.correct, "wrong": r.wrong, "accuracy": r.accuracy})).collect();
    json!({
        "hierarchy_json": path.display().to_string(),
        "predictions_json": predictions.display().to_string(),
        "threshold": outcome.threshold,
        "evaluation": record,
        "per_class": per_class,
        "paper_table_i": paper,
    })
}
