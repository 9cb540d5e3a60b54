//! `run` end to end against the fake API, with a local folder standing in
//! for the TPU VM (the same code path as the real VM: only the transport
//! differs). The fake empties that folder whenever it creates a node, as a
//! new VM has a fresh disk, so whatever the campaign finds after a
//! recreation came through the local copy of its output. The campaign runs
//! detached on the stand-in (deploy/vm-campaign.sh), as on a real VM.

mod cloud_fake;
mod skips;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cloud_fake::{FakeTpu, temp_dir, write_script};
use emotionet::cloud::remote::{self, RemoteHost, Worker};
use emotionet::cloud::{
    CampaignPlan, Capacity, ClientConfig, CloudError, CloudEvent, LocalHost, NodeState, RetryPolicy, TpuClient, VmManager, VmRecord, VmRequest, WaitOptions,
    fetch, run_campaign,
};

const WAIT: WaitOptions = WaitOptions { poll: Duration::from_millis(20), timeout: Duration::from_secs(10) };

async fn client(fake: &FakeTpu) -> TpuClient {
    emotionet::google::tls::install_crypto_provider();
    let credentials = google_cloud_auth::credentials::mds::Builder::default().with_endpoint(fake.url.clone()).build().unwrap();
    let retry = RetryPolicy { initial_backoff: Duration::from_millis(10), max_backoff: Duration::from_millis(50), ..RetryPolicy::default() };
    TpuClient::connect(ClientConfig { base_url: fake.url.clone(), retry, ..ClientConfig::default() }, credentials).await.unwrap()
}

fn record(node_id: &str, capacity: Capacity) -> VmRecord {
    let spec = VmRequest {
        project: Some("emotionet-test".into()),
        zone: Some("europe-west4-a".into()),
        accelerator_type: Some("v3-8".into()),
        node_id: node_id.into(),
        capacity: Some(capacity),
        ..Default::default()
    }
    .validate()
    .unwrap();
    VmRecord { spec, created_unix: 0, recreations: 0 }
}

/// A project folder with a campaign file and an experiment it refers to.
fn project(root: &Path) {
    std::fs::create_dir_all(root.join("experiments")).unwrap();
    std::fs::write(root.join("campaign.yaml"), "experiments: [experiments/paper-tpu.yaml]\n").unwrap();
    std::fs::write(root.join("experiments/paper-tpu.yaml"), "model: face\n").unwrap();
}

/// A quick setup for the tests that are not about it (the real one, which
/// fetches libtpu, runs in `tests/cloud_cli.rs`): records that it ran.
const SETUP: &str = "mkdir -p {deps} && echo 'setup ran' >> {deps}/setup-ran.txt";

fn plan(root: &Path, out: &Path) -> CampaignPlan {
    let mut plan = CampaignPlan::new(root, "campaign.yaml", env!("CARGO_BIN_EXE_emotionet"), out);
    plan.ship = vec![PathBuf::from("experiments")];
    plan.setup_template = SETUP.into();
    plan.poll_every = Duration::from_millis(100);
    plan.sync_every = Duration::from_millis(200);
    plan.step_timeout = Duration::from_secs(30);
    plan
}

fn never() -> impl std::future::Future<Output = ()> + Send {
    std::future::pending()
}

