//! `hierarchy.json`: the evaluation of the two-model hierarchy on a mixed
//! face / non-face set (the paper's Table I and Figures 2-4).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{Confusion, RecordError, SCHEMA_VERSION};

/// One row of the paper's Table I.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRow {
    /// What was evaluated, e.g. "emotion model alone" or "face filter + emotion model".
    pub system: String,
    pub correct: u64,
    pub wrong: u64,
    /// `correct / (correct + wrong)`.
    pub accuracy: f64,
}

impl TableRow {
    /// The row for a confusion matrix: its diagonal against the rest.
    pub fn from_confusion(system: impl Into<String>, confusion: &Confusion) -> Self {
        TableRow { system: system.into(), correct: confusion.correct(), wrong: confusion.wrong(), accuracy: confusion.accuracy().unwrap_or(0.0) }
    }
}

/// Table I on the images of one data source: both systems' matrices and
/// their rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceTable {
    /// The source's name in the experiment (`synthetic`, `lfw_subset`, ...).
    pub source: String,
    /// `synthetic` or `real`.
    pub kind: String,
    pub emotion_alone: Confusion,
    pub with_face_filter: Confusion,
    /// Derived from the two matrices, like [`HierarchyEval::table`].
    pub table: Vec<TableRow>,
}

impl SourceTable {
    pub fn new(source: impl Into<String>, kind: impl Into<String>, emotion_alone: Confusion, with_face_filter: Confusion) -> Self {
        let table = vec![TableRow::from_confusion(EMOTION_ALONE, &emotion_alone), TableRow::from_confusion(FACE_FILTER_AND_EMOTION, &with_face_filter)];
        SourceTable { source: source.into(), kind: kind.into(), emotion_alone, with_face_filter, table }
    }

    fn validate(&self, path: &Path, field: &str, labels: &[String]) -> Result<(), RecordError> {
        let ctx = |what: &str| format!("{} ({field}.{what})", path.display());
        self.emotion_alone.validate(&ctx("emotion_alone"))?;
        self.with_face_filter.validate(&ctx("with_face_filter"))?;
        for (what, c) in [("emotion_alone", &self.emotion_alone), ("with_face_filter", &self.with_face_filter)] {
            if c.labels != labels {
                return Err(RecordError::Invalid {
                    path: path.to_path_buf(),
                    field: format!("{field}.{what}.labels"),
                    reason: format!("{:?} differ from {labels:?}", c.labels),
                });
            }
        }
        check_rows(path, field, &self.table, &[&self.emotion_alone, &self.with_face_filter])
    }
}

/// The labels of a face-level table: the face filter's two answers.
pub const FACE_LEVEL_LABELS: [&str; 2] = ["not_a_face", "face"];

/// Checks that each row adds up and agrees with its matrix.
fn check_rows(path: &Path, field: &str, rows: &[TableRow], matrices: &[&Confusion]) -> Result<(), RecordError> {
    for (i, row) in rows.iter().enumerate() {
        let n = row.correct + row.wrong;
        let expected = if n == 0 { 0.0 } else { row.correct as f64 / n as f64 };
        let agrees = matrices.get(i).is_none_or(|c| c.correct() == row.correct && c.wrong() == row.wrong);
        if !(row.accuracy - expected).abs().le(&1e-9) || !agrees {
            return Err(RecordError::Invalid {
                path: path.to_path_buf(),
                field: format!("{field}table[{i}]"),
                reason: format!("{} is not correct/(correct+wrong) = {}/{n} of its matrix", row.accuracy, row.correct),
            });
        }
    }
    Ok(())
}

/// The system names [`HierarchyEval::new`] gives its two Table I rows.
pub const EMOTION_ALONE: &str = "emotion model alone";
pub const FACE_FILTER_AND_EMOTION: &str = "face filter + emotion model";

