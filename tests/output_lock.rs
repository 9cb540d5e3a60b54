//! One writer per output folder, through the real binary: a second `train`,
//! `run`, `eval` or `report --out` on a folder in use is refused at once and
//! names the holder; `--wait` waits; a holder killed with SIGKILL leaves no
//! lock behind; a campaign does not block its own `train` children.

mod cli_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::{command, emotionet, text};
use emotionet::lock::{OutputLock, Wait};

/// The face model at 24x24 on a tiny synthetic set, `epochs` of 4 steps.
fn experiment(dir: &Path, name: &str, epochs: u32) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    let text = format!(
        "name: {name}\noutput: {out}\nseed: 7\n\
         data:\n  image_size: 24\n  cache_dir: {cache}\n  source:\n    synthetic: {{faces: 80, non_faces: 60, size: 48}}\n\
         models:\n  face:\n    batch: 8\n    steps_per_epoch: 4\n    epochs: {epochs}\n    architecture: {{dense_units: 16}}\n\
         logging: {{every_steps: 2, checkpoint_every_steps: 4, keep_checkpoints: 2}}\n",
        out = dir.join("runs").display(),
        cache = dir.join("cache").display(),
    );
    fs::write(&path, text).unwrap();
    path
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The PID the holder file of the lock at `lock` names, if it can be read.
fn holder_pid(lock: &Path) -> Option<u64> {
    let mut name = lock.file_name().unwrap().to_os_string();
    name.push(".holder.json");
    let json: serde_json::Value = serde_json::from_slice(&fs::read(lock.with_file_name(name)).ok()?).ok()?;
    json["pid"].as_u64()
}

fn kill9(child: &mut Child) {
    let status = Command::new("kill").arg("-KILL").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    child.wait().unwrap();
}

/// Starts `emotionet ARGS` with its stderr going to `log`.
fn spawn(args: &[&str], log: &Path) -> Child {
    let err = fs::File::create(log).unwrap();
    eprintln!("$ emotionet {} &  (stderr: {})", args.join(" "), log.display());
    command().args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(err).spawn().unwrap()
}

#[test]
fn a_second_train_is_refused_naming_the_holder_and_a_killed_holder_leaves_no_lock() {
    let tmp = tempfile::tempdir().unwrap();
    // Long enough never to finish here: every holder is killed.
    let exp = experiment(tmp.path(), "locked", 10_000);
    let exp = exp.to_str().unwrap();
    let lock = tmp.path().join("runs/locked/face/cpu-r0/.emotionet.lock");

    let mut first = spawn(&["train", exp, "--quiet"], &tmp.path().join("first.log"));
    wait_for("the first trainer to hold the run folder", Duration::from_secs(60), || holder_pid(&lock) == Some(first.id().into()));

    let out = emotionet(&["train", exp, "--quiet", "--resume"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    for needle in [
        "cpu-r0 is in use by".to_string(),
        format!("pid {} on {}", first.id(), emotionet::records::host_name()),
        format!("`emotionet train {exp} --quiet`"),
        "training the face model".to_string(),
        "--wait".to_string(),
    ] {
        assert!(stderr.contains(&needle), "the refusal names the holder ({needle}): {stderr}");
    }
    assert_eq!(holder_pid(&lock), Some(first.id().into()), "a refused command leaves the holder's file alone");

    // --wait waits, and a holder killed with SIGKILL lets it in.
    let waiting_log = tmp.path().join("waiting.log");
    let mut waiting = spawn(&["train", exp, "--quiet", "--resume", "--wait"], &waiting_log);
    wait_for("the second trainer to say it waits", Duration::from_secs(60), || fs::read_to_string(&waiting_log).unwrap_or_default().contains("waiting for"));
    assert_eq!(holder_pid(&lock), Some(first.id().into()));
    kill9(&mut first);
    wait_for("the waiting trainer to take the folder", Duration::from_secs(60), || holder_pid(&lock) == Some(waiting.id().into()));

    // Killed in turn, its lock is gone at once: a plain second command (no
    // --wait) gets the folder although the holder file still names the dead.
    kill9(&mut waiting);
    assert_eq!(holder_pid(&lock), Some(waiting.id().into()), "a killed holder's file stays behind");
    let mut third = spawn(&["train", exp, "--quiet", "--resume"], &tmp.path().join("third.log"));
    wait_for("a new trainer to take the folder of a killed one", Duration::from_secs(60), || holder_pid(&lock) == Some(third.id().into()));
    kill9(&mut third);
}

#[test]
fn a_second_campaign_on_one_folder_is_refused_while_the_first_trains_its_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = experiment(tmp.path(), "campaign", 3);
    let exp = exp.to_str().unwrap();
    let out_dir = tmp.path().join("out");
    let out = out_dir.to_str().unwrap();
    let lock = out_dir.join(".emotionet.lock");

    let first = spawn(&["run", exp, "--out", out, "--quiet"], &tmp.path().join("first.log"));
    wait_for("the campaign to hold its folder", Duration::from_secs(60), || holder_pid(&lock) == Some(first.id().into()));
    let second = emotionet(&["run", exp, "--out", out, "--quiet"]);
    assert_eq!(second.status.code(), Some(1));
    let stderr = text(&second.stderr);
    assert!(stderr.contains(&format!("pid {}", first.id())) && stderr.contains("running the campaign campaign"), "{stderr}");

    // The campaign's own `train` child locks the run folder inside: not
    // blocked by the campaign, it trains to the end, once.
    let done = first.wait_with_output().unwrap();
    assert!(done.status.success(), "{}", fs::read_to_string(tmp.path().join("first.log")).unwrap());
    let run = out_dir.join("campaign/face/cpu-r0");
    let record: serde_json::Value = serde_json::from_slice(&fs::read(run.join("record.json")).unwrap()).unwrap();
    assert_eq!(record["steps_done"], 12);
    let points: Vec<String> = fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!("{} {}", v["split"], v["step"])
        })
        .collect();
    let mut unique = points.clone();
    unique.sort();
    unique.dedup();
    assert!(!points.is_empty() && points.len() == unique.len(), "one writer: no point logged twice: {points:?}");
    assert!(!out_dir.join(".emotionet.lock.holder.json").exists() && !lock.exists(), "a holder that ends removes its files");
    assert!(!run.join(".emotionet.lock").exists());
}

