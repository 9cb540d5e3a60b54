//! Running a campaign on a TPU VM, surviving preemption.
//!
//! The steps of [`run_campaign`], on any [`RemoteHost`]:
//! 1. ship the `emotionet` binary to `~/{workdir}/bin/` and the campaign
//!    and experiment files to `~/{workdir}/project/` (relative paths kept),
//!    and check that the binary starts there;
//! 2. if the VM's output folder `~/{workdir}/out` is empty (a fresh VM) and
//!    the local copy is not, push the local copy up: this is how a campaign's
//!    state survives the loss of the VM;
//! 3. run the setup command on every worker (by default: install
//!    `libtpu==0.0.30`, PJRT C API 0.81, into `~/{workdir}/deps/pjrt`);
//! 4. run the campaign command on every worker (by default
//!    `emotionet run CAMPAIGN --out OUT --backend tpu`) under `flock`, so two
//!    copies never share an output folder;
//! 5. while it runs, poll the node every `poll_every`, and every `sync_every`
//!    copy the remote output folder into the local one;
//! 6. if the node turns PREEMPTED or TERMINATED: stop waiting, delete and
//!    recreate the VM from its recorded spec, and start again at 1. The
//!    orchestrator keeps its state in the output folder, so the campaign
//!    resumes from the last checkpoint that reached the local copy (work done
//!    after the last sync is redone; `sync_every` bounds it);
//! 7. on success, copy the output folder one last time.
//!
//! Where state lives: only in the output folder. The VM's disk is treated as
//! disposable; the local folder (`--out`) is the durable copy.

use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use super::api::NodeState;
use super::error::{CloudError, Result};
use super::events::{CloudEvent, Events};
use super::remote::{self, RemoteHost, Worker, sh_quote};
use super::state::VmRecord;
use super::vm::{Health, VmManager};

/// The remote working folder, relative to the remote home.
pub const DEFAULT_WORKDIR: &str = "emotionet-cloud";
/// The pinned TPU plugin: PJRT C API 0.81, like our CPU plugin and header.
pub const LIBTPU_PACKAGE: &str = "libtpu==0.0.30";
/// Installs pip if the image lacks it, then libtpu (once) into `{deps}/pjrt`,
/// where `EMOTIONET_DEPS={deps}` makes `emotionet` find it.
pub const DEFAULT_SETUP: &str = "python3 -m pip --version >/dev/null 2>&1 || { sudo apt-get update -qq && sudo apt-get install -y -qq python3-pip; }; \
test -f {deps}/pjrt/libtpu/libtpu.so || python3 -m pip install --quiet --disable-pip-version-check --no-deps --target {deps}/pjrt libtpu==0.0.30";
/// The campaign on all 8 cores of the VM, resumable from `{out}`.
pub const DEFAULT_COMMAND: &str = "EMOTIONET_DEPS={deps} {bin} run {campaign} --out {out} --backend tpu";
/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &["bin", "campaign", "out", "deps", "workdir", "project"];

#[derive(Clone, Debug)]
pub struct CampaignPlan {
    /// Local folder that shipped paths are relative to (the checkout).
    pub project_root: PathBuf,
    /// The campaign file, relative to `project_root`.
    pub campaign: PathBuf,
    /// More files or folders to ship (experiment files, data), relative to `project_root`.
    pub ship: Vec<PathBuf>,
    /// The `emotionet` binary to run on the VM (Linux x86_64, glibc <= the VM's).
    pub binary: PathBuf,
    /// The durable local copy of the remote output folder.
    pub local_out: PathBuf,
    pub workdir: String,
    pub setup_template: String,
    pub command_template: String,
    pub poll_every: Duration,
    pub sync_every: Duration,
    /// Preemptions survived before giving up.
    pub max_recreations: u32,
    /// Limit for each shipping, setup or sync step.
    pub step_timeout: Duration,
}

impl CampaignPlan {
    /// A plan with the default templates and intervals.
    pub fn new(project_root: impl Into<PathBuf>, campaign: impl Into<PathBuf>, binary: impl Into<PathBuf>, local_out: impl Into<PathBuf>) -> Self {
        CampaignPlan {
            project_root: project_root.into(),
            campaign: campaign.into(),
            ship: Vec::new(),
            binary: binary.into(),
            local_out: local_out.into(),
            workdir: DEFAULT_WORKDIR.to_string(),
            setup_template: DEFAULT_SETUP.to_string(),
            command_template: DEFAULT_COMMAND.to_string(),
            poll_every: Duration::from_secs(30),
            sync_every: Duration::from_secs(300),
            max_recreations: 5,
            step_timeout: Duration::from_secs(20 * 60),
        }
    }

