//! Running a campaign on a TPU VM: detached from the laptop, re-attachable,
//! surviving preemption.
//!
//! The steps of [`run_campaign`], on any [`RemoteHost`]:
//! 1. put emotionet's VM scripts (`deploy/vm-*.sh`, carried inside this
//!    binary) into `~/{workdir}/tools/` and look at the VM: its glibc and
//!    architecture, the binary already there, the output folder, and whether
//!    a campaign is running. If one is, go straight to 5 (re-attach);
//! 2. ship the `emotionet` binary to `~/{workdir}/bin/`, after checking
//!    that its glibc needs (read from the ELF file) are met by the VM's
//!    image; or, with `--build-on-vm`, ship the source and build it there.
//!    Ship the campaign and experiment files to `~/{workdir}/project/`.
//!    Every upload lands whole or not at all (staging folder + renames);
//! 3. if the VM's output folder `~/{workdir}/out` is empty (a fresh VM) and
//!    the local copy is not, push the local copy up: this is how a campaign's
//!    state survives the loss of the VM (not for a campaign that writes to a
//!    bucket, [`CampaignPlan::restore_local`]: its state is there, newer than
//!    any local copy); then run the setup command (by
//!    default `vm-setup.sh`: the pinned libtpu, fetched on the VM);
//! 4. start the campaign command (by default `emotionet run CAMPAIGN --out
//!    OUT --backend tpu`) *detached* with `vm-campaign.sh start`: in its own
//!    session under setsid + nohup, its output in a log file on the VM,
//!    holding a lock for its whole life. If one is running already, attach
//!    to it: there is never a second copy;
//! 5. follow its log (`vm-campaign.sh attach`, numbered lines, so a dropped
//!    ssh connection is re-attached without losing or repeating a line);
//!    meanwhile poll the node every `poll_every` and copy the remote output
//!    folder into the local one every `sync_every`;
//! 6. if the node turns PREEMPTED or TERMINATED: delete and recreate the VM
//!    from its recorded spec and start again at 1. The orchestrator keeps its
//!    state in the output folder, so the campaign resumes from the last
//!    checkpoint that reached the local copy (`sync_every` bounds the loss);
//! 7. when the campaign ends with success, copy the output folder one last time.
//!
//! Killing `emotionet cloud run` (or the laptop going to sleep, or the
//! network dropping) leaves the campaign running on the VM; running `cloud
//! run` again re-attaches and resumes syncing. Ctrl-C asks the campaign to
//! checkpoint and stop. Where state lives: only in the output folder; the
//! VM's disk is disposable and the local folder (`--out`) is the durable copy.

