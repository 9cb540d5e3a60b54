//! `emotionet cloud up|status|run|logs|fetch|down`: Cloud TPU VMs from the command line.
//!
//! Two stages, as everywhere in the CLI: first what the user wrote is
//! validated (the cost guard among it) without touching the network; then
//! the cloud is asked. The record of created VMs lives in a small JSON file
//! (`--state`), so later commands need only `--name` (or nothing, when one
//! VM exists).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

use crate::cloud::campaign::{self, CampaignPlan, DEFAULT_COMMAND, DEFAULT_SETUP, DEFAULT_WORKDIR, LogEnd};
use crate::cloud::client::TPU_API_URL;
use crate::cloud::spec::{DEFAULT_RUNTIME_VERSION, MANAGED_LABEL};
use crate::cloud::timestamp::{human, now_unix};
use crate::cloud::{
    AuthConfig, AuthMode, Capacity, ClientConfig, CloudEvent, GcloudTpuHost, LocalHost, NodeExt, QueuedResourceExt, RemoteHost, StateStore, TpuClient,
    VmManager, VmRecord, VmRequest, WaitOptions, cost,
};

#[derive(Args, Debug)]
pub struct CloudArgs {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: CloudCommand,
}

#[derive(Args, Debug)]
struct CommonArgs {
    /// The record of the VMs created from here [default: ~/.local/state/emotionet/cloud-vms.json,
    /// or $XDG_STATE_HOME/emotionet/cloud-vms.json]; campaigns read the same file unless `cloud.state` names another.
    #[arg(long, env = "EMOTIONET_CLOUD_STATE", global = true)]
    state: Option<PathBuf>,
    /// Credentials: auto = Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, the
    /// `gcloud auth application-default login` file, the metadata server), then `gcloud auth print-access-token`.
    #[arg(long, value_enum, default_value_t = AuthMode::Auto, global = true)]
    auth: AuthMode,
    /// Bill API quota to this project (sent as x-goog-user-project; credentials files may name one too).
    #[arg(long, env = "GOOGLE_CLOUD_QUOTA_PROJECT", global = true)]
    quota_project: Option<String>,
    /// The gcloud executable, for the token fallback and for ssh to the VM.
    #[arg(long, env = "EMOTIONET_GCLOUD", default_value = "gcloud", global = true)]
    gcloud: PathBuf,
    /// The Cloud TPU API endpoint (tests point it at a local fake).
    #[arg(long, env = "EMOTIONET_TPU_API_URL", default_value = TPU_API_URL, global = true)]
    api_url: String,
    /// Seconds between looks at an operation or at the VM's state.
    #[arg(long, default_value_t = 10.0, global = true)]
    poll_every: f64,
}

#[derive(Subcommand, Debug)]
enum CloudCommand {
    /// Create a TPU VM and wait until it is READY (needs --project, --zone, --accelerator-type).
    Up(UpArgs),
    /// Show the recorded VMs: state and time up; with --project and --zone, everything in that zone.
    Status(StatusArgs),
    /// Ship the binary and campaign files, fetch libtpu, start the campaign detached on the VM and follow it (or re-attach), survive preemption.
    Run(RunArgs),
    /// Show the campaign's output on the VM (from any machine with the state file); --follow until it ends.
    Logs(LogsArgs),
    /// Copy the VM's output folder (run records, checkpoints, event files) here.
    Fetch(FetchArgs),
    /// Delete the VM (and its queued resource) and forget it.
    Down(DownArgs),
}