    fn remote(&self, rest: &str) -> String {
        format!("{}/{rest}", self.workdir.trim_end_matches('/'))
    }

    /// The remote output folder, relative to the remote home.
    pub fn remote_out(&self) -> String {
        self.remote("out")
    }

    fn binary_name(&self) -> String {
        self.binary.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "emotionet".into())
    }

    /// A remote path as a shell word that works from any folder: `"$HOME"/'rel'`.
    fn home_path(rel: &str) -> String {
        format!("\"$HOME\"/{}", sh_quote(rel))
    }

    /// Fills a template's placeholders with shell-quoted remote paths.
    pub fn render(&self, template: &str) -> Result<String> {
        let bin = Self::home_path(&self.remote(&format!("bin/{}", self.binary_name())));
        let campaign = sh_quote(&self.campaign.to_string_lossy());
        let out = Self::home_path(&self.remote_out());
        let deps = Self::home_path(&self.remote("deps"));
        let workdir = Self::home_path(&self.workdir);
        let project = Self::home_path(&self.remote("project"));
        let mut rendered = String::new();
        let mut rest = template;
        // `{word}` (lowercase letters and '_') is a placeholder; every other
        // brace, like bash's `{ ...; }`, is literal text.
        while let Some(open) = rest.find('{') {
            rendered.push_str(&rest[..open]);
            let tail = &rest[open..];
            let word_len = tail[1..].bytes().take_while(|b| b.is_ascii_lowercase() || *b == b'_').count();
            if word_len == 0 || tail.as_bytes().get(word_len + 1) != Some(&b'}') {
                rendered.push('{');
                rest = &tail[1..];
                continue;
            }
            let value = match &tail[1..=word_len] {
                "bin" => &bin,
                "campaign" => &campaign,
                "out" => &out,
                "deps" => &deps,
                "workdir" => &workdir,
                "project" => &project,
                other => {
                    return Err(CloudError::Template {
                        template: template.to_string(),
                        message: format!(
                            "unknown placeholder {{{other}}}; allowed: {} (a literal brace block needs a space: `{{ {other} }}`)",
                            PLACEHOLDERS.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ")
                        ),
                    });
                }
            };
            rendered.push_str(value);
            rest = &tail[word_len + 2..];
        }
        rendered.push_str(rest);
        Ok(rendered)
    }

    /// Checks every local input before anything is started or paid for.
    pub fn validate(&self) -> Result<()> {
        if !self.binary.is_file() {
            return Err(CloudError::io(&self.binary, "no such binary to ship (build it with `cargo build --release`, or pass --binary)"));
        }
        for path in std::iter::once(&self.campaign).chain(&self.ship) {
            let inside = path.is_relative() && path.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
            if !inside {
                return Err(CloudError::io(path, format!("shipped paths must lie inside {} and be given relative to it", self.project_root.display())));
            }
            let full = self.project_root.join(path);
            if !full.exists() {
                return Err(CloudError::io(full, "no such file or folder to ship"));
            }
        }
        if self.workdir.is_empty() || self.workdir.starts_with('/') || self.workdir.contains("..") {
            return Err(CloudError::InvalidName {
                what: "remote workdir",
                value: self.workdir.clone(),
                rule: "a folder relative to the remote home, without '..'",
            });
        }
        self.render(&self.setup_template)?;
        self.render(&self.command_template)?;
        Ok(())
    }

    /// The script the campaign runs as: in the shipped project, under the lock.
    fn campaign_script(&self) -> Result<String> {
        let command = self.render(&self.command_template)?;
        Ok(format!(
            "mkdir -p {out} && cd {project} && exec flock {lock} bash -c {command}",
            out = Self::home_path(&self.remote_out()),
            project = Self::home_path(&self.remote("project")),
            lock = Self::home_path(&self.remote("campaign.lock")),
            command = sh_quote(&command),
        ))
    }
}

/// What happened, for the user and the tests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CampaignReport {
    /// Times the campaign command was started.
    pub attempts: u32,
    /// Times the VM was recreated after a preemption.
    pub recreations: u32,
    /// Successful copies of the output folder to the local one.
    pub syncs: u32,
    pub took: Duration,
}

/// A future that ends the campaign early when it completes (Ctrl-C in the CLI).
pub type Interrupt<'a> = Pin<&'a mut (dyn std::future::Future<Output = ()> + Send)>;

