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
    // The run records its train step's flops from the CPU plugin's cost
    // analysis, or, where it chose oneDNN kernels (custom calls the cost
    // analysis cannot see into), a note saying why it has none.
    for record in [&cpu, &tpu] {
        match record["config"]["train_step_cost"]["flops"].as_f64() {
            Some(flops) => assert!(flops > 0.0, "{record}"),
            None => assert!(record["notes"]["train_step_cost"].as_str().unwrap().contains("custom_call"), "{record}"),
        }
    }
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
    // `cloud run`'s preflight compiled the TPU programs for the VM's v3-8
    // and left the prediction beside the runs; the report shows it as one,
    // with no measured row (a stand-in is no TPU run).
    assert!(out.join("cloud-tpu/tiny/tpu-prediction-v3-8.json").is_file());
    let predicted = rows("| face | tiny | predicted on TPU v3-8 (compiler cost analysis, roofline) | 24x24 | 8 × 1 | 6 |");
    assert_eq!(predicted.len(), 1, "{report}");
    assert!(rows("| face | tiny | measured:").is_empty(), "{report}");
    let down = emotionet(dir.path(), &fake, &["cloud", "--state", state_path(dir.path()).as_str(), "down", "--poll-every", "0.05"]);
    assert!(down.status.success());
}

fn state_path(dir: &Path) -> String {
    dir.join("cloud-state.json").display().to_string()
}