#[tokio::test]
async fn up_run_fetch_down_with_the_real_binary_on_the_stand_in_vm() {
    let fake = FakeTpu::start();
    let client = client(&fake).await;
    let vms = VmManager::new(&client, WAIT);
    let dir = temp_dir("run");
    let (root, vm, out) = (dir.path().join("project"), dir.path().join("vm"), dir.path().join("out"));
    project(&root);
    let mut record = record("tpu-run", Capacity::OnDemand);
    vms.create(&record.spec, &mut |_| {}).await.unwrap();

    // The campaign command here is the shipped binary's own `devices` on 8
    // CPU devices (the orchestrator's `emotionet run` is not merged yet), plus
    // proof that the campaign and experiment files arrived where it runs.
    let mut plan = plan(&root, &out);
    plan.command_template = "{bin} devices --json --client-option cpu_device_count=8 > {out}/devices.json && \
                             cp {campaign} experiments/paper-tpu.yaml {out}/ && echo campaign done"
        .into();
    let host = LocalHost::new(&vm).unwrap();
    let mut events = Vec::new();
    let report = run_campaign(&vms, &mut record, &host, &plan, std::pin::pin!(never()), &mut |e| events.push(e)).await.unwrap();
    assert_eq!((report.attempts, report.recreations), (1, 0));
    assert!(report.syncs >= 1);

    let devices: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("devices.json")).unwrap()).unwrap();
    assert_eq!(devices["platform"], "cpu");
    assert_eq!(devices["devices"].as_array().unwrap().len(), 8);
    assert_eq!(std::fs::read_to_string(out.join("campaign.yaml")).unwrap(), "experiments: [experiments/paper-tpu.yaml]\n");
    assert!(out.join("paper-tpu.yaml").is_file());
    // On the "VM": the binary, the files, the setup's mark, the output.
    assert!(vm.join("emotionet-cloud/bin/emotionet").is_file());
    assert!(vm.join("emotionet-cloud/project/experiments/paper-tpu.yaml").is_file());
    assert_eq!(std::fs::read_to_string(vm.join("emotionet-cloud/deps/setup-ran.txt")).unwrap(), "setup ran\n");
    assert!(events.iter().any(|e| matches!(e, CloudEvent::CampaignOutput { line } if line == "campaign done")));
    // The campaign's log, on the VM and copied here under the campaign's id.
    let id = report.campaign_id.clone().unwrap();
    let log = std::fs::read_to_string(dir.path().join(format!("out.cloud-log/{id}.log"))).unwrap();
    assert!(log.contains("campaign done"), "{log}");
    assert_eq!(std::fs::read_to_string(vm.join(format!("emotionet-cloud/campaign/{id}.log"))).unwrap(), log);
    assert_eq!(std::fs::read_to_string(vm.join(format!("emotionet-cloud/campaign/{id}.exit"))).unwrap(), "0\n");

    // fetch brings the same output into a second folder.
    let mut again = plan.clone();
    again.local_out = dir.path().join("fetched");
    fetch(&host, &again).await.unwrap();
    assert_eq!(std::fs::read(again.local_out.join("devices.json")).unwrap(), std::fs::read(out.join("devices.json")).unwrap());

    assert!(vms.delete(&record.spec, &mut |_| {}).await.unwrap());
    assert!(vms.get(&record.spec).await.unwrap_err().is_not_found());
}

/// A campaign that resumes from its output folder, as the orchestrator will:
/// it checkpoints after every step (write, then rename) and on start
/// continues after the last checkpoint; `starts` records where each start began.
const RESUMABLE: &str = r#"#!/bin/bash
set -eu
out=$1; steps=$2
mkdir -p "$out"
done=0
if [ -f "$out/checkpoint" ]; then done=$(cat "$out/checkpoint"); fi
echo "start after $done" >> "$out/starts"
for i in $(seq $((done + 1)) "$steps"); do
  sleep 0.15
  echo "$i" >> "$out/steps"
  echo "$i" > "$out/checkpoint.tmp" && mv "$out/checkpoint.tmp" "$out/checkpoint"
  echo "step $i of $steps"
done
"#;