/// Runs the campaign to completion, recreating the VM after each preemption.
pub async fn run_campaign(
    vms: &VmManager<'_>,
    record: &mut VmRecord,
    host: &dyn RemoteHost,
    plan: &CampaignPlan,
    mut interrupt: Interrupt<'_>,
    events: Events<'_>,
) -> Result<CampaignReport> {
    plan.validate()?;
    std::fs::create_dir_all(&plan.local_out).map_err(|e| CloudError::io(&plan.local_out, e))?;
    let started = Instant::now();
    let mut report = CampaignReport::default();
    let spec = record.spec.clone();

    let vm = spec.node_id.clone();
    // A VM lost before we started is recreated like one lost while running.
    match unless_interrupted(&mut interrupt, "looking at the VM", &vm, vms.check(&spec, false)).await? {
        Health::Ready => {}
        Health::Lost(loss) => {
            events(CloudEvent::Preempted { node: vm.clone(), state: loss.as_state() });
            unless_interrupted(&mut interrupt, "recreating the VM", &vm, recreate(vms, record, &mut report, plan, events)).await?;
        }
        Health::Stopped(_) => {
            unless_interrupted(&mut interrupt, "starting the VM", &vm, vms.start(&spec, events)).await?;
        }
        Health::Waiting(_) => {
            unless_interrupted(&mut interrupt, "waiting for the VM", &vm, vms.wait_ready(&spec, events)).await?;
        }
    }

    loop {
        if let Err(e) = unless_interrupted(&mut interrupt, "shipping and setting up", &vm, prepare(host, plan, events)).await {
            // A VM can be taken back while we copy files to it, too.
            let lost = match e {
                CloudError::Interrupted { .. } => None,
                _ => confirm_lost(vms, &spec, plan.poll_every, 2).await,
            };
            let Some(state) = lost else { return Err(e) };
            events(CloudEvent::Preempted { node: vm.clone(), state });
            unless_interrupted(&mut interrupt, "recreating the VM", &vm, recreate(vms, record, &mut report, plan, events)).await?;
            continue;
        }
        report.attempts += 1;
        let script = plan.campaign_script()?;
        events(CloudEvent::CampaignStarted { attempt: report.attempts, command: plan.render(&plan.command_template)? });
        let mut process = remote::spawn_script(host, Worker::All, "the campaign", &script)?;
        let mut log = CampaignLog::open(&plan.local_out, report.attempts);
        let mut tick = tokio::time::interval(plan.poll_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let mut last_sync = Instant::now();
        let mut lost: Option<NodeState> = None;
        let mut last_lines: Vec<String> = Vec::new();
        let mut streams_open = true;

        let status = loop {
            tokio::select! {
                line = process.lines.recv(), if streams_open => match line {
                    Some(line) => {
                        log.write(&line);
                        last_lines.push(line.clone());
                        if last_lines.len() > 20 {
                            last_lines.remove(0);
                        }
                        events(CloudEvent::CampaignOutput { line });
                    }
                    None => streams_open = false,
                },
                status = process.child.wait() => break Some(status),
                _ = tick.tick() => {
                    match vms.check(&spec, false).await {
                        Ok(Health::Lost(loss)) => {
                            lost = Some(loss.as_state());
                            process.kill().await;
                            break None;
                        }
                        Ok(Health::Stopped(state)) => {
                            lost = Some(state);
                            process.kill().await;
                            break None;
                        }
                        Ok(_) => {}
                        // The campaign keeps running; the next poll may get through.
                        Err(e) => tracing::warn!("could not check {}: {e}", spec.node_id),
                    }
                    if last_sync.elapsed() >= plan.sync_every {
                        sync(host, plan, &mut report, events).await;
                        last_sync = Instant::now();
                    }
                }
                _ = interrupt.as_mut() => {
                    process.kill().await;
                    sync(host, plan, &mut report, events).await;
                    return Err(CloudError::Interrupted {
                        step: "the campaign".into(),
                        advice: format!(
                            "its output so far is in {}; the VM {} is still up and billing: `emotionet cloud run` resumes, `emotionet cloud down` stops paying",
                            plan.local_out.display(),
                            spec.node_id
                        ),
                    });
                }
            }
        };
        // The last lines may still be on their way from the readers: take them
        // until both streams close (briefly: a stray grandchild may hold a pipe).
        let drain_until = tokio::time::Instant::now() + Duration::from_secs(2);
        while streams_open {
            match tokio::time::timeout_at(drain_until, process.lines.recv()).await {
                Ok(Some(line)) => {
                    log.write(&line);
                    last_lines.push(line.clone());
                    events(CloudEvent::CampaignOutput { line });
                }
                Ok(None) | Err(_) => streams_open = false,
            }
        }
        if last_lines.len() > 20 {
            last_lines.drain(..last_lines.len() - 20);
        }

        let exit = match status {
            Some(Ok(exit)) if exit.success() => {
                // The last copy is not optional: until it is here, the results live on a VM that may vanish.
                let copy_started = Instant::now();
                match remote::download(host, &plan.remote_out(), &plan.local_out, plan.step_timeout).await {
                    Ok(()) => {
                        report.syncs += 1;
                        events(CloudEvent::Synced { to: plan.local_out.clone(), took: copy_started.elapsed() });
                        report.took = started.elapsed();
                        events(CloudEvent::Finished { attempts: report.attempts, recreations: report.recreations, took: report.took });
                        return Ok(report);
                    }
                    // Lost before its output was copied: recreated below, and the campaign redoes what was not copied.
                    Err(e) => match confirm_lost(vms, &spec, plan.poll_every, 2).await {
                        Some(state) => {
                            lost = Some(state);
                            "finished, but the VM was lost before its output was copied".to_string()
                        }
                        None => {
                            return Err(CloudError::Remote {
                                step: "copying the finished campaign's output".into(),
                                host: host.describe(),
                                status: "incomplete".into(),
                                detail: format!("{e}; the output is still on the VM: `emotionet cloud fetch --name {vm}`"),
                            });
                        }
                    },
                }
            }
            Some(Ok(exit)) => exit.to_string(),
            Some(Err(e)) => format!("lost ({e})"),
            None => "stopped".to_string(),
        };
        if lost.is_none() {
            // An ssh session dies with its VM, sometimes before the API says so.
            lost = confirm_lost(vms, &record.spec, plan.poll_every, 3).await;
        }
        match lost {
            Some(state) => {
                events(CloudEvent::Preempted { node: vm.clone(), state });
                unless_interrupted(&mut interrupt, "recreating the VM", &vm, recreate(vms, record, &mut report, plan, events)).await?;
            }
            None => {
                sync(host, plan, &mut report, events).await;
                return Err(CloudError::Remote {
                    step: "the campaign".into(),
                    host: host.describe(),
                    status: exit,
                    detail: format!(
                        "{} (its output so far is in {}; fix the cause and run again: finished runs are skipped)",
                        last_lines.join("\n"),
                        plan.local_out.display()
                    ),
                });
            }
        }
    }
}

/// Runs `work` unless the user interrupts first.
async fn unless_interrupted<T>(interrupt: &mut Interrupt<'_>, step: &str, vm: &str, work: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        result = work => result,
        _ = interrupt.as_mut() => Err(CloudError::Interrupted {
            step: step.to_string(),
            advice: format!(
                "the VM {vm} may be up and billing: `emotionet cloud status` shows it, `emotionet cloud run` resumes, `emotionet cloud down` stops paying"
            ),
        }),
    }
}