#[derive(Args, Debug)]
struct UpArgs {
    /// Google Cloud project id (required: no default, it decides who pays).
    #[arg(long)]
    project: Option<String>,
    /// Zone, e.g. europe-west4-a or us-central1-a (required).
    #[arg(long)]
    zone: Option<String>,
    /// TPU type, e.g. v3-8 (required).
    #[arg(long)]
    accelerator_type: Option<String>,
    /// Name of the VM (node id).
    #[arg(long, default_value = "emotionet-tpu")]
    name: String,
    /// VM image.
    #[arg(long, default_value = DEFAULT_RUNTIME_VERSION)]
    runtime_version: String,
    /// Spot capacity: much cheaper, may be preempted (`run` then recreates it).
    #[arg(long, conflicts_with = "preemptible")]
    spot: bool,
    /// The older preemptible capacity (at most 24 h).
    #[arg(long)]
    preemptible: bool,
    /// Ask through the queued resources API (waits for capacity instead of failing).
    #[arg(long)]
    queued: bool,
    /// With --queued: give up if not provisioned within this many seconds.
    #[arg(long, requires = "queued")]
    queued_valid_for: Option<u64>,
    /// VPC network (default: the project's `default`).
    #[arg(long)]
    network: Option<String>,
    /// VPC subnetwork for the VM (default: none named; the API picks one of --network's).
    #[arg(long)]
    subnetwork: Option<String>,
    /// Service account e-mail for the VM (default: the compute default account).
    #[arg(long)]
    service_account: Option<String>,
    /// Label KEY=VALUE for the VM; repeatable (managed-by=emotionet is always added).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// A script run as root at every boot of the VM (e.g. deploy/tpu-startup.sh).
    #[arg(long)]
    startup_script: Option<PathBuf>,
    /// Give the VM no external IP (then ssh needs IAP: --ssh-arg=--tunnel-through-iap).
    #[arg(long)]
    no_external_ip: bool,
    /// Seconds to wait for READY.
    #[arg(long, default_value_t = 1800)]
    timeout: u64,
    /// The campaign (or experiment) the VM is for: its TPU programs are compiled for --accelerator-type here first, and a
    /// program that does not fit a core or that the TPU compiler rejects stops `up` before anything is created (the preflight).
    #[arg(long, value_name = "CAMPAIGN.yaml")]
    campaign: Option<PathBuf>,
    /// Create the VM without compiling the campaign's TPU programs first.
    #[arg(long)]
    skip_preflight: bool,
}