/// One state file: `cloud up` without `--state` records the VM in the
/// default file, and a campaign without `cloud.state` finds it there. A
/// campaign whose `cloud.state` names another, empty file fails with an
/// error that names the default file and the VM recorded in it.
#[test]
fn campaigns_and_cloud_commands_agree_on_the_default_state_file() {
    let fake = FakeTpu::start();
    let dir = temp_dir("default-state");
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("experiments")).unwrap();
    let cache = dir.path().join("cache");
    std::fs::write(
        project.join("experiments/tiny.yaml"),
        format!(
            "name: tiny\nseed: 3\ndata: {{image_size: 24, cache_dir: {}, source: {{synthetic: {{faces: 60, non_faces: 40, size: 48}}}}}}\n\
             models:\n  face: {{batch: 8, steps_per_epoch: 2, epochs: 1, architecture: {{dense_units: 16}}}}\n\
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
    let args = serde_json::json!([
        "--via",
        "local",
        "--local-root",
        vm.to_str().unwrap(),
        "--setup",
        "mkdir -p {deps}",
        "--command",
        format!(
            "EMOTIONET_ALLOW_STAND_IN=1 EMOTIONET_PJRT_PLUGIN={} EMOTIONET_DEPS={{deps}} {{bin}} run {{campaign}} --out {{out}} --backend tpu --quiet",
            stand_in.display()
        ),
        "--poll-every",
        "0.05",
        "--sync-every",
        "0.2",
        "--skip-preflight",
    ]);
    let campaign = |cloud: serde_json::Value| {
        serde_yaml::to_string(&serde_json::json!({"experiments": ["experiments/tiny.yaml"], "backends": ["tpu"], "hierarchy_eval": false, "cloud": cloud}))
            .unwrap()
    };
    std::fs::write(project.join("default.yaml"), campaign(serde_json::json!({"args": args}))).unwrap();
    std::fs::write(project.join("elsewhere.yaml"), campaign(serde_json::json!({"state": "other-state.json", "args": args}))).unwrap();

    // No --state, no EMOTIONET_CLOUD_STATE: HOME's default file.
    let run = |args: &[&str]| {
        output(
            command()
                .args(args)
                .current_dir(&project)
                .env("EMOTIONET_TPU_API_URL", &fake.url)
                .env("GOOGLE_APPLICATION_CREDENTIALS", fake.authorized_user_file(dir.path(), REFRESH_TOKEN))
                .env("HOME", dir.path())
                .env("EMOTIONET_GCLOUD", dir.path().join("no-gcloud"))
                .env_remove("EMOTIONET_CLOUD_STATE")
                .env_remove("XDG_STATE_HOME")
                .env_remove("EMOTIONET_PJRT_PLUGIN"),
        )
    };
    let up = run(&["cloud", "up", "--project", "p-1", "--zone", "europe-west4-a", "--accelerator-type", "v3-8", "--poll-every", "0.05"]);
    assert!(up.status.success());
    let default_file = dir.path().join(".local/state/emotionet/cloud-vms.json");
    assert!(std::fs::read_to_string(&default_file).unwrap().contains("emotionet-tpu"), "cloud up recorded the VM in the default file");

    let ok = run(&["run", "default.yaml", "--out", "out-default", "--quiet"]);
    assert!(ok.status.success(), "a campaign without cloud.state finds the VM");
    let tpu: serde_json::Value = serde_json::from_slice(&std::fs::read(project.join("out-default/cloud-tpu/tiny/face/tpu-r0/record.json")).unwrap()).unwrap();
    assert_eq!(tpu["status"]["state"], "finished");

    let bad = run(&["run", "elsewhere.yaml", "--out", "out-elsewhere", "--quiet"]);
    assert!(!bad.status.success());
    let state = std::fs::read_to_string(project.join("out-elsewhere/campaign-state.json")).unwrap();
    let said = format!("{state}{}", String::from_utf8_lossy(&bad.stderr));
    assert!(said.contains("no TPU VM was created from here"), "{said}");
    assert!(said.contains(&format!("the default state file {} records emotionet-tpu (europe-west4-a)", default_file.display())), "{said}");
    assert!(said.contains("drop `cloud.state`"), "{said}");

    let down = run(&["cloud", "down", "--poll-every", "0.05"]);
    assert!(down.status.success());
}

/// The project's path end to end, on the stand-ins: `cloud up` (default
/// state file) -> `run experiments/cpu-vs-tpu.yaml` (CPU runs here, TPU runs
/// on the stand-in VM, the LFW subset shipped with them) -> one report with
/// every section filled. The shipped campaign and experiment files are used
/// as they are, only scaled down (image size, steps, data, widths) and
/// given the stand-in VM's `cloud.args`. The stand-in's rows are labelled
/// as such and give no TPU speedup.
#[test]
fn the_cpu_vs_tpu_campaign_goes_from_cloud_up_to_one_report() {
    use serde_yaml::Value;
    let fake = FakeTpu::start();
    let dir = temp_dir("cpu-vs-tpu");
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("experiments")).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let read = |name: &str| -> Value { serde_yaml::from_str(&std::fs::read_to_string(shipped.join(name)).unwrap()).unwrap() };
    let set = |v: &mut Value, path: &[&str], to: Value| {
        let mut at = v;
        for key in &path[..path.len() - 1] {
            at = at.get_mut(*key).unwrap_or_else(|| panic!("no {key} in {path:?}"));
        }
        at[path[path.len() - 1]] = to;
    };
    let cache = dir.path().join("cache");
    for (name, size) in [("paper-cpu.yaml", 24), ("paper-tpu.yaml", 32)] {
        let mut e = read(name);
        set(&mut e, &["data", "image_size"], size.into());
        set(&mut e, &["data", "cache_dir"], cache.display().to_string().into());
        let synthetic: Value = serde_yaml::from_str("{seed: 1, faces: 60, non_faces: 40, size: 48}").unwrap();
        match e["data"]["source"].get_mut("mixed") {
            // paper-cpu: the synthetic part shrinks; the LFW subset stays as written.
            Some(Value::Sequence(parts)) => parts[0]["synthetic"] = synthetic,
            _ => set(&mut e, &["data", "source", "synthetic"], synthetic),
        }
        for model in ["face", "emotion"] {
            for (key, value) in [("batch", 8), ("steps_per_epoch", 2), ("epochs", 1)] {
                set(&mut e, &["models", model, key], value.into());
            }
            set(&mut e, &["models", model, "architecture"], serde_yaml::from_str("{dense_units: 16}").unwrap());
        }
        set(&mut e, &["logging"], serde_yaml::from_str("{every_steps: 1, checkpoint_every_steps: 0}").unwrap());
        std::fs::write(project.join("experiments").join(name), serde_yaml::to_string(&e).unwrap()).unwrap();
    }
    // paper-cpu reads .deps/data/lfw_subset.npy relative to the working folder.
    let deps = std::env::var_os("EMOTIONET_DEPS").map(std::path::PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps"));
    std::fs::create_dir_all(project.join(".deps/data")).unwrap();
    std::fs::copy(deps.join("data/lfw_subset.npy"), project.join(".deps/data/lfw_subset.npy")).expect("the LFW subset (make setup)");

    let cpu_plugin = emotionet::pjrt::resolve_plugin(emotionet::pjrt::Backend::Cpu, None).unwrap();
    let stand_in = dir.path().join("tpu-stand-in.json");
    std::fs::write(
        &stand_in,
        serde_json::json!({"library": cpu_plugin, "platform": "cpu", "stands_in_for": "tpu", "why": "tests: the folder playing the TPU VM has no TPU"})
            .to_string(),
    )
    .unwrap();
    let vm = dir.path().join("vm");
    let mut campaign = read("cpu-vs-tpu.yaml");
    assert!(campaign["cloud"].get("state").is_none(), "the shipped campaign uses the default state file");
    set(
        &mut campaign,
        &["cloud", "args"],
        serde_json::from_value(serde_json::json!([
            "--via",
            "local",
            "--local-root",
            vm.to_str().unwrap(),
            "--setup",
            "mkdir -p {deps}",
            "--command",
            format!(
                "EMOTIONET_ALLOW_STAND_IN=1 EMOTIONET_PJRT_PLUGIN={} EMOTIONET_DEPS={{deps}} {{bin}} run {{campaign}} --out {{out}} --backend tpu --quiet",
                stand_in.display()
            ),
            "--poll-every",
            "0.05",
            "--sync-every",
            "0.5",
        ]))
        .unwrap(),
    );
    std::fs::write(project.join("experiments/cpu-vs-tpu.yaml"), serde_yaml::to_string(&campaign).unwrap()).unwrap();

    let run = |args: &[&str]| {
        output(
            command()
                .args(args)
                .current_dir(&project)
                .env("EMOTIONET_TPU_API_URL", &fake.url)
                .env("GOOGLE_APPLICATION_CREDENTIALS", fake.authorized_user_file(dir.path(), REFRESH_TOKEN))
                .env("HOME", dir.path())
                .env("EMOTIONET_GCLOUD", dir.path().join("no-gcloud"))
                .env_remove("EMOTIONET_CLOUD_STATE")
                .env_remove("XDG_STATE_HOME")
                .env_remove("EMOTIONET_PJRT_PLUGIN"),
        )
    };
    assert!(run(&["cloud", "up", "--project", "p-1", "--zone", "europe-west4-a", "--accelerator-type", "v3-8", "--poll-every", "0.05"]).status.success());
    let campaign_run = run(&["run", "experiments/cpu-vs-tpu.yaml", "--out", "runs/cpu-vs-tpu", "--quiet"]);
    assert!(campaign_run.status.success());
    let stdout = String::from_utf8_lossy(&campaign_run.stdout);
    assert!(stdout.contains("campaign cpu-vs-tpu: 6 runs"), "paper-cpu on cpu and tpu, paper-tpu on tpu, two models each: {stdout}");
    assert!(stdout.contains("report: runs/cpu-vs-tpu/report/report.md"), "{stdout}");

    let out = project.join("runs/cpu-vs-tpu");
    let vm_runs = vm.join("emotionet-cloud/project/.deps/data/lfw_subset.npy");
    assert!(vm_runs.is_file(), "the LFW subset travelled to the VM");
    for run_dir in ["paper-cpu/face/cpu-r0", "paper-cpu/emotion/cpu-r0", "cloud-tpu/paper-cpu/face/tpu-r0", "cloud-tpu/paper-tpu/emotion/tpu-r0"] {
        let record: serde_json::Value = serde_json::from_slice(&std::fs::read(out.join(run_dir).join("record.json")).unwrap()).unwrap();
        assert_eq!(record["status"]["state"], "finished", "{run_dir}");
    }
    let report = std::fs::read_to_string(out.join("report/report.md")).unwrap();
    let section = |n: &str| -> &str {
        let start = report.find(&format!("## {n}")).unwrap_or_else(|| panic!("no section {n}: {report}"));
        let rest = &report[start + 3..];
        &rest[..rest.find("\n## ").unwrap_or(rest.len())]
    };
    // 1: our times per platform with the paper's bars.
    assert!(section("1.").contains("paper-cpu") && section("1.").contains("paper-tpu") && section("1.").contains(".svg"), "{report}");
    // 2: the paper-style comparison is there; the same-work pair is there but,
    // its TPU being a stand-in, gives no TPU speedup and says why.
    // 2: the paper-style comparison of our CPU runs; the stand-in's runs
    // (the same work "on the TPU") enter neither it nor a speedup.
    let ours = section("2.").split("### Ours against the paper's").nth(1).unwrap_or_else(|| panic!("no paper comparison: {report}"));
    assert!(ours.contains("| face | CPU (cpu ×1) · paper-cpu | 24x24") && ours.contains("**paper: CPU cluster, 100x100**"), "{report}");
    assert!(!section("2.").contains("standing in"), "a stand-in enters no speedup or paper comparison: {report}");
    // 3: every group: both models on the CPU, and the stand-in's labelled rows
    // for the same work (paper-cpu) and the paper's TPU set-up (paper-tpu).
    for (model, experiment) in [("face", "paper-cpu"), ("emotion", "paper-cpu")] {
        assert!(
            section("3.").lines().any(|l| l.starts_with(&format!("| {model} | CPU (")) && l.contains(&format!("| {experiment} |"))),
            "{model} {experiment}: {report}"
        );
    }
    for experiment in ["paper-cpu", "paper-tpu"] {
        assert!(
            section("3.").lines().any(|l| l.contains("standing in for TPU") && l.contains(&format!("| {experiment} |"))),
            "stand-in row of {experiment}: {report}"
        );
    }
    for n in ["4.", "5.", "6."] {
        assert!(section(n).contains("paper-cpu") || section(n).contains(".svg"), "section {n} is empty: {report}");
    }
    // 7: Table I from our hierarchy evaluations, next to the paper's rows.
    assert!(!section("7.").contains("show the paper's figures only") && section("7.").contains("paper-cpu"), "{report}");
    // 8: what is not a TPU figure is said.
    assert!(section("8.").contains("through a stand-in description"), "{report}");

    assert!(run(&["cloud", "down", "--poll-every", "0.05"]).status.success());
}