#[test]
fn report_and_eval_are_refused_while_another_process_holds_their_folder_and_wait_on_request() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    fs::create_dir_all(&runs).unwrap();
    let report_dir = tmp.path().join("reports/latest");

    // This test process is the holder.
    let held = OutputLock::acquire_beside(&report_dir, "writing the report", Wait::No).unwrap();
    let out = emotionet(&["report", runs.to_str().unwrap(), "--out", report_dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains(&format!("pid {}", std::process::id())) && stderr.contains("writing the report"), "{stderr}");

    let log = tmp.path().join("report.log");
    let mut waiting = spawn(&["report", runs.to_str().unwrap(), "--out", report_dir.to_str().unwrap(), "--wait"], &log);
    wait_for("report --wait to say it waits", Duration::from_secs(30), || fs::read_to_string(&log).unwrap_or_default().contains("waiting for"));
    drop(held);
    // Past the lock, it finds nothing to report: that is its own error.
    let status = waiting.wait().unwrap();
    let said = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(said.contains("no run records") && !said.contains("only one emotionet command"), "{said}");

    // eval locks its evaluation folder (the run folders only need to exist
    // for it to get that far).
    let exp = experiment(tmp.path(), "evaluated", 1);
    fs::write(&exp, fs::read_to_string(&exp).unwrap().replace("logging:", "  emotion: {batch: 8, steps_per_epoch: 4, epochs: 1}\nlogging:")).unwrap();
    for model in ["face", "emotion"] {
        fs::create_dir_all(runs.join(format!("evaluated/{model}/cpu-r0"))).unwrap();
    }
    let _held = OutputLock::acquire(&runs.join("evaluated/hierarchy/cpu-r0"), "evaluating the hierarchy", Wait::No).unwrap();
    let out = emotionet(&["eval", exp.to_str().unwrap(), "--quiet"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("hierarchy/cpu-r0 is in use by") && stderr.contains(&format!("pid {}", std::process::id())), "{stderr}");
}

#[test]
fn an_os_error_is_said_once() {
    // The report's folder would go under a regular file: creating it fails
    // with the OS's error, which the message states once (anyhow's chain
    // used to repeat it).
    let tmp = tempfile::tempdir().unwrap();
    fs::create_dir_all(tmp.path().join("runs")).unwrap();
    fs::write(tmp.path().join("a-file"), "").unwrap();
    let out = emotionet(&["report", tmp.path().join("runs").to_str().unwrap(), "--out", tmp.path().join("a-file/report").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.matches("(os error").count(), 1, "{stderr}");
    assert!(stderr.contains("a-file"), "{stderr}");
}