#[derive(Args, Debug)]
struct StatusArgs {
    /// With --zone: also list every TPU VM and queued resource in that zone.
    #[arg(long, requires = "zone")]
    project: Option<String>,
    /// With --project: the zone whose TPU VMs and queued resources to list.
    #[arg(long, requires = "project")]
    zone: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Via {
    /// `gcloud compute tpus tpu-vm ssh`, to the real VM.
    Gcloud,
    /// A local folder stands in for the VM (tests, rehearsals); needs --local-root.
    Local,
}

#[derive(Args, Debug)]
struct HostArgs {
    /// Which VM (default: the only one recorded).
    #[arg(long)]
    name: Option<String>,
    /// How to reach the VM.
    #[arg(long, value_enum, default_value_t = Via::Gcloud)]
    via: Via,
    /// With --via local: the folder playing the VM's home directory.
    #[arg(long)]
    local_root: Option<PathBuf>,
    /// Extra argument for `gcloud compute tpus tpu-vm ssh`; repeatable (e.g. --ssh-arg=--tunnel-through-iap).
    #[arg(long = "ssh-arg", value_name = "ARG", allow_hyphen_values = true)]
    ssh_args: Vec<String>,
    /// Working folder on the VM, relative to its home.
    #[arg(long, default_value = DEFAULT_WORKDIR)]
    workdir: String,
    /// Local copy of the VM's output folder [default: runs/cloud/NAME]. For
    /// `run`, gs://BUCKET/PREFIX instead: the campaign on the VM writes its
    /// output there as it goes (the local copy stays in runs/cloud/NAME).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The campaign file, inside the current folder (shipped with its relative path).
    campaign: PathBuf,
    #[command(flatten)]
    host: HostArgs,
    /// More files or folders to ship (experiment files, data); repeatable.
    #[arg(long = "ship", value_name = "PATH")]
    ship: Vec<PathBuf>,
    /// The emotionet binary to run on the VM [default: this one].
    #[arg(long)]
    binary: Option<PathBuf>,
    /// The campaign command on the VM; placeholders {bin} {campaign} {out} {deps} {workdir} {project}.
    #[arg(long, default_value = DEFAULT_COMMAND)]
    command: String,
    /// The setup command on the VM (same placeholders); by default fetches the pinned libtpu==0.0.30 (deploy/vm-setup.sh).
    #[arg(long, default_value = DEFAULT_SETUP)]
    setup: String,
    /// Build emotionet on the VM from this checkout's source instead of shipping the binary (when it needs a newer glibc than the VM has).
    #[arg(long, conflicts_with = "binary")]
    build_on_vm: bool,
    /// With --build-on-vm: the Rust toolchain rustup installs on the VM if it has no cargo.
    #[arg(long, default_value = "stable", requires = "build_on_vm")]
    toolchain: String,
    /// Start the campaign (or find it running) and return at once; follow it later with `logs --follow` or `run`.
    #[arg(long, conflicts_with = "down_after")]
    detach: bool,
    /// Seconds between copies of the VM's output folder to --out (bounds the work lost to a preemption).
    #[arg(long, default_value_t = 300.0)]
    sync_every: f64,
    /// Preemptions to survive before giving up.
    #[arg(long, default_value_t = 5)]
    max_recreations: u32,
    /// Seconds allowed for each shipping, setup or copy step, and for a recreated VM to be READY.
    #[arg(long, default_value_t = 1800)]
    step_timeout: u64,
    /// Delete the VM when the campaign has finished.
    #[arg(long)]
    down_after: bool,
    /// Start without compiling the campaign's TPU programs for the VM's type first (the preflight, which refuses a
    /// program that does not fit a core or that the TPU compiler rejects, and leaves the prediction for the report).
    #[arg(long)]
    skip_preflight: bool,
}

#[derive(Args, Debug)]
struct LogsArgs {
    #[command(flatten)]
    host: HostArgs,
    /// Keep printing while the campaign runs, until it ends.
    #[arg(long)]
    follow: bool,
}

#[derive(Args, Debug)]
struct FetchArgs {
    #[command(flatten)]
    host: HostArgs,
    /// Copy from this bucket prefix instead of the VM (a campaign run with
    /// `--out gs://...`); needs no VM, no ssh and no record.
    #[arg(long, value_name = "gs://BUCKET/PREFIX")]
    from: Option<String>,
}

#[derive(Args, Debug)]
struct DownArgs {
    /// Which VM (default: the only one recorded).
    #[arg(long, conflicts_with = "all")]
    name: Option<String>,
    /// Every VM recorded here.
    #[arg(long)]
    all: bool,
    /// Seconds to wait for the deletion.
    #[arg(long, default_value_t = 900)]
    timeout: u64,
}

pub fn run(args: CloudArgs) -> anyhow::Result<()> {
    // Stage one: what was written, before any network.
    let poll = seconds(args.common.poll_every, "--poll-every")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("cannot start the async runtime")?;
    let common = &args.common;
    let store = StateStore::new(common.state.clone().unwrap_or_else(StateStore::default_file)).with_default(StateStore::default_file());
    match args.command {
        CloudCommand::Up(up) => runtime.block_on(cmd_up(common, &store, poll, up)),
        CloudCommand::Status(status) => runtime.block_on(cmd_status(common, &store, status)),
        CloudCommand::Run(run) => runtime.block_on(cmd_run(common, &store, poll, run)),
        CloudCommand::Logs(logs) => runtime.block_on(cmd_logs(common, &store, logs)),
        CloudCommand::Fetch(fetch) => runtime.block_on(cmd_fetch(common, &store, poll, fetch)),
        CloudCommand::Down(down) => runtime.block_on(cmd_down(common, &store, poll, down)),
    }
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    if !(value.is_finite() && value > 0.0) {
        bail!("{flag} must be a positive number of seconds, got {value}");
    }
    Ok(Duration::from_secs_f64(value))
}

fn auth_config(common: &CommonArgs) -> AuthConfig {
    AuthConfig { mode: common.auth, gcloud: common.gcloud.clone(), quota_project: common.quota_project.clone(), ..AuthConfig::default() }
}

async fn client(common: &CommonArgs) -> anyhow::Result<TpuClient> {
    let config = auth_config(common);
    tracing::debug!("credentials from {}", crate::google::auth::describe(&config));
    let credentials = crate::google::auth::credentials(&config)?;
    Ok(TpuClient::connect(ClientConfig { base_url: common.api_url.clone(), ..ClientConfig::default() }, credentials).await?)
}

/// Prints progress to stderr; repeated waiting notes at most once a minute.
struct Printer {
    last: String,
    at: Instant,
}

impl Printer {
    fn new() -> Self {
        Printer { last: String::new(), at: Instant::now() }
    }

    fn show(&mut self, event: CloudEvent) {
        match &event {
            // A closed stdout must not stop a running campaign.
            CloudEvent::CampaignOutput { line } => drop(outln!("[vm] {line}")),
            CloudEvent::OperationPending { .. } | CloudEvent::NodeState { .. } | CloudEvent::QueuedState { .. } => {
                // The same note with only the elapsed time changed is not news.
                let key = match &event {
                    CloudEvent::NodeState { node, state, .. } => format!("{node} {state}"),
                    CloudEvent::QueuedState { name, state, .. } => format!("{name} {state}"),
                    CloudEvent::OperationPending { operation, detail, .. } => format!("{operation} {detail:?}"),
                    _ => String::new(),
                };
                if key != self.last || self.at.elapsed() >= Duration::from_secs(60) {
                    eprintln!("  {event}");
                    self.last = key;
                    self.at = Instant::now();
                }
            }
            _ => eprintln!("{event}"),
        }
    }
}

fn parse_labels(labels: &[String]) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    labels
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => bail!("--label {l:?}: expected KEY=VALUE"),
        })
        .collect()
}