use std::path::{Component, Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use super::api::NodeState;
use super::elf;
use super::error::{CloudError, Result};
use super::events::{CloudEvent, Events};
use super::remote::{self, RemoteHost, Worker, sh_quote};
use super::state::VmRecord;
use super::vm::{Health, VmManager};

/// The remote working folder, relative to the remote home.
pub const DEFAULT_WORKDIR: &str = "emotionet-cloud";
/// The pinned TPU plugin: PJRT C API 0.81, like our CPU plugin and header.
pub const LIBTPU_PACKAGE: &str = "libtpu==0.0.30";
/// The VM's setup: tools checked, the pinned libtpu fetched (without pip,
/// whatever the image's Python) into `{deps}/pjrt/libtpu/libtpu.so`, where
/// `EMOTIONET_DEPS={deps}` makes `emotionet` find it.
pub const DEFAULT_SETUP: &str = "bash {workdir}/tools/vm-setup.sh {deps}";
/// The campaign on all 8 cores of the VM, resumable from `{out}`.
pub const DEFAULT_COMMAND: &str = "EMOTIONET_DEPS={deps} {bin} run {campaign} --out {out} --backend tpu";
/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &["bin", "campaign", "out", "deps", "workdir", "project"];

/// The scripts that run on the VM, carried inside the binary so that what is
/// shipped always matches the code that reads their output.
pub const VM_SCRIPTS: &[(&str, &str)] = &[
    ("vm-campaign.sh", include_str!("../../deploy/vm-campaign.sh")),
    ("vm-setup.sh", include_str!("../../deploy/vm-setup.sh")),
    ("vm-build.sh", include_str!("../../deploy/vm-build.sh")),
    ("fetch-libtpu.sh", include_str!("../../deploy/fetch-libtpu.sh")),
    ("libtpu.env", include_str!("../../deploy/libtpu.env")),
];

/// What `--build-on-vm` ships: everything `cargo build --release --locked` needs.
pub const SOURCE_FILES: &[&str] = &["Cargo.toml", "Cargo.lock", "src", "deploy"];

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
    /// Ship the source ([`SOURCE_FILES`] of `project_root`) and build the
    /// binary on the VM instead of shipping `binary`.
    pub build_on_vm: bool,
    /// The Rust toolchain rustup installs on the VM for `build_on_vm`.
    pub toolchain: String,
    /// Start (or find) the campaign and return without following it.
    pub detach: bool,
    /// Push the local copy onto a fresh VM (step 3). Off for a campaign
    /// that writes to a bucket: the bucket holds its newest state, which a
    /// laptop's older copy in the VM's staging folder would hide.
    pub restore_local: bool,
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
            build_on_vm: false,
            toolchain: "stable".to_string(),
            detach: false,
            restore_local: true,
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
        if self.build_on_vm {
            return "emotionet".into();
        }
        self.binary.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "emotionet".into())
    }

    /// Where the VM scripts go, relative to the remote home.
    fn tools(&self) -> String {
        self.remote("tools")
    }

    /// The campaign's control folder on the VM (locks, log, exit status).
    fn control(&self) -> String {
        self.remote("campaign")
    }

    /// `bash ~/{workdir}/tools/vm-campaign.sh ACTION ~/{workdir}/campaign`.
    fn campaign_tool(&self, action: &str) -> String {
        format!("bash {} {action} {}", Self::home_path(&format!("{}/vm-campaign.sh", self.tools())), Self::home_path(&self.control()))
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
        if self.build_on_vm {
            for file in SOURCE_FILES {
                let path = self.project_root.join(file);
                if !path.exists() {
                    return Err(CloudError::io(path, "--build-on-vm ships the source from the emotionet checkout: run it from there"));
                }
            }
        } else if !self.binary.is_file() {
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

    /// The command line the detached campaign runs: in the shipped project.
    fn campaign_command(&self) -> Result<String> {
        Ok(format!(
            "mkdir -p {out} && cd {project} && {command}",
            out = Self::home_path(&self.remote_out()),
            project = Self::home_path(&self.remote("project")),
            command = self.render(&self.command_template)?,
        ))
    }
}

/// What happened, for the user and the tests.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CampaignReport {
    /// Times this `cloud run` started the campaign command.
    pub attempts: u32,
    /// Times it found the campaign already running and attached to it.
    pub attached: u32,
    /// Times the VM was recreated after a preemption.
    pub recreations: u32,
    /// Successful copies of the output folder to the local one.
    pub syncs: u32,
    /// Copies of the output folder that failed (the local copy was kept).
    pub failed_syncs: u32,
    /// The id of the last campaign started or attached on the VM.
    pub campaign_id: Option<String>,
    pub took: Duration,
}

/// A future that ends the campaign early when it completes (Ctrl-C in the CLI).
pub type Interrupt<'a> = Pin<&'a mut (dyn std::future::Future<Output = ()> + Send)>;

/// How following the campaign ended.
enum Followed {
    /// The campaign ended on the VM with this exit status ("0", "1", "unknown", ...).
    Exited(String),
    /// The VM was taken back.
    Lost(NodeState),
    /// The user interrupted.
    Interrupted,
}

