//! Executing a campaign: one run at a time per backend (the rest queued),
//! every run a child `emotionet train` process so that a crash or a plugin
//! abort takes down only that run; retries that resume from the last
//! checkpoint; a state file in the output folder so a restarted campaign
//! skips finished runs and resumes the others; Ctrl-C (or SIGTERM) forwarded
//! to the running trainers, which checkpoint and stop.
//!
//! Every child (`train`, `eval`, `cloud run`) runs in its own process group,
//! so a terminal's Ctrl-C reaches only the orchestrator. Stopping is
//! therefore the orchestrator's job, for every group it started: SIGTERM to
//! each, then, for a group still alive after [`RunOptions::grace`] (a
//! trainer stuck in a plugin call, or one that ignores the signal), SIGKILL.
//! The campaign returns only once every child has exited: nothing it started
//! outlives it, holding a run folder's lock. A second stop signal does not
//! wait for the grace: [`ChildGroups::kill_all`] (which the CLI calls on it)
//! sends SIGKILL to every group the campaign started, before the process exits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::campaign::{Plan, RunKey};
use crate::pjrt::{self, Backend};
use crate::records::{RunLayout, RunPaths, RunRecord, RunStatus, now_rfc3339};

/// The exit code of a trainer that stopped on request (after checkpointing).
const EXIT_INTERRUPTED: i32 = 130;

/// Where a run or evaluation stands, as kept in `campaign-state.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Running,
    Finished,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    pub status: Status,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Seconds this task's attempts ran, all together.
    #[serde(default)]
    pub wall_s: f64,
    pub dir: PathBuf,
}

/// The campaign's state file: `<output>/campaign-state.json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CampaignState {
    pub schema: u32,
    pub campaign: String,
    pub runs: BTreeMap<String, TaskState>,
    pub evals: BTreeMap<String, TaskState>,
}

pub use crate::records::CAMPAIGN_STATE_FILE as STATE_FILE;

