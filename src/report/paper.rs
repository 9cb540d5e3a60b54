//! The paper's published figures (EMOTIONET, D'Agostino & Schmidt), as
//! constants. The report always labels them as the paper's; none is ever
//! mixed into our own numbers.

use crate::records::ModelKind;

/// One of the paper's two training set-ups.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaperSetup {
    /// Short label used in charts and tables.
    pub label: &'static str,
    /// The hardware, as the paper describes it.
    pub hardware: &'static str,
    pub image_size: u32,
    /// Training time of the face and emotion model, in seconds.
    pub face_s: f64,
    pub emotion_s: f64,
    /// Train / eval accuracy of each model.
    pub face_accuracy: (f64, f64),
    pub emotion_accuracy: (f64, f64),
    /// How the paper printed the times.
    pub face_text: &'static str,
    pub emotion_text: &'static str,
}

impl PaperSetup {
    pub fn time_s(&self, model: ModelKind) -> f64 {
        match model {
            ModelKind::Face => self.face_s,
            ModelKind::Emotion => self.emotion_s,
        }
    }

    pub fn time_text(&self, model: ModelKind) -> &'static str {
        match model {
            ModelKind::Face => self.face_text,
            ModelKind::Emotion => self.emotion_text,
        }
    }

    pub fn accuracy(&self, model: ModelKind) -> (f64, f64) {
        match model {
            ModelKind::Face => self.face_accuracy,
            ModelKind::Emotion => self.emotion_accuracy,
        }
    }
}

/// CPU cluster: 48 AMD processors, 768 cores, 1.5 TB RAM; 100x100 inputs.
pub const PAPER_CPU: PaperSetup = PaperSetup {
    label: "paper: CPU cluster, 100x100",
    hardware: "CPU cluster (48 AMD processors, 768 cores)",
    image_size: 100,
    face_s: 2.0 * 3600.0 + 38.0 * 60.0 + 22.0,
    emotion_s: 14.0 * 3600.0 + 17.0 * 60.0 + 21.0,
    face_accuracy: (0.94, 0.87),
    emotion_accuracy: (0.98, 0.85),
    face_text: "2 h 38 min 22 s",
    emotion_text: "14 h 17 min 21 s",
};

/// Cloud TPU v3-8; 256x256 inputs.
pub const PAPER_TPU: PaperSetup = PaperSetup {
    label: "paper: TPU v3-8, 256x256",
    hardware: "Cloud TPU v3-8",
    image_size: 256,
    face_s: 5.3 * 60.0,
    emotion_s: 13.3 * 60.0,
    face_accuracy: (0.99, 0.94),
    emotion_accuracy: (0.97, 0.96),
    face_text: "5.3 min",
    emotion_text: "13.3 min",
};

pub const PAPER_SETUPS: [PaperSetup; 2] = [PAPER_CPU, PAPER_TPU];

/// The paper's schedule: 15 steps per epoch, 30 (face) or 40 (emotion) epochs.
pub const STEPS_PER_EPOCH: u64 = 15;

pub fn paper_total_steps(model: ModelKind) -> u64 {
    STEPS_PER_EPOCH
        * match model {
            ModelKind::Face => 30,
            ModelKind::Emotion => 40,
        }
}

/// A row of the paper's Table I (100-image validation set), as printed.
/// (The second row sums to 101; we reproduce it unchanged.)
#[derive(Clone, Copy, Debug)]
pub struct PaperTableRow {
    pub system: &'static str,
    pub correct: u64,
    pub wrong: u64,
    pub accuracy: f64,
}

pub const PAPER_TABLE_I: [PaperTableRow; 3] = [
    PaperTableRow { system: "emotion model alone on mixed input", correct: 32, wrong: 68, accuracy: 0.32 },
    PaperTableRow { system: "face filter + emotion model (CPU)", correct: 74, wrong: 27, accuracy: 0.74 },
    PaperTableRow { system: "both, trained on TPU", correct: 90, wrong: 10, accuracy: 0.90 },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_match_the_paper_text() {
        assert_eq!(PAPER_CPU.face_s, 9502.0);
        assert_eq!(PAPER_CPU.emotion_s, 51441.0);
        assert!((PAPER_TPU.face_s - 318.0).abs() < 1e-9);
        assert!((PAPER_TPU.emotion_s - 798.0).abs() < 1e-9);
        assert_eq!(paper_total_steps(ModelKind::Emotion), 600);
    }
}
