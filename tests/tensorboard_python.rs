//! Our event files, read by TensorBoard itself: `EventAccumulator` from the
//! pinned `tensorboard` wheel that `make setup` installs into `.deps/py`.

use std::path::PathBuf;
use std::process::Command;

use emotionet::records::{MetricPoint, Split};
use emotionet::train::tensorboard::EventWriter;

/// Loads every scalar of a log directory with TensorBoard's reader and
/// prints them as JSON: {tag: [[step, value], ...]}.
const READER: &str = r#"
import json, sys
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0})
acc.Reload()
print(json.dumps({t: [[s.step, s.value, s.wall_time] for s in acc.Scalars(t)] for t in acc.Tags()["scalars"]}))
"#;

fn python_deps() -> PathBuf {
    let deps = std::env::var_os("EMOTIONET_DEPS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".deps"));
    let py = deps.join("py");
    assert!(
        py.join("tensorboard").is_dir(),
        "TensorBoard's reader is not installed in {}: run `make setup` (it pip-installs the pinned tensorboard, protobuf, numpy and absl-py wheels there)",
        py.display()
    );
    py
}

fn tensorboard_scalars(log_dir: &std::path::Path) -> serde_json::Value {
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg("-c")
        .arg(READER)
        .arg(log_dir)
        .env("PYTHONPATH", python_deps())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "TensorBoard's reader failed:\n--- stdout\n{stdout}--- stderr\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("reader output is not JSON ({e}): {stdout}"))
}

fn steps_and_values(v: &serde_json::Value, tag: &str) -> Vec<(i64, f32)> {
    v[tag].as_array().unwrap_or_else(|| panic!("tag {tag} missing from {v}")).iter().map(|p| (p[0].as_i64().unwrap(), p[1].as_f64().unwrap() as f32)).collect()
}

#[test]
fn tensorboard_loads_our_scalars() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(dir.path()).unwrap();
    let mut expected_train = Vec::new();
    for step in (100..=400).step_by(100) {
        let loss = 1.0 / step as f64;
        let point = MetricPoint { step, epoch: step.div_ceil(15), wall_s: step as f64 * 0.1, split: Split::Train, loss, accuracy: 0.5 + step as f64 / 1000.0 };
        w.add_metric_point(&point, &[("learning_rate", 1e-3)]).unwrap();
        expected_train.push((step as i64, loss as f32));
    }
    let eval = MetricPoint { step: 450, epoch: 30, wall_s: 50.0, split: Split::Eval, loss: 0.58, accuracy: 0.87 };
    w.add_metric_point(&eval, &[]).unwrap();
    w.add_scalars_at(450, 1_700_000_000.25, &[("timing/steady_step_ms", 12.5)]).unwrap();
    w.flush().unwrap();

    let got = tensorboard_scalars(dir.path());
    assert_eq!(steps_and_values(&got, "train/loss"), expected_train);
    assert_eq!(steps_and_values(&got, "train/accuracy")[3], (400, 0.9));
    assert_eq!(steps_and_values(&got, "learning_rate").len(), 4);
    assert_eq!(steps_and_values(&got, "eval/loss"), vec![(450, 0.58)]);
    assert_eq!(steps_and_values(&got, "eval/accuracy"), vec![(450, 0.87)]);
    assert_eq!(got["timing/steady_step_ms"][0][2].as_f64(), Some(1_700_000_000.25));
    let mut tags: Vec<&str> = got.as_object().unwrap().keys().map(String::as_str).collect();
    tags.sort();
    assert_eq!(tags, ["eval/accuracy", "eval/loss", "learning_rate", "timing/steady_step_ms", "train/accuracy", "train/loss"]);
}

#[test]
fn after_a_resume_tensorboard_drops_the_orphaned_steps() {
    let dir = tempfile::tempdir().unwrap();
    {
        // First attempt: logs steps 100..300, killed after the checkpoint at 200.
        let mut w = EventWriter::create(dir.path()).unwrap();
        for step in [100u64, 200, 300] {
            w.add_scalar("train/loss", step, step as f32).unwrap();
        }
    }
    // The resumed writer's file sorts after the first (a later second, or
    // the same second with a `.1` suffix), which is TensorBoard's read order.
    {
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.mark_restart(200).unwrap();
        for step in [300u64, 400] {
            w.add_scalar("train/loss", step, -(step as f32)).unwrap();
        }
    }
    let got = tensorboard_scalars(dir.path());
    assert_eq!(steps_and_values(&got, "train/loss"), vec![(100, 100.0), (200, 200.0), (300, -300.0), (400, -400.0)]);
}

/// `make tensorboard`'s command works: the TensorBoard server installed into
/// `.deps/tensorboard`, started as `make tensorboard` prints it
/// (`PYTHONPATH=.deps/tensorboard python3 -m tensorboard.main --logdir DIR`),
/// serves our scalars over HTTP.
#[test]
fn make_tensorboards_command_serves_our_curves() {
    use std::io::{BufRead, Read, Write};
    let deps = std::env::var_os("EMOTIONET_DEPS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".deps"));
    let tb = deps.join("tensorboard");
    assert!(tb.join("tensorboard/main.py").is_file(), "TensorBoard is not installed in {}: run `make tensorboard` (`make test` does)", tb.display());
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("smoke/face/cpu-r0");
    let mut w = EventWriter::create(&run).unwrap();
    for step in [5u64, 10, 15] {
        let point = MetricPoint { step, epoch: 1, wall_s: step as f64, split: Split::Train, loss: 1.0 / step as f64, accuracy: 0.5 };
        w.add_metric_point(&point, &[]).unwrap();
    }
    w.flush().unwrap();

    let mut server = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .args(["-m", "tensorboard.main", "--logdir"])
        .arg(dir.path())
        .args(["--host", "127.0.0.1", "--port", "0", "--load_fast", "false", "--reload_interval", "1"])
        .env("PYTHONPATH", &tb)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start TensorBoard");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = server.stderr.take().unwrap();
    let server = Kill(server);
    // "TensorBoard 2.20.0 at http://127.0.0.1:PORT/ (Press CTRL+C to quit)"
    let mut said = String::new();
    let mut port = None;
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line.unwrap();
        said.push_str(&line);
        said.push('\n');
        if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
            port = rest.split('/').next().and_then(|p| p.parse::<u16>().ok());
            break;
        }
    }
    let port = port.unwrap_or_else(|| panic!("TensorBoard did not say where it serves:\n{said}"));
    let get = |path: &str| -> String {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    };
    let path = "/data/plugin/scalars/scalars?run=smoke/face/cpu-r0&tag=train/loss";
    let mut answer = String::new();
    for _ in 0..120 {
        answer = get(path);
        if answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    drop(server);
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_else(|| panic!("no answer from TensorBoard: {answer}"));
    let points: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {answer}"));
    let steps: Vec<i64> = points.as_array().unwrap().iter().map(|p| p[1].as_i64().unwrap()).collect();
    assert_eq!(steps, [5, 10, 15], "{points}");
    assert!((points[2][2].as_f64().unwrap() - 1.0 / 15.0).abs() < 1e-6, "{points}");
}
