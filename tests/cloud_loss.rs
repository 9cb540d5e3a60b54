//! Every kind of TPU loss, walked to a resumed campaign: the fake API puts
//! the VM (or its queued resource) into each state while a resumable
//! campaign runs on a local folder standing in for the VM, and `run`
//! notices, brings the VM back (recreated, or started again when it was
//! only stopped) and the campaign continues after its last synced checkpoint.

mod cloud_fake;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cloud_fake::{FakeTpu, temp_dir, write_script};
use emotionet::cloud::{
    CampaignPlan, Capacity, ClientConfig, CloudEvent, LocalHost, RetryPolicy, TpuClient, VmManager, VmRecord, VmRequest, WaitOptions, run_campaign,
};

const WAIT: WaitOptions = WaitOptions { poll: Duration::from_millis(20), timeout: Duration::from_secs(15) };
const STEPS: u32 = 8;

/// Checkpoints after every step (write, rename), resumes after the last one,
/// and leaves its pid where the test can end it (the ssh session dying).
const RESUMABLE: &str = r#"#!/bin/bash
set -eu
out=$1; steps=$2
mkdir -p "$out"
echo $$ > "$out/pid"
done=0
if [ -f "$out/checkpoint" ]; then done=$(cat "$out/checkpoint"); fi
echo "start after $done" >> "$out/starts"
for i in $(seq $((done + 1)) "$steps"); do
  sleep 0.15
  echo "$i" > "$out/checkpoint.tmp" && mv "$out/checkpoint.tmp" "$out/checkpoint"
done
"#;

async fn client(fake: &FakeTpu) -> TpuClient {
    emotionet::google::tls::install_crypto_provider();
    let credentials = google_cloud_auth::credentials::mds::Builder::default().with_endpoint(fake.url.clone()).build().unwrap();
    let retry = RetryPolicy { initial_backoff: Duration::from_millis(10), max_backoff: Duration::from_millis(50), ..RetryPolicy::default() };
    TpuClient::connect(ClientConfig { base_url: fake.url.clone(), retry, ..ClientConfig::default() }, credentials).await.unwrap()
}

fn checkpoint(out: &Path) -> u32 {
    std::fs::read_to_string(out.join("checkpoint")).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}

#[derive(Clone, Copy, Debug)]
enum Loss {
    QueuedSuspending,
    QueuedSuspended,
    QueuedFailed,
    NodeGoneAfterQueued,
    OnDemandTerminated,
    /// The session dies and the node is in a state that is not on its way to READY.
    SessionDiedNodeHidden,
    SessionDiedNodeUnknown,
    Stopped,
}