fn checkpoint(out: &Path) -> u32 {
    std::fs::read_to_string(out.join("checkpoint")).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn a_preempted_spot_vm_is_recreated_and_the_campaign_resumes_from_the_synced_state() {
    let fake = FakeTpu::start();
    let client = client(&fake).await;
    let vms = VmManager::new(&client, WAIT);
    let dir = temp_dir("preempt");
    let (root, vm, out) = (dir.path().join("project"), dir.path().join("vm"), dir.path().join("out"));
    project(&root);
    write_script(&root.join("campaign.sh"), RESUMABLE);
    fake.set_vm_disk(&vm);
    let mut record = record("tpu-spot", Capacity::Spot);
    vms.create(&record.spec, &mut |_| {}).await.unwrap();

    let mut plan = plan(&root, &out);
    plan.ship.push(PathBuf::from("campaign.sh"));
    plan.command_template = "./campaign.sh {out} 16".into();
    let host = LocalHost::new(&vm).unwrap();
    let mut events = Vec::new();
    let mut preempted_at = 0;
    // Preempt the VM once the local copy holds a checkpoint past step 3.
    let preempter = async {
        while checkpoint(&out) < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        preempted_at = checkpoint(&out);
        fake.preempt("tpu-spot");
    };
    let mut on_event = |e| events.push(e);
    let interrupt = std::pin::pin!(never());
    let campaign = run_campaign(&vms, &mut record, &host, &plan, interrupt, &mut on_event);
    let (report, ()) = tokio::join!(campaign, preempter);
    let report = report.unwrap();
    for event in &events {
        eprintln!("{event}");
    }

    assert_eq!((report.attempts, report.recreations), (2, 1), "{events:#?}");
    assert_eq!(record.recreations, 1);
    assert_eq!(fake.creations(), 2, "created once, recreated once");
    assert_eq!(fake.count("DELETE", "/nodes/tpu-spot"), 1, "the preempted VM was deleted first");
    assert_eq!(fake.node_state("tpu-spot").as_deref(), Some("READY"));
    let kinds: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            CloudEvent::Preempted { state, .. } => Some(if *state == NodeState::Preempted { "preempted" } else { "other" }),
            CloudEvent::Recreating { .. } => Some("recreating"),
            CloudEvent::Restored { .. } => Some("restored"),
            CloudEvent::Finished { .. } => Some("finished"),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["preempted", "recreating", "restored", "finished"]);

    // The second start resumed from what the local copy held, not from zero.
    let starts = std::fs::read_to_string(out.join("starts")).unwrap();
    eprintln!("starts:\n{starts}preempted once the local copy held checkpoint {preempted_at}");
    let resumed: Vec<u32> = starts.lines().map(|l| l.trim_start_matches("start after ").parse().unwrap()).collect();
    assert_eq!(resumed.len(), 2, "{starts}");
    assert_eq!(resumed[0], 0);
    assert!(resumed[1] >= preempted_at && resumed[1] >= 3, "resumed after {} but {preempted_at} had reached the local copy", resumed[1]);
    assert_eq!(checkpoint(&out), 16);
    // Every step is in the log; the only repeats are work done after the last sync.
    let steps: Vec<u32> = std::fs::read_to_string(out.join("steps")).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(steps.last(), Some(&16));
    for step in 1..=16 {
        assert!(steps.contains(&step), "step {step} missing from {steps:?}");
    }
    // The VM's disk was new: the state it resumed from came from the local copy.
    assert_eq!(std::fs::read_to_string(vm.join("emotionet-cloud/out/starts")).unwrap(), starts);
}

#[tokio::test]
async fn a_campaign_failing_on_a_healthy_vm_is_reported_not_retried() {
    let fake = FakeTpu::start();
    let client = client(&fake).await;
    let vms = VmManager::new(&client, WAIT);
    let dir = temp_dir("fail");
    let (root, out) = (dir.path().join("project"), dir.path().join("out"));
    project(&root);
    let mut record = record("tpu-fail", Capacity::Spot);
    vms.create(&record.spec, &mut |_| {}).await.unwrap();
    let mut plan = plan(&root, &out);
    plan.command_template = "echo 'experiments/paper-tpu.yaml: batch 0 is not allowed' >&2; exit 3".into();
    let host = LocalHost::new(dir.path().join("vm")).unwrap();
    let err = run_campaign(&vms, &mut record, &host, &plan, std::pin::pin!(never()), &mut |_| {}).await.unwrap_err();
    assert!(matches!(&err, CloudError::Remote { status, .. } if status == "exit status 3"), "{err:?}");
    assert!(err.to_string().contains("batch 0 is not allowed"), "{err}");
    assert_eq!((fake.creations(), record.recreations), (1, 0));

    // A bad template is caught before anything is shipped.
    plan.command_template = "{bin} run {campaing}".into();
    let err = run_campaign(&vms, &mut record, &host, &plan, std::pin::pin!(never()), &mut |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("unknown placeholder {campaing}"), "{err}");
}