/// The hierarchy evaluated on one mixed set.
///
/// Both matrices are over `class_names` (e.g. "not a face", "happy", "sad",
/// "neither"), rows truth, columns prediction. The emotion model alone never
/// answers "not a face", so that column of `emotion_alone` is all zero: every
/// non-face counts as wrong, which is the point the paper's Table I makes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HierarchyEval {
    pub schema: u32,
    /// A name for this evaluation, e.g. "paper-cpu" or "smoke".
    pub eval_id: String,
    /// RFC 3339 UTC time the evaluation finished.
    pub created_at: String,
    /// Run ids of the checkpoints evaluated.
    pub face_run: String,
    pub emotion_run: String,
    /// Where the two models were trained (the paper compares CPU-trained
    /// against TPU-trained hierarchies), e.g. "cpu".
    pub trained_on: String,
    /// What the mixed set is, e.g. "synthetic: 50 faces + 50 scenes, 64x64".
    pub dataset: String,
    pub class_names: Vec<String>,
    pub emotion_alone: Confusion,
    pub with_face_filter: Confusion,
    /// Table I rows, normally derived from the two matrices by [`HierarchyEval::new`].
    pub table: Vec<TableRow>,
    /// Table I per data source, when the evaluated set mixes several (e.g.
    /// synthetic faces and scenes next to real non-faces).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_source: Vec<SourceTable>,
    /// Table I at the face / not-a-face level, per data source, on the face
    /// task's eval split: there every face counts, also those without an
    /// expression label (real LFW faces). The emotion model alone calls
    /// every image a face; the face filter decides. Labels are
    /// [`FACE_LEVEL_LABELS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub face_level: Vec<SourceTable>,
}