async fn cmd_up(common: &CommonArgs, store: &StateStore, poll: Duration, up: UpArgs) -> anyhow::Result<()> {
    let startup_script = match &up.startup_script {
        Some(path) => Some(std::fs::read_to_string(path).with_context(|| format!("cannot read the startup script {}", path.display()))?),
        None => None,
    };
    let capacity = if up.spot {
        Capacity::Spot
    } else if up.preemptible {
        Capacity::Preemptible
    } else {
        Capacity::OnDemand
    };
    let request = VmRequest {
        project: up.project,
        zone: up.zone,
        accelerator_type: up.accelerator_type,
        node_id: up.name,
        runtime_version: Some(up.runtime_version),
        capacity: Some(capacity),
        queued: up.queued,
        queued_valid_for_secs: up.queued_valid_for,
        network: up.network,
        subnetwork: up.subnetwork,
        service_account: up.service_account,
        labels: parse_labels(&up.labels)?,
        startup_script,
        external_ips: !up.no_external_ip,
    };
    let spec = request.validate().context("nothing was created")?;
    // The preflight, before any request: a program that cannot run on this
    // type must not cost a VM.
    match (&up.campaign, up.skip_preflight) {
        (Some(campaign), false) => {
            super::preflight::preflight(campaign, &spec.accelerator_type, super::preflight::TpuRuns::OnTpu, &crate::tpu::cache::default_path())?;
        }
        (None, false) => eprintln!(
            "no --campaign given: nothing to compile for {} before creating the VM (`cloud run` compiles the campaign's programs before it starts it)",
            spec.accelerator_type
        ),
        (_, true) => eprintln!("--skip-preflight: creating the VM without compiling any program for {} first", spec.accelerator_type),
    }
    let client = client(common).await?;
    // Credentials first: a refusal here has sent no request at all.
    client.check_credentials().await.context("cannot get Google Cloud credentials; nothing was created (no request was sent)")?;
    check_zone_offers(&client, &spec).await?;
    // Recorded before the create call: if `up` dies halfway, `down` still finds the VM.
    let record = VmRecord { spec: spec.clone(), created_unix: now_unix() as i64, recreations: 0 };
    store.upsert(record).with_context(|| format!("cannot record the VM in {}", store.path().display()))?;
    eprintln!(
        "creating TPU VM {} ({}, {}{}) in {} of project {}; it bills until `emotionet cloud down --name {}`",
        spec.node_id,
        spec.accelerator_type,
        spec.capacity,
        if spec.queued { ", queued" } else { "" },
        spec.zone,
        spec.project,
        spec.node_id
    );
    let vms = VmManager::new(&client, WaitOptions { poll, timeout: Duration::from_secs(up.timeout) });
    let mut printer = Printer::new();
    let node = match vms.create(&spec, &mut |e| printer.show(e)).await {
        Ok(node) => node,
        Err(e) if e.http_status() == Some(409) => {
            // Someone else's VM (or another type) has the name: never record it as ours,
            // or `down` would delete it.
            store.remove(&spec)?;
            return Err(e).context(format!(
                "a TPU VM or queued resource named {} already exists and was not created by emotionet with this type; pick another --name",
                spec.node_id
            ));
        }
        Err(e) => match leftovers(&client, &spec).await {
            Ok(false) => {
                store.remove(&spec)?;
                return Err(e).context(format!("could not create {}; nothing was left behind", spec.node_id));
            }
            Ok(true) => {
                return Err(e).context(format!(
                    "creating {} did not finish and part of it exists and may bill: `emotionet cloud status` shows it, `emotionet cloud down --name {}` removes it",
                    spec.node_id, spec.node_id
                ));
            }
            Err(check) => {
                return Err(e).context(format!(
                    "creating {} failed, and whether part of it exists could not be checked ({check}); it stays recorded: \
                     `emotionet cloud status` shows it and `emotionet cloud down --name {}` removes it once Google Cloud answers",
                    spec.node_id, spec.node_id
                ));
            }
        },
    };
    let ips = node.external_ips();
    outln!(
        "{} is READY ({} worker(s){}). Next: emotionet cloud run CAMPAIGN.yaml --name {}",
        spec.node_id,
        node.network_endpoints.len().max(1),
        if ips.is_empty() { String::new() } else { format!(", external IP {}", ips.join(", ")) },
        spec.node_id
    )?;
    Ok(())
}