#[tokio::test]
async fn a_vm_preempted_while_it_is_being_set_up_is_recreated_too() {
    let fake = FakeTpu::start();
    let client = client(&fake).await;
    let vms = VmManager::new(&client, WAIT);
    let dir = temp_dir("preempt-setup");
    let (root, vm, out) = (dir.path().join("project"), dir.path().join("vm"), dir.path().join("out"));
    project(&root);
    fake.set_vm_disk(&vm);
    let mut record = record("tpu-setup", Capacity::Spot);
    vms.create(&record.spec, &mut |_| {}).await.unwrap();

    // The first setup asks to be preempted, then fails as a dying VM's ssh would.
    let count = dir.path().join("setups");
    let signal = dir.path().join("preempt-me");
    let mut plan = plan(&root, &out);
    plan.setup_template = format!(
        "echo x >> {count}; if [ $(wc -l < {count}) -eq 1 ]; then touch {signal}; sleep 1; exit 255; fi",
        count = count.display(),
        signal = signal.display()
    );
    plan.command_template = "echo finished > {out}/result".into();
    let host = LocalHost::new(&vm).unwrap();
    let preempter = async {
        while !signal.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        fake.preempt("tpu-setup");
    };
    let mut on_event = |_| {};
    let interrupt = std::pin::pin!(never());
    let (report, ()) = tokio::join!(run_campaign(&vms, &mut record, &host, &plan, interrupt, &mut on_event), preempter);
    let report = report.unwrap();
    assert_eq!((report.attempts, report.recreations), (1, 1), "the campaign itself started once");
    assert_eq!(std::fs::read_to_string(&count).unwrap().lines().count(), 2);
    assert_eq!(std::fs::read_to_string(out.join("result")).unwrap(), "finished\n");
    assert_eq!(fake.creations(), 2);
}

