//! Accuracy per data source: where an eval split mixes sources (the
//! synthetic set and real photographs), each source's accuracy and
//! confusion matrix, so that the real-image figure is not lost inside the
//! synthetic one.

use serde::{Deserialize, Serialize};

use super::{Confusion, RecordError};

/// One source's share of an evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceEval {
    /// The source's name in the experiment (`synthetic`, `lfw_subset`, ...).
    pub source: String,
    /// `synthetic` or `real`.
    pub kind: String,
    /// Eval examples from this source.
    pub examples: u64,
    /// `confusion.correct() / examples`.
    pub accuracy: f64,
    /// Over the run's class names, rows truth, columns prediction.
    pub confusion: Confusion,
}

impl SourceEval {
    /// Checks that the figures agree with the matrix and its labels.
    pub fn validate(&self, context: &str, class_names: &[String]) -> Result<(), String> {
        self.confusion.validate(context).map_err(|e| e.to_string())?;
        if self.confusion.labels != class_names {
            return Err(format!("labels {:?} differ from class_names {:?}", self.confusion.labels, class_names));
        }
        if self.examples != self.confusion.total() {
            return Err(format!("examples {} is not the matrix's total {}", self.examples, self.confusion.total()));
        }
        let expected = self.confusion.accuracy().unwrap_or(0.0);
        if (self.accuracy - expected).abs() > 1e-9 {
            return Err(format!("accuracy {} is not correct/examples = {expected}", self.accuracy));
        }
        Ok(())
    }
}

/// Per-source accuracy and confusion matrices of one evaluation, in the
/// order the sources first appear. `truth[i]` and `predicted[i]` are class
/// indices into `class_names`; `sources[i]` names example `i`'s source and
/// `kind_of` its kind. Empty when the examples come from fewer than two
/// sources (the overall figure already says it all).
pub fn per_source<'a>(
    class_names: &[String],
    truth: &[i32],
    predicted: &[usize],
    sources: &[&'a str],
    kind_of: impl Fn(&str) -> String,
) -> Result<Vec<SourceEval>, RecordError> {
    if truth.len() != predicted.len() || truth.len() != sources.len() {
        return Err(RecordError::Confusion {
            context: "per-source evaluation".into(),
            reason: format!("{} labels, {} predictions and {} source names must be as many", truth.len(), predicted.len(), sources.len()),
        });
    }
    let mut names: Vec<&'a str> = Vec::new();
    for &s in sources {
        if !names.contains(&s) {
            names.push(s);
        }
    }
    if names.len() < 2 {
        return Ok(Vec::new());
    }
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let pairs = (0..truth.len()).filter(|&i| sources[i] == name).map(|i| (usize::try_from(truth[i]).unwrap_or(usize::MAX), predicted[i]));
        let confusion = Confusion::from_pairs(class_names.to_vec(), pairs)?;
        out.push(SourceEval {
            source: name.to_string(),
            kind: kind_of(name),
            examples: confusion.total(),
            accuracy: confusion.accuracy().unwrap_or(0.0),
            confusion,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_an_evaluation_by_source() {
        let names = vec!["non_face".to_string(), "face".to_string()];
        let truth = [1, 0, 1, 1, 0, 0];
        let predicted = [1, 0, 0, 1, 1, 0];
        let sources = ["synthetic", "synthetic", "real", "real", "real", "synthetic"];
        let kind = |n: &str| if n == "real" { "real".to_string() } else { "synthetic".to_string() };
        let out = per_source(&names, &truth, &predicted, &sources, kind).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].source.as_str(), out[0].examples, out[0].accuracy), ("synthetic", 3, 1.0));
        assert_eq!((out[1].source.as_str(), out[1].kind.as_str(), out[1].examples), ("real", "real", 3));
        assert!((out[1].accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(out[1].confusion.matrix, vec![vec![0, 1], vec![1, 1]]);
        out[1].validate("x", &names).unwrap();
        assert!(per_source(&names, &truth, &predicted, &["a"; 6], kind).unwrap().is_empty(), "one source: nothing to split");
        assert!(per_source(&names, &truth, &predicted[..5], &sources, kind).is_err());
    }
}