/// Refuses a zone that does not offer the type, when the API says so (404 on
/// the zone's accelerator type), before anything is created or recorded.
async fn check_zone_offers(client: &TpuClient, spec: &crate::cloud::VmSpec) -> anyhow::Result<()> {
    let location = spec.location();
    let err = match client.get_accelerator_type(&location, &spec.accelerator_type).await {
        Ok(_) => return Ok(()),
        Err(e) if e.is_not_found() => e,
        // Any other failure is the create call's to report; this check only refuses on a clear no.
        Err(e) => {
            tracing::debug!("could not check that {} offers {}: {e}", spec.zone, spec.accelerator_type);
            return Ok(());
        }
    };
    let offered = client.list_accelerator_types(&location).await.map(|t| t.join(", ")).unwrap_or_else(|_| "(could not list them)".into());
    let known = cost::known_zones(&spec.accelerator_type)
        .map(|z| format!("; zones that offer {} (Google's TPU regions page): {}", spec.accelerator_type, z.join(", ")))
        .unwrap_or_default();
    Err(err).context(format!(
        "zone {} does not offer TPU type {} (the Cloud TPU API has no acceleratorTypes/{} there); it offers: {offered}{known}. Nothing was created",
        spec.zone, spec.accelerator_type, spec.accelerator_type
    ))
}