/// Runs a campaign, inflicts `loss` once a checkpoint past step 2 reached the
/// local copy, and checks that it resumed; returns (creations, starts).
async fn walk(loss: Loss) -> (u32, Vec<u32>) {
    let fake = FakeTpu::start();
    let client = client(&fake).await;
    let vms = VmManager::new(&client, WAIT);
    let dir = temp_dir(&format!("loss-{loss:?}").to_lowercase());
    let (root, vm, out) = (dir.path().join("project"), dir.path().join("vm"), dir.path().join("out"));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("campaign.yaml"), "experiments: []\n").unwrap();
    write_script(&root.join("campaign.sh"), RESUMABLE);
    fake.set_vm_disk(&vm);
    let queued = matches!(loss, Loss::QueuedSuspending | Loss::QueuedSuspended | Loss::QueuedFailed | Loss::NodeGoneAfterQueued);
    let capacity = if queued { Capacity::Spot } else { Capacity::OnDemand };
    let spec = VmRequest {
        project: Some("emotionet-test".into()),
        zone: Some("europe-west4-a".into()),
        accelerator_type: Some("v3-8".into()),
        node_id: "tpu-loss".into(),
        capacity: Some(capacity),
        queued,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let mut record = VmRecord { spec, created_unix: 0, recreations: 0 };
    vms.create(&record.spec, &mut |_| {}).await.unwrap();

    let mut plan = CampaignPlan::new(&root, "campaign.yaml", env!("CARGO_BIN_EXE_emotionet"), &out);
    plan.ship = vec![PathBuf::from("campaign.sh")];
    plan.setup_template = "true".into();
    plan.command_template = format!("./campaign.sh {{out}} {STEPS}");
    plan.poll_every = Duration::from_millis(100);
    plan.sync_every = Duration::from_millis(200);
    plan.step_timeout = Duration::from_secs(30);
    let host = LocalHost::new(&vm).unwrap();
    let remote_out = vm.join("emotionet-cloud/out");
    let inflict = async {
        while checkpoint(&out) < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let session_dies = |state: &str| {
            fake.set_node_state("tpu-loss", state);
            // The VM's processes end with it: the detached campaign dies (and
            // the connection following it sees that end, or drops).
            let pid = std::fs::read_to_string(remote_out.join("pid")).unwrap();
            let _ = std::process::Command::new("kill").args(["-9", pid.trim()]).status();
        };
        match loss {
            Loss::QueuedSuspending => fake.set_queued_state("tpu-loss", "SUSPENDING"),
            Loss::QueuedSuspended => fake.set_queued_state("tpu-loss", "SUSPENDED"),
            Loss::QueuedFailed => fake.set_queued_state("tpu-loss", "FAILED"),
            Loss::NodeGoneAfterQueued => fake.remove_node("tpu-loss"),
            Loss::OnDemandTerminated => fake.set_node_state("tpu-loss", "TERMINATED"),
            Loss::SessionDiedNodeHidden => session_dies("HIDDEN"),
            Loss::SessionDiedNodeUnknown => session_dies("UNKNOWN"),
            Loss::Stopped => fake.set_node_state("tpu-loss", "STOPPED"),
        }
    };
    let mut events = Vec::new();
    let mut on_event = |e| events.push(e);
    let interrupt = std::pin::pin!(std::future::pending());
    let campaign = run_campaign(&vms, &mut record, &host, &plan, interrupt, &mut on_event);
    let (report, ()) = tokio::join!(campaign, inflict);
    for event in &events {
        eprintln!("{event}");
    }
    let report = report.unwrap_or_else(|e| panic!("{loss:?}: {e}"));
    assert_eq!(report.recreations, 1, "{loss:?}: brought back once");
    assert!(events.iter().any(|e| matches!(e, CloudEvent::Preempted { .. })), "{loss:?}: the loss was reported");
    assert_eq!(checkpoint(&out), STEPS, "{loss:?}: the campaign finished");
    let starts: Vec<u32> =
        std::fs::read_to_string(out.join("starts")).unwrap().lines().map(|l| l.trim_start_matches("start after ").parse().unwrap()).collect();
    assert_eq!(fake.node_state("tpu-loss").as_deref(), Some("READY"), "{loss:?}");
    (fake.creations(), starts)
}

/// Each loss that takes the VM away: recreated, resumed from the synced state.
async fn recreated(loss: Loss) {
    let (creations, starts) = walk(loss).await;
    assert_eq!(creations, 2, "{loss:?}: created, then recreated");
    assert_eq!(starts.len(), 2, "{loss:?}: {starts:?}");
    assert!(starts[1] >= 2, "{loss:?}: resumed after {} although checkpoint 2 had been synced", starts[1]);
}

#[tokio::test]
async fn a_suspending_queued_resource_is_lost() {
    recreated(Loss::QueuedSuspending).await;
}

#[tokio::test]
async fn a_suspended_queued_resource_is_lost() {
    recreated(Loss::QueuedSuspended).await;
}

#[tokio::test]
async fn a_failed_queued_resource_is_lost() {
    recreated(Loss::QueuedFailed).await;
}

#[tokio::test]
async fn a_node_answering_404_after_its_queued_create_is_lost() {
    recreated(Loss::NodeGoneAfterQueued).await;
}

#[tokio::test]
async fn a_terminated_on_demand_node_is_lost() {
    recreated(Loss::OnDemandTerminated).await;
}

#[tokio::test]
async fn a_dead_session_on_a_hidden_node_is_a_loss() {
    recreated(Loss::SessionDiedNodeHidden).await;
}

#[tokio::test]
async fn a_dead_session_on_a_node_in_unknown_state_is_a_loss() {
    recreated(Loss::SessionDiedNodeUnknown).await;
}

#[tokio::test]
async fn a_stopped_node_is_started_again_with_its_disk() {
    let (creations, starts) = walk(Loss::Stopped).await;
    assert_eq!(creations, 1, "started, not recreated");
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert!(starts[1] >= 2, "resumed after {} on its own disk", starts[1]);
}