impl CampaignState {
    fn load(path: &Path) -> anyhow::Result<Option<CampaignState>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(
                serde_json::from_slice(&bytes).with_context(|| format!("{} is not a campaign state file; move it away to start afresh", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        crate::fsutil::write_atomic(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// How `emotionet run` runs.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The `emotionet` binary for the child processes.
    pub exe: PathBuf,
    pub plugin: Option<PathBuf>,
    pub progress: bool,
    /// Set on Ctrl-C / SIGTERM.
    pub stop: Arc<AtomicBool>,
    /// How long a child may take to checkpoint and exit after SIGTERM
    /// before its process group is killed.
    pub grace: Duration,
    /// Every process group the campaign starts is registered here, for a
    /// second stop signal to kill at once.
    pub groups: ChildGroups,
}

/// The process groups a campaign started that may still have a process:
/// what a second SIGTERM or Ctrl-C kills at once ([`ChildGroups::kill_all`]),
/// from the signal handler's thread, without waiting for the campaign's
/// async tasks. A group stays listed after its leader exits while any
/// process of it is left (a grandchild).
#[derive(Clone, Debug, Default)]
pub struct ChildGroups(Arc<std::sync::Mutex<BTreeSet<u32>>>);

impl ChildGroups {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u32>> {
        // A panic elsewhere while holding it leaves a set that is still right.
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn started(&self, group: u32) {
        let mut groups = self.lock();
        // Forget the groups that are empty now: their ids may be reused.
        groups.retain(|g| group_alive(*g));
        groups.insert(group);
    }

    fn ended(&self, group: u32) {
        if !group_alive(group) {
            self.lock().remove(&group);
        }
    }

    /// The groups that still have a process.
    pub fn alive(&self) -> Vec<u32> {
        self.lock().iter().copied().filter(|g| group_alive(*g)).collect()
    }

    /// SIGKILL to every group that still has a process; returns how many
    /// it signalled. For the second stop signal: no grace, nothing left.
    pub fn kill_all(&self) -> usize {
        let alive = self.alive();
        for group in &alive {
            tracing::warn!("killing process group {group} (a second stop signal)");
            signal_group(*group, rustix::process::Signal::KILL);
        }
        alive.len()
    }
}

/// The default [`RunOptions::grace`]: a trainer's step and checkpoint take
/// seconds; half of `deploy/vm-campaign.sh stop`'s default grace (120 s), so
/// on a VM the orchestrator ends its children before the script has to.
pub const STOP_GRACE: Duration = Duration::from_secs(60);

/// What a campaign ended with.
#[derive(Clone, Debug)]
pub struct Summary {
    pub finished: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub interrupted: bool,
    pub report: Option<PathBuf>,
    /// Why the report could not be written, when it was due.
    pub report_error: Option<String>,
}

/// How a backend's runs are carried out.
#[derive(Clone, Debug, PartialEq)]
enum Route {
    /// The plugin is on this machine.
    Local,
    /// Through `emotionet cloud run` on a Cloud TPU VM.
    Cloud,
}

struct Shared {
    state: Mutex<CampaignState>,
    state_path: PathBuf,
    children: Mutex<BTreeMap<String, u32>>,
    groups: ChildGroups,
}

impl Shared {
    /// A child (the leader of its own process group `pid`) has started.
    async fn started(&self, name: String, pid: u32) {
        self.groups.started(pid);
        self.children.lock().await.insert(name, pid);
    }

    /// The child `name` has exited.
    async fn ended(&self, name: &str) {
        if let Some(pid) = self.children.lock().await.remove(name) {
            self.groups.ended(pid);
        }
    }

    async fn update(&self, f: impl FnOnce(&mut CampaignState)) -> anyhow::Result<()> {
        let mut state = self.state.lock().await;
        f(&mut state);
        state.save(&self.state_path)
    }
}

/// Whether a run's record says it finished.
fn finished_on_disk(run: &RunPaths) -> bool {
    RunRecord::load(&run.record()).is_ok_and(|r| r.status == RunStatus::Finished)
}

/// Why a trainer that ended without finishing failed: the error its record
/// holds, or, when it died before it could write one, its exit and where
/// its output is.
fn run_failure(run: &RunPaths, exit: std::process::ExitStatus) -> String {
    match RunRecord::load(&run.record()) {
        Ok(RunRecord { status: RunStatus::Failed { error }, .. }) => error,
        Ok(record) => format!("the trainer {exit} and left its run {}; its output is in {}", record.status.observed().label(), run.train_log().display()),
        Err(_) => format!("the trainer {exit} before recording the run; its output is in {}", run.train_log().display()),
    }
}

/// Runs the whole campaign.
pub async fn run_campaign(plan: Plan, options: RunOptions) -> anyhow::Result<Summary> {
    std::fs::create_dir_all(&plan.output).with_context(|| format!("creating {}", plan.output.display()))?;
    let state_path = plan.layout().campaign_state();
    let mut state = CampaignState::load(&state_path)?.unwrap_or_default();
    state.schema = 1;
    state.campaign = plan.name.clone();

    // Decide, before starting anything, how every backend is reached. With a
    // `cloud:` section the TPU runs go to a Cloud TPU VM, whatever plugins
    // this machine happens to have (the VM runs a sub-campaign without one).
    let mut routes: BTreeMap<Backend, Route> = BTreeMap::new();
    for key in &plan.runs {
        if routes.contains_key(&key.backend) {
            continue;
        }
        let experiment = &plan.experiment(&key.experiment).expect("planned from its experiments").1;
        let plugin = options.plugin.as_deref().or(experiment.backend.plugin.as_deref());
        let route = if key.backend == Backend::Tpu && plan.campaign.cloud.is_some() {
            Route::Cloud
        } else {
            match pjrt::resolve_plugin(key.backend, plugin) {
                Ok(_) => Route::Local,
                Err(e) => bail!("{e}; a campaign can send TPU runs to a Cloud TPU VM with a `cloud:` section (see deploy/README.md)"),
            }
        };
        routes.insert(key.backend, route);
    }
    // One plugin serves one backend: `--plugin` (or EMOTIONET_PJRT_PLUGIN)
    // goes to the one lane that runs here, never to every lane.
    let local: Vec<String> = routes.iter().filter(|(_, r)| **r == Route::Local).map(|(b, _)| b.to_string()).collect();
    if let (Some(plugin), true) = (&options.plugin, local.len() > 1) {
        bail!(
            "--plugin / EMOTIONET_PJRT_PLUGIN names one plugin ({}), but this campaign runs {} here and a plugin serves one backend; \
             pick one backend with --backend, or give each experiment its own `backend.plugin`",
            plugin.display(),
            local.join(" and ")
        );
    }

    for key in &plan.runs {
        let run = plan.run_paths(key);
        let dir = run.dir.clone();
        // A run folder written under another version of the experiment file
        // is not this campaign's: say so rather than skip or mix it.
        if let Ok(record) = RunRecord::load(&run.record()) {
            let experiment = &plan.experiment(&key.experiment).expect("planned from its experiments").1;
            let now = experiment.content_hash(key.model)?;
            if record.notes.get("experiment_hash").is_some_and(|then| *then != now) {
                bail!(
                    "{} was trained from a different version of the experiment {} (hash {} there, {now} now); use another --out, or move that run away to retrain it",
                    dir.display(),
                    key.experiment,
                    record.notes["experiment_hash"]
                );
            }
        }
        let entry = state.runs.entry(key.to_string()).or_insert(TaskState {
            status: Status::Pending,
            attempts: 0,
            error: None,
            started_at: None,
            finished_at: None,
            wall_s: 0.0,
            dir: dir.clone(),
        });
        entry.dir = dir.clone();
        if finished_on_disk(&run) {
            entry.status = Status::Finished;
        } else if entry.status != Status::Failed || entry.attempts <= plan.campaign.retries {
            // Unfinished (or failed with attempts left, or a new invocation):
            // run it again; the trainer resumes from its last checkpoint.
            entry.status = Status::Pending;
            entry.attempts = entry.attempts.min(plan.campaign.retries);
        }
    }
    state.save(&state_path)?;
    let shared = Arc::new(Shared { state: Mutex::new(state), state_path, children: Mutex::new(BTreeMap::new()), groups: options.groups.clone() });
    let plan = Arc::new(plan);

    // Ctrl-C / SIGTERM: forward to every child group (trainers checkpoint
    // and exit 130), then kill the groups that outlive the grace.
    let forwarder = {
        let shared = shared.clone();
        let stop = options.stop.clone();
        let grace = options.grace;
        tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            stop_children(&shared, grace).await;
        })
    };

    let multi = indicatif::MultiProgress::with_draw_target(if options.progress {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    });
    let mut lanes = Vec::new();
    for (backend, route) in &routes {
        let keys: Vec<RunKey> = plan.runs.iter().filter(|k| k.backend == *backend).cloned().collect();
        let (plan, options, shared, multi) = (plan.clone(), options.clone(), shared.clone(), multi.clone());
        let route = route.clone();
        lanes.push(tokio::spawn(async move {
            match route {
                Route::Local => run_lane(&plan, &options, &shared, &multi, keys).await,
                Route::Cloud => run_cloud(&plan, &options, &shared, keys).await,
            }
        }));
    }
    // The first lane that fails stops the others (and their children):
    // nothing this campaign started is left running when it returns.
    let mut lane_error = None;
    for lane in lanes {
        if let Err(e) = lane.await.context("a campaign lane panicked").and_then(|r| r) {
            options.stop.store(true, Ordering::SeqCst);
            lane_error.get_or_insert(e);
        }
    }
    if let Some(e) = lane_error {
        let _ = forwarder.await;
        return Err(e);
    }

    // The hierarchy evaluation, where both models of an experiment finished.
    if plan.campaign.hierarchy_eval && !options.stop.load(Ordering::SeqCst) {
        run_evals(&plan, &options, &shared, &routes).await?;
    }
    if options.stop.load(Ordering::SeqCst) {
        // Every child group ended (or was killed) before we report.
        let _ = forwarder.await;
    } else {
        forwarder.abort();
    }

    let state = shared.state.lock().await.clone();
    let finished: Vec<String> = state.runs.iter().filter(|(_, s)| s.status == Status::Finished).map(|(k, _)| k.clone()).collect();
    let failed: Vec<(String, String)> = state
        .runs
        .iter()
        .chain(state.evals.iter())
        .filter(|(_, s)| s.status == Status::Failed)
        .map(|(k, s)| (k.clone(), s.error.clone().unwrap_or_default()))
        .collect();
    let interrupted = options.stop.load(Ordering::SeqCst);
    let (mut report, mut report_error) = (None, None);
    if plan.campaign.report && !interrupted && !finished.is_empty() {
        let out = plan.layout().report_dir();
        match crate::report::write_report(&plan.output, &out, crate::report::ReportOptions { skip_invalid: true }) {
            Ok(_) => report = Some(out.join("report.md")),
            Err(e) => report_error = Some(format!("{e:#}")),
        }
    }
    Ok(Summary { finished, failed, interrupted, report, report_error })
}

/// Stops every child group: SIGTERM to each (trainers checkpoint and
/// exit), SIGKILL to each group still alive after `grace`. Returns when no
/// group it signalled has a process left.
async fn stop_children(shared: &Shared, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    let mut signalled: BTreeMap<u32, String> = BTreeMap::new();
    loop {
        // A child started just as the stop came is signalled too.
        for (name, pid) in shared.children.lock().await.iter() {
            if !signalled.contains_key(pid) {
                tracing::info!("asking {name} (process group {pid}) to checkpoint and stop");
                signal_group(*pid, rustix::process::Signal::TERM);
                signalled.insert(*pid, name.clone());
            }
        }
        let alive: Vec<u32> = signalled.keys().copied().filter(|g| group_alive(*g)).collect();
        if alive.is_empty() && shared.children.lock().await.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            for group in alive {
                tracing::warn!("{} (process group {group}) outlived its {}s grace after SIGTERM: killing it", signalled[&group], grace.as_secs_f64());
                signal_group(group, rustix::process::Signal::KILL);
            }
            // The killed leaders' lanes see their exit and drop them from `children`.
            if shared.children.lock().await.is_empty() && signalled.keys().all(|g| !group_alive(*g)) {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `signal` to process group `group` (gone already: nothing to do).
fn signal_group(group: u32, signal: rustix::process::Signal) {
    let Some(pid) = i32::try_from(group).ok().and_then(rustix::process::Pid::from_raw) else { return };
    if let Err(e) = rustix::process::kill_process_group(pid, signal)
        && e != rustix::io::Errno::SRCH
    {
        tracing::warn!("cannot signal process group {group}: {e}");
    }
}

/// Whether any process is in process group `group` (from /proc: a group
/// with a member keeps its id, so this never confuses a reused pid's group).
fn group_alive(group: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else { return true };
    entries.flatten().any(|entry| {
        let is_pid = entry.file_name().to_str().is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        is_pid && std::fs::read_to_string(entry.path().join("stat")).ok().and_then(|stat| process_group_of(&stat)) == Some(group)
    })
}

/// The process group field of a `/proc/PID/stat` line (the fields after the
/// command name, which may itself hold spaces and parentheses: state, ppid, pgrp).
fn process_group_of(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// The runs of one local backend, one after the other.
async fn run_lane(plan: &Plan, options: &RunOptions, shared: &Shared, multi: &indicatif::MultiProgress, keys: Vec<RunKey>) -> anyhow::Result<()> {
    for key in keys {
        let name = key.to_string();
        loop {
            if options.stop.load(Ordering::SeqCst) {
                return Ok(());
            }
            let (status, attempts) = {
                let s = shared.state.lock().await;
                let t = &s.runs[&name];
                (t.status.clone(), t.attempts)
            };
            let run = plan.run_paths(&key);
            let dir = run.dir.clone();
            if status == Status::Finished || status == Status::Failed {
                break;
            }
            let (path, experiment) = plan.experiment(&key.experiment).expect("planned from its experiments");
            let total = experiment.training(key.model).map_or(0, |t| t.total_steps());
            shared
                .update(|s| {
                    let t = s.runs.get_mut(&name).expect("present");
                    t.status = Status::Running;
                    t.attempts += 1;
                    t.started_at.get_or_insert_with(now_rfc3339);
                })
                .await?;
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(run.train_log())
                .with_context(|| format!("opening {}", run.train_log().display()))?;
            let mut command = tokio::process::Command::new(&options.exe);
            command
                .arg("train")
                .arg(path)
                .args([
                    "--model",
                    key.model.as_str(),
                    "--backend",
                    &key.backend.to_string(),
                    "--repeat",
                    &key.repeat.to_string(),
                    "--resume",
                    "--quiet",
                    "--out",
                ])
                .arg(&plan.output)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                // Its own process group: a terminal's Ctrl-C reaches only us,
                // and we forward it once, so a trainer is never signalled twice.
                .process_group(0);
            lane_plugin(&mut command, options);
            tracing::info!("{name}: attempt {}", attempts + 1);
            let started = Instant::now();
            let mut child = command.spawn().with_context(|| format!("starting {}", options.exe.display()))?;
            if let Some(pid) = child.id() {
                shared.started(name.clone(), pid).await;
            }
            let bar = multi.add(indicatif::ProgressBar::new(total));
            bar.set_style(
                indicatif::ProgressStyle::with_template("{prefix:<28} [{bar:30}] {pos}/{len} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(name.clone());
            let exit = loop {
                tokio::select! {
                    status = child.wait() => break status?,
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        if let Some((step, msg)) = latest_point(&run) {
                            bar.set_position(step);
                            bar.set_message(msg);
                        }
                    }
                }
            };
            shared.ended(&name).await;
            bar.finish_and_clear();
            let wall = started.elapsed().as_secs_f64();
            let code = exit.code();
            let finished = finished_on_disk(&run);
            let retries = plan.campaign.retries;
            shared
                .update(|s| {
                    let t = s.runs.get_mut(&name).expect("present");
                    t.wall_s += wall;
                    if finished {
                        t.status = Status::Finished;
                        t.error = None;
                        t.finished_at = Some(now_rfc3339());
                    } else if code == Some(EXIT_INTERRUPTED) || options.stop.load(Ordering::SeqCst) {
                        t.status = Status::Pending;
                        t.attempts -= 1; // a requested stop is not a failed attempt
                    } else {
                        t.error = Some(run_failure(&run, exit));
                        t.status = if t.attempts > retries { Status::Failed } else { Status::Pending };
                    }
                })
                .await?;
            let now = shared.state.lock().await.runs[&name].clone();
            match now.status {
                Status::Finished => multi.println(format!("{name}: finished in {wall:.1} s"))?,
                Status::Failed => multi.println(format!("{name}: FAILED after {} attempts: {}", now.attempts, now.error.unwrap_or_default()))?,
                _ if !options.stop.load(Ordering::SeqCst) => {
                    multi.println(format!("{name}: attempt {} failed ({}); retrying from the last checkpoint", now.attempts, now.error.unwrap_or_default()))?
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// A child of a local lane gets the campaign's plugin as `--plugin`, and
/// never an inherited EMOTIONET_PJRT_PLUGIN: that variable names one
/// backend's plugin and would reach every lane.
fn lane_plugin(command: &mut tokio::process::Command, options: &RunOptions) {
    command.env_remove("EMOTIONET_PJRT_PLUGIN");
    if let Some(p) = &options.plugin {
        command.arg("--plugin").arg(p);
    }
}

/// The newest step and a short message from a run's training curve (a
/// curve being written may end in a cut line; the reader drops it).
fn latest_point(run: &RunPaths) -> Option<(u64, String)> {
    let curve = crate::records::read_metrics(&run.metrics()).ok()?;
    let p = curve.points.last()?;
    Some((p.step, format!("{} loss {:.3} acc {:.3}", p.split, p.loss, p.accuracy)))
}

/// The TPU runs, delegated to a Cloud TPU VM through `emotionet cloud run`.
async fn run_cloud(plan: &Plan, options: &RunOptions, shared: &Shared, keys: Vec<RunKey>) -> anyhow::Result<()> {
    let cloud = plan.campaign.cloud.clone().unwrap_or_default();
    let cwd = std::env::current_dir()?;
    let local_out = plan.output.join("cloud-tpu");
    std::fs::create_dir_all(&local_out)?;
    // The sub-campaign and every experiment must sit inside the working
    // folder: `cloud run` ships them with their relative paths.
    let relative = |p: &Path| -> anyhow::Result<PathBuf> {
        let abs = if p.is_absolute() { p.to_path_buf() } else { cwd.join(p) };
        let abs = std::fs::canonicalize(&abs).with_context(|| format!("resolving {}", abs.display()))?;
        let root = std::fs::canonicalize(&cwd)?;
        abs.strip_prefix(&root)
            .map(Path::to_path_buf)
            .map_err(|_| anyhow::anyhow!("{} is outside the working folder {}; `cloud run` ships only files inside it", abs.display(), root.display()))
    };
    let sub_path = local_out.join("tpu-campaign.yaml");
    let sub_rel = relative(&local_out)?.join("tpu-campaign.yaml");
    let depth = sub_rel.components().count() - 1;
    let up = "../".repeat(depth);
    let mut experiments: Vec<String> = Vec::new();
    let mut ship: Vec<PathBuf> = Vec::new();
    for key in &keys {
        let (path, experiment) = plan.experiment(&key.experiment).expect("planned");
        let rel = relative(path)?;
        let entry = format!("{up}{}", rel.display());
        if !experiments.contains(&entry) {
            experiments.push(entry);
            ship.push(rel);
            // The real data it reads travels too (with the same relative
            // path, which the VM's campaign resolves from the same folder):
            // the VM has the experiment files, not this machine's data.
            for part in experiment.data.source.parts() {
                for data in part.real.iter().flat_map(|r| r.paths()) {
                    let inside = data.is_relative() && data.components().all(|c| matches!(c, std::path::Component::Normal(_) | std::path::Component::CurDir));
                    if !inside {
                        anyhow::bail!(
                            "the TPU runs of {} read {}, which the VM cannot reach: `cloud run` ships only paths relative to the working folder {}",
                            path.display(),
                            data.display(),
                            cwd.display()
                        );
                    }
                    if !ship.contains(&data) {
                        ship.push(data);
                    }
                }
            }
        }
    }
    let models: Vec<&str> = {
        let mut m: Vec<&str> = keys.iter().map(|k| k.model.as_str()).collect();
        m.sort();
        m.dedup();
        m
    };
    let sub = serde_json::json!({
        "name": format!("{}-tpu", plan.name),
        "experiments": experiments,
        "backends": ["tpu"],
        "repeats": plan.campaign.repeats,
        "retries": plan.campaign.retries,
        "models": models,
        "hierarchy_eval": plan.campaign.hierarchy_eval,
        "report": false,
    });
    crate::fsutil::write_atomic(&sub_path, serde_yaml::to_string(&sub)?.as_bytes())?;
    let names: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    shared
        .update(|s| {
            for n in &names {
                let t = s.runs.get_mut(n).expect("present");
                if t.status == Status::Pending {
                    t.status = Status::Running;
                    t.attempts += 1;
                    t.started_at.get_or_insert_with(now_rfc3339);
                }
            }
        })
        .await?;
    let mut command = tokio::process::Command::new(&options.exe);
    command.arg("cloud");
    if let Some(state) = &cloud.state {
        command.arg("--state").arg(state);
    }
    command.arg("run").arg(&sub_rel).arg("--out").arg(&local_out);
    for s in &ship {
        command.arg("--ship").arg(s);
    }
    // The VM picks its own plugin; ours (a CPU or GPU one) must not travel.
    command.args(&cloud.args).stdin(Stdio::null()).process_group(0).env_remove("EMOTIONET_PJRT_PLUGIN");
    let log = std::fs::OpenOptions::new().create(true).append(true).open(local_out.join("cloud.log"))?;
    command.stdout(log.try_clone()?).stderr(log);
    tracing::info!("sending {} TPU runs to the Cloud TPU VM (log: {}/cloud.log)", keys.len(), local_out.display());
    let started = Instant::now();
    let mut child = command.spawn().context("starting `emotionet cloud run`")?;
    if let Some(pid) = child.id() {
        shared.started("cloud".into(), pid).await;
    }
    let exit = child.wait().await?;
    shared.ended("cloud").await;
    let wall = started.elapsed().as_secs_f64();
    // Its own error line says why (no VM recorded, a refused token...), so
    // the campaign's error carries it instead of only pointing at the log.
    let said = std::fs::read_to_string(local_out.join("cloud.log"))
        .ok()
        .and_then(|log| log.lines().rev().find(|l| l.starts_with("error: ")).map(|l| format!(": {}", l.trim_start_matches("error: "))))
        .unwrap_or_default();
    let error = format!("`emotionet cloud run` {exit}{said}; its output is in {}", local_out.join("cloud.log").display());
    shared
        .update(|s| {
            for key in &keys {
                let run = RunLayout::new(&local_out).run(&key.experiment, key.model, key.backend, key.repeat);
                let dir = run.dir.clone();
                let t = s.runs.get_mut(&key.to_string()).expect("present");
                t.dir = dir;
                t.wall_s += wall;
                if finished_on_disk(&run) {
                    t.status = Status::Finished;
                    t.finished_at = Some(now_rfc3339());
                    t.error = None;
                } else if options.stop.load(Ordering::SeqCst) {
                    t.status = Status::Pending;
                } else {
                    t.status = Status::Failed;
                    t.error = Some(error.clone());
                }
            }
        })
        .await?;
    Ok(())
}

/// `emotionet eval` for each (experiment, backend, repeat) whose two models
/// finished locally (a delegated campaign evaluates on the VM).
async fn run_evals(plan: &Plan, options: &RunOptions, shared: &Shared, routes: &BTreeMap<Backend, Route>) -> anyhow::Result<()> {
    let mut groups: Vec<(String, Backend, u32)> = plan.runs.iter().map(|k| (k.experiment.clone(), k.backend, k.repeat)).collect();
    groups.sort();
    groups.dedup();
    for (experiment, backend, repeat) in groups {
        if options.stop.load(Ordering::SeqCst) {
            break;
        }
        if routes.get(&backend) != Some(&Route::Local) {
            continue;
        }
        let both_done = {
            let s = shared.state.lock().await;
            crate::models::ModelKind::ALL.iter().all(|m| {
                let key = RunKey { experiment: experiment.clone(), model: *m, backend, repeat };
                s.runs.get(&key.to_string()).is_some_and(|t| t.status == Status::Finished)
            })
        };
        if !both_done {
            continue;
        }
        let name = format!("{experiment}/hierarchy/{backend}/r{repeat}");
        let dir = plan.layout().hierarchy(&experiment, backend, repeat, None);
        if dir.join(crate::records::HIERARCHY_FILE).exists() {
            shared
                .update(|s| {
                    s.evals.insert(
                        name.clone(),
                        TaskState { status: Status::Finished, attempts: 0, error: None, started_at: None, finished_at: None, wall_s: 0.0, dir: dir.clone() },
                    );
                })
                .await?;
            continue;
        }
        std::fs::create_dir_all(&dir)?;
        let (path, _) = plan.experiment(&experiment).expect("planned");
        let log_path = dir.join(crate::records::EVAL_LOG);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).with_context(|| format!("opening {}", log_path.display()))?;
        let started = Instant::now();
        let mut command = tokio::process::Command::new(&options.exe);
        command.arg("eval").arg(path).args(["--backend", &backend.to_string(), "--repeat", &repeat.to_string(), "--out"]).arg(&plan.output);
        lane_plugin(&mut command, options);
        let mut child = command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0).spawn().context("starting `emotionet eval`")?;
        if let Some(pid) = child.id() {
            shared.started(name.clone(), pid).await;
        }
        let exit = child.wait().await;
        shared.ended(&name).await;
        let exit = exit?;
        let ok = exit.success();
        let error = if ok { None } else { Some(format!("`emotionet eval` {exit}; its output is in {}", log_path.display())) };
        shared
            .update(|s| {
                s.evals.insert(
                    name.clone(),
                    TaskState {
                        status: if ok { Status::Finished } else { Status::Failed },
                        attempts: 1,
                        error,
                        started_at: None,
                        finished_at: Some(now_rfc3339()),
                        wall_s: started.elapsed().as_secs_f64(),
                        dir: dir.clone(),
                    },
                );
            })
            .await?;
    }
    Ok(())
}
