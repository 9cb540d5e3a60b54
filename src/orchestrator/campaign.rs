//! Campaign files and the list of runs they expand to.
//!
//! A campaign is experiments x backends x repeats (x models). `emotionet run`
//! also accepts a plain experiment file, as a campaign of that experiment on
//! its own backend, once.
//!
//! ```yaml
//! name: cpu-vs-tpu
//! experiments: [paper-cpu.yaml, paper-tpu.yaml]   # relative to this file
//! backends: [cpu, tpu]     # default: each experiment's own backend
//! also_on: {paper-cpu.yaml: [tpu]}   # and these experiments on more backends too
//! repeats: 1
//! retries: 1               # extra attempts of a failed run (each resumes)
//! cloud: {}               # TPU runs go to the Cloud TPU VM `emotionet cloud up` made
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::experiment::{Experiment, ExperimentError};
use crate::models::ModelKind;
use crate::pjrt::Backend;
use crate::records::{RunLayout, RunPaths};

/// How runs on a backend with no local plugin reach a Cloud TPU VM: the
/// arguments of `emotionet cloud run` (the VM must be up: `emotionet cloud up`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudTarget {
    /// The cloud state file that records the VM, if `cloud up` was given
    /// `--state FILE` (relative to the folder `emotionet run` runs in).
    /// Default: the file the cloud commands use without `--state`
    /// (`StateStore::default_file`), so `cloud up` and a campaign agree.
    #[serde(default)]
    pub state: Option<PathBuf>,
    /// Extra arguments for `emotionet cloud run` (e.g. `--via`, `--api-url`, `--sync-every`).
    #[serde(default)]
    pub args: Vec<String>,
}

/// A campaign file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    /// Default: the file's stem.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: String,
    /// Experiment files, relative to the campaign file's folder.
    pub experiments: Vec<PathBuf>,
    /// Backends every experiment runs on; empty = each experiment's own.
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// More backends for some experiments, keyed by the file as written in
    /// `experiments` (e.g. `paper-cpu.yaml: [tpu]`): the same work on another
    /// platform as well, which the report turns into a same-work speedup.
    #[serde(default)]
    pub also_on: std::collections::BTreeMap<PathBuf, Vec<Backend>>,
    #[serde(default = "one")]
    pub repeats: u32,
    /// Extra attempts of a failed run; each attempt resumes from the last checkpoint.
    #[serde(default = "one")]
    pub retries: u32,
    /// Only these models; empty = every model of each experiment.
    #[serde(default)]
    pub models: Vec<ModelKind>,
    /// Where runs go; default: the first experiment's `output`.
    #[serde(default)]
    pub output: Option<PathBuf>,
    /// Evaluate the hierarchy when both models of an experiment are trained.
    #[serde(default = "yes")]
    pub hierarchy_eval: bool,
    /// Write the report when the campaign ends.
    #[serde(default = "yes")]
    pub report: bool,
    #[serde(default)]
    pub cloud: Option<CloudTarget>,
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}

/// One training run of a campaign.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RunKey {
    /// The experiment's name.
    pub experiment: String,
    pub model: ModelKind,
    pub backend: Backend,
    pub repeat: u32,
}

impl std::fmt::Display for RunKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}/r{}", self.experiment, self.model, self.backend, self.repeat)
    }
}

/// A campaign with its experiments read and checked.
#[derive(Clone, Debug)]
pub struct Plan {
    pub name: String,
    pub campaign: Campaign,
    /// The file the campaign came from.
    pub path: PathBuf,
    /// (path as given relative to the working folder, experiment).
    pub experiments: Vec<(PathBuf, Experiment)>,
    pub output: PathBuf,
    pub runs: Vec<RunKey>,
}

