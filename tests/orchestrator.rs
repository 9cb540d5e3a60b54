//! `emotionet run` through the real binary: a campaign runs every run,
//! keeps its state so a second invocation skips finished runs, retries and
//! then reports a failing run without stopping the others, and stops
//! cleanly on Ctrl-C, resuming afterwards.

mod cli_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cli_support::{command, emotionet};

fn tiny_experiment(dir: &Path, name: &str, steps: u32, source: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &path,
        format!(
            "name: {name}\nseed: 3\ndata:\n  image_size: 24\n  cache_dir: {cache}\n  source: {source}\n\
             models:\n  face: {{batch: 8, steps_per_epoch: {steps}, epochs: 2, optimizer: {{kind: adam}}, learning_rate: {{schedule: constant, value: 0.001}}, architecture: {{dense_units: 16}}}}\n\
             logging: {{every_steps: 2, keep_checkpoints: 2}}\n",
            cache = dir.join("cache").display()
        ),
    )
    .unwrap();
    path
}

const SYNTH: &str = "{synthetic: {faces: 80, non_faces: 60, size: 48}}";

fn state(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("campaign-state.json")).unwrap()).unwrap()
}

#[test]
fn a_campaign_runs_everything_then_skips_what_finished() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_experiment(tmp.path(), "one", 3, SYNTH);
    tiny_experiment(tmp.path(), "two", 2, SYNTH);
    let campaign = tmp.path().join("campaign.yaml");
    std::fs::write(&campaign, "experiments: [one.yaml, two.yaml]\nrepeats: 2\nhierarchy_eval: false\n").unwrap();
    let out = tmp.path().join("out");
    let o = emotionet(&["run", campaign.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success());
    let s = state(&out);
    assert_eq!(s["runs"].as_object().unwrap().len(), 4, "2 experiments x 2 repeats x 1 model");
    for (name, run) in s["runs"].as_object().unwrap() {
        assert_eq!(run["status"], "finished", "{name}");
        assert_eq!(run["attempts"], 1, "{name}");
    }
    for rel in ["one/face/cpu-r0/record.json", "one/face/cpu-r1/record.json", "two/face/cpu-r0/metrics.jsonl", "report/report.md"] {
        assert!(out.join(rel).exists(), "{rel}");
    }
    let report = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    assert!(report.contains("one") && report.contains("two"));

    // A changed experiment file does not silently reuse (or skip) the runs
    // trained from the old one.
    let changed = tmp.path().join("changed.yaml");
    std::fs::write(&changed, std::fs::read_to_string(tmp.path().join("two.yaml")).unwrap().replace("seed: 3", "seed: 4")).unwrap();
    std::fs::rename(&changed, tmp.path().join("two.yaml")).unwrap();
    let o = emotionet(&["run", campaign.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("different version of the experiment two"));
    std::fs::write(tmp.path().join("two.yaml"), std::fs::read_to_string(tmp.path().join("two.yaml")).unwrap().replace("seed: 4", "seed: 3")).unwrap();

    // Again: nothing to do, nothing retrained.
    let o = emotionet(&["run", campaign.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success());
    for (_, run) in state(&out)["runs"].as_object().unwrap() {
        assert_eq!(run["attempts"], 1);
    }

    // A report that cannot be written fails the command, after saying why.
    std::fs::remove_dir_all(out.join("report")).unwrap();
    std::fs::write(out.join("report"), "a file where the report folder goes").unwrap();
    let o = emotionet(&["run", campaign.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert_eq!(o.status.code(), Some(1));
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("REPORT FAILED"), "{stdout}");
    assert!(stderr.contains("its report could not be written") && stderr.contains("emotionet report"), "{stderr}");
}

#[test]
fn a_failing_run_is_retried_then_reported_while_the_others_finish() {
    let tmp = tempfile::tempdir().unwrap();
    tiny_experiment(tmp.path(), "good", 2, SYNTH);
    tiny_experiment(tmp.path(), "bad", 2, "{real: {lfw: /no/such/lfw}}");
    let campaign = tmp.path().join("campaign.yaml");
    std::fs::write(&campaign, "experiments: [bad.yaml, good.yaml]\nretries: 2\nhierarchy_eval: false\n").unwrap();
    let out = tmp.path().join("out");
    let o = emotionet(&["run", campaign.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert_eq!(o.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("FAILED bad/face/cpu/r0") && stdout.contains("/no/such/lfw"), "{stdout}");
    let s = state(&out);
    assert_eq!(s["runs"]["bad/face/cpu/r0"]["status"], "failed");
    assert_eq!(s["runs"]["bad/face/cpu/r0"]["attempts"], 3, "one attempt and two retries");
    assert_eq!(s["runs"]["good/face/cpu/r0"]["status"], "finished");
}

#[test]
fn ctrl_c_checkpoints_and_a_second_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = tiny_experiment(tmp.path(), "long", 40, SYNTH);
    std::fs::write(&exp, std::fs::read_to_string(&exp).unwrap().replace("keep_checkpoints: 2", "keep_checkpoints: 2, checkpoint_every_steps: 4")).unwrap();
    let out = tmp.path().join("out");
    let child = command()
        .args(["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let checkpoints = out.join("long/face/cpu-r0/checkpoints");
    let start = Instant::now();
    while std::fs::read_dir(&checkpoints).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    Command::new("kill").arg("-INT").arg(child.id().to_string()).status().unwrap();
    let o = child.wait_with_output().unwrap();
    eprintln!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert_eq!(o.status.code(), Some(130));
    assert!(String::from_utf8_lossy(&o.stderr).contains("run the same command again to resume it"));
    let s = state(&out);
    assert_eq!(s["runs"]["long/face/cpu/r0"]["status"], "pending");
    assert_eq!(s["runs"]["long/face/cpu/r0"]["attempts"], 0, "a requested stop is not a failed attempt");
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("long/face/cpu-r0/record.json")).unwrap()).unwrap();
    let stopped_at = record["steps_done"].as_u64().unwrap();
    assert!(stopped_at < 80, "stopped before the end (step {stopped_at})");

    let o = emotionet(&["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success());
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("long/face/cpu-r0/record.json")).unwrap()).unwrap();
    assert_eq!(record["status"]["state"], "finished");
    assert_eq!(record["steps_done"], 80);
    assert_eq!(record["resumes"], 1);
}

#[test]
fn campaign_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let c = tmp.path().join("c.yaml");
    std::fs::write(&c, "experiments: [nope.yaml]\n").unwrap();
    let o = emotionet(&["run", c.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nope.yaml"));
    tiny_experiment(tmp.path(), "t", 2, SYNTH);
    std::fs::write(&c, "experiments: [t.yaml]\nbackends: [tpu]\n").unwrap();
    // A machine with no libtpu anywhere: an empty project `.deps`, and no
    // `python3` on PATH whose packages could hold one (this machine's may).
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let o = cli_support::output(
        command()
            .args(["run", c.to_str().unwrap(), "--out", tmp.path().join("o").to_str().unwrap()])
            .env("EMOTIONET_DEPS", &empty)
            .env("PATH", &empty)
            .env_remove("TPU_LIBRARY_PATH"),
    );
    assert_eq!(o.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("libtpu==0.0.30") && stderr.contains("cloud:"), "no TPU plugin and no cloud section: {stderr}");
}

/// The orchestrator on its own stop (what its SIGTERM or Ctrl-C handler
/// sets) ends every child group it started: a trainer in its own process
/// group that ignores SIGTERM is killed once the grace is over, and the
/// campaign returns only when it is gone and its run folder's lock is free.
/// The trainer here is a stand-in script (the real one checkpoints and
/// exits on SIGTERM, see `ctrl_c_checkpoints_and_a_second_run_resumes`).
#[tokio::test]
async fn a_stop_kills_a_trainer_that_ignores_sigterm_after_the_grace() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let tmp = tempfile::tempdir().unwrap();
    let exp = tiny_experiment(tmp.path(), "stuck", 2, SYNTH);
    let out = tmp.path().join("out");
    let pids = tmp.path().join("trainer.pid");
    let lock = tmp.path().join("run.lock");
    let trainer = tmp.path().join("stubborn-trainer.sh");
    std::fs::write(
        &trainer,
        format!(
            "#!/bin/bash\ntrap '' TERM\necho $$ > {pids}.tmp && mv {pids}.tmp {pids}\nexec flock {lock} sleep 300\n",
            pids = pids.display(),
            lock = lock.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&trainer, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let plan = emotionet::orchestrator::Plan::load(&exp, Some(&out), None).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let options = emotionet::orchestrator::RunOptions {
        exe: trainer,
        plugin: None,
        progress: false,
        stop: stop.clone(),
        grace: Duration::from_secs(1),
        groups: Default::default(),
    };
    let campaign = tokio::spawn(emotionet::orchestrator::run_campaign(plan, options));
    let start = Instant::now();
    while !pids.exists() {
        assert!(start.elapsed() < Duration::from_secs(60), "the trainer never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pid: u32 = std::fs::read_to_string(&pids).unwrap().trim().parse().unwrap();
    stop.store(true, Ordering::SeqCst);
    let ended = tokio::time::timeout(Duration::from_secs(30), campaign).await;
    let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')));
    if alive {
        let _ = Command::new("kill").args(["-KILL", &format!("-{pid}")]).status();
    }
    let summary = ended.expect("the campaign did not return within 30 s of its stop").unwrap().unwrap();
    assert!(!alive, "the trainer (pid {pid}) outlived the campaign");
    assert!(summary.interrupted);
    assert!(Command::new("flock").arg("-n").arg(&lock).arg("true").status().unwrap().success(), "the trainer's lock is still held");
    let s = state(&out);
    assert_eq!(s["runs"]["stuck/face/cpu/r0"]["status"], "pending", "a stopped run is resumed, not failed");
}

/// The process group of `pid` and its parent, from `/proc/PID/stat`; `None` once it is gone or a zombie.
fn live_stat(pid: u32) -> Option<(u32, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(") ")?.1.split_whitespace().collect();
    (fields.first() != Some(&"Z")).then_some(())?;
    Some((fields.get(2)?.parse().ok()?, fields.get(1)?.parse().ok()?))
}

/// Every live process of this machine: (pid, process group, parent).
fn processes() -> Vec<(u32, u32, u32)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| live_stat(pid).map(|(group, parent)| (pid, group, parent)))
        .collect()
}

/// A second SIGTERM does not wait for the grace (60 s): the orchestrator
/// sends SIGKILL to every child group it started, then exits (130), and no
/// process of the campaign is left. The second signal comes while the
/// trainer is still starting (it would take seconds to reach a step and
/// stop on its own), so a trainer left behind by an orchestrator that just
/// exits is seen here.
#[test]
fn a_second_signal_kills_every_child_group_at_once_and_leaves_nothing() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let exp = tiny_experiment(tmp.path(), "second", 5000, SYNTH);
    let out = tmp.path().join("out");
    let mut child =
        command().args(["run", exp.to_str().unwrap(), "--out", out.to_str().unwrap(), "--quiet"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    let orchestrator = child.id();
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    // The trainer: the orchestrator's child, the leader of its own group.
    let start = Instant::now();
    let trainer = loop {
        if let Some((pid, _, _)) = processes().into_iter().find(|(pid, group, parent)| *parent == orchestrator && group == pid) {
            break pid;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no trainer started");
        assert!(child.try_wait().unwrap().is_none(), "the campaign ended early");
        std::thread::sleep(Duration::from_millis(10));
    };
    let signal = || assert!(Command::new("kill").args(["-TERM", &orchestrator.to_string()]).status().unwrap().success());
    signal();
    // The first one is taken (signals sent together may arrive as one).
    let mut said = Vec::new();
    loop {
        let line = lines.recv_timeout(Duration::from_secs(30)).expect("the orchestrator never said it was stopping");
        said.push(line.clone());
        if line.contains("stopping:") {
            break;
        }
    }
    signal();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "the orchestrator did not exit on the second signal");
        std::thread::sleep(Duration::from_millis(10));
    };
    // The rest of its stderr, up to the end of the pipe (the reader thread may lag behind the exit).
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        said.push(line);
    }
    let said = said.join("\n");
    assert_eq!(status.code(), Some(130), "{said}");
    // (0 or 1 groups: a trainer still starting may already have ended on the forwarded SIGTERM.)
    assert!(said.contains("second stop signal: killed") && said.contains("process group(s) of this campaign (SIGKILL)"), "{said}");
    // SIGKILL was sent before the exit; the kernel tears a process down at once.
    let start = Instant::now();
    let left = loop {
        let left: Vec<(u32, u32, u32)> = processes().into_iter().filter(|(_, group, _)| *group == trainer).collect();
        if left.is_empty() || start.elapsed() > Duration::from_secs(2) {
            break left;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !left.is_empty() {
        let _ = Command::new("kill").args(["-KILL", &format!("-{trainer}")]).status();
    }
    assert!(left.is_empty(), "processes of the campaign outlived it: {left:?}\n{said}");
}
