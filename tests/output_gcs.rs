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
        "--skip-preflight",
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

/// Every file below `dir` whose name ends with `suffix`.
fn find_files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(find_files(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            out.push(path);
        }
    }
    out
}

/// The real-data path of deploy/README.md on the stand-ins, with the LFW
/// subset from `.deps`: prepared here (`data prep --out gs://`), uploaded to
/// the emulator's bucket, and an experiment naming that prepared set run by
/// `cloud run` on the stand-in VM, which copies the one prepared file from
/// the bucket (never the raw images), trains from it, and writes to the
/// runs bucket; the run's record says where its data came from.
#[test]
fn cloud_run_trains_the_lfw_subset_from_a_prepared_set_in_the_bucket() {
    let deps = std::env::var_os("EMOTIONET_DEPS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".deps"));
    let npy = deps.join("data/lfw_subset.npy");
    assert!(npy.exists(), "the LFW subset (make setup)");
    let emulator = Emulator::start(&[BUCKET, "datasets"]);
    let fake = cloud_fake::FakeTpu::start();
    let dir = cloud_fake::temp_dir("prepared-run");
    // Here: prepare the LFW subset (100 faces, 100 non-faces) and upload the prepared set.
    let prep = output(
        command()
            .args(["data", "prep", "--npy", npy.to_str().unwrap(), "--npy-faces", "0..100", "--npy-non-faces", "100..200", "--image-size", "24"])
            .args(["--task", "face", "--quiet", "--cache-dir", dir.path().join("laptop-cache").to_str().unwrap(), "--out", "gs://datasets/prepared"])
            .env("STORAGE_EMULATOR_HOST", &emulator.host),
    );
    assert!(prep.status.success(), "{}", text(&prep.stderr));
    let prepared = emulator.names("datasets", "prepared/").into_iter().find(|n| n.ends_with(".emods")).expect("the prepared set in the bucket");
    let report: serde_json::Value =
        serde_json::from_slice(&emulator.object("datasets", &prepared.replace(".emods", ".report.json")).expect("its report")).unwrap();

    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("experiments")).unwrap();
    std::fs::write(
        project.join("campaign.yaml"),
        "experiments: [experiments/lfw.yaml]
",
    )
    .unwrap();
    let lfw = "name: lfw\nseed: 3\ndata:\n  image_size: 24\n  prepared: gs://datasets/prepared\n\
               models:\n  face: {batch: 8, steps_per_epoch: 3, epochs: 2, architecture: {dense_units: 16}}\n\
               logging: {every_steps: 3, checkpoint_every_steps: 3, keep_checkpoints: 2}\n";
    std::fs::write(project.join("experiments/lfw.yaml"), lfw).unwrap();
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
        "--skip-preflight",
        "--ship",
        "experiments",
        "--via",
        "local",
        "--local-root",
        vm.to_str().unwrap(),
        "--out",
        &format!("gs://{BUCKET}/real"),
        "--setup",
        "true",
        "--command",
        "{bin} train experiments/lfw.yaml --out {out} --quiet",
        "--poll-every",
        "0.05",
        "--sync-every",
        "0.1",
    ]);
    assert!(run.status.success(), "{}", text(&run.stderr));
    assert!(cloud(&["cloud", "down", "--poll-every", "0.05"]).status.success());

    // The VM copied the one prepared file, byte for byte, and no raw image.
    let copies = find_files(&vm, ".emods");
    assert_eq!(copies.len(), 1, "{copies:?}");
    let name = prepared.strip_prefix("prepared/").unwrap();
    assert!(std::fs::read(&copies[0]).unwrap() == std::fs::read(dir.path().join("laptop-cache").join(name)).unwrap(), "not the prepared file");
    assert!(copies[0].ends_with(format!("data/cache/gcs/datasets/{prepared}")), "{copies:?}");
    assert!(find_files(&vm, ".npy").is_empty(), "raw images reached the VM");
    // The run trained from it, and its record (in the runs bucket) says so.
    let finished = record(&emulator, "real/lfw/face/cpu-r0/record.json");
    assert_eq!(finished["status"]["state"], "finished", "{finished}");
    assert_eq!(finished["notes"]["data_prepared"], "gs://datasets/prepared", "{finished}");
    assert_eq!(finished["steps_done"], 6);
    // Its final evaluation covered the prepared set's eval split, image for image.
    let eval_images: u64 = report["classes"].as_array().unwrap().iter().map(|c| c["eval"].as_u64().unwrap()).sum();
    let evaluated: u64 = finished["confusion"]["matrix"].as_array().unwrap().iter().flat_map(|row| row.as_array().unwrap()).map(|n| n.as_u64().unwrap()).sum();
    assert!(eval_images > 0 && evaluated == eval_images, "evaluated {evaluated} images, the prepared set has {eval_images} for eval");
}