/// Whether the node or its queued resource exists, as the API says; an
/// error when it could not be asked (then nobody knows, and we say so).
async fn leftovers(client: &TpuClient, spec: &crate::cloud::VmSpec) -> Result<bool, crate::cloud::CloudError> {
    match client.get_node(&spec.node_name()).await {
        Ok(_) => return Ok(true),
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    if spec.queued {
        match client.get_queued_resource(&spec.queued_resource_name()).await {
            Ok(_) => return Ok(true),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(false)
}

async fn cmd_status(common: &CommonArgs, store: &StateStore, args: StatusArgs) -> anyhow::Result<()> {
    let records = store.load()?;
    if records.is_empty() && args.zone.is_none() {
        outln!("no TPU VMs recorded in {} (to look for leftovers in a zone: --project P --zone Z)", store.path().display())?;
        return Ok(());
    }
    let client = client(common).await?;
    let mut rows = Vec::new();
    for record in &records {
        let spec = &record.spec;
        let (state, up_secs) = match client.get_node(&spec.node_name()).await {
            Ok(node) => (node.state().to_string(), node.created_unix().map(|t| (now_unix() - t as f64).max(0.0))),
            // A queued VM has no node until Google finds the capacity.
            Err(e) if e.is_not_found() && spec.queued => match client.get_queued_resource(&spec.queued_resource_name()).await {
                Ok(resource) => (format!("QUEUED:{}", resource.state()), None),
                Err(e) if e.is_not_found() => ("NOT_FOUND".to_string(), None),
                Err(e) => return Err(e).with_context(|| format!("cannot ask Google Cloud about {}", spec.node_id)),
            },
            Err(e) if e.is_not_found() => ("NOT_FOUND".to_string(), None),
            Err(e) => return Err(e).with_context(|| format!("cannot ask Google Cloud about {}", spec.node_id)),
        };
        rows.push((record, state, up_secs));
    }
    let row = |cells: [&str; 8]| {
        format!("{:<24} {:<16} {:<8} {:<12} {:<28} {:<9} {:<16} {}", cells[0], cells[1], cells[2], cells[3], cells[4], cells[5], cells[6], cells[7])
    };
    if !rows.is_empty() {
        outln!("{}", row(["NAME", "ZONE", "TYPE", "CAPACITY", "STATE", "HOURS UP", "COST SO FAR", "RECREATED"]))?;
    }
    for (record, state, up_secs) in &rows {
        let spec = &record.spec;
        let capacity = if spec.queued { format!("{} queued", spec.capacity) } else { spec.capacity.to_string() };
        let hours = up_secs.map(|s| format!("{:.2}", s / 3600.0)).unwrap_or_else(|| "-".into());
        let cost = up_secs.map(|s| cost::estimate(&spec.accelerator_type, &spec.zone, spec.capacity, s)).unwrap_or_else(|| "-".into());
        outln!("{}", row([&spec.node_id, &spec.zone, &spec.accelerator_type, &capacity, state, &hours, &cost, &record.recreations.to_string()]))?;
        if state == "NOT_FOUND" {
            outln!("  (gone from Google Cloud; `emotionet cloud down --name {}` forgets it)", spec.node_id)?;
        }
    }
    if !rows.is_empty() {
        outln!(
            "costs are estimates: hours since the node's createTime (this node only; earlier recreations not counted) times the list price of {}; \
             check https://cloud.google.com/tpu/pricing and your billing report",
            cost::PRICE_SOURCE
        )?;
    }
    if let (Some(project), Some(zone)) = (args.project, args.zone) {
        let location = crate::cloud::Location::new(&project, &zone)?;
        let nodes = client.list_nodes(&location).await.with_context(|| format!("cannot list the TPU VMs in {zone}"))?;
        outln!("\nall TPU VMs in {zone} of {project}: {}", nodes.len())?;
        for node in &nodes {
            let ours = node.labels.get(MANAGED_LABEL.0).map(String::as_str) == Some(MANAGED_LABEL.1);
            let up = node.created_unix().map(|t| human(Duration::from_secs_f64((now_unix() - t as f64).max(0.0)))).unwrap_or_else(|| "-".into());
            outln!(
                "  {:<24} {:<8} {:<12} up {:<10} {}",
                node.node_id(),
                node.accelerator_type,
                node.state().to_string(),
                up,
                if ours { "(emotionet)" } else { "" }
            )?;
        }
        let queued = client.list_queued_resources(&location).await.with_context(|| format!("cannot list the queued resources in {zone}"))?;
        outln!("queued resources in {zone}: {}", queued.len())?;
        for resource in &queued {
            outln!("  {:<24} {}", resource.name.rsplit('/').next().unwrap_or(&resource.name), resource.state())?;
        }
    }
    Ok(())
}

fn default_local_out(record: &VmRecord) -> PathBuf {
    Path::new("runs").join("cloud").join(record.node_id())
}

/// The local copy of the VM's output: `--out` (a folder), else runs/cloud/NAME.
fn local_out(host: &HostArgs, record: &VmRecord) -> anyhow::Result<PathBuf> {
    match &host.out {
        Some(out) if crate::storage::Location::from_path(out)?.gcs().is_some() => {
            bail!(
                "--out {}: a bucket is for `cloud run` (the campaign writes there); to copy one here: `emotionet cloud fetch --from {} --out DIR`",
                out.display(),
                out.display()
            )
        }
        Some(out) => Ok(out.clone()),
        None => Ok(default_local_out(record)),
    }
}

/// `cloud run --out gs://BUCKET/PREFIX`: the campaign on the VM writes to the
/// bucket itself, so it needs nothing from this machine while it runs, and a
/// recreated VM resumes from the newest checkpoint there. `{out}` in the
/// command becomes the bucket, and the command's staging folder is the VM's
/// output folder (`EMOTIONET_STAGING={out}`), so that folder is still copied
/// here (to runs/cloud/NAME) as before.
///
/// The default command also waits for the bucket's lease: after a
/// preemption the recreated VM is a new host, and the lost VM's lease stays
/// until its TTL runs out (nobody renews it any more), so the resumed
/// campaign waits that long instead of stopping at once. A live holder
/// renews its lease, so waiting never lets two writers in. A custom
/// `--command` chooses for itself (`emotionet run ... --wait`).
fn bucket_command(template: &str, bucket: &crate::storage::GcsPath) -> String {
    let template = if template == DEFAULT_COMMAND { format!("{template} --wait") } else { template.to_string() };
    format!("EMOTIONET_STAGING={{out}} {}", template.replace("{out}", &bucket.to_string()))
}

async fn remote_host(common: &CommonArgs, client: &TpuClient, record: &VmRecord, host: &HostArgs) -> anyhow::Result<Box<dyn RemoteHost>> {
    match host.via {
        Via::Local => {
            let root = host.local_root.as_ref().context("--via local needs --local-root DIR (the folder playing the VM's home)")?;
            Ok(Box::new(LocalHost::new(root)?))
        }
        Via::Gcloud => {
            let workers = match client.get_node(&record.spec.node_name()).await {
                Ok(node) => node.network_endpoints.len().max(1),
                Err(e) if e.is_not_found() => 1,
                Err(e) => return Err(e).context("cannot read the VM's workers"),
            };
            Ok(Box::new(GcloudTpuHost::new(&common.gcloud, &record.spec, workers, host.ssh_args.clone())))
        }
    }
}

async fn cmd_run(common: &CommonArgs, store: &StateStore, poll: Duration, args: RunArgs) -> anyhow::Result<()> {
    let mut record = store.find(args.host.name.as_deref())?;
    let project_root = std::env::current_dir().context("cannot read the current folder")?;
    let relative = |path: &Path| -> PathBuf { path.strip_prefix(&project_root).map(Path::to_path_buf).unwrap_or_else(|_| path.to_path_buf()) };
    let binary = match &args.binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("cannot find this emotionet binary; pass --binary")?,
    };
    let bucket = match &args.host.out {
        Some(out) => crate::storage::Location::from_path(out)?.gcs().cloned(),
        None => None,
    };
    let local = if bucket.is_some() { default_local_out(&record) } else { local_out(&args.host, &record)? };
    let mut plan = CampaignPlan::new(&project_root, relative(&args.campaign), binary, local);
    plan.ship = args.ship.iter().map(|p| relative(p)).collect();
    plan.workdir = args.host.workdir.clone();
    plan.command_template = match &bucket {
        Some(bucket) => bucket_command(&args.command, bucket),
        None => args.command.clone(),
    };
    plan.setup_template = args.setup.clone();
    plan.poll_every = poll;
    plan.sync_every = seconds(args.sync_every, "--sync-every")?;
    plan.max_recreations = args.max_recreations;
    plan.step_timeout = Duration::from_secs(args.step_timeout);
    plan.build_on_vm = args.build_on_vm;
    plan.toolchain = args.toolchain.clone();
    plan.detach = args.detach;
    // The bucket has the campaign's newest state; the copy here may be older.
    plan.restore_local = bucket.is_none();
    plan.validate().context("nothing was started")?;
    // The preflight, before any request (a preempted VM is recreated by
    // this command, which bills): refuse what cannot run on this type.
    let predictions = if args.skip_preflight {
        eprintln!("--skip-preflight: starting without compiling the campaign's programs for {} first", record.spec.accelerator_type);
        Vec::new()
    } else {
        super::preflight::preflight(&args.campaign, &record.spec.accelerator_type, super::preflight::TpuRuns::All, &crate::tpu::cache::default_path())?
    };

    let client = client(common).await?;
    let host = remote_host(common, &client, &record, &args.host).await?;
    let vms = VmManager::new(&client, WaitOptions { poll, timeout: plan.step_timeout });
    eprintln!(
        "running {} on {} (output copied to {} every {}s)",
        plan.campaign.display(),
        host.describe(),
        plan.local_out.display(),
        plan.sync_every.as_secs()
    );
    let mut printer = Printer::new();
    let mut interrupt = std::pin::pin!(async {
        let _ = tokio::signal::ctrl_c().await;
    });
    let result = campaign::run_campaign(&vms, &mut record, host.as_ref(), &plan, interrupt.as_mut(), &mut |e| printer.show(e)).await;
    // The count of recreations is kept whatever happened.
    store.upsert(record.clone())?;
    // The prediction goes beside the runs it predicts, for the report; written
    // after the campaign so a fresh output folder is not "restored" to the VM.
    for prediction in &predictions {
        match crate::tpu::write_prediction(&plan.local_out, prediction) {
            Ok(path) => eprintln!("the TPU prediction for {} (not a measurement) is in {}", prediction.experiment, path.display()),
            Err(e) => tracing::warn!("could not keep the TPU prediction for {}: {e}", prediction.experiment),
        }
    }
    let report = result.with_context(|| format!("the campaign on {} did not finish", record.node_id()))?;
    if args.detach {
        outln!(
            "campaign {} runs detached on {}: `emotionet cloud logs --follow` shows it, `emotionet cloud run` with the same arguments re-attaches and copies its output to {}",
            report.campaign_id.as_deref().unwrap_or("?"),
            record.node_id(),
            plan.local_out.display()
        )?;
        eprintln!("the VM {} is up and billing: `emotionet cloud down --name {}` when done", record.node_id(), record.node_id());
        return Ok(());
    }
    outln!(
        "done: {} start(s), {} re-attach(es), {} recreation(s), {} sync(s) in {}; results in {}",
        report.attempts,
        report.attached,
        report.recreations,
        report.syncs,
        human(report.took),
        plan.local_out.display()
    )?;
    if args.down_after {
        let mut printer = Printer::new();
        vms.delete(&record.spec, &mut |e| printer.show(e)).await.with_context(|| {
            format!("the campaign finished but deleting {} failed; run `emotionet cloud down --name {}`", record.node_id(), record.node_id())
        })?;
        store.remove(&record.spec)?;
    } else {
        eprintln!("the VM {} is still up and billing: `emotionet cloud down --name {}` when done", record.node_id(), record.node_id());
    }
    Ok(())
}

async fn cmd_logs(common: &CommonArgs, store: &StateStore, args: LogsArgs) -> anyhow::Result<()> {
    let record = store.find(args.host.name.as_deref())?;
    let client = client(common).await?;
    let host = remote_host(common, &client, &record, &args.host).await?;
    let mut plan = CampaignPlan::new(".", "", "", local_out(&args.host, &record)?);
    plan.workdir = args.host.workdir.clone();
    let mut broken = false;
    let end = campaign::logs(host.as_ref(), &plan, args.follow, &mut |line| {
        // A closed stdout (`| head`) stops the printing, not the campaign.
        if !broken && outln!("{line}").is_err() {
            broken = true;
        }
    })
    .await
    .with_context(|| format!("cannot read the campaign's log on {} (is it READY? `emotionet cloud status`)", record.node_id()))?;
    match end {
        None => eprintln!("no campaign has run on {} yet (`emotionet cloud run` starts one)", record.node_id()),
        Some(LogEnd::Running { id }) => eprintln!("campaign {id} is still running on {} (`--follow` to follow it)", record.node_id()),
        Some(LogEnd::Ended { id, code }) => eprintln!("campaign {id} on {} ended with exit status {code}", record.node_id()),
    }
    Ok(())
}

async fn cmd_fetch(common: &CommonArgs, store: &StateStore, _poll: Duration, args: FetchArgs) -> anyhow::Result<()> {
    if let Some(from) = &args.from {
        let crate::storage::Location::Gcs(path) = crate::storage::Location::parse(from)? else {
            bail!("--from {from:?}: expected gs://BUCKET/PREFIX (a local folder needs no fetch)");
        };
        let out = args.host.out.clone().context("--from needs --out DIR: where to put the copy")?;
        let started = Instant::now();
        let count = super::output::download(&path, &out).await?;
        outln!("fetched {count} new file(s) from {from} into {} ({})", out.display(), human(started.elapsed()))?;
        return Ok(());
    }
    let record = store.find(args.host.name.as_deref())?;
    let client = client(common).await?;
    let host = remote_host(common, &client, &record, &args.host).await?;
    let mut plan = CampaignPlan::new(".", "", "", local_out(&args.host, &record)?);
    plan.workdir = args.host.workdir.clone();
    let started = Instant::now();
    campaign::fetch(host.as_ref(), &plan)
        .await
        .with_context(|| format!("cannot copy the output of {} (is it READY? `emotionet cloud status`)", record.node_id()))?;
    outln!("fetched ~/{} from {} into {} ({})", plan.remote_out(), record.node_id(), plan.local_out.display(), human(started.elapsed()))?;
    Ok(())
}

async fn cmd_down(common: &CommonArgs, store: &StateStore, poll: Duration, args: DownArgs) -> anyhow::Result<()> {
    let records = if args.all { store.load()? } else { vec![store.find(args.name.as_deref())?] };
    if records.is_empty() {
        outln!("no TPU VMs recorded in {}", store.path().display())?;
        return Ok(());
    }
    let client = client(common).await?;
    let vms = VmManager::new(&client, WaitOptions { poll, timeout: Duration::from_secs(args.timeout) });
    for record in &records {
        let spec = &record.spec;
        eprintln!("deleting {} in {}", spec.node_id, spec.zone);
        let mut printer = Printer::new();
        let deleted = vms.delete(spec, &mut |e| printer.show(e)).await.with_context(|| {
            format!(
                "cannot delete {}; it may still bill: try again, or `gcloud compute tpus tpu-vm delete {} --zone {} --project {}`",
                spec.node_id, spec.node_id, spec.zone, spec.project
            )
        })?;
        store.remove(spec)?;
        outln!("{} {}", spec.node_id, if deleted { "deleted" } else { "was already gone; forgotten" })?;
    }
    let zones: std::collections::BTreeSet<(String, String)> = records.iter().map(|r| (r.spec.project.clone(), r.spec.zone.clone())).collect();
    for (project, zone) in zones {
        eprintln!("to check for leftovers: emotionet cloud status --project {project} --zone {zone}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_campaign_waits_for_the_lost_vms_lease_only_with_the_default_command() {
        let location = crate::storage::Location::parse("gs://bkt/runs").unwrap();
        let bucket = location.gcs().unwrap();
        let default = bucket_command(DEFAULT_COMMAND, bucket);
        assert!(default.starts_with("EMOTIONET_STAGING={out} ") && default.ends_with(" --wait"), "{default}");
        assert!(default.contains("--out gs://bkt/runs") && !default.contains("--out {out}"), "{default}");
        let custom = bucket_command("{bin} run c.yaml --out {out}", bucket);
        assert_eq!(custom, "EMOTIONET_STAGING={out} {bin} run c.yaml --out gs://bkt/runs");
    }
}