/// Copies the VM's output folder into the local one.
pub async fn fetch(host: &dyn RemoteHost, plan: &CampaignPlan) -> Result<()> {
    std::fs::create_dir_all(&plan.local_out).map_err(|e| CloudError::io(&plan.local_out, e))?;
    remote::download(host, &plan.remote_out(), &plan.local_out, plan.step_timeout).await
}

async fn recreate(vms: &VmManager<'_>, record: &mut VmRecord, report: &mut CampaignReport, plan: &CampaignPlan, events: Events<'_>) -> Result<()> {
    if report.recreations >= plan.max_recreations {
        return Err(CloudError::UnexpectedState {
            name: record.spec.node_name(),
            state: format!("lost again after {} recreations", report.recreations),
            expected: "to survive (raise --max-recreations, or use on-demand capacity)",
        });
    }
    report.recreations += 1;
    record.recreations += 1;
    events(CloudEvent::Recreating { node: record.spec.node_id.clone(), recreation: report.recreations });
    // A stopped VM is started again (its disk kept); a lost one is created anew.
    vms.revive(&record.spec, events).await?;
    Ok(())
}

/// After the ssh session died: is the VM lost (or stopped)? The rules are
/// [`super::vm::classify`]'s, with `session_died` set.
async fn confirm_lost(vms: &VmManager<'_>, spec: &super::spec::VmSpec, poll: Duration, checks: u32) -> Option<NodeState> {
    for check in 0..checks {
        if check > 0 {
            tokio::time::sleep(poll).await;
        }
        match vms.check(spec, true).await {
            Ok(Health::Lost(loss)) => return Some(loss.as_state()),
            Ok(Health::Stopped(state)) => return Some(state),
            _ => {}
        }
    }
    None
}