#[tokio::test]
async fn an_interrupt_stops_the_campaign_on_the_vm_and_keeps_its_output() {
    let fake = FakeTpu::start();
    let client = client(&fake).await;
    let vms = VmManager::new(&client, WAIT);
    let dir = temp_dir("interrupt");
    let (root, vm, out) = (dir.path().join("project"), dir.path().join("vm"), dir.path().join("out"));
    project(&root);
    write_script(&root.join("campaign.sh"), RESUMABLE);
    let mut record = record("tpu-ctrl-c", Capacity::OnDemand);
    vms.create(&record.spec, &mut |_| {}).await.unwrap();
    let mut plan = plan(&root, &out);
    plan.ship.push(PathBuf::from("campaign.sh"));
    plan.command_template = "./campaign.sh {out} 100".into();
    plan.sync_every = Duration::from_secs(3600);
    let host = LocalHost::new(&vm).unwrap();
    let remote_checkpoint = vm.join("emotionet-cloud/out");
    let ctrl_c = async {
        while checkpoint(&remote_checkpoint) < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let err = run_campaign(&vms, &mut record, &host, &plan, std::pin::pin!(ctrl_c), &mut |_| {}).await.unwrap_err();
    assert!(matches!(err, CloudError::Interrupted { .. }), "{err:?}");
    assert!(err.to_string().contains("emotionet cloud down"), "{err}");
    // The output so far was copied on the way out, and nothing runs on any more.
    let copied = checkpoint(&out);
    assert!(copied >= 2, "{copied}");
    let stopped_at = checkpoint(&remote_checkpoint);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(checkpoint(&remote_checkpoint), stopped_at, "the campaign kept running after the interrupt");
    assert_eq!(fake.node_state("tpu-ctrl-c").as_deref(), Some("READY"), "an interrupt leaves the VM alone");
}

/// A stand-in transport with faults: runs the script like [`LocalHost`],
/// with extra environment, and can cut the stream the script reads (an ssh
/// connection lost mid-upload, or gcloud re-running a command on a half-read
/// stdin) or the stream it writes (lost mid-download) after some bytes.
struct FaultyHost {
    root: PathBuf,
    env: Vec<(String, String)>,
    cut_stdin_after: Option<usize>,
    cut_stdout_after: Option<usize>,
}

impl FaultyHost {
    fn new(root: &Path) -> Self {
        FaultyHost { root: LocalHost::new(root).unwrap().root().to_path_buf(), env: Vec::new(), cut_stdin_after: None, cut_stdout_after: None }
    }
}

impl RemoteHost for FaultyHost {
    fn describe(&self) -> String {
        format!("the faulty stand-in VM at {}", self.root.display())
    }

    fn worker_count(&self) -> usize {
        1
    }

    fn command(&self, _worker: Worker, script: &str) -> tokio::process::Command {
        let quoted = format!("'{}'", script.replace('\'', r"'\''"));
        let mut line = format!("bash -c {quoted}");
        if let Some(n) = self.cut_stdin_after {
            line = format!("head -c {n} | {line}");
        }
        if let Some(n) = self.cut_stdout_after {
            line = format!("set -o pipefail; {line} | head -c {n}");
        }
        let mut command = tokio::process::Command::new("bash");
        command.arg("-c").arg(line).current_dir(&self.root).env("HOME", &self.root);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }
}

/// Uploads land whole or not at all: a stream cut halfway (what a dropped
/// ssh connection, or gcloud re-running the command on a half-read stdin,
/// delivers) is an error and leaves every file on the VM as it was.
#[tokio::test]
async fn an_upload_cut_halfway_changes_nothing_on_the_vm() {
    let dir = temp_dir("upload-cut");
    let (local, vm) = (dir.path().join("local"), dir.path().join("vm"));
    std::fs::create_dir_all(local.join("experiments")).unwrap();
    std::fs::write(local.join("experiments/a.yaml"), "version: 1\n").unwrap();
    std::fs::write(local.join("experiments/big.bin"), vec![1u8; 200_000]).unwrap();
    let good = LocalHost::new(&vm).unwrap();
    let limit = Duration::from_secs(30);
    remote::upload(&good, &local, &[PathBuf::from("experiments")], "emotionet-cloud/project", limit).await.unwrap();
    let on_vm = vm.join("emotionet-cloud/project/experiments");
    assert_eq!(std::fs::read_to_string(on_vm.join("a.yaml")).unwrap(), "version: 1\n");

    std::fs::write(local.join("experiments/a.yaml"), "version: 2\n").unwrap();
    std::fs::write(local.join("experiments/big.bin"), vec![2u8; 200_000]).unwrap();
    let mut cut = FaultyHost::new(&vm);
    cut.cut_stdin_after = Some(100_000);
    let err = remote::upload(&cut, &local, &[PathBuf::from("experiments")], "emotionet-cloud/project", limit).await.unwrap_err();
    assert!(matches!(err, CloudError::Remote { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(on_vm.join("a.yaml")).unwrap(), "version: 1\n", "a cut upload replaced a file");
    assert_eq!(std::fs::read(on_vm.join("big.bin")).unwrap(), vec![1u8; 200_000], "a cut upload left a half-written file");
    let leftovers: Vec<_> = std::fs::read_dir(vm.join("emotionet-cloud")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers, ["project"], "the staging folder is cleaned up");

    // Run again (as gcloud would): the whole new version arrives.
    remote::upload(&good, &local, &[PathBuf::from("experiments")], "emotionet-cloud/project", limit).await.unwrap();
    assert_eq!(std::fs::read_to_string(on_vm.join("a.yaml")).unwrap(), "version: 2\n");
    assert_eq!(std::fs::read(on_vm.join("big.bin")).unwrap(), vec![2u8; 200_000]);
}

/// A failed snapshot or a broken archive in fetch is an error, and the
/// local folder keeps its last good copy, untouched.
#[tokio::test]
async fn a_failed_snapshot_or_archive_is_an_error_and_keeps_the_last_good_copy() {
    let dir = temp_dir("fetch-fail");
    let (root, vm) = (dir.path().join("project"), dir.path().join("vm"));
    project(&root);
    let remote_out = vm.join("emotionet-cloud/out");
    std::fs::create_dir_all(remote_out.join("face")).unwrap();
    std::fs::write(remote_out.join("face/record.json"), "{\"step\": 1}").unwrap();
    std::fs::write(remote_out.join("face/checkpoint.bin"), vec![7u8; 300_000]).unwrap();
    let mut plan = plan(&root, &dir.path().join("out"));
    plan.step_timeout = Duration::from_secs(30);
    let good = LocalHost::new(&vm).unwrap();
    fetch(&good, &plan).await.unwrap();
    let local = plan.local_out.join("face/record.json");
    assert_eq!(std::fs::read_to_string(&local).unwrap(), "{\"step\": 1}");

    // The VM moves on; the transfer breaks halfway: an error, the old copy stays.
    std::fs::write(remote_out.join("face/record.json"), "{\"step\": 2}").unwrap();
    std::fs::write(remote_out.join("face/checkpoint.bin"), vec![8u8; 300_000]).unwrap();
    let mut cut = FaultyHost::new(&vm);
    cut.cut_stdout_after = Some(150_000);
    let err = fetch(&cut, &plan).await.unwrap_err().to_string();
    assert!(err.contains("keeps the last good copy"), "{err}");
    assert_eq!(std::fs::read_to_string(&local).unwrap(), "{\"step\": 1}");
    assert_eq!(std::fs::read(plan.local_out.join("face/checkpoint.bin")).unwrap(), vec![7u8; 300_000]);

    // The snapshot itself fails (a file that cannot be hard-linked, even by root): an error, not an empty archive.
    let stuck = remote_out.join("face/immutable.txt");
    std::fs::write(&stuck, "x").unwrap();
    let immutable = std::process::Command::new("chattr").arg("+i").arg(&stuck).status();
    if !immutable.is_ok_and(|s| s.success()) {
        skips::not_on_this_machine(
            "cloud_run::a_failed_snapshot_or_archive_is_an_error_and_keeps_the_last_good_copy (its failed-snapshot part)",
            "`chattr +i` does not work on this file system",
        );
        return;
    }
    let err = fetch(&good, &plan).await.unwrap_err().to_string();
    let _ = std::process::Command::new("chattr").arg("-i").arg(&stuck).status();
    assert!(err.contains("cannot create hard link") && err.contains("keeps the last good copy"), "{err}");
    assert_eq!(std::fs::read_to_string(&local).unwrap(), "{\"step\": 1}");
    assert!(!plan.local_out.join("face/immutable.txt").exists());
}

/// The campaign lock has a timeout, and the error names who holds it.
#[tokio::test]
async fn a_held_lock_times_out_naming_its_holder() {
    let fake = FakeTpu::start();
    let client = client(&fake).await;
    let vms = VmManager::new(&client, WAIT);
    let dir = temp_dir("lock");
    let (root, vm, out) = (dir.path().join("project"), dir.path().join("vm"), dir.path().join("out"));
    project(&root);
    let mut record = record("tpu-lock", Capacity::OnDemand);
    vms.create(&record.spec, &mut |_| {}).await.unwrap();
    let control = vm.join("emotionet-cloud/campaign");
    std::fs::create_dir_all(&control).unwrap();
    std::fs::write(control.join("control.owner"), "pid 4242 (a stuck cloud run) on laptop since 2026-12-01T10:00:00Z\n").unwrap();
    let mut holder = std::process::Command::new("flock").arg(control.join("control.lock")).args(["sleep", "30"]).spawn().unwrap();
    let mut host = FaultyHost::new(&vm);
    host.env.push(("EMOTIONET_LOCK_TIMEOUT".into(), "1".into()));
    let mut plan = plan(&root, &out);
    plan.command_template = "echo never".into();
    let result = run_campaign(&vms, &mut record, &host, &plan, std::pin::pin!(never()), &mut |_| {}).await;
    holder.kill().unwrap();
    holder.wait().unwrap();
    let err = result.unwrap_err().to_string();
    assert!(err.contains("exit status: 75") && err.contains("lock timeout: "), "{err}");
    assert!(err.contains("control.lock is still held after 1s by: pid 4242 (a stuck cloud run)"), "{err}");
    assert!(!out.join("never").exists() && std::fs::read_dir(&control).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".log")));
}

/// A binary that needs a newer glibc than the VM has is refused before it
/// is shipped, with the way out. The stand-in VM here has an old glibc by
/// its own `getconf` saying so (a real old userland: see the chroot notes
/// in deploy/README.md).
#[tokio::test]
async fn a_binary_too_new_for_the_vms_glibc_is_refused_before_shipping() {
    let fake = FakeTpu::start();
    let client = client(&fake).await;
    let vms = VmManager::new(&client, WAIT);
    let dir = temp_dir("glibc");
    let (root, vm, out) = (dir.path().join("project"), dir.path().join("vm"), dir.path().join("out"));
    project(&root);
    let mut record = record("tpu-glibc", Capacity::OnDemand);
    vms.create(&record.spec, &mut |_| {}).await.unwrap();
    let shim = dir.path().join("old-image-bin");
    std::fs::create_dir_all(&shim).unwrap();
    write_script(&shim.join("getconf"), "#!/bin/bash\n[ \"$1\" = GNU_LIBC_VERSION ] && { echo 'glibc 2.17'; exit 0; }\nexec /usr/bin/getconf \"$@\"\n");
    let mut host = FaultyHost::new(&vm);
    host.env.push(("PATH".into(), format!("{}:{}", shim.display(), std::env::var("PATH").unwrap())));
    let plan = plan(&root, &out);
    let err = run_campaign(&vms, &mut record, &host, &plan, std::pin::pin!(never()), &mut |_| {}).await.unwrap_err().to_string();
    let needs = emotionet::cloud::elf::read_needs(&plan.binary).unwrap();
    assert!(err.contains(&format!("needs glibc {}", needs.glibc.unwrap())) && err.contains("has glibc 2.17"), "{err}");
    assert!(err.contains("--build-on-vm"), "{err}");
    assert!(!vm.join("emotionet-cloud/bin").exists(), "nothing was shipped");
}

/// A campaign shaped like `emotionet run` on the VM: its "trainer" runs in
/// a process group of its own (as the orchestrator starts every child),
/// ignores SIGTERM, and holds its run folder's lock; its pid goes to
/// `{out}/trainer.pid`. The campaign itself ignores SIGTERM too (an
/// orchestrator waiting for a trainer that never ends).
const STUBBORN: &str = r#"#!/bin/bash
out=$1
mkdir -p "$out"
set -m
( trap '' TERM; echo $BASHPID > "$out/trainer.pid.tmp" && mv "$out/trainer.pid.tmp" "$out/trainer.pid"; exec flock "$out/run.lock" sleep 300 ) &
trap '' TERM
wait
"#;

/// Whether process `pid` is alive (a zombie is not: it holds nothing).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Whether `lock` can be taken now (nobody holds it).
fn lock_is_free(lock: &Path) -> bool {
    std::process::Command::new("flock").arg("-n").arg(lock).arg("true").status().unwrap().success()
}

/// Stop means stop: after the stop that Ctrl-C sends returns, no process
/// of the campaign is left (not even a trainer in its own process group
/// that ignores SIGTERM) and its locks are free for the next campaign.
#[tokio::test]
async fn stop_ends_every_process_group_of_the_campaign_even_a_trainer_ignoring_sigterm() {
    let fake = FakeTpu::start();
    let client = client(&fake).await;
    let vms = VmManager::new(&client, WAIT);
    let dir = temp_dir("stop-groups");
    let (root, vm, out) = (dir.path().join("project"), dir.path().join("vm"), dir.path().join("out"));
    project(&root);
    write_script(&root.join("campaign.sh"), STUBBORN);
    let mut record = record("tpu-stop", Capacity::OnDemand);
    vms.create(&record.spec, &mut |_| {}).await.unwrap();
    let mut plan = plan(&root, &out);
    plan.ship.push(PathBuf::from("campaign.sh"));
    plan.command_template = "./campaign.sh {out}".into();
    plan.sync_every = Duration::from_secs(3600);
    let mut host = FaultyHost::new(&vm);
    host.env.push(("EMOTIONET_STOP_GRACE".into(), "1".into()));
    let remote_out = vm.join("emotionet-cloud/out");
    let pid_file = remote_out.join("trainer.pid");
    let ctrl_c = async {
        while !pid_file.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let err = run_campaign(&vms, &mut record, &host, &plan, std::pin::pin!(ctrl_c), &mut |_| {}).await.unwrap_err();
    assert!(matches!(err, CloudError::Interrupted { .. }), "{err:?}");
    let trainer: u32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    let survived = alive(trainer);
    if survived {
        let _ = std::process::Command::new("kill").args(["-KILL", &trainer.to_string()]).status();
    }
    assert!(!survived, "the trainer (pid {trainer}, its own process group, ignoring SIGTERM) outlived the stop");
    assert!(lock_is_free(&remote_out.join("run.lock")), "the trainer's run lock is still held");
    let control = vm.join("emotionet-cloud/campaign");
    assert!(lock_is_free(&control.join("campaign.lock")), "campaign.lock is still held");
    let status = std::process::Command::new("bash").arg(vm_campaign_sh()).arg("status").arg(&control).output().unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(status.starts_with("EMOTIONET-CAMPAIGN ended ") && status.trim_end().ends_with(" 137"), "{status}");
}

fn vm_campaign_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/vm-campaign.sh")
}

fn vm_campaign(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut command = std::process::Command::new("bash");
    command.arg(vm_campaign_sh()).arg(args[0]).arg(dir).args(&args[1..]);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

/// A status probe holds campaign.lock (shared) for an instant; a start at
/// that moment waits for it instead of failing with "taken meanwhile".
#[test]
fn a_start_waits_out_a_status_probe_instead_of_failing() {
    let dir = temp_dir("probe-race");
    let control = dir.path().join("campaign");
    std::fs::create_dir_all(&control).unwrap();
    // The probe, slowed down: it holds the shared lock for a second.
    let mut probe = std::process::Command::new("flock").arg("-s").arg(control.join("campaign.lock")).args(["sleep", "1"]).spawn().unwrap();
    while lock_is_free(&control.join("campaign.lock")) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = vm_campaign(&control, &["start", "echo started"], &[("EMOTIONET_LOCK_TIMEOUT", "20")]);
    probe.wait().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && stdout.starts_with("EMOTIONET-CAMPAIGN started "), "{stdout}{stderr}");
}

/// flock failing for another reason than a held lock is that reason: a
/// missing flock binary, or a lock file that cannot be opened; never "a
/// campaign is running" (nor a lock timeout).
#[test]
fn a_flock_that_cannot_work_is_that_error_not_a_running_campaign() {
    let dir = temp_dir("flock-broken");
    // A PATH with every tool but flock.
    let bin = dir.path().join("bin-without-flock");
    std::fs::create_dir_all(&bin).unwrap();
    for folder in std::env::split_paths(&std::env::var_os("PATH").unwrap()) {
        for entry in std::fs::read_dir(&folder).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if name != "flock" && !bin.join(&name).exists() {
                let _ = std::os::unix::fs::symlink(entry.path(), bin.join(&name));
            }
        }
    }
    let control = dir.path().join("campaign");
    for action in [&["status"][..], &["start", "echo never"], &["stop"]] {
        let o = vm_campaign(&control, action, &[("PATH", bin.to_str().unwrap())]);
        let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.status.code(), Some(71), "{action:?}: {stdout}{stderr}");
        assert!(stderr.contains("flock (util-linux) is not installed"), "{action:?}: {stderr}");
        assert!(!stdout.contains("running") && !stderr.contains("lock timeout"), "{action:?}: {stdout}{stderr}");
    }

    // A lock file that cannot be opened (here: a link into a missing folder; elsewhere: permissions).
    std::fs::create_dir_all(&control).unwrap();
    std::os::unix::fs::symlink(dir.path().join("no/such/folder/campaign.lock"), control.join("campaign.lock")).unwrap();
    for action in [&["status"][..], &["start", "echo never"], &["stop"]] {
        let o = vm_campaign(&control, action, &[]);
        let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
        assert_eq!(o.status.code(), Some(71), "{action:?}: {stdout}{stderr}");
        assert!(stderr.contains(&format!("cannot use the lock file {}", control.join("campaign.lock").display())), "{action:?}: {stderr}");
        assert!(!stdout.contains("running") && !stderr.contains("lock timeout"), "{action:?}: {stdout}{stderr}");
    }
    assert!(!control.join("current").exists(), "nothing was started");
}
