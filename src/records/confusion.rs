//! Confusion matrices: rows are the true class, columns the prediction.

use serde::{Deserialize, Serialize};

use super::RecordError;

/// Counts of (truth, prediction) pairs over a labelled set.
///
/// Invariant (checked by [`Confusion::validate`], which every reader runs):
/// `matrix` is square with one row and one column per label.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Confusion {
    pub labels: Vec<String>,
    /// `matrix[truth][prediction]`.
    pub matrix: Vec<Vec<u64>>,
}

impl Confusion {
    /// An all-zero matrix over `labels`.
    pub fn new(labels: Vec<String>) -> Self {
        let n = labels.len();
        Confusion { labels, matrix: vec![vec![0; n]; n] }
    }

    /// Builds a matrix from `(truth, prediction)` class indices.
    pub fn from_pairs(labels: Vec<String>, pairs: impl IntoIterator<Item = (usize, usize)>) -> Result<Self, RecordError> {
        let mut c = Confusion::new(labels);
        for (truth, predicted) in pairs {
            c.add(truth, predicted)?;
        }
        Ok(c)
    }

    /// Counts one example. Errors on an index outside the labels.
    pub fn add(&mut self, truth: usize, predicted: usize) -> Result<(), RecordError> {
        let n = self.labels.len();
        if truth >= n || predicted >= n {
            return Err(RecordError::ClassIndex { truth, predicted, classes: n });
        }
        self.matrix[truth][predicted] += 1;
        Ok(())
    }

    /// Checks the invariant; `context` names where the matrix came from.
    pub fn validate(&self, context: &str) -> Result<(), RecordError> {
        let n = self.labels.len();
        if n == 0 {
            return Err(RecordError::Confusion { context: context.to_string(), reason: "no labels".into() });
        }
        if self.matrix.len() != n || self.matrix.iter().any(|row| row.len() != n) {
            let shape: Vec<usize> = self.matrix.iter().map(Vec::len).collect();
            return Err(RecordError::Confusion {
                context: context.to_string(),
                reason: format!("{n} labels need a {n}x{n} matrix, got {} rows of lengths {shape:?}", self.matrix.len()),
            });
        }
        Ok(())
    }

    pub fn size(&self) -> usize {
        self.labels.len()
    }

    /// Number of examples counted.
    pub fn total(&self) -> u64 {
        self.matrix.iter().flatten().sum()
    }

    /// Examples on the diagonal.
    pub fn correct(&self) -> u64 {
        self.matrix.iter().enumerate().map(|(i, row)| row.get(i).copied().unwrap_or(0)).sum()
    }

    pub fn wrong(&self) -> u64 {
        self.total() - self.correct()
    }

    /// Fraction correct; `None` for an empty matrix.
    pub fn accuracy(&self) -> Option<f64> {
        ratio(self.correct(), self.total())
    }

    /// Examples whose true class is `class` (row sum).
    pub fn truth_total(&self, class: usize) -> u64 {
        self.matrix.get(class).map(|row| row.iter().sum()).unwrap_or(0)
    }

    /// Examples predicted as `class` (column sum).
    pub fn predicted_total(&self, class: usize) -> u64 {
        self.matrix.iter().map(|row| row.get(class).copied().unwrap_or(0)).sum()
    }

    /// Of the examples predicted as `class`, the fraction that truly are;
    /// `None` when nothing was predicted as `class`.
    pub fn precision(&self, class: usize) -> Option<f64> {
        ratio(self.cell(class, class), self.predicted_total(class))
    }

    /// Of the examples truly in `class`, the fraction predicted as such;
    /// `None` when the set holds no example of `class`.
    pub fn recall(&self, class: usize) -> Option<f64> {
        ratio(self.cell(class, class), self.truth_total(class))
    }

    /// `matrix[truth][predicted]`, 0 outside the matrix.
    pub fn cell(&self, truth: usize, predicted: usize) -> u64 {
        self.matrix.get(truth).and_then(|row| row.get(predicted)).copied().unwrap_or(0)
    }
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn accuracy_precision_recall() {
        // truth happy: 8 right, 2 called sad; truth sad: 1 called happy, 9 right.
        let c = Confusion { labels: labels(&["happy", "sad"]), matrix: vec![vec![8, 2], vec![1, 9]] };
        c.validate("test").unwrap();
        assert_eq!((c.total(), c.correct(), c.wrong()), (20, 17, 3));
        assert_eq!(c.accuracy(), Some(0.85));
        assert_eq!(c.precision(0), Some(8.0 / 9.0));
        assert_eq!(c.recall(0), Some(0.8));
        assert_eq!(c.recall(1), Some(0.9));
    }

    #[test]
    fn empty_classes_have_no_precision() {
        let c = Confusion::from_pairs(labels(&["a", "b", "c"]), [(0, 0), (1, 0)]).unwrap();
        assert_eq!(c.precision(2), None);
        assert_eq!(c.recall(2), None);
        assert_eq!(Confusion::new(labels(&["a"])).accuracy(), None);
    }

    #[test]
    fn rejects_bad_shapes_and_indices() {
        let c = Confusion { labels: labels(&["a", "b"]), matrix: vec![vec![1, 2]] };
        let err = c.validate("run x").unwrap_err().to_string();
        assert!(err.contains("run x") && err.contains("2x2"), "{err}");
        assert!(Confusion::from_pairs(labels(&["a"]), [(0, 1)]).is_err());
    }
}
