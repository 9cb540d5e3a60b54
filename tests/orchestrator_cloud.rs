//! One campaign, CPU and TPU: the CPU runs train here while the TPU runs go
//! through `emotionet cloud run` to a VM (the fake Cloud TPU API on
//! 127.0.0.1, and a local folder standing in for the VM through the same
//! code path the real one uses). The stand-in VM has no TPU: its TPU runs
//! go through a stand-in description (`pjrt::StandIn`) that names the CPU
//! plugin and says it stands in for the TPU, so the runs are real but small,
//! and their records and the report say that the CPU ran them.

mod cli_support;
mod cloud_fake;

use std::path::Path;
use std::process::Output;

use cli_support::{command, output};
use cloud_fake::{FakeTpu, REFRESH_TOKEN, temp_dir};

fn emotionet(dir: &Path, fake: &FakeTpu, args: &[&str]) -> Output {
    output(
        command()
            .args(args)
            .current_dir(dir.join("project"))
            .env("EMOTIONET_TPU_API_URL", &fake.url)
            .env("GOOGLE_APPLICATION_CREDENTIALS", fake.authorized_user_file(dir, REFRESH_TOKEN))
            .env("HOME", dir)
            .env("EMOTIONET_GCLOUD", dir.join("no-gcloud"))
            .env_remove("EMOTIONET_PJRT_PLUGIN"),
    )
}

#[test]
fn a_campaign_trains_on_cpu_here_and_on_a_tpu_vm_and_reports_both() {
    let fake = FakeTpu::start();
    let dir = temp_dir("orchestrated");
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("experiments")).unwrap();
    let cache = dir.path().join("cache");
    std::fs::write(
        project.join("experiments/tiny.yaml"),
        format!(
            "name: tiny\nseed: 2\ndata: {{image_size: 24, cache_dir: {}, source: {{synthetic: {{faces: 60, non_faces: 40, size: 48}}}}}}\n\
             models:\n  face: {{batch: 8, steps_per_epoch: 3, epochs: 2, optimizer: {{kind: adam}}, learning_rate: {{schedule: constant, value: 0.001}}, architecture: {{dense_units: 16}}}}\n\
             logging: {{every_steps: 1}}\n",
            cache.display()
        ),
    )
    .unwrap();
    let cpu_plugin = emotionet::pjrt::resolve_plugin(emotionet::pjrt::Backend::Cpu, None).unwrap();
    let stand_in = dir.path().join("tpu-stand-in.json");
    std::fs::write(
        &stand_in,
        serde_json::json!({"library": cpu_plugin, "platform": "cpu", "stands_in_for": "tpu", "why": "tests: the folder playing the TPU VM has no TPU"})
            .to_string(),
    )
    .unwrap();
    let vm = dir.path().join("vm");
    let campaign = serde_json::json!({
        "experiments": ["experiments/tiny.yaml"],
        "backends": ["cpu", "tpu"],
        "hierarchy_eval": false,
        "cloud": {
            "state": dir.path().join("cloud-state.json"),
            "args": [
                "--via", "local", "--local-root", vm.to_str().unwrap(),
                "--setup", "mkdir -p {deps}",
                "--command", format!("EMOTIONET_ALLOW_STAND_IN=1 EMOTIONET_PJRT_PLUGIN={} EMOTIONET_DEPS={{deps}} {{bin}} run {{campaign}} --out {{out}} --backend tpu --quiet", stand_in.display()),
                "--poll-every", "0.05", "--sync-every", "0.2",
            ],
        },
    });
    std::fs::write(project.join("campaign.yaml"), serde_yaml::to_string(&campaign).unwrap()).unwrap();

    let state = dir.path().join("cloud-state.json");
    let up = emotionet(
        dir.path(),
        &fake,
        &[
            "cloud",
            "--state",
            state.to_str().unwrap(),
            "up",
            "--project",
            "p-1",
            "--zone",
            "europe-west4-a",
            "--accelerator-type",
            "v3-8",
            "--poll-every",
            "0.05",
        ],
    );
    assert!(up.status.success());

    let run = emotionet(dir.path(), &fake, &["run", "campaign.yaml", "--out", "out", "--quiet"]);
    assert!(run.status.success());
    let out = project.join("out");
    let cpu: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("tiny/face/cpu-r0/record.json")).unwrap()).unwrap();
    let tpu: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("cloud-tpu/tiny/face/tpu-r0/record.json")).unwrap()).unwrap();
    assert_eq!(cpu["status"]["state"], "finished");
    assert_eq!(tpu["status"]["state"], "finished");
    assert_eq!(tpu["backend"], "tpu");
    assert_eq!(cpu["platform"]["name"], "cpu");
    assert_eq!(tpu["platform"]["name"], "cpu", "the record names the platform that really ran");
    let state: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join("campaign-state.json")).unwrap()).unwrap();
    assert_eq!(state["runs"]["tiny/face/tpu/r0"]["status"], "finished");
    let report = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    // The exact rows: the CPU run, and the stand-in's own labelled row (the
    // platform that ran it, never TPU), in the time table and the run table.
    let rows = |prefix: &str| report.lines().filter(|l| l.starts_with(prefix)).map(str::to_string).collect::<Vec<_>>();
    let paper_rows: Vec<String> = rows("| face | CPU (cpu ×1) · tiny |");
    assert_eq!(paper_rows.len(), 2, "the CPU run against the paper's two set-ups, the stand-in against neither: {report}");
    let time_rows: Vec<String> = rows("| face | CPU ").into_iter().filter(|l| !paper_rows.contains(l)).collect();
    assert_eq!(time_rows.len(), 4, "two rows in section 1, two in section 3: {report}");
    assert!(time_rows[0].starts_with("| face | CPU (cpu ×1) | tiny | 24x24 | 6 |") && time_rows[0].ends_with("| 1 of 1 |"), "{}", time_rows[0]);
    assert!(
        time_rows[1].starts_with("| face | CPU standing in for TPU (cpu ×1) | tiny | 24x24 | 6 |") && time_rows[1].ends_with("| 1 of 1 |"),
        "{}",
        time_rows[1]
    );
    assert!(time_rows[2].starts_with("| face | CPU (cpu) | cpu ×1 | tiny | 24x24 | f32 (conv f32, dot f32) | 8 | 6 |"), "{}", time_rows[2]);
    assert!(time_rows[3].starts_with("| face | CPU standing in for TPU (cpu) | cpu ×1 | tiny | 24x24 | f32 (conv f32, dot f32) | 8 | 6 |"), "{}", time_rows[3]);
    assert!(rows("| face | TPU").is_empty() && rows("| face | tiny | TPU").is_empty(), "no row calls it a TPU: {report}");
    assert!(report.contains("No finished TPU runs"), "a stand-in is no TPU run: {report}");
    assert!(report.contains("No experiment has finished runs of the same model on CPU and on another platform"), "no CPU-vs-CPU speedup: {report}");
    let down = emotionet(dir.path(), &fake, &["cloud", "--state", state_path(dir.path()).as_str(), "down", "--poll-every", "0.05"]);
    assert!(down.status.success());
}

fn state_path(dir: &Path) -> String {
    dir.join("cloud-state.json").display().to_string()
}