impl Plan {
    /// Reads a campaign file, or an experiment file as a one-experiment
    /// campaign; then reads and validates every experiment.
    pub fn load(path: &Path, output: Option<&Path>, backend: Option<Backend>) -> Result<Plan, ExperimentError> {
        let text = std::fs::read_to_string(path).map_err(|source| ExperimentError::Io { path: path.to_path_buf(), source })?;
        let syntax = |e: serde_yaml::Error| ExperimentError::Syntax { path: path.to_path_buf(), message: e.to_string() };
        let value: serde_yaml::Value = serde_yaml::from_str(&text).map_err(syntax)?;
        let is_campaign = value.as_mapping().is_some_and(|m| m.contains_key("experiments"));
        let (campaign, experiments) = if is_campaign {
            let campaign: Campaign = serde_yaml::from_str(&text).map_err(syntax)?;
            let base = path.parent().unwrap_or(Path::new(""));
            let mut experiments = Vec::new();
            for rel in &campaign.experiments {
                let p = if rel.is_absolute() { rel.clone() } else { base.join(rel) };
                experiments.push((p.clone(), Experiment::from_file(&p)?));
            }
            (campaign, experiments)
        } else {
            let experiment = Experiment::from_text(&text, path)?;
            let campaign = Campaign {
                name: Some(experiment.name.clone()),
                description: experiment.description.clone(),
                experiments: vec![path.to_path_buf()],
                backends: vec![],
                also_on: Default::default(),
                repeats: 1,
                retries: 1,
                models: vec![],
                output: None,
                hierarchy_eval: true,
                report: true,
                cloud: None,
            };
            (campaign, vec![(path.to_path_buf(), experiment)])
        };
        let invalid =
            |key: &str, value: String, allowed: &str| ExperimentError::Invalid { path: path.to_path_buf(), key: key.into(), value, allowed: allowed.into() };
        if experiments.is_empty() {
            return Err(invalid("experiments", "[]".into(), "at least one experiment file"));
        }
        if campaign.repeats == 0 {
            return Err(invalid("repeats", "0".into(), "at least 1"));
        }
        for (file, backends) in &campaign.also_on {
            if !campaign.experiments.contains(file) {
                let listed: Vec<String> = campaign.experiments.iter().map(|e| e.display().to_string()).collect();
                return Err(invalid(
                    &format!("also_on.{}", file.display()),
                    format!("[{}]", backends.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ")),
                    &format!("a file listed in experiments: {}", listed.join(", ")),
                ));
            }
            if backends.is_empty() {
                return Err(invalid(&format!("also_on.{}", file.display()), "[]".into(), "at least one backend (cpu, gpu, tpu)"));
            }
        }
        let mut names: Vec<&str> = experiments.iter().map(|(_, e)| e.name.as_str()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(invalid("experiments", w[0].to_string(), "experiments with distinct names (the name is the run folder)"));
        }
        let name = campaign.name.clone().unwrap_or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "campaign".into()));
        let output = output.map(Path::to_path_buf).or_else(|| campaign.output.clone()).unwrap_or_else(|| experiments[0].1.output.clone());
        let mut runs = Vec::new();
        for (i, (_, e)) in experiments.iter().enumerate() {
            let mut backends = match backend {
                Some(b) => vec![b],
                None if campaign.backends.is_empty() => vec![e.backend.kind],
                None => campaign.backends.clone(),
            };
            // `--backend B` runs the campaign on B alone (the VM's part of a
            // campaign runs that way), so `also_on` adds nothing then.
            if backend.is_none()
                && let Some(more) = campaign.experiments.get(i).and_then(|file| campaign.also_on.get(file))
            {
                for b in more {
                    if !backends.contains(b) {
                        backends.push(*b);
                    }
                }
            }
            for b in backends {
                for repeat in 0..campaign.repeats {
                    for (kind, _) in e.trainings() {
                        if campaign.models.is_empty() || campaign.models.contains(&kind) {
                            runs.push(RunKey { experiment: e.name.clone(), model: kind, backend: b, repeat });
                        }
                    }
                }
            }
        }
        if runs.is_empty() {
            return Err(invalid("models", format!("{:?}", campaign.models), "models that the experiments train"));
        }
        Ok(Plan { name, campaign, path: path.to_path_buf(), experiments, output, runs })
    }

    pub fn experiment(&self, name: &str) -> Option<&(PathBuf, Experiment)> {
        self.experiments.iter().find(|(_, e)| e.name == name)
    }

    /// The output folder's layout.
    pub fn layout(&self) -> RunLayout {
        RunLayout::new(&self.output)
    }

    /// The run's folder.
    pub fn run_paths(&self, key: &RunKey) -> RunPaths {
        self.layout().run(&key.experiment, key.model, key.backend, key.repeat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_campaign_expands_to_experiments_backends_repeats_and_models() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", "name: a\nmodels:\n  face: {epochs: 1}\n  emotion: {epochs: 1}\n");
        write(dir.path(), "b.yaml", "name: b\nbackend: {kind: tpu}\nmodels:\n  face: {epochs: 1}\n");
        let c = write(dir.path(), "c.yaml", "experiments: [a.yaml, b.yaml]\nbackends: [cpu, tpu]\nrepeats: 2\n");
        let plan = Plan::load(&c, None, None).unwrap();
        assert_eq!(plan.name, "c");
        assert_eq!(plan.runs.len(), (2 + 1) * 2 * 2);
        let also = write(dir.path(), "d.yaml", "experiments: [a.yaml, b.yaml]\nalso_on: {a.yaml: [tpu]}\n");
        let plan = Plan::load(&also, None, None).unwrap();
        let on = |exp: &str| plan.runs.iter().filter(|r| r.experiment == exp).map(|r| r.backend).collect::<std::collections::BTreeSet<_>>();
        assert_eq!(on("a"), [Backend::Cpu, Backend::Tpu].into_iter().collect());
        assert_eq!(on("b"), [Backend::Tpu].into_iter().collect());
        let bad = write(dir.path(), "e.yaml", "experiments: [a.yaml]\nalso_on: {b.yaml: [tpu]}\n");
        let err = Plan::load(&bad, None, None).unwrap_err().to_string();
        assert!(err.contains("also_on.b.yaml") && err.contains("a file listed in experiments: a.yaml"), "{err}");
        let only_tpu = Plan::load(&c, Some(Path::new("/tmp/o")), Some(Backend::Tpu)).unwrap();
        assert!(only_tpu.runs.iter().all(|r| r.backend == Backend::Tpu));
        assert_eq!(only_tpu.run_paths(&only_tpu.runs[0]).dir, PathBuf::from("/tmp/o/a/face/tpu-r0"));
        // An experiment file is a campaign of itself.
        let single = Plan::load(&dir.path().join("b.yaml"), None, None).unwrap();
        assert_eq!(single.runs, vec![RunKey { experiment: "b".into(), model: ModelKind::Face, backend: Backend::Tpu, repeat: 0 }]);
    }

    #[test]
    fn bad_campaigns_name_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", "name: a\nmodels:\n  face: {epochs: 1}\n");
        let c = write(dir.path(), "c.yaml", "experiments: [a.yaml]\nrepeat: 2\n");
        let err = Plan::load(&c, None, None).unwrap_err().to_string();
        assert!(err.contains("c.yaml") && err.contains("unknown field `repeat`"), "{err}");
        let c = write(dir.path(), "d.yaml", "experiments: [missing.yaml]\n");
        let err = Plan::load(&c, None, None).unwrap_err().to_string();
        assert!(err.contains("missing.yaml"), "{err}");
        let c = write(dir.path(), "e.yaml", "experiments: [a.yaml, a.yaml]\n");
        assert!(Plan::load(&c, None, None).unwrap_err().to_string().contains("distinct names"));
        let c = write(dir.path(), "f.yaml", "experiments: [a.yaml]\nmodels: [emotion]\n");
        assert!(Plan::load(&c, None, None).unwrap_err().to_string().contains("models that the experiments train"));
    }
}