/// Every object under `prefix` with its generation, straight from the emulator.
fn generations(emulator: &Emulator, prefix: &str) -> Vec<(String, String)> {
    let (status, body) = emulator.request("GET", &format!("/storage/v1/b/{BUCKET}/o?prefix={prefix}"), "");
    assert_eq!(status, 200, "{body}");
    let value: serde_json::Value = serde_json::from_str(&body).unwrap();
    let mut all: Vec<(String, String)> =
        value["items"].as_array().into_iter().flatten().map(|i| (i["name"].as_str().unwrap_or_default().to_string(), i["generation"].to_string())).collect();
    all.sort();
    all
}

/// Two writers, one prefix: a trainer cut off from the bucket past its
/// lease (a network partition; its uploads and renewals fail meanwhile)
/// finds, when the line is back, that another writer took the lease over.
/// Nothing of it lands after the takeover (not even an upload begun under
/// its valid lease and retried by the storage client across the cut: the
/// lease fences it), it stops at its next step with an error naming that
/// writer, and its run's record says so.
#[test]
fn a_trainer_that_lost_its_lease_uploads_nothing_more_and_stops_naming_the_new_holder() {
    use emotionet::lock::{Holder, Wait};
    use emotionet::storage::{Bucket, LOCK_KEY, Lease, Location, StorageConfig};
    let emulator = Emulator::start(&[BUCKET]);
    let line = gcs_emulator::SlowProxy::start(&emulator.host, 1 << 16, Duration::ZERO);
    let tmp = tempfile::tempdir().unwrap();
    let exp = face_experiment(tmp.path(), &format!("gs://{BUCKET}/lease"));
    // Long enough never to finish within the test.
    std::fs::write(&exp, std::fs::read_to_string(&exp).unwrap().replace("epochs: 300", "epochs: 100000")).unwrap();
    let run = "lease/bucketed/face/cpu-r0";
    let staging = tmp.path().join("machine-1");
    let mut child = on_machine(&emulator, &staging)
        .env("STORAGE_EMULATOR_HOST", &line.host)
        .env("EMOTIONET_LEASE_SECS", "3")
        .args(["train", exp.to_str().unwrap(), "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while emulator.names(BUCKET, &format!("{run}/checkpoints/")).is_empty() {
        assert!(start.elapsed() < Duration::from_secs(180), "no checkpoint reached the bucket");
        assert!(child.try_wait().unwrap().is_none(), "the trainer ended early: {}", text(&child.wait_with_output().unwrap().stderr));
        std::thread::sleep(Duration::from_millis(20));
    }
    line.cut();

    // The second writer (straight to the bucket) takes the lease once the first one's has run out.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Location::Gcs(path) = Location::parse(&format!("gs://{BUCKET}/lease")).unwrap() else { panic!("not a bucket") };
    let purpose = "the second writer of this test";
    let lease = runtime.block_on(async {
        let bucket = Bucket::connect(&path, StorageConfig::emulator(&emulator.host)).await.unwrap();
        Lease::acquire(&bucket, LOCK_KEY, Holder::this_process(purpose), Duration::from_secs(600), Wait::Yes).await.unwrap()
    });
    let before = generations(&emulator, "lease/");
    line.restore();
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("the trainer trained on for 120 s after losing its lease: {}", text(&child.wait_with_output().unwrap().stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    eprintln!("{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let other = format!("pid {} on ", std::process::id());
    assert!(stderr.contains("was taken over by") && stderr.contains(purpose) && stderr.contains(&other), "{stderr}");
    // Nothing of the first writer reached the bucket after the takeover.
    assert_eq!(generations(&emulator, "lease/"), before, "the first writer wrote to the bucket after losing its lease");
    let in_bucket = record(&emulator, &format!("{run}/record.json"));
    assert_eq!(in_bucket["status"]["state"], "running", "the first writer uploaded after it knew its lease was lost: {in_bucket}");
    // Its run's record (in its staging folder: the bucket is not its own now) says why it stopped.
    let local: serde_json::Value = serde_json::from_slice(&std::fs::read(staging.join(BUCKET).join(run).join("record.json")).unwrap()).unwrap();
    assert_eq!(local["status"]["state"], "failed", "{local}");
    let error = local["status"]["error"].as_str().unwrap();
    assert!(error.contains("was taken over by") && error.contains(purpose), "{error}");
    runtime.block_on(lease.release()).unwrap();
}

/// The processes of the session `sid` (a detached campaign on the stand-in VM), from /proc.
fn session_members(sid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(") ") else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.get(3) == Some(&sid.to_string().as_str()) && fields[0] != "Z" {
            pids.push(pid);
        }
    }
    pids
}

/// The whole path of a `gs://` campaign through a VM loss, on the stand-ins
/// (the fake TPU API, a local folder as the VM, the real emulator): the
/// campaign writes to the bucket; the VM is lost mid-run (its processes
/// killed, no last upload, its lease left behind); `cloud run` recreates
/// it; the campaign there resumes from the bucket's newest checkpoint after
/// waiting out the lost VM's lease (each VM has its own host name), and
/// finishes. A laptop's older copy never hides the bucket's newer files, and
/// `report gs://` shows every run finished, from a folder that had cached
/// the campaign mid-run as well as from a third, fresh one.
#[test]
fn a_bucket_campaign_survives_a_lost_vm_and_the_report_shows_what_the_bucket_holds() {
    let emulator = Emulator::start(&[BUCKET]);
    let fake = cloud_fake::FakeTpu::start();
    let dir = cloud_fake::temp_dir("bucket-walk");
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("experiments")).unwrap();
    std::fs::write(project.join("campaign.yaml"), "experiments: [experiments/walk.yaml]\nhierarchy_eval: false\n").unwrap();
    let walk = format!(
        "name: walk\nseed: 3\ndata:\n  image_size: 24\n  cache_dir: {cache}\n  source: {{synthetic: {{faces: 60, non_faces: 40, size: 32}}}}\n\
         models:\n  face: {{batch: 8, steps_per_epoch: 20, epochs: 30, architecture: {{dense_units: 16}}}}\n\
         logging: {{every_steps: 20, checkpoint_every_steps: 20, keep_checkpoints: 2}}\n",
        cache = dir.path().join("cache").display()
    );
    std::fs::write(project.join("experiments/walk.yaml"), walk).unwrap();
    let run = "walk/face/cpu-r0";
    let vm = dir.path().join("vm");
    fake.set_vm_disk(&vm);
    let credentials = fake.authorized_user_file(dir.path(), cloud_fake::REFRESH_TOKEN);
    let cloud = |args: &[&str]| {
        let mut cmd = command();
        cmd.args(args)
            .current_dir(&project)
            .env("EMOTIONET_TPU_API_URL", &fake.url)
            .env("EMOTIONET_CLOUD_STATE", dir.path().join("state.json"))
            .env("GOOGLE_APPLICATION_CREDENTIALS", &credentials)
            .env("GCE_METADATA_HOST", "127.0.0.1:9")
            .env("HOME", dir.path())
            .env("EMOTIONET_GCLOUD", dir.path().join("no-gcloud"))
            // Inherited by the stand-in VM's commands.
            .env("STORAGE_EMULATOR_HOST", &emulator.host)
            .env("EMOTIONET_SYNC_SECS", "0.1")
            .env("EMOTIONET_LEASE_SECS", "3")
            .env("RUST_LOG", "info");
        cmd
    };
    let up = ["cloud", "up", "--project", "emotionet-test", "--zone", "europe-west4-a", "--accelerator-type", "v3-8", "--spot", "--poll-every", "0.05"];
    assert!(output(&mut cloud(&up)).status.success());
    // Each VM is its own host: a UTS namespace with a new host name for every start.
    let own_host = Command::new("unshare").args(["--uts", "hostname", "emotionet-probe"]).status().is_ok_and(|s| s.success());
    let campaign_command = if own_host {
        "unshare --uts bash -c 'hostname \"vm-$$\" && exec \"$0\" \"$@\"' {bin} run campaign.yaml --out {out} --wait"
    } else {
        eprintln!(
            "SKIPPED the separate host names: `unshare --uts` does not work here, so the lost VM's lease is taken over at once (same host, dead process)"
        );
        "{bin} run campaign.yaml --out {out} --wait"
    };
    let mut child = cloud(&[
        "cloud",
        "run",
        "campaign.yaml",
        "--skip-preflight",
        "--ship",
        "experiments",
        "--via",
        "local",
        "--local-root",
        vm.to_str().unwrap(),
        "--out",
        &format!("gs://{BUCKET}/walk"),
        "--setup",
        "true",
        "--command",
        campaign_command,
        "--poll-every",
        "0.05",
        "--sync-every",
        "0.3",
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let steps_in_bucket = || -> Vec<u64> {
        emulator
            .names(BUCKET, &format!("walk/{run}/checkpoints/"))
            .iter()
            .filter_map(|n| n.rsplit("ckpt-").next()?.strip_suffix(".safetensors")?.parse::<u64>().ok())
            .collect()
    };
    let start = Instant::now();
    while steps_in_bucket().iter().all(|s| *s < 60) {
        assert!(start.elapsed() < Duration::from_secs(240), "no checkpoint past step 60 reached the bucket");
        assert!(child.try_wait().unwrap().is_none(), "cloud run ended early: {}", text(&child.wait_with_output().unwrap().stderr));
        std::thread::sleep(Duration::from_millis(20));
    }
    let report = |staging: &Path| {
        let mut cmd = command();
        cmd.args(["report", &format!("gs://{BUCKET}/walk"), "--out", staging.join("report").to_str().unwrap()])
            .env("STORAGE_EMULATOR_HOST", &emulator.host)
            .env("EMOTIONET_STAGING", staging);
        output(&mut cmd)
    };
    // A desk reads the bucket mid-run, while the writer's retention deletes
    // old checkpoints (an object listed and then deleted before its
    // download is skipped): its staging cache now holds a running record.
    let desk = dir.path().join("desk");
    let read = report(&desk);
    assert!(read.status.success(), "{}", text(&read.stderr));
    let desk_record = desk.join(BUCKET).join("walk").join(run).join("record.json");
    let cached: serde_json::Value = serde_json::from_slice(&std::fs::read(&desk_record).unwrap()).unwrap();
    assert_eq!(cached["status"]["state"], "running", "{cached}");

    // The VM is lost: Google takes it, and its processes end with it (no last upload, the lease left behind).
    fake.preempt("emotionet-tpu");
    let control = vm.join("emotionet-cloud/campaign");
    let id = std::fs::read_to_string(control.join("current")).unwrap();
    let sid: u32 = std::fs::read_to_string(control.join(format!("{}.pid", id.trim()))).unwrap().trim().parse().unwrap();
    for _ in 0..10 {
        for pid in session_members(sid) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
    let newest_at_loss = steps_in_bucket().into_iter().max().unwrap();
    let total = 600;
    assert!(newest_at_loss < total, "the run had finished before the loss");

    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    eprintln!("--- cloud run\n{stdout}{stderr}");
    assert!(out.status.success(), "{stderr}");
    assert_eq!(fake.creations(), 2, "created, lost, recreated");
    let all = format!("{stdout}{stderr}");
    if own_host {
        // The lost VM was another host, so its lease was not taken over at
        // once (that is only for a dead process of the same host): the new
        // VM either waited for it to run out, or came up after it had.
        let waited = all.contains("waiting for gs://emotionet-runs/walk/.emotionet-lock") && all.contains("is free now");
        let ran_out = all.contains("taking over gs://emotionet-runs/walk/.emotionet-lock from") && all.contains(" on vm-");
        assert!(waited || ran_out, "the recreated VM did not wait out the lost VM's lease: {all}");
    }
    let finished = record(&emulator, &format!("walk/{run}/record.json"));
    assert_eq!(finished["status"]["state"], "finished", "{finished}");
    assert_eq!(finished["steps_done"], total, "{finished}");
    assert_eq!(finished["resumes"], 1, "{finished}");
    // Resumed from the bucket's newest checkpoint, not from an older copy.
    let log = String::from_utf8(emulator.object(BUCKET, &format!("walk/{run}/train.log")).expect("train.log in the bucket")).unwrap();
    let resumed_at: u64 = log
        .split("resuming at step ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no resume in the train.log: {log}"));
    assert_eq!(resumed_at, newest_at_loss, "resumed at step {resumed_at}; the bucket's newest checkpoint was {newest_at_loss}");
    let state: serde_json::Value = serde_json::from_slice(&emulator.object(BUCKET, "walk/campaign-state.json").unwrap()).unwrap();
    assert_eq!(state["runs"]["walk/face/cpu/r0"]["status"], "finished", "{state}");

    // The report of the bucket, from the desk that had cached it mid-run and from a third folder.
    for staging in [desk.clone(), dir.path().join("third")] {
        let out = report(&staging);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let local: serde_json::Value =
            serde_json::from_slice(&std::fs::read(staging.join(BUCKET).join("walk").join(run).join("record.json")).unwrap()).unwrap();
        assert_eq!(local["status"]["state"], "finished", "{}: {local}", staging.display());
        let md = std::fs::read_to_string(staging.join("report/report.md")).unwrap();
        assert!(md.contains(": 1 runs (1 finished) in "), "{}: {md}", staging.display());
    }
    assert!(output(&mut cloud(&["cloud", "down", "--poll-every", "0.05"])).status.success());
}