impl HierarchyEval {
    /// Builds an evaluation whose Table I rows come from the matrices, so the
    /// two can never disagree.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        eval_id: impl Into<String>,
        created_at: impl Into<String>,
        face_run: impl Into<String>,
        emotion_run: impl Into<String>,
        trained_on: impl Into<String>,
        dataset: impl Into<String>,
        emotion_alone: Confusion,
        with_face_filter: Confusion,
    ) -> Self {
        let table = vec![TableRow::from_confusion(EMOTION_ALONE, &emotion_alone), TableRow::from_confusion(FACE_FILTER_AND_EMOTION, &with_face_filter)];
        HierarchyEval {
            schema: SCHEMA_VERSION,
            eval_id: eval_id.into(),
            created_at: created_at.into(),
            face_run: face_run.into(),
            emotion_run: emotion_run.into(),
            trained_on: trained_on.into(),
            dataset: dataset.into(),
            class_names: emotion_alone.labels.clone(),
            emotion_alone,
            with_face_filter,
            table,
            per_source: Vec::new(),
            face_level: Vec::new(),
        }
    }

    /// Checks the schema, the matrices' shapes and labels, and that every
    /// table row adds up.
    pub fn validate(&self, path: &Path) -> Result<(), RecordError> {
        super::check_schema(path, self.schema)?;
        super::check_timestamp(path, "created_at", &self.created_at)?;
        let ctx = |what: &str| format!("{} ({what})", path.display());
        self.emotion_alone.validate(&ctx("emotion_alone"))?;
        self.with_face_filter.validate(&ctx("with_face_filter"))?;
        for (field, c) in [("emotion_alone", &self.emotion_alone), ("with_face_filter", &self.with_face_filter)] {
            if c.labels != self.class_names {
                return Err(RecordError::Invalid {
                    path: path.to_path_buf(),
                    field: format!("{field}.labels"),
                    reason: format!("{:?} differ from class_names {:?}", c.labels, self.class_names),
                });
            }
        }
        check_rows(path, "", &self.table, &[])?;
        for (i, t) in self.per_source.iter().enumerate() {
            t.validate(path, &format!("per_source[{i}]"), &self.class_names)?;
        }
        let face_labels: Vec<String> = FACE_LEVEL_LABELS.iter().map(|s| s.to_string()).collect();
        for (i, t) in self.face_level.iter().enumerate() {
            t.validate(path, &format!("face_level[{i}]"), &face_labels)?;
        }
        Ok(())
    }

    /// Reads and validates a `hierarchy.json`.
    pub fn load(path: &Path) -> Result<Self, RecordError> {
        let eval: HierarchyEval = super::read_json(path)?;
        eval.validate(path)?;
        Ok(eval)
    }

    /// Validates, then writes atomically.
    pub fn save(&self, path: &Path) -> Result<(), RecordError> {
        self.validate(path)?;
        super::write_json(path, self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["not a face", "happy", "sad", "neither"].iter().map(|s| s.to_string()).collect()
    }

    fn sample() -> HierarchyEval {
        // 40 non-faces, 20 of each emotion; alone, the emotion model calls
        // every non-face an emotion.
        let alone = Confusion { labels: labels(), matrix: vec![vec![0, 10, 10, 20], vec![0, 18, 1, 1], vec![0, 2, 16, 2], vec![0, 1, 1, 18]] };
        let filtered = Confusion { labels: labels(), matrix: vec![vec![38, 1, 0, 1], vec![1, 17, 1, 1], vec![0, 2, 16, 2], vec![1, 1, 1, 17]] };
        HierarchyEval::new("smoke", "2025-01-31T12:00:00Z", "smoke/face/cpu/r0", "smoke/emotion/cpu/r0", "cpu", "synthetic", alone, filtered)
    }

    #[test]
    fn table_rows_come_from_the_matrices() {
        let eval = sample();
        assert_eq!(eval.table[0], TableRow { system: EMOTION_ALONE.into(), correct: 52, wrong: 48, accuracy: 0.52 });
        assert_eq!((eval.table[1].correct, eval.table[1].wrong), (88, 12));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HIERARCHY_FILE_NAME);
        eval.save(&path).unwrap();
        assert_eq!(HierarchyEval::load(&path).unwrap(), eval);
    }

    #[test]
    fn inconsistent_rows_and_labels_are_rejected() {
        let mut eval = sample();
        eval.table[0].accuracy = 0.9;
        let err = eval.validate(Path::new("e/hierarchy.json")).unwrap_err().to_string();
        assert!(err.contains("e/hierarchy.json") && err.contains("table[0]"), "{err}");
        let mut eval = sample();
        eval.with_face_filter.labels[0] = "background".into();
        assert!(eval.validate(Path::new("h.json")).unwrap_err().to_string().contains("with_face_filter.labels"));
    }

    const HIERARCHY_FILE_NAME: &str = super::super::HIERARCHY_FILE;

    #[test]
    fn per_source_and_face_level_tables_round_trip_and_are_checked() {
        let mut eval = sample();
        let faces = |m: Vec<Vec<u64>>| Confusion { labels: FACE_LEVEL_LABELS.iter().map(|s| s.to_string()).collect(), matrix: m };
        eval.face_level.push(SourceTable::new("lfw_subset", "real", faces(vec![vec![0, 30], vec![0, 30]]), faces(vec![vec![29, 1], vec![2, 28]])));
        eval.per_source.push(SourceTable::new("synthetic", "synthetic", eval.emotion_alone.clone(), eval.with_face_filter.clone()));
        assert_eq!((eval.face_level[0].table[0].correct, eval.face_level[0].table[1].correct), (30, 57));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(HIERARCHY_FILE_NAME);
        eval.save(&path).unwrap();
        assert_eq!(HierarchyEval::load(&path).unwrap(), eval);
        let mut bad = eval.clone();
        bad.face_level[0].table[1].correct = 50;
        let err = bad.validate(Path::new("h.json")).unwrap_err().to_string();
        assert!(err.contains("face_level[0]"), "{err}");
        let mut bad = eval;
        bad.face_level[0].with_face_filter.labels[1] = "person".into();
        assert!(bad.validate(Path::new("h.json")).unwrap_err().to_string().contains("face_level[0].with_face_filter.labels"));
    }
}