/// Runs the campaign to completion (or, with `plan.detach`, until it runs),
/// recreating the VM after each preemption.
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
        let start = match unless_interrupted(&mut interrupt, "shipping and setting up", &vm, prepare_and_start(host, plan, events)).await {
            Ok(start) => start,
            Err(e) => {
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
        };
        let id = start.id.clone();
        report.campaign_id = Some(id.clone());
        if start.fresh {
            report.attempts += 1;
            events(CloudEvent::CampaignStarted { attempt: report.attempts, command: plan.render(&plan.command_template)? });
        } else {
            report.attached += 1;
            events(CloudEvent::CampaignAttached { id: id.clone() });
        }
        if plan.detach {
            report.took = started.elapsed();
            return Ok(report);
        }

        let mut log = CampaignLog::open(&plan.local_out, &id);
        let mut last_lines: Vec<String> = Vec::new();
        let followed = follow(vms, &spec, host, plan, &id, &mut log, &mut last_lines, &mut report, &mut interrupt, events).await?;
        let exit = match followed {
            Followed::Exited(code) if code == "0" => {
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
                        Some(state) => Err(state),
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
            // A campaign that died with its machine (the VM taken back or
            // hidden for maintenance ends its processes before the API says
            // so) is a loss, not a failure: the same rule as a dropped
            // connection, any state neither READY nor on its way to it.
            Followed::Exited(code) => match confirm_lost(vms, &spec, plan.poll_every, 2).await {
                Some(state) => Err(state),
                None => Ok(code),
            },
            Followed::Lost(state) => Err(state),
            Followed::Interrupted => {
                // Ctrl-C: the campaign checkpoints and stops on the VM; its last words and output come here.
                events(CloudEvent::Step { step: format!("stopping campaign {id} on the VM (it writes a checkpoint first)") });
                let stopped = remote::run_script(host, Worker::One(0), "stopping the campaign", &plan.campaign_tool("stop"), plan.step_timeout).await;
                let _ = read_log_once(host, plan, &id, &mut log, &mut last_lines, events).await;
                sync(host, plan, &mut report, events).await;
                let state = match stopped {
                    Ok(_) => "the campaign was stopped on the VM after writing a checkpoint".to_string(),
                    Err(e) => format!("stopping the campaign on the VM failed ({e}); it may still run: `emotionet cloud logs`"),
                };
                return Err(CloudError::Interrupted {
                    step: "the campaign".into(),
                    advice: format!(
                        "{state}; its output so far is in {}; the VM {} is still up and billing: `emotionet cloud run` resumes, `emotionet cloud down` stops paying",
                        plan.local_out.display(),
                        spec.node_id
                    ),
                });
            }
        };
        match exit {
            Err(state) => {
                events(CloudEvent::Preempted { node: vm.clone(), state });
                // A lost VM's processes are gone; a stand-in's are not: never leave a second copy running.
                let _ = remote::run_script(host, Worker::One(0), "stopping what is left of the campaign", &plan.campaign_tool("stop"), Duration::from_secs(30))
                    .await;
                unless_interrupted(&mut interrupt, "recreating the VM", &vm, recreate(vms, record, &mut report, plan, events)).await?;
            }
            Ok(code) => {
                sync(host, plan, &mut report, events).await;
                return Err(CloudError::Remote {
                    step: format!("the campaign {id}"),
                    host: host.describe(),
                    status: format!("exit status {code}"),
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

/// Follows campaign `id`'s log until it ends, re-attaching when the
/// connection drops; polls the node and syncs the output meanwhile.
#[allow(clippy::too_many_arguments)]
async fn follow(
    vms: &VmManager<'_>,
    spec: &super::spec::VmSpec,
    host: &dyn RemoteHost,
    plan: &CampaignPlan,
    id: &str,
    log: &mut CampaignLog,
    last_lines: &mut Vec<String>,
    report: &mut CampaignReport,
    interrupt: &mut Interrupt<'_>,
    events: Events<'_>,
) -> Result<Followed> {
    let mut tick = tokio::time::interval(plan.poll_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last_sync = Instant::now();
    // Connections that ended without the campaign's end and without a new line.
    let mut fruitless = 0u32;
    loop {
        let script = format!("{} {} {} follow", plan.campaign_tool("attach"), sh_quote(id), log.next_line);
        let mut process = remote::spawn_script(host, Worker::One(0), "following the campaign's log", &script)?;
        let before = log.next_line;
        let mut exit: Option<String> = None;
        let mut streams_open = true;
        loop {
            tokio::select! {
                line = process.lines.recv(), if streams_open => match line {
                    Some(line) => take_line(&line, id, log, last_lines, &mut exit, events),
                    None => streams_open = false,
                },
                _ = process.child.wait() => break,
                _ = tick.tick() => {
                    match vms.check(spec, false).await {
                        Ok(Health::Lost(loss)) => {
                            process.kill().await;
                            return Ok(Followed::Lost(loss.as_state()));
                        }
                        // Stopped under us: revive() starts it again with its disk.
                        Ok(Health::Stopped(state)) => {
                            process.kill().await;
                            return Ok(Followed::Lost(state));
                        }
                        Ok(_) => {}
                        // The campaign keeps running; the next poll may get through.
                        Err(e) => tracing::warn!("could not check {}: {e}", spec.node_id),
                    }
                    if last_sync.elapsed() >= plan.sync_every {
                        sync(host, plan, report, events).await;
                        last_sync = Instant::now();
                    }
                }
                _ = interrupt.as_mut() => {
                    process.kill().await;
                    return Ok(Followed::Interrupted);
                }
            }
        }
        // The last lines may still be on their way from the readers: take them
        // until both streams close (briefly: a stray grandchild may hold a pipe).
        let drain_until = tokio::time::Instant::now() + Duration::from_secs(2);
        while streams_open {
            match tokio::time::timeout_at(drain_until, process.lines.recv()).await {
                Ok(Some(line)) => take_line(&line, id, log, last_lines, &mut exit, events),
                Ok(None) | Err(_) => streams_open = false,
            }
        }
        match exit.as_deref() {
            Some("running") | None => {}
            Some(code) => return Ok(Followed::Exited(code.to_string())),
        }
        // The connection ended while the campaign runs on: the network, ssh,
        // or the VM going away. Which one, the API says.
        if let Some(state) = confirm_lost(vms, spec, plan.poll_every, 2).await {
            return Ok(Followed::Lost(state));
        }
        fruitless = if log.next_line > before { 0 } else { fruitless + 1 };
        if fruitless > 10 {
            return Err(CloudError::Remote {
                step: "following the campaign's log".into(),
                host: host.describe(),
                status: "connection lost".into(),
                detail: format!(
                    "the last {fruitless} attempts to follow campaign {id} ended without news; it keeps running on the VM: \
                     `emotionet cloud run` re-attaches, `emotionet cloud logs --follow` shows its output"
                ),
            });
        }
        events(CloudEvent::Step { step: format!("the connection to the VM ended; re-attaching to campaign {id} at line {}", log.next_line) });
        tokio::time::sleep(plan.poll_every.min(Duration::from_secs(10))).await;
    }
}

/// One line from `vm-campaign.sh attach`: a numbered log line (kept if it is
/// the next one), the campaign's end, or a transport's chatter (dropped).
fn take_line(line: &str, id: &str, log: &mut CampaignLog, last_lines: &mut Vec<String>, exit: &mut Option<String>, events: Events<'_>) {
    if let Some((number, text)) = parse_numbered(line) {
        if number < log.next_line {
            return; // already have it (a re-attach, or a command run twice)
        }
        if number > log.next_line {
            tracing::warn!("the campaign log skipped from line {} to {number}", log.next_line);
        }
        log.write(text, number);
        last_lines.push(text.to_string());
        if last_lines.len() > 20 {
            last_lines.remove(0);
        }
        events(CloudEvent::CampaignOutput { line: text.to_string() });
    } else if let Some(rest) = line.strip_prefix("EMOTIONET-CAMPAIGN-EXIT ") {
        let mut words = rest.split_whitespace();
        if words.next() == Some(id) {
            *exit = words.next().map(str::to_string);
        }
    } else if !line.trim().is_empty() {
        tracing::debug!("from the transport: {line}");
    }
}

/// `L<n><TAB>text` -> (n, text).
fn parse_numbered(line: &str) -> Option<(u64, &str)> {
    let (number, text) = line.strip_prefix('L')?.split_once('\t')?;
    Some((number.parse().ok()?, text))
}

/// Whatever campaign `id` printed after `log.next_line`, without following.
async fn read_log_once(
    host: &dyn RemoteHost,
    plan: &CampaignPlan,
    id: &str,
    log: &mut CampaignLog,
    last_lines: &mut Vec<String>,
    events: Events<'_>,
) -> Result<()> {
    let script = format!("{} {} {} once", plan.campaign_tool("attach"), sh_quote(id), log.next_line);
    let output = remote::run_script(host, Worker::One(0), "reading the campaign's log", &script, plan.step_timeout).await?;
    let mut exit = None;
    for line in output.stdout.lines() {
        take_line(line, id, log, last_lines, &mut exit, events);
    }
    Ok(())
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

/// Copies the VM's output folder into the local one. A failed snapshot or
/// transfer is an error, and the local folder keeps its last good copy.
pub async fn fetch(host: &dyn RemoteHost, plan: &CampaignPlan) -> Result<()> {
    std::fs::create_dir_all(&plan.local_out).map_err(|e| CloudError::io(&plan.local_out, e))?;
    remote::download(host, &plan.remote_out(), &plan.local_out, plan.step_timeout).await
}

/// The campaign's output on the VM, for `emotionet cloud logs`: the newest
/// campaign's log from its first line, following it while it runs if
/// `follow_it`. Each line goes to `line`; returns how the campaign stands
/// (`None`: no campaign has run on this VM).
pub async fn logs(host: &dyn RemoteHost, plan: &CampaignPlan, follow_it: bool, line: &mut (dyn FnMut(&str) + Send)) -> Result<Option<LogEnd>> {
    install_tools(host, plan).await?;
    let script = format!("{} current 1 {}", plan.campaign_tool("attach"), if follow_it { "follow" } else { "once" });
    let mut process = remote::spawn_script(host, Worker::One(0), "reading the campaign's log", &script)?;
    let mut end = None;
    let mut next = 1;
    while let Some(text) = process.next_line().await {
        if let Some((number, text)) = parse_numbered(&text) {
            if number >= next {
                line(text);
                next = number + 1;
            }
        } else if let Some(rest) = text.strip_prefix("EMOTIONET-CAMPAIGN-EXIT ") {
            let mut words = rest.split_whitespace();
            let id = words.next().unwrap_or_default().to_string();
            end = Some(match words.next() {
                Some("running") => LogEnd::Running { id },
                code => LogEnd::Ended { id, code: code.unwrap_or("unknown").to_string() },
            });
        } else if text.trim() == "EMOTIONET-CAMPAIGN none" {
            end = None;
        }
    }
    let status = process.wait().await.map_err(|e| CloudError::Remote {
        step: "reading the campaign's log".into(),
        host: host.describe(),
        status: "lost".into(),
        detail: e.to_string(),
    })?;
    if !status.success() {
        return Err(CloudError::Remote {
            step: "reading the campaign's log".into(),
            host: host.describe(),
            status: status.to_string(),
            detail: "the connection ended early; run it again".into(),
        });
    }
    Ok(end)
}

/// How the newest campaign on the VM stands, after [`logs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEnd {
    Running { id: String },
    Ended { id: String, code: String },
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

/// The campaign that runs on the VM after [`prepare_and_start`].
struct Started {
    id: String,
    /// Started by us now (false: it was running, we attached).
    fresh: bool,
}

/// Puts the VM scripts into `~/{workdir}/tools/` (every time: they must
/// match this binary, which reads what they print).
async fn install_tools(host: &dyn RemoteHost, plan: &CampaignPlan) -> Result<()> {
    let files: Vec<(&str, &[u8], bool)> = VM_SCRIPTS.iter().map(|(name, text)| (*name, text.as_bytes(), name.ends_with(".sh"))).collect();
    remote::upload_files(host, &files, &plan.tools(), plan.step_timeout).await
}

/// What the VM said about itself (`EMOTIONET-PROBE key value` lines).
#[derive(Debug, Default)]
struct Probe {
    glibc: Option<elf::GlibcVersion>,
    arch: String,
    binary_sha256: Option<String>,
    out_has_state: bool,
    running: Option<String>,
}

async fn probe(host: &dyn RemoteHost, plan: &CampaignPlan) -> Result<Probe> {
    let bin = CampaignPlan::home_path(&plan.remote(&format!("bin/{}", plan.binary_name())));
    let script = format!(
        "printf 'EMOTIONET-PROBE glibc %s\\n' \"$(getconf GNU_LIBC_VERSION 2>/dev/null)\"; \
         printf 'EMOTIONET-PROBE arch %s\\n' \"$(uname -m)\"; \
         if [ -f {bin} ]; then printf 'EMOTIONET-PROBE binary %s\\n' \"$(sha256sum < {bin} | cut -d' ' -f1)\"; fi; \
         if [ -n \"$(ls -A {out} 2>/dev/null)\" ]; then echo 'EMOTIONET-PROBE out has-state'; else echo 'EMOTIONET-PROBE out empty'; fi; \
         {status}",
        out = CampaignPlan::home_path(&plan.remote_out()),
        status = plan.campaign_tool("status"),
    );
    let output = remote::run_script(host, Worker::One(0), "looking at the VM", &script, plan.step_timeout).await?;
    let mut probe = Probe::default();
    // Line by line: a transport may print notices of its own on stdout.
    for line in output.stdout.lines() {
        if let Some(rest) = line.strip_prefix("EMOTIONET-PROBE ") {
            let (key, value) = rest.split_once(' ').unwrap_or((rest, ""));
            match key {
                "glibc" => probe.glibc = elf::GlibcVersion::parse(value),
                "arch" => probe.arch = value.trim().to_string(),
                "binary" => probe.binary_sha256 = Some(value.trim().to_string()),
                "out" => probe.out_has_state = value.trim() == "has-state",
                _ => {}
            }
        } else if let Some(rest) = line.strip_prefix("EMOTIONET-CAMPAIGN running ") {
            probe.running = Some(rest.trim().to_string());
        }
    }
    Ok(probe)
}

fn sha256_of(path: &Path) -> Result<String> {
    use sha2::Digest;
    let mut file = std::fs::File::open(path).map_err(|e| CloudError::io(path, e))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| CloudError::io(path, e))?;
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Steps 1 to 4: look, ship (or build), restore state onto a fresh VM, set
/// up, and start the campaign; or find it running and attach.
async fn prepare_and_start(host: &dyn RemoteHost, plan: &CampaignPlan, events: Events<'_>) -> Result<Started> {
    let limit = plan.step_timeout;
    install_tools(host, plan).await?;
    let vm = probe(host, plan).await?;
    if let Some(id) = vm.running {
        // Never a second copy, and never a binary or file swapped under a running campaign.
        events(CloudEvent::Step { step: format!("campaign {id} is already running on {}: attaching to it", host.describe()) });
        return Ok(Started { id, fresh: false });
    }

    if plan.build_on_vm {
        events(CloudEvent::Step { step: format!("shipping the source to build emotionet on {} (the first build installs Rust: minutes)", host.describe()) });
        let files: Vec<PathBuf> = SOURCE_FILES.iter().map(PathBuf::from).collect();
        remote::upload(host, &plan.project_root, &files, &plan.remote("source"), limit).await?;
        let build = format!(
            "bash {} {} {} {}",
            CampaignPlan::home_path(&format!("{}/vm-build.sh", plan.tools())),
            CampaignPlan::home_path(&plan.remote("source")),
            CampaignPlan::home_path(&plan.remote("bin/emotionet")),
            sh_quote(&plan.toolchain)
        );
        remote::run_script(host, Worker::All, "building emotionet on the VM", &build, limit).await?;
    } else {
        let needs = elf::read_needs(&plan.binary)?;
        if let Err(why) = elf::check_runs_on(&plan.binary, &needs, &vm.arch, vm.glibc) {
            return Err(CloudError::Remote {
                step: "checking that the binary runs on the VM, before shipping it".into(),
                host: host.describe(),
                status: "it would not start there".into(),
                detail: format!(
                    "{why}; pass --build-on-vm to build emotionet on the VM (it ships the source and installs Rust there once), \
                     or build on a distribution no newer than the VM's image (Ubuntu 22.04 for tpu-ubuntu2204-base)"
                ),
            });
        }
        if vm.binary_sha256.as_deref() == Some(sha256_of(&plan.binary)?.as_str()) {
            events(CloudEvent::Step { step: format!("the VM already has this {}", plan.binary.display()) });
        } else {
            events(CloudEvent::Step { step: format!("shipping {} to {}", plan.binary.display(), host.describe()) });
            let binary_dir = plan.binary.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            remote::upload(host, binary_dir, &[PathBuf::from(plan.binary_name())], &plan.remote("bin"), limit).await?;
        }
    }
    let mut files = vec![plan.campaign.clone()];
    files.extend(plan.ship.iter().cloned());
    events(CloudEvent::Step { step: format!("shipping {}", files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")) });
    remote::upload(host, &plan.project_root, &files, &plan.remote("project"), limit).await?;
    let version = format!("{} --version", plan.render("{bin}")?);
    remote::run_script(host, Worker::All, "starting the shipped binary", &version, limit).await?;

    let local_has_state = std::fs::read_dir(&plan.local_out).map(|mut d| d.next().is_some()).unwrap_or(false);
    if plan.restore_local && !vm.out_has_state && local_has_state {
        remote::upload(host, &plan.local_out, &[PathBuf::from(".")], &plan.remote_out(), limit).await?;
        events(CloudEvent::Restored { from: plan.local_out.clone() });
    }

    events(CloudEvent::Step { step: format!("setting up the VM ({LIBTPU_PACKAGE} by default)") });
    let setup = plan.render(&plan.setup_template)?;
    remote::run_script(host, Worker::All, "the setup command", &setup, limit).await?;

    let start = format!("{} {}", plan.campaign_tool("start"), sh_quote(&plan.campaign_command()?));
    let output = remote::run_script(host, Worker::One(0), "starting the campaign", &start, limit).await?;
    for line in output.stdout.lines() {
        if let Some(id) = line.strip_prefix("EMOTIONET-CAMPAIGN started ") {
            return Ok(Started { id: id.trim().to_string(), fresh: true });
        }
        if let Some(id) = line.strip_prefix("EMOTIONET-CAMPAIGN running ") {
            events(CloudEvent::Step { step: format!("campaign {} started meanwhile on {}: attaching to it", id.trim(), host.describe()) });
            return Ok(Started { id: id.trim().to_string(), fresh: false });
        }
    }
    Err(CloudError::Remote {
        step: "starting the campaign".into(),
        host: host.describe(),
        status: "no answer".into(),
        detail: format!("vm-campaign.sh said neither started nor running: {}", output.stdout.trim()),
    })
}

/// A periodic copy. Its failure does not stop the campaign (the next copy
/// may work, and the local folder keeps its last good copy), but it is
/// shown and counted, never silent.
async fn sync(host: &dyn RemoteHost, plan: &CampaignPlan, report: &mut CampaignReport, events: Events<'_>) {
    let started = Instant::now();
    match remote::download(host, &plan.remote_out(), &plan.local_out, plan.step_timeout).await {
        Ok(()) => {
            report.syncs += 1;
            events(CloudEvent::Synced { to: plan.local_out.clone(), took: started.elapsed() });
        }
        Err(e) => {
            report.failed_syncs += 1;
            events(CloudEvent::SyncFailed { error: e.to_string() });
        }
    }
}

/// The campaign's output, kept next to (not in) the output folder so it never
/// travels back to the VM: `{out}.cloud-log/{id}.log`, one file per campaign
/// started on the VM. A re-attach (from this process or a later one) goes on
/// after the last line the file holds.
struct CampaignLog {
    file: Option<std::fs::File>,
    /// The number of the next line to take from the VM (1-based).
    next_line: u64,
}

impl CampaignLog {
    fn open(local_out: &Path, id: &str) -> Self {
        let name = local_out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
        let dir = local_out.with_file_name(format!("{name}.cloud-log"));
        let path = dir.join(format!("{id}.log"));
        let have = std::fs::read_to_string(&path).map(|t| t.lines().count() as u64).unwrap_or(0);
        let file = std::fs::create_dir_all(&dir).and_then(|()| std::fs::OpenOptions::new().create(true).append(true).open(&path));
        if let Err(e) = &file {
            tracing::warn!("cannot keep the campaign log in {}: {e}", dir.display());
        }
        CampaignLog { file: file.ok(), next_line: have + 1 }
    }

    fn write(&mut self, line: &str, number: u64) {
        use std::io::Write;
        if let Some(file) = self.file.as_mut() {
            let _ = writeln!(file, "{line}");
        }
        self.next_line = number + 1;
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
        assert_eq!(plan().render(DEFAULT_SETUP).unwrap(), "bash \"$HOME\"/'emotionet-cloud'/tools/vm-setup.sh \"$HOME\"/'emotionet-cloud/deps'");
    }

    #[test]
    fn the_shipped_pin_is_the_libtpu_we_name() {
        let env = VM_SCRIPTS.iter().find(|(name, _)| *name == "libtpu.env").unwrap().1;
        let version = LIBTPU_PACKAGE.trim_start_matches("libtpu==");
        assert!(env.lines().any(|l| l == format!("LIBTPU_VERSION={version}")), "{env}");
        assert!(env.contains(&format!("LIBTPU_WHEEL=libtpu-{version}-cp312-cp312-manylinux_2_31_x86_64.whl")), "{env}");
        assert_eq!(crate::pjrt::Backend::Tpu.pip_package(), LIBTPU_PACKAGE);
    }

    #[test]
    fn numbered_log_lines_and_transport_chatter_are_told_apart() {
        assert_eq!(parse_numbered("L12\tstep 3 of 16"), Some((12, "step 3 of 16")));
        assert_eq!(parse_numbered("L12\t"), Some((12, "")));
        assert_eq!(parse_numbered("SSH: Attempting to connect to worker 0..."), None);
        assert_eq!(parse_numbered("Lx\ty"), None);
    }

    #[test]
    fn templates_reject_unknown_placeholders_and_keep_other_braces() {
        let err = plan().render("{bin} {outt}").unwrap_err();
        assert!(err.to_string().contains("unknown placeholder {outt}"), "{err}");
        assert_eq!(plan().render("echo { ${HOME} {}").unwrap(), "echo { ${HOME} {}");
        assert_eq!(plan().render("f || { g; }").unwrap(), "f || { g; }");
    }
}
