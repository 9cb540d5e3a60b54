//! `--out gs://BUCKET/PREFIX` and `output: gs://...` through the real
//! binary, against a real Cloud Storage emulator (fake-gcs-server): a
//! trainer killed with SIGKILL on one "machine" is resumed on another (an
//! empty staging folder, as on a recreated VM) from the newest checkpoint
//! that reached the bucket; a campaign's runs, evaluation, state and report
//! land in the bucket, and `eval` and `report` on a fresh machine read them
//! from there and write back to it; `cloud run --out gs://` has the
//! campaign on the (stand-in) VM write to the bucket itself.

mod cli_support;
mod cloud_fake;
mod gcs_emulator;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::{command, output, text};
use gcs_emulator::Emulator;

const BUCKET: &str = "emotionet-runs";

/// `emotionet` with the emulator and a staging folder standing for one machine.
fn on_machine(emulator: &Emulator, staging: &Path) -> Command {
    let mut cmd = command();
    cmd.env("STORAGE_EMULATOR_HOST", &emulator.host).env("EMOTIONET_STAGING", staging).env("EMOTIONET_SYNC_SECS", "0.2");
    cmd
}

fn record(emulator: &Emulator, name: &str) -> serde_json::Value {
    let bytes = emulator.object(BUCKET, name).unwrap_or_else(|| panic!("gs://{BUCKET}/{name} is missing"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("gs://{BUCKET}/{name}: {e}"))
}

/// The face model only, small and long: 1,200 steps, a checkpoint every 40.
fn face_experiment(dir: &Path, output: &str) -> PathBuf {
    let path = dir.join("bucketed.yaml");
    let yaml = format!(
        "name: bucketed\noutput: {output}\nseed: 7\n\
         data:\n  image_size: 24\n  cache_dir: {cache}\n  source:\n    synthetic: {{faces: 120, non_faces: 80, size: 48}}\n\
         models:\n  face:\n    batch: 8\n    steps_per_epoch: 4\n    epochs: 300\n    optimizer: {{kind: adam}}\n    learning_rate: {{schedule: constant, value: 0.001}}\n    architecture: {{dense_units: 32}}\n\
         logging: {{every_steps: 20, checkpoint_every_steps: 40, keep_checkpoints: 2}}\n",
        cache = dir.join("cache").display(),
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn a_trainer_killed_on_one_machine_resumes_on_another_from_the_bucket() {
    let emulator = Emulator::start(&[BUCKET]);
    let tmp = tempfile::tempdir().unwrap();
    // `output: gs://...` in the experiment file, no --out.
    let exp = face_experiment(tmp.path(), &format!("gs://{BUCKET}/exp"));
    let run = "exp/bucketed/face/cpu-r0";
    let checkpoint = |step: u64| format!("{run}/checkpoints/ckpt-{step:012}.safetensors");

    let newest_in_bucket = || {
        emulator
            .names(BUCKET, &format!("{run}/checkpoints/"))
            .iter()
            .filter_map(|n| n.rsplit("ckpt-").next()?.strip_suffix(".safetensors")?.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
    };

    let first = tmp.path().join("machine-1");
    let mut child =
        on_machine(&emulator, &first).args(["train", exp.to_str().unwrap(), "--quiet"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let start = Instant::now();
    while newest_in_bucket() < 80 {
        assert!(start.elapsed() < Duration::from_secs(180), "no checkpoint past step 80 reached the bucket");
        assert!(child.try_wait().unwrap().is_none(), "the trainer ended early: {}", text(&child.wait_with_output().unwrap().stderr));
        std::thread::sleep(Duration::from_millis(20));
    }
    // The machine goes away: no last upload, no lease released.
    child.kill().unwrap();
    child.wait().unwrap();
    let left = record(&emulator, &format!("{run}/record.json"));
    assert_eq!(left["status"]["state"], "running", "the bucket's record cannot know of the kill: {left}");
    let newest = newest_in_bucket();
    assert!((80..1200).contains(&newest), "newest checkpoint in the bucket: {newest}");

    // A fresh machine: nothing local; --resume finds the newest checkpoint in the bucket.
    let second = tmp.path().join("machine-2");
    let out = output(on_machine(&emulator, &second).args(["-v", "train", exp.to_str().unwrap(), "--quiet", "--resume"]));
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("restored") && stderr.contains(&format!("from gs://{BUCKET}/exp")), "{stderr}");
    let resumed_at: u64 = stderr
        .split("resuming at step ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume in the log: {stderr}"));
    assert!(resumed_at >= newest, "resumed at step {resumed_at}, though the bucket had step {newest}");
    let done = record(&emulator, &format!("{run}/record.json"));
    assert_eq!(done["status"]["state"], "finished", "{done}");
    assert_eq!(done["steps_done"], 1200, "{done}");
    assert!(done["resumes"].as_u64().unwrap() >= 1, "{done}");
    // The bucket keeps what the run keeps (keep_checkpoints: 2), the final one included.
    let kept = emulator.names(BUCKET, &format!("{run}/checkpoints/"));
    assert!(kept.contains(&checkpoint(1200)) && kept.len() <= 2, "{kept:?}");
    // The lease was released at the end, and machine-local lock files never went up.
    let lease = record(&emulator, "exp/.emotionet-lock");
    assert_eq!(lease["expires_unix"], 0, "released: {lease}");
    let names = emulator.names(BUCKET, "exp/");
    assert!(!names.iter().any(|n| n.contains(".emotionet.lock")), "local lock files uploaded: {names:?}");
}

/// Both models, tiny: a campaign of one experiment with a hierarchy evaluation.
fn both_models(dir: &Path) -> PathBuf {
    let path = dir.join("pair.yaml");
    let yaml = format!(
        "name: pair\nseed: 5\n\
         data:\n  image_size: 24\n  cache_dir: {cache}\n  source: {{synthetic: {{faces: 200, non_faces: 120, size: 48, difficulty: 0.2}}}}\n\
         models:\n  face:\n    batch: 16\n    steps_per_epoch: 5\n    epochs: 2\n    learning_rate: {{schedule: constant, value: 0.05}}\n    architecture: {{conv_filters: [8, 16], dense_units: 32}}\n\
         \x20 emotion:\n    batch: 16\n    steps_per_epoch: 5\n    epochs: 2\n    learning_rate: {{schedule: constant, value: 0.05}}\n    architecture: {{conv_filters: [8, 16, 16], dense_units: 32}}\n\
         logging: {{every_steps: 5, eval_every_epoch: false}}\n",
        cache = dir.join("cache").display(),
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

#[test]
fn run_eval_and_report_write_to_and_read_from_the_bucket() {
    let emulator = Emulator::start(&[BUCKET]);
    let tmp = tempfile::tempdir().unwrap();
    let exp = both_models(tmp.path());
    let exp = exp.to_str().unwrap();
    let campaign = format!("gs://{BUCKET}/campaign");

    let out = output(on_machine(&emulator, &tmp.path().join("vm")).args(["run", exp, "--out", &campaign, "--quiet"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let names = emulator.names(BUCKET, "campaign/");
    for expected in ["campaign/pair/face/cpu-r0/record.json", "campaign/pair/emotion/cpu-r0/record.json", "campaign/pair/face/cpu-r0/metrics.jsonl"] {
        assert!(names.iter().any(|n| n == expected), "{expected} is not in the bucket: {names:?}");
    }
    for (model, run) in [("face", "campaign/pair/face/cpu-r0"), ("emotion", "campaign/pair/emotion/cpu-r0")] {
        assert_eq!(record(&emulator, &format!("{run}/record.json"))["status"]["state"], "finished", "{model}");
        assert!(names.iter().any(|n| n.starts_with(&format!("{run}/checkpoints/ckpt-"))), "{model}: no checkpoint in the bucket");
        assert!(names.iter().any(|n| n.starts_with(&format!("{run}/tensorboard/"))), "{model}: no event file in the bucket");
    }
    assert!(names.iter().any(|n| n.ends_with("hierarchy.json")), "the campaign's hierarchy evaluation: {names:?}");
    assert!(names.iter().any(|n| n.ends_with("report.md")), "the campaign's report: {names:?}");

    // Another machine, nothing local: eval reads both models from the bucket and writes its evaluation there.
    let laptop = tmp.path().join("laptop");
    let out = output(on_machine(&emulator, &laptop).args(["eval", exp, "--out", &campaign, "--images", "20", "--quiet"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let evaluation = "campaign/pair/hierarchy/cpu-r0-n20/hierarchy.json";
    assert!(emulator.names(BUCKET, "campaign/pair/hierarchy/").iter().any(|n| n == evaluation), "{:?}", emulator.names(BUCKET, "campaign/"));

    // And the report of the bucket, written to the bucket.
    let out = output(on_machine(&emulator, &tmp.path().join("desk")).args(["report", &campaign, "--out", &format!("gs://{BUCKET}/reports/latest")]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = emulator.object(BUCKET, "reports/latest/report.md").expect("the report in the bucket");
    let report = String::from_utf8_lossy(&report);
    assert!(report.contains("pair"), "{report}");
}

/// `cloud run --out gs://...` against the fake TPU API, with a local folder
/// standing in for the VM: the campaign there writes to the bucket as it
/// goes, `cloud fetch --from` copies the bucket here with no VM involved.
#[test]
fn cloud_run_with_a_bucket_output_writes_there_from_the_vm() {
    let emulator = Emulator::start(&[BUCKET]);
    let fake = cloud_fake::FakeTpu::start();
    let dir = cloud_fake::temp_dir("bucket-run");
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("experiments")).unwrap();
    std::fs::write(project.join("campaign.yaml"), "experiments: [experiments/tiny.yaml]\n").unwrap();
    let tiny = "name: tiny\nseed: 3\ndata:\n  image_size: 24\n  source: {synthetic: {faces: 60, non_faces: 40, size: 32}}\n\
                models:\n  face: {batch: 8, steps_per_epoch: 3, epochs: 2, architecture: {dense_units: 16}}\n\
                logging: {every_steps: 3, checkpoint_every_steps: 3, keep_checkpoints: 2}\n";
    std::fs::write(project.join("experiments/tiny.yaml"), tiny).unwrap();
    let credentials = fake.authorized_user_file(dir.path(), cloud_fake::REFRESH_TOKEN);
    let cloud = |args: &[&str]| {
        output(
            command()
                .args(args)
                .current_dir(&project)
                .env("EMOTIONET_TPU_API_URL", &fake.url)
                .env("EMOTIONET_CLOUD_STATE", dir.path().join("state.json"))
                .env("GOOGLE_APPLICATION_CREDENTIALS", &credentials)
                .env("GCE_METADATA_HOST", "127.0.0.1:9")
                .env("HOME", dir.path())
                .env("EMOTIONET_GCLOUD", dir.path().join("no-gcloud"))
                // The stand-in VM's commands inherit it, as a real VM would reach the real service.
                .env("STORAGE_EMULATOR_HOST", &emulator.host)
                .env("EMOTIONET_SYNC_SECS", "0.2"),
        )
    };
    let up = ["cloud", "up", "--project", "emotionet-test", "--zone", "europe-west4-a", "--accelerator-type", "v3-8", "--poll-every", "0.05"];
    assert!(cloud(&up).status.success());
    let vm = dir.path().join("vm");
    let run = cloud(&[
        "cloud",
        "run",
        "campaign.yaml",
        "--ship",
        "experiments",
        "--via",
        "local",
        "--local-root",
        vm.to_str().unwrap(),
        "--out",
        &format!("gs://{BUCKET}/tpu"),
        "--setup",
        "true",
        "--command",
        "{bin} train experiments/tiny.yaml --out {out} --quiet",
        "--poll-every",
        "0.05",
        "--sync-every",
        "0.1",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    let finished = record(&emulator, "tpu/tiny/face/cpu-r0/record.json");
    assert_eq!(finished["status"]["state"], "finished", "{finished}");
    assert!(emulator.names(BUCKET, "tpu/tiny/face/cpu-r0/checkpoints/").iter().any(|n| n.ends_with("ckpt-000000000006.safetensors")), "the final checkpoint");

    // The bucket, copied here without the VM.
    let fetched = dir.path().join("fetched");
    let out = cloud(&["cloud", "fetch", "--from", &format!("gs://{BUCKET}/tpu"), "--out", fetched.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(fetched.join("tiny/face/cpu-r0/record.json").is_file());
    // A bucket is not a local copy for fetch: the error says how to copy one.
    let out = cloud(&["cloud", "fetch", "--via", "local", "--local-root", vm.to_str().unwrap(), "--out", &format!("gs://{BUCKET}/tpu")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--from gs://emotionet-runs/tpu"), "{}", text(&out.stderr));
    assert!(cloud(&["cloud", "down", "--poll-every", "0.05"]).status.success());
}
