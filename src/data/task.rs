//! What a model learns from a sample: the three tasks of the hierarchy and
//! their integer labels. This is the only place that maps datasets'
//! annotations (face flag, KDEF expression) to class indices.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::kdef::Expression;
use super::sample::Sample;

/// How the seven KDEF expressions are grouped for the emotion model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmotionGrouping {
    /// HA -> happy (0), SA -> sad (1), every other code -> neither (2).
    #[default]
    HappySadNeither,
    /// HA -> joyful (0), every other code -> not (1).
    JoyfulNot,
}

impl EmotionGrouping {
    pub const fn class_names(self) -> &'static [&'static str] {
        match self {
            EmotionGrouping::HappySadNeither => &["happy", "sad", "neither"],
            EmotionGrouping::JoyfulNot => &["joyful", "not"],
        }
    }

    /// The class index of an expression in this grouping.
    pub fn class_of(self, expression: Expression) -> i32 {
        match (self, expression) {
            (EmotionGrouping::HappySadNeither, Expression::Happy) => 0,
            (EmotionGrouping::HappySadNeither, Expression::Sad) => 1,
            (EmotionGrouping::HappySadNeither, _) => 2,
            (EmotionGrouping::JoyfulNot, Expression::Happy) => 0,
            (EmotionGrouping::JoyfulNot, _) => 1,
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            EmotionGrouping::HappySadNeither => "happy_sad_neither",
            EmotionGrouping::JoyfulNot => "joyful_not",
        }
    }
}

/// A learning task over the catalog.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Task {
    /// Model 1: label 1 = face (LFW, KDEF, AKDEF, npy faces, face folders),
    /// 0 = non-face (SUN397, npy non-faces, non-face folders).
    Face,
    /// Model 2: faces that carry an expression, labelled by `grouping`.
    Emotion { grouping: EmotionGrouping },
    /// The hierarchy's evaluation set (the paper's Table I): faces with an
    /// expression plus non-faces; 0 = not a face, 1.. = emotion class + 1.
    Hierarchy { grouping: EmotionGrouping },
}

impl Task {
    /// Parses the CLI spelling (`face`, `emotion`, `hierarchy`).
    pub fn from_name(name: &str, grouping: EmotionGrouping) -> Option<Task> {
        match name {
            "face" => Some(Task::Face),
            "emotion" => Some(Task::Emotion { grouping }),
            "hierarchy" => Some(Task::Hierarchy { grouping }),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Task::Face => "face",
            Task::Emotion { .. } => "emotion",
            Task::Hierarchy { .. } => "hierarchy",
        }
    }

    /// Class names, indexed by label.
    pub fn class_names(&self) -> Vec<&'static str> {
        match self {
            Task::Face => vec!["non_face", "face"],
            Task::Emotion { grouping } => grouping.class_names().to_vec(),
            Task::Hierarchy { grouping } => std::iter::once("not_a_face").chain(grouping.class_names().iter().copied()).collect(),
        }
    }

    pub fn num_classes(&self) -> usize {
        self.class_names().len()
    }

    /// The label of a sample in this task, or `None` when the task does not
    /// use it (an LFW face has no expression, so the emotion task skips it).
    pub fn label(&self, sample: &Sample) -> Option<i32> {
        match self {
            Task::Face => Some(i32::from(sample.face)),
            Task::Emotion { grouping } => match (sample.face, sample.expression) {
                (true, Some(e)) => Some(grouping.class_of(e)),
                _ => None,
            },
            Task::Hierarchy { grouping } => match (sample.face, sample.expression) {
                (false, _) => Some(0),
                (true, Some(e)) => Some(grouping.class_of(e) + 1),
                (true, None) => None,
            },
        }
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Task::Face => f.write_str("face"),
            Task::Emotion { grouping } => write!(f, "emotion ({})", grouping.name()),
            Task::Hierarchy { grouping } => write!(f, "hierarchy ({})", grouping.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::{DatasetTag, FileStamp, SampleSource};

    fn sample(face: bool, expression: Option<Expression>) -> Sample {
        Sample {
            source: SampleSource::File { path: "x.jpg".into() },
            face,
            expression,
            identity: "p".into(),
            dataset: DatasetTag::Folder,
            kdef: None,
            stamp: FileStamp::default(),
            origin: 0,
        }
    }

    #[test]
    fn labels_follow_the_documented_groupings() {
        let g = EmotionGrouping::HappySadNeither;
        let emotion = Task::Emotion { grouping: g };
        let hier = Task::Hierarchy { grouping: g };
        assert_eq!(emotion.label(&sample(true, Some(Expression::Happy))), Some(0));
        assert_eq!(emotion.label(&sample(true, Some(Expression::Sad))), Some(1));
        assert_eq!(emotion.label(&sample(true, Some(Expression::Angry))), Some(2));
        assert_eq!(emotion.label(&sample(true, None)), None);
        assert_eq!(emotion.label(&sample(false, None)), None);
        assert_eq!(hier.label(&sample(false, None)), Some(0));
        assert_eq!(hier.label(&sample(true, Some(Expression::Sad))), Some(2));
        assert_eq!(hier.label(&sample(true, None)), None);
        assert_eq!(Task::Face.label(&sample(true, None)), Some(1));
        assert_eq!(Task::Face.label(&sample(false, None)), Some(0));
        assert_eq!(Task::Emotion { grouping: EmotionGrouping::JoyfulNot }.label(&sample(true, Some(Expression::Sad))), Some(1));
        assert_eq!(hier.class_names(), vec!["not_a_face", "happy", "sad", "neither"]);
        assert_eq!(Task::Emotion { grouping: EmotionGrouping::JoyfulNot }.class_names(), vec!["joyful", "not"]);
    }
}