/// Steps 1 to 3: ship, restore state onto a fresh VM, set up.
async fn prepare(host: &dyn RemoteHost, plan: &CampaignPlan, events: Events<'_>) -> Result<()> {
    let limit = plan.step_timeout;
    events(CloudEvent::Step { step: format!("shipping {} to {}", plan.binary.display(), host.describe()) });
    let binary_dir = plan.binary.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let binary_name = PathBuf::from(plan.binary_name());
    remote::upload(host, binary_dir, &[binary_name], &plan.remote("bin"), limit).await?;
    let mut files = vec![plan.campaign.clone()];
    files.extend(plan.ship.iter().cloned());
    events(CloudEvent::Step { step: format!("shipping {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")) });
    remote::upload(host, &plan.project_root, &files, &plan.remote("project"), limit).await?;
    let version = format!("{} --version", plan.render("{bin}")?);
    remote::run_script(host, Worker::All, "starting the shipped binary (a glibc too new for the VM fails here)", &version, limit).await?;

    let probe =
        format!("if [ -n \"$(ls -A {out} 2>/dev/null)\" ]; then echo has-state; else echo empty; fi", out = CampaignPlan::home_path(&plan.remote_out()));
    let remote_state = remote::run_script(host, Worker::One(0), "looking at the VM's output folder", &probe, limit).await?;
    let local_has_state = std::fs::read_dir(&plan.local_out).map(|mut d| d.next().is_some()).unwrap_or(false);
    // Line by line: a transport may print notices of its own on stdout.
    let remote_empty = remote_state.stdout.lines().any(|l| l.trim() == "empty");
    if remote_empty && local_has_state {
        remote::upload(host, &plan.local_out, &[PathBuf::from(".")], &plan.remote_out(), limit).await?;
        events(CloudEvent::Restored { from: plan.local_out.clone() });
    }

    events(CloudEvent::Step { step: format!("setting up the VM ({LIBTPU_PACKAGE} by default)") });
    let setup = plan.render(&plan.setup_template)?;
    remote::run_script(host, Worker::All, "the setup command", &setup, limit).await?;
    Ok(())
}

/// A sync failure is not fatal: the campaign goes on, the next sync may work.
async fn sync(host: &dyn RemoteHost, plan: &CampaignPlan, report: &mut CampaignReport, events: Events<'_>) {
    let started = Instant::now();
    match remote::download(host, &plan.remote_out(), &plan.local_out, plan.step_timeout).await {
        Ok(()) => {
            report.syncs += 1;
            events(CloudEvent::Synced { to: plan.local_out.clone(), took: started.elapsed() });
        }
        Err(e) => tracing::warn!("sync of the campaign output failed: {e}"),
    }
}

/// The campaign's output, kept next to (not in) the output folder so it never
/// travels back to the VM: `{out}.cloud-log/attempt-N.log`.
struct CampaignLog {
    file: Option<std::fs::File>,
}

impl CampaignLog {
    fn open(local_out: &Path, attempt: u32) -> Self {
        let name = local_out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        let dir = local_out.with_file_name(format!("{name}.cloud-log"));
        let file = std::fs::create_dir_all(&dir).and_then(|()| std::fs::File::create(dir.join(format!("attempt-{attempt}.log"))));
        if let Err(e) = &file {
            tracing::warn!("cannot keep the campaign log in {}: {e}", dir.display());
        }
        CampaignLog { file: file.ok() }
    }

    fn write(&mut self, line: &str) {
        use std::io::Write;
        if let Some(file) = self.file.as_mut() {
            let _ = writeln!(file, "{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> CampaignPlan {
        CampaignPlan::new(".", "deploy/tpu-campaign.yaml", "target/release/emotionet", "runs/tpu")
    }

    #[test]
    fn the_default_command_renders_to_quoted_remote_paths() {
        let rendered = plan().render(DEFAULT_COMMAND).unwrap();
        assert_eq!(
            rendered,
            "EMOTIONET_DEPS=\"$HOME\"/'emotionet-cloud/deps' \"$HOME\"/'emotionet-cloud/bin/emotionet' run 'deploy/tpu-campaign.yaml' \
             --out \"$HOME\"/'emotionet-cloud/out' --backend tpu"
        );
        assert!(plan().render(DEFAULT_SETUP).unwrap().contains("libtpu==0.0.30"));
    }

    #[test]
    fn templates_reject_unknown_placeholders_and_keep_other_braces() {
        let err = plan().render("{bin} {outt}").unwrap_err();
        assert!(err.to_string().contains("unknown placeholder {outt}"), "{err}");
        assert_eq!(plan().render("echo { ${HOME} {}").unwrap(), "echo { ${HOME} {}");
        assert_eq!(plan().render("f || { g; }").unwrap(), "f || { g; }");
    }
}
