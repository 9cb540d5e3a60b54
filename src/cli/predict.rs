//! `emotionet predict`: run the trained hierarchy of an experiment on image
//! files: the face probability of each and, for a face, its emotion with
//! the class probabilities. A file that cannot be read is reported on its
//! own line and the others still get their answers; the exit status is 1
//! if any failed.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde_json::json;

use crate::hierarchy::{self, Answer, Hierarchy};
use crate::models::ModelKind;

use super::trained::{TrainedModels, TrainedModelsArgs};

#[derive(Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub models: TrainedModelsArgs,
    /// JPEG or PNG files.
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    /// One JSON object per image, one per line, instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: PredictArgs) -> anyhow::Result<()> {
    let TrainedModels { experiment, backend, threshold, face_dir, emotion_dir, .. } = args.models.resolve("predict")?;

    // Decode every file first, so a bad one costs nothing but its own line.
    let loaded: Vec<Result<Vec<u8>, String>> = args.images.iter().map(|p| hierarchy::load_image(p, &experiment.data)).collect();
    let good: Vec<Vec<u8>> = loaded.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    let mut answers = if good.is_empty() {
        Vec::new().into_iter()
    } else {
        let client = backend.connect()?;
        let hierarchy = Hierarchy::load(&client, &experiment, &face_dir, &emotion_dir, good.len(), threshold).context("loading the trained models")?;
        let images = hierarchy::images_tensor(&good, experiment.data.image_size)?;
        hierarchy.answer(&images)?.into_iter()
    };
    let emotion_classes: Vec<String> = experiment.task(ModelKind::Emotion).class_names().iter().map(|s| s.to_string()).collect();

    let results: Vec<(String, Result<Answer, String>)> = args
        .images
        .iter()
        .zip(loaded)
        .map(|(path, r)| {
            let answer = match r {
                Ok(_) => answers.next().ok_or_else(|| "no answer came back for this image".to_string()),
                Err(reason) => Err(reason),
            };
            (path.display().to_string(), answer)
        })
        .collect();
    if args.json {
        for (image, result) in &results {
            outln!("{}", json_line(image, result, &emotion_classes))?;
        }
    } else {
        print!("{}", table(&results, &emotion_classes));
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} images could not be read (reasons above); the others were answered", results.len());
    }
    Ok(())
}

fn json_line(image: &str, result: &Result<Answer, String>, classes: &[String]) -> serde_json::Value {
    match result {
        Ok(a) => {
            let probabilities = a
                .emotion
                .as_ref()
                .map(|e| classes.iter().cloned().zip(e.probabilities.iter().map(|&p| json!(p))).collect::<serde_json::Map<String, serde_json::Value>>());
            json!({
                "image": image,
                "face_probability": a.face_probability,
                "is_face": a.is_face,
                "emotion": a.emotion.as_ref().map(|e| e.name.clone()),
                "emotion_probabilities": probabilities,
            })
        }
        Err(reason) => json!({"image": image, "error": reason}),
    }
}

fn table(results: &[(String, Result<Answer, String>)], classes: &[String]) -> String {
    let mut s = String::new();
    let w = results.iter().map(|(p, _)| p.len()).max().unwrap_or(0).max("image".len());
    let answer_w = classes.iter().map(String::len).max().unwrap_or(0).max("not a face".len());
    let _ = write!(s, "{:<w$}  {:>6}  {:<answer_w$}", "image", "face p", "answer");
    for c in classes {
        let _ = write!(s, "  {c:>7}");
    }
    s.push('\n');
    for (image, result) in results {
        match result {
            Ok(a) => {
                let (answer, probs) = match &a.emotion {
                    Some(e) => (e.name.clone(), e.probabilities.iter().map(|p| format!("{p:.3}")).collect::<Vec<_>>()),
                    None => ("not a face".to_string(), vec!["-".to_string(); classes.len()]),
                };
                let _ = write!(s, "{image:<w$}  {:>6.3}  {answer:<answer_w$}", a.face_probability);
                for p in probs {
                    let _ = write!(s, "  {p:>7}");
                }
                s.push('\n');
            }
            Err(reason) => {
                let _ = writeln!(s, "{image:<w$}  {:>6}  error: {reason}", "-");
            }
        }
    }
    s
}
