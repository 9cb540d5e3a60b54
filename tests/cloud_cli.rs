//! `emotionet cloud ...` through the real binary, against the fake API: the
//! cost guard, the whole up/status/run/fetch/down cycle (once with a local
//! stand-in VM, once through a stand-in `gcloud` that checks the ssh command
//! lines), credentials found the way Application Default Credentials look
//! for them, and tokens that stay out of the logs even at -vvv.

mod cli_support;
mod cloud_fake;
mod skips;

use std::path::Path;
use std::process::Output;

use cli_support::{command, output, text};
use cloud_fake::{FakeTpu, GOOD_TOKEN, REFRESH_TOKEN, temp_dir, write_script};

struct Env<'a> {
    fake: &'a FakeTpu,
    dir: &'a Path,
    /// The refresh token of the authorized-user file GOOGLE_APPLICATION_CREDENTIALS
    /// names; empty: no such variable (and no other ADC source).
    token: &'a str,
}

impl Env<'_> {
    fn emotionet(&self, args: &[&str]) -> Output {
        output(&mut self.command(args))
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = command();
        command
            .args(args)
            .current_dir(self.dir.join("project"))
            .env("EMOTIONET_TPU_API_URL", &self.fake.url)
            .env("EMOTIONET_CLOUD_STATE", self.dir.join("state.json"))
            // No gcloud application-default file, no metadata server, no quota project of the machine's.
            .env("HOME", self.dir)
            .env("GCE_METADATA_HOST", "127.0.0.1:9")
            .env_remove("GOOGLE_CLOUD_QUOTA_PROJECT")
            // Never the real gcloud: a missing one, unless a test installs a stand-in.
            .env("EMOTIONET_GCLOUD", self.dir.join("gcloud"))
            .env_remove("RUST_LOG");
        if self.token.is_empty() {
            command.env_remove("GOOGLE_APPLICATION_CREDENTIALS");
        } else {
            command.env("GOOGLE_APPLICATION_CREDENTIALS", self.fake.authorized_user_file(self.dir, self.token));
        }
        command
    }
}

fn setup(dir: &Path) {
    std::fs::create_dir_all(dir.join("project/experiments")).unwrap();
    std::fs::write(dir.join("project/campaign.yaml"), "experiments: [experiments/paper-tpu.yaml]\n").unwrap();
    std::fs::write(dir.join("project/experiments/paper-tpu.yaml"), "model: face\n").unwrap();
}

const UP: &[&str] = &["cloud", "up", "--project", "emotionet-test", "--zone", "europe-west4-a", "--accelerator-type", "v3-8", "--spot", "--poll-every", "0.05"];

#[test]
fn up_refuses_without_an_explicit_project_zone_and_accelerator_type() {
    let fake = FakeTpu::start();
    let dir = temp_dir("guard");
    setup(dir.path());
    let env = Env { fake: &fake, dir: dir.path(), token: REFRESH_TOKEN };
    for args in [
        &["cloud", "up"][..],
        &["cloud", "up", "--zone", "europe-west4-a", "--accelerator-type", "v3-8"],
        &["cloud", "up", "--project", "p-1", "--zone", "europe-west4-a"],
    ] {
        let out = env.emotionet(args);
        assert_eq!(out.status.code(), Some(1));
        let stderr = text(&out.stderr);
        assert!(stderr.contains("refusing to create a TPU VM without an explicit"), "{stderr}");
        assert!(stderr.contains("bills by the hour") && stderr.contains("nothing was created"), "{stderr}");
    }
    let stderr = text(&env.emotionet(&["cloud", "up", "--project", "p-1"]).stderr);
    assert!(stderr.contains("--zone, --accelerator-type"), "{stderr}");
    assert!(fake.requests().is_empty(), "the cost guard must stop before any request");
    assert!(!dir.path().join("state.json").exists());
}

/// us-east1-d was listed for v3-8 in this guide before; Google's regions page
/// (and the API) offer only v2-8 there.
#[test]
fn up_refuses_a_zone_that_does_not_offer_the_type_and_says_which_do() {
    let fake = FakeTpu::start();
    let dir = temp_dir("zone");
    setup(dir.path());
    let env = Env { fake: &fake, dir: dir.path(), token: REFRESH_TOKEN };
    let args: Vec<&str> = UP.iter().map(|a| if *a == "europe-west4-a" { "us-east1-d" } else { a }).collect();
    let out = env.emotionet(&args);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("zone us-east1-d does not offer TPU type v3-8") && stderr.contains("it offers: v2-8"), "{stderr}");
    assert!(stderr.contains("us-central1-a, us-central1-b, europe-west4-a") && stderr.contains("Nothing was created"), "{stderr}");
    assert_eq!(fake.count("POST", "/nodes"), 0, "nothing was created");
    assert!(!std::fs::read_to_string(dir.path().join("state.json")).unwrap_or_default().contains("emotionet-tpu"));
}

#[test]
fn up_refuses_a_multi_host_slice_before_any_request() {
    let fake = FakeTpu::start();
    let dir = temp_dir("multi-host");
    setup(dir.path());
    let env = Env { fake: &fake, dir: dir.path(), token: REFRESH_TOKEN };
    let out = env.emotionet(&["cloud", "up", "--project", "p-1", "--zone", "europe-west4-a", "--accelerator-type", "v3-32"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("\"v3-32\"") && stderr.contains("multi-host") && stderr.contains("v3-8"), "{stderr}");
    assert!(stderr.contains("nothing was created"), "{stderr}");
    assert!(fake.requests().is_empty(), "refused before any request");
    assert!(!dir.path().join("state.json").exists());
}

/// A typo in the type is called unknown, with the types that work, not
/// taken for a multi-host slice (9 cores rounded up to 2 hosts).
#[test]
fn up_calls_an_unknown_accelerator_type_unknown_and_lists_the_known_ones() {
    let fake = FakeTpu::start();
    let dir = temp_dir("unknown-type");
    setup(dir.path());
    let env = Env { fake: &fake, dir: dir.path(), token: REFRESH_TOKEN };
    let out = env.emotionet(&["cloud", "up", "--project", "p-1", "--zone", "europe-west4-a", "--accelerator-type", "v3-9"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("unknown accelerator type \"v3-9\""), "{stderr}");
    assert!(!stderr.contains("multi-host"), "{stderr}");
    assert!(stderr.contains("v2-8, v3-8, v4-8, v5p-8, v5litepod-1, v5litepod-4, v5litepod-8, v6e-1, v6e-4, v6e-8"), "{stderr}");
    assert!(stderr.contains("gcloud compute tpus accelerator-types list") && stderr.contains("nothing was created"), "{stderr}");
    assert!(fake.requests().is_empty(), "refused before any request");
}

#[test]
fn credentials_refused_before_any_call_say_that_nothing_was_created() {
    let fake = FakeTpu::start();
    let dir = temp_dir("no-credentials");
    setup(dir.path());
    let env = Env { fake: &fake, dir: dir.path(), token: "" };
    // --auth gcloud, and no gcloud: no token, so no request can be sent.
    let out = env.emotionet(&[UP, &["--auth", "gcloud"]].concat());
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("nothing was created (no request was sent)"), "{stderr}");
    assert!(!stderr.contains("may bill"), "{stderr}");
    assert!(fake.requests().is_empty());
    assert!(!std::fs::read_to_string(dir.path().join("state.json")).unwrap_or_default().contains("emotionet-tpu"));
}

#[test]
fn a_failed_up_leaves_no_record_and_never_claims_someone_elses_vm() {
    let fake = FakeTpu::start();
    let dir = temp_dir("failed-up");
    setup(dir.path());
    let env = Env { fake: &fake, dir: dir.path(), token: REFRESH_TOKEN };
    let recorded = || std::fs::read_to_string(dir.path().join("state.json")).unwrap_or_default();

    fake.fail_next_operation(8, "There is no more capacity in the zone \"europe-west4-a\"");
    let out = env.emotionet(UP);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("no more capacity") && stderr.contains("nothing was left behind"), "{stderr}");
    assert!(!recorded().contains("emotionet-tpu"), "{}", recorded());

    fake.add_foreign_node("projects/emotionet-test/locations/europe-west4-a", "emotionet-tpu");
    let out = env.emotionet(UP);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("HTTP 409") && stderr.contains("pick another --name"), "{stderr}");
    assert!(!recorded().contains("emotionet-tpu"), "{}", recorded());
    let down = env.emotionet(&["cloud", "down", "--name", "emotionet-tpu"]);
    assert_eq!(down.status.code(), Some(1), "down must not find a VM we did not create");
    assert_eq!(fake.node_state("emotionet-tpu").as_deref(), Some("READY"));
}

#[test]
fn up_status_run_fetch_down_with_a_local_stand_in_vm() {
    let fake = FakeTpu::start();
    let dir = temp_dir("cli");
    setup(dir.path());
    let env = Env { fake: &fake, dir: dir.path(), token: REFRESH_TOKEN };

    let out = env.emotionet(&[UP, &["--label", "team=faces"]].concat());
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("emotionet-tpu is READY"));
    assert!(text(&out.stderr).contains("bills until `emotionet cloud down --name emotionet-tpu`"));
    let create = fake.requests().into_iter().find(|r| r.method == "POST" && r.path.ends_with("/nodes")).unwrap();
    assert_eq!(create.body["schedulingConfig"]["spot"], true);
    assert_eq!(create.body["labels"], serde_json::json!({"managed-by": "emotionet", "team": "faces"}));

    let status = text(&env.emotionet(&["cloud", "status"]).stdout);
    assert!(status.contains("emotionet-tpu") && status.contains("READY") && status.contains("spot"), "{status}");
    assert!(status.lines().nth(1).is_some_and(|l| l.contains('s')), "uptime from createTime: {status}");
    // Hours up and the cost so far, from the price table, marked as an estimate with its date and source.
    assert!(status.contains("HOURS UP") && status.contains("COST SO FAR"), "{status}");
    let row = status.lines().find(|l| l.starts_with("emotionet-tpu")).unwrap();
    assert!(row.contains("0.00") && row.contains("$0.00 (est.)"), "a VM up for seconds: {row}");
    assert!(status.contains("costs are estimates") && status.contains(emotionet::cloud::cost::PRICE_DATE), "{status}");
    // A node created 90 minutes ago: 1.50 hours of a spot v3-8 in europe-west4 at the table's $2.24/h
    // (the seconds the status call itself takes may add a cent: any value over its duration is right).
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let created = now() - 5400;
    fake.set_create_time("emotionet-tpu", &emotionet::cloud::timestamp::format_rfc3339(created));
    let status = text(&env.emotionet(&["cloud", "status"]).stdout);
    let row = status.lines().find(|l| l.starts_with("emotionet-tpu")).unwrap();
    let costs: Vec<String> = (5400..=now() - created + 1).map(|s| format!("${:.2} (est.)", 2.24 * s as f64 / 3600.0)).collect();
    assert!(
        (row.contains(" 1.50 ") || row.contains(" 1.51 ")) && costs.iter().any(|c| row.contains(c.as_str())),
        "90 minutes of a spot v3-8 in europe-west4, one of {costs:?}: {row}"
    );

    let vm = dir.path().join("vm");
    let run = env.emotionet(&[
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
        "../out",
        "--setup",
        "mkdir -p {deps} && touch {deps}/setup-ran",
        "--command",
        "{bin} devices --json --client-option cpu_device_count=8 > {out}/devices.json && cat {campaign}",
        "--poll-every",
        "0.05",
        "--sync-every",
        "0.1",
    ]);
    assert!(run.status.success());
    assert!(text(&run.stdout).contains("[vm] experiments: [experiments/paper-tpu.yaml]"));
    assert!(text(&run.stdout).contains("done: 1 start(s), 0 re-attach(es), 0 recreation(s)"));
    assert!(text(&run.stderr).contains("still up and billing"));
    let devices = std::fs::read_to_string(dir.path().join("out/devices.json")).unwrap();
    assert!(devices.contains("CpuDevice(id=7)"), "{devices}");
    assert!(vm.join("emotionet-cloud/deps/setup-ran").exists());

    let fetched = env.emotionet(&["cloud", "fetch", "--via", "local", "--local-root", vm.to_str().unwrap(), "--out", "../fetched"]);
    assert!(fetched.status.success());
    assert!(dir.path().join("fetched/devices.json").is_file());

    let down = env.emotionet(&["cloud", "down", "--poll-every", "0.05"]);
    assert!(down.status.success());
    assert!(text(&down.stdout).contains("emotionet-tpu deleted"));
    assert!(text(&down.stderr).contains("emotionet cloud status --project emotionet-test --zone europe-west4-a"));
    assert_eq!(fake.node_state("emotionet-tpu"), None);
    let leftovers = text(&env.emotionet(&["cloud", "status", "--project", "emotionet-test", "--zone", "europe-west4-a"]).stdout);
    assert!(leftovers.contains("all TPU VMs in europe-west4-a of emotionet-test: 0"), "{leftovers}");
    assert!(leftovers.contains("queued resources in europe-west4-a: 0"), "{leftovers}");
}

/// The preflight: `cloud up --campaign` compiles the campaign's TPU
/// programs for the type with the pinned libtpu before its first request;
/// `cloud run` compiles them again only if the compile cache lacks them
/// (same program, libtpu and topology), so the second and third time no
/// worker starts and the cache file is not rewritten; and the prediction is
/// left beside the runs for the report.
#[test]
fn the_preflight_compiles_once_and_a_second_cloud_run_answers_from_the_cache() {
    let fake = FakeTpu::start();
    let dir = temp_dir("preflight");
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("experiments")).unwrap();
    // The campaign puts its runs on the TPU (`cloud up --campaign` compiles those alone).
    std::fs::write(project.join("campaign.yaml"), "experiments: [experiments/tiny.yaml]\nbackends: [tpu]\n").unwrap();
    std::fs::write(
        project.join("experiments/tiny.yaml"),
        "name: tiny\ndata: {image_size: 24, source: {synthetic: {faces: 60, non_faces: 40, size: 48}}}\n\
         models:\n  face: {batch: 8, steps_per_epoch: 3, epochs: 2, architecture: {dense_units: 16}}\n",
    )
    .unwrap();
    let env = Env { fake: &fake, dir: dir.path(), token: REFRESH_TOKEN };
    let cache = dir.path().join("xdg-cache/emotionet/tpu-compile-cache.json");
    let with_cache = |args: &[&str]| output(env.command(args).env("XDG_CACHE_HOME", dir.path().join("xdg-cache")));

    let up = with_cache(&[UP, &["--campaign", "campaign.yaml"]].concat());
    let stderr = text(&up.stderr);
    assert!(up.status.success(), "{stderr}");
    assert!(stderr.contains("preflight: 3 compiled now, 0 answered from the compile cache"), "{stderr}");
    assert!(stderr.contains("preflight: tiny fits a v3-8 (3 programs): largest face train_step"), "{stderr}");
    let before_create = stderr.find("preflight: 3 compiled").unwrap();
    assert!(before_create < stderr.find("creating TPU VM").unwrap(), "{stderr}");
    let stamp = std::fs::metadata(&cache).unwrap().modified().unwrap();

    let vm = dir.path().join("vm");
    for _ in 0..2 {
        let run = with_cache(&[
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
            "../out",
            "--setup",
            "true",
            "--command",
            "true",
            "--poll-every",
            "0.05",
        ]);
        let stderr = text(&run.stderr);
        assert!(run.status.success(), "{stderr}");
        assert!(stderr.contains("preflight: 0 compiled now, 3 answered from the compile cache"), "no worker, no compile: {stderr}");
        assert_eq!(std::fs::metadata(&cache).unwrap().modified().unwrap(), stamp, "a cache that answered everything is not rewritten");
    }
    let prediction: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("out/tiny/tpu-prediction-v3-8.json")).unwrap()).unwrap();
    assert_eq!(prediction["accelerator_type"], "v3-8");
    assert_eq!(prediction["programs"][0]["name"], "face train_step");
    assert!(prediction["programs"][0]["flops"].as_f64().unwrap() > 0.0, "{prediction}");
    assert!(prediction["predicted_train_s"].as_f64().unwrap() > 0.0, "{prediction}");
    assert!(env.emotionet(&["cloud", "down", "--poll-every", "0.05"]).status.success());

    // `compile --out RUNS` leaves the same file for a runs folder of one's own.
    let compiled = with_cache(&["compile", "experiments/tiny.yaml", "--target", "v3-8", "--out", "../runs"]);
    assert!(compiled.status.success(), "{}", text(&compiled.stderr));
    let kept: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.path().join("runs/tiny/tpu-prediction-v3-8.json")).unwrap()).unwrap();
    assert_eq!(kept["programs"][0]["flops"], prediction["programs"][0]["flops"], "the same program, the same compiler, the same figures");
}

/// A stand-in for gcloud: tokens, and `compute tpus tpu-vm ssh` run locally
/// in a folder playing the VM's home. Every call is logged for the test.
const FAKE_GCLOUD: &str = r#"#!/bin/bash
echo "$*" >> "$(dirname "$0")/gcloud-calls.log"
if [ "$1 $2" = "auth print-access-token" ]; then echo "$TOKEN_FOR_FAKE_GCLOUD"; exit 0; fi
[ "$1 $2 $3 $4" = "compute tpus tpu-vm ssh" ] || { echo "unexpected: $*" >&2; exit 2; }
for arg in "$@"; do
  case "$arg" in --command=*) command="${arg#--command=}" ;; esac
done
mkdir -p "$FAKE_VM_HOME"
# gcloud's own chatter, on stdout, as a transport might print it.
echo "SSH: Attempting to connect to worker 0..."
cd "$FAKE_VM_HOME" && HOME="$FAKE_VM_HOME" exec bash -c "$command"
"#;

#[test]
fn run_through_gcloud_ssh_builds_the_documented_command_lines() {
    let fake = FakeTpu::start();
    let dir = temp_dir("gcloud-ssh");
    setup(dir.path());
    // The token comes from the stand-in gcloud this time (--auth gcloud).
    install_fake_gcloud(dir.path());
    let env = Env { fake: &fake, dir: dir.path(), token: "" };
    let mut up = UP.to_vec();
    up.extend(["--auth", "gcloud"]);
    assert!(env.emotionet(&up).status.success());
    let run = env.emotionet(&[
        "cloud",
        "run",
        "campaign.yaml",
        "--skip-preflight",
        "--auth",
        "gcloud",
        "--ssh-arg=--tunnel-through-iap",
        "--out",
        "../out",
        "--setup",
        "true",
        "--command",
        "mkdir -p {out}/records && echo ok > {out}/records/run.json",
        "--poll-every",
        "0.05",
    ]);
    assert!(run.status.success());
    assert_eq!(std::fs::read_to_string(dir.path().join("out/records/run.json")).unwrap(), "ok\n");
    let calls = std::fs::read_to_string(dir.path().join("gcloud-calls.log")).unwrap();
    let ssh: Vec<&str> = calls.lines().filter(|l| l.starts_with("compute tpus tpu-vm ssh emotionet-tpu")).collect();
    assert!(!ssh.is_empty(), "{calls}");
    for line in &ssh {
        assert!(line.contains("--project=emotionet-test --zone=europe-west4-a --worker="), "{line}");
        assert!(line.contains("--quiet --tunnel-through-iap --command=bash -c "), "{line}");
    }
    assert!(ssh.iter().any(|l| l.contains("--worker=all") && l.contains(" --version")), "the binary is tried on every worker: {calls}");
    assert!(
        ssh.iter().any(|l| l.contains("--worker=0") && l.contains("vm-campaign.sh") && l.contains(" start ")),
        "the campaign starts detached on worker 0: {calls}"
    );
    assert!(ssh.iter().any(|l| l.contains("--worker=0") && l.contains("tar -C")), "files go worker by worker: {calls}");
    assert!(calls.lines().any(|l| l == "auth print-access-token"));
    assert!(env.emotionet(&["cloud", "down", "--auth", "gcloud", "--poll-every", "0.05"]).status.success());
}

/// Writes the stand-in gcloud with the token it prints and the folder it
/// treats as the VM's home written into it.
fn install_fake_gcloud(dir: &Path) {
    let script =
        FAKE_GCLOUD.replacen("#!/bin/bash\n", &format!("#!/bin/bash\nTOKEN_FOR_FAKE_GCLOUD={GOOD_TOKEN}\nFAKE_VM_HOME={}\n", dir.join("vm").display()), 1);
    write_script(&dir.join("gcloud"), &script);
}

#[test]
fn tokens_never_reach_the_logs_or_the_errors() {
    let fake = FakeTpu::start();
    let dir = temp_dir("secrets");
    setup(dir.path());

    // A good token, and a retry on the way, at the noisiest log level.
    let env = Env { fake: &fake, dir: dir.path(), token: REFRESH_TOKEN };
    fake.fail_next(503, 1, None);
    let out = env.emotionet(&[&["-vvv"], UP].concat());
    assert!(out.status.success());
    let stderr = text(&out.stderr);
    assert!(fake.requests().iter().any(|r| r.status == 503), "the 503 was answered and retried");
    assert!(stderr.contains("DEBUG") || stderr.contains("TRACE"), "verbose logging was on: {stderr}");
    for secret in [GOOD_TOKEN, REFRESH_TOKEN] {
        assert!(!stderr.contains(secret) && !text(&out.stdout).contains(secret), "a token in the output");
        let state = std::fs::read_to_string(dir.path().join("state.json")).unwrap();
        assert!(!state.contains(secret), "a token in the state file");
    }

    // A refused refresh token: exit 1, what to do, and still no token.
    let secret = "1//expired-SECRET-do-not-print";
    let bad = Env { fake: &fake, dir: dir.path(), token: secret };
    let out = bad.emotionet(&["-vvv", "cloud", "status"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("could not get an access token") && stderr.contains("gcloud auth application-default login"), "{stderr}");
    assert!(!stderr.contains(secret) && !text(&out.stdout).contains(secret), "token in the output: {stderr}");

    // An access token the API refuses (gcloud's, here): HTTP 401, what to do, no token.
    let expired = "ya29.expired-SECRET-do-not-print";
    write_script(&dir.path().join("gcloud"), &format!("#!/bin/sh\necho {expired}\n"));
    let out = Env { fake: &fake, dir: dir.path(), token: "" }.emotionet(&["-vvv", "cloud", "status", "--auth", "gcloud"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("HTTP 401") && stderr.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{stderr}");
    assert!(!stderr.contains(expired) && !text(&out.stdout).contains(expired), "token in the output: {stderr}");
}

/// Application Default Credentials in their order, through the binary (its
/// own environment): the GOOGLE_APPLICATION_CREDENTIALS file wins over
/// gcloud's well-known file, which wins over the metadata server; with none
/// of them, `gcloud auth print-access-token`; and `cloud` works with no gcloud at all.
#[test]
fn credentials_are_found_in_the_adc_order() {
    let fake = FakeTpu::start();
    let dir = temp_dir("adc");
    setup(dir.path());
    let status = |env: &[(&str, String)], remove: &[&str]| {
        let mut cmd = command();
        cmd.args(["cloud", "status", "--project", "emotionet-test", "--zone", "europe-west4-a"])
            .current_dir(dir.path().join("project"))
            .env("EMOTIONET_TPU_API_URL", &fake.url)
            .env("EMOTIONET_CLOUD_STATE", dir.path().join("state.json"))
            .env("HOME", dir.path().join("home"))
            .env("EMOTIONET_GCLOUD", dir.path().join("no-gcloud"))
            .env_remove("GOOGLE_CLOUD_QUOTA_PROJECT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        for k in remove {
            cmd.env_remove(k);
        }
        output(&mut cmd)
    };
    let token_calls = || fake.count("POST", "/token");
    let metadata_calls = || fake.count("GET", "/service-accounts/default/token");
    let good = fake.authorized_user_file(dir.path(), REFRESH_TOKEN).display().to_string();
    let metadata = ("GCE_METADATA_HOST", fake.url.trim_start_matches("http://").to_string());

    // 1. GOOGLE_APPLICATION_CREDENTIALS, though a metadata server answers too.
    assert!(status(&[("GOOGLE_APPLICATION_CREDENTIALS", good.clone()), metadata.clone()], &[]).status.success());
    assert_eq!((token_calls(), metadata_calls()), (1, 0));

    // 2. gcloud's application-default file in $HOME, when the variable is not set.
    let well_known = dir.path().join("home/.config/gcloud");
    std::fs::create_dir_all(&well_known).unwrap();
    std::fs::copy(&good, well_known.join("application_default_credentials.json")).unwrap();
    assert!(status(std::slice::from_ref(&metadata), &["GOOGLE_APPLICATION_CREDENTIALS"]).status.success());
    assert_eq!((token_calls(), metadata_calls()), (2, 0));

    // 3. The metadata server, with neither file.
    std::fs::remove_file(well_known.join("application_default_credentials.json")).unwrap();
    let out = status(std::slice::from_ref(&metadata), &["GOOGLE_APPLICATION_CREDENTIALS"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!((token_calls(), metadata_calls()), (2, 1));

    // The quota project: none with the metadata server's token, unless the user names one.
    let last_list = || fake.requests().into_iter().rev().find(|r| r.method == "GET" && r.path.ends_with("/nodes")).unwrap();
    assert_eq!(last_list().headers.get("x-goog-user-project"), None);
    let out = status(&[metadata.clone(), ("GOOGLE_CLOUD_QUOTA_PROJECT", "billing-project".into())], &["GOOGLE_APPLICATION_CREDENTIALS"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(last_list().headers.get("x-goog-user-project").map(String::as_str), Some("billing-project"));

    // 4. No ADC at all, and no gcloud either: one error that says what to set up.
    let nothing = ("GCE_METADATA_HOST", "127.0.0.1:9".to_string());
    let out = status(std::slice::from_ref(&nothing), &["GOOGLE_APPLICATION_CREDENTIALS"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("GOOGLE_APPLICATION_CREDENTIALS") && stderr.contains("gcloud auth application-default login"), "{stderr}");

    // 5. The gcloud fallback, when nothing else is there.
    write_script(&dir.path().join("gcloud"), &format!("#!/bin/sh\n[ \"$1 $2\" = 'auth print-access-token' ] && echo {GOOD_TOKEN}\n"));
    let out = status(&[nothing, ("EMOTIONET_GCLOUD", dir.path().join("gcloud").display().to_string())], &["GOOGLE_APPLICATION_CREDENTIALS"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A broken GOOGLE_APPLICATION_CREDENTIALS is an error naming the file, never a silent fallback.
    std::fs::write(dir.path().join("broken.json"), "{\"type\": \"something_else\"}").unwrap();
    let out = status(&[("GOOGLE_APPLICATION_CREDENTIALS", dir.path().join("broken.json").display().to_string()), metadata], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("broken.json"), "{}", text(&out.stderr));
}

/// Every `emotionet cloud SUB --flag` written in deploy/README.md is a flag
/// that SUB accepts; the startup script parses; the campaign example is YAML.
#[test]
fn the_deploy_guide_uses_only_real_flags_and_its_files_parse() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let readme = std::fs::read_to_string(deploy.join("README.md")).unwrap();
    let joined = readme.replace("\\\n", " ");
    let mut checked = 0;
    for line in joined.lines() {
        let Some(at) = line.find("emotionet cloud ") else { continue };
        // A quoted template is the VM's command line, not ours.
        let unquoted: String = line[at..].split('\'').step_by(2).collect::<Vec<_>>().join(" ");
        let words: Vec<&str> = unquoted.split_whitespace().collect();
        let Some(sub) = words.get(2).map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric())) else { continue };
        if !["up", "status", "run", "logs", "fetch", "down"].contains(&sub) {
            continue;
        }
        let help = command().args(["cloud", sub, "--help"]).output().unwrap();
        let help = text(&help.stdout);
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            let flag = flag.split('=').next().unwrap().trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
            assert!(help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")), "`emotionet cloud {sub}` has no {flag} (README line: {line})");
            checked += 1;
        }
    }
    assert!(checked >= 10, "only {checked} flags found in the guide's commands");
    // Flags named in the prose (`--flag ...`) exist on some cloud subcommand.
    let all_help: String = [&["cloud", "up"][..], &["cloud", "status"], &["cloud", "run"], &["cloud", "logs"], &["cloud", "fetch"], &["cloud", "down"], &[]]
        .iter()
        .map(|args| text(&command().args(*args).arg("--help").output().unwrap().stdout))
        .collect();
    const GCLOUD_FLAGS: &[&str] = &["--worker", "--quiet", "--tunnel-through-iap", "--force"];
    for span in readme.split('`').skip(1).step_by(2).filter(|s| s.starts_with("--")) {
        let flag = span.split([' ', '=']).next().unwrap();
        if GCLOUD_FLAGS.contains(&flag) {
            continue;
        }
        assert!(all_help.contains(&format!("{flag} ")) || all_help.contains(&format!("{flag}\n")), "no subcommand has {flag} (README: `{span}`)");
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} flags checked");

    for script in ["tpu-startup.sh", "vm-campaign.sh", "vm-setup.sh", "vm-build.sh", "fetch-libtpu.sh"] {
        let syntax = std::process::Command::new("bash").arg("-n").arg(deploy.join(script)).status().unwrap();
        assert!(syntax.success(), "{script}");
    }
    // The shipped campaign is one the orchestrator accepts, and it plans
    // the paper's two TPU runs.
    let plan = emotionet::orchestrator::Plan::load(&deploy.join("tpu-campaign.yaml"), None, None).unwrap();
    assert_eq!(plan.runs.len(), 2);
    assert!(plan.runs.iter().all(|r| r.backend == emotionet::pjrt::Backend::Tpu && r.experiment == "paper-tpu"));
}

/// The stand-in VM runs the real setup script (deploy/vm-setup.sh, shipped
/// inside the binary): the pinned libtpu wheel by its exact name and SHA-256
/// (from a local mirror of the same file, instead of files.pythonhosted.org),
/// and libtpu.so extracted where `EMOTIONET_DEPS={deps}` finds it. A second
/// run finds it there and does nothing.
#[test]
fn the_stand_in_vm_runs_the_real_setup_script() {
    let wheels = emotionet::pjrt::deps_dir().join("wheels");
    let pin = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/libtpu.env")).unwrap();
    let value = |key: &str| pin.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap().to_string();
    if !wheels.join(value("LIBTPU_WHEEL")).is_file() {
        skips::missing_dependency(
            "cloud_cli::the_stand_in_vm_runs_the_real_setup_script",
            &wheels.join(value("LIBTPU_WHEEL")).display().to_string(),
            "`make tpu-plugin` downloads it",
        );
        return;
    }
    let fake = FakeTpu::start();
    let dir = temp_dir("real-setup");
    setup(dir.path());
    let env = Env { fake: &fake, dir: dir.path(), token: REFRESH_TOKEN };
    assert!(env.emotionet(UP).status.success());
    let vm = dir.path().join("vm");
    let run = |env: &Env| {
        output(
            env.command(&[
                "cloud",
                "run",
                "campaign.yaml",
                "--skip-preflight",
                "--via",
                "local",
                "--local-root",
                vm.to_str().unwrap(),
                "--out",
                "../out",
                "--command",
                "sha256sum < {deps}/pjrt/libtpu/libtpu.so | cut -d' ' -f1 > {out}/libtpu.sha256",
                "--poll-every",
                "0.05",
            ])
            .env("EMOTIONET_LIBTPU_MIRROR", format!("file://{}", wheels.display())),
        )
    };
    let first = run(&env);
    assert!(first.status.success());
    let stderr = text(&first.stderr);
    assert!(stderr.contains("setting up the VM"), "{stderr}");
    assert_eq!(std::fs::read_to_string(dir.path().join("out/libtpu.sha256")).unwrap().trim(), value("LIBTPU_SO_SHA256"));
    assert!(vm.join("emotionet-cloud/deps/wheels").join(value("LIBTPU_WHEEL")).is_file());
    let second = run(&env);
    assert!(second.status.success());
    assert!(std::fs::metadata(vm.join("emotionet-cloud/deps/pjrt/libtpu/libtpu.so")).unwrap().len() > 600_000_000);
    assert!(env.emotionet(&["cloud", "down", "--poll-every", "0.05"]).status.success());
}

/// The laptop side can die at any moment: SIGKILL of `cloud run` leaves the
/// campaign running on the VM; `cloud logs --follow` follows it from
/// anywhere with the state file; `cloud run` again re-attaches (it never
/// starts a second copy) and brings the output back.
#[test]
fn a_killed_cloud_run_leaves_the_campaign_running_and_run_again_reattaches() {
    let fake = FakeTpu::start();
    let dir = temp_dir("sigkill");
    setup(dir.path());
    write_script(&dir.path().join("project/campaign.sh"), RESUMABLE);
    let env = Env { fake: &fake, dir: dir.path(), token: REFRESH_TOKEN };
    assert!(env.emotionet(UP).status.success());
    let vm = dir.path().join("vm");
    let remote_out = vm.join("emotionet-cloud/out");
    let args = [
        "cloud",
        "run",
        "campaign.yaml",
        "--skip-preflight",
        "--ship",
        "campaign.sh",
        "--via",
        "local",
        "--local-root",
        vm.to_str().unwrap(),
        "--out",
        "../out",
        "--setup",
        "true",
        "--command",
        "./campaign.sh {out} 24",
        "--poll-every",
        "0.05",
        "--sync-every",
        "0.2",
    ];
    let mut first = env.command(&args).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let waited = std::time::Instant::now();
    while checkpoint(&remote_out) < 3 {
        assert!(waited.elapsed() < std::time::Duration::from_secs(60), "the campaign did not start");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    first.kill().unwrap(); // SIGKILL: no cleanup of any kind
    let killed = first.wait_with_output().unwrap();
    cli_support::show(&env.command(&args), &killed);
    let at_kill = checkpoint(&remote_out);
    // The detached campaign goes on writing (a checkpoint every 0.15 s): wait
    // for the next one, however slow this machine is, instead of a fixed sleep.
    let waited = std::time::Instant::now();
    while checkpoint(&remote_out) <= at_kill {
        assert!(waited.elapsed() < std::time::Duration::from_secs(60), "the campaign stopped with the local cloud run");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }

    let host = ["--via", "local", "--local-root", vm.to_str().unwrap()];
    let follow = env
        .command(&[&["cloud", "logs", "--follow"][..], &host].concat())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let again = env.emotionet(&args);
    assert!(again.status.success());
    let stdout = text(&again.stdout);
    assert!(text(&again.stderr).contains("re-attached to campaign"), "{}", text(&again.stderr));
    assert!(stdout.contains("done: 0 start(s), 1 re-attach(es)"), "{stdout}");
    assert!(stdout.contains("[vm] step 24 of 24"), "{stdout}");
    let starts = std::fs::read_to_string(dir.path().join("out/starts")).unwrap();
    assert_eq!(starts, "start after 0\n", "never a second copy");
    assert_eq!(checkpoint(&dir.path().join("out")), 24, "the output came back");
    // The local log has every line once, though two processes followed it.
    let logs: Vec<_> = std::fs::read_dir(dir.path().join("out.cloud-log")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let log = std::fs::read_to_string(&logs[0]).unwrap();
    let expected: String = (1..=24).map(|i| format!("step {i} of 24\n")).collect();
    assert_eq!(log, expected);

    let followed = follow.wait_with_output().unwrap();
    cli_support::show(&env.command(&["cloud", "logs", "--follow"]), &followed);
    assert!(followed.status.success());
    assert_eq!(text(&followed.stdout), expected, "logs --follow printed the whole campaign and returned when it ended");
    assert!(text(&followed.stderr).contains("ended with exit status 0"), "{}", text(&followed.stderr));
    let once = env.emotionet(&[&["cloud", "logs"][..], &host].concat());
    assert_eq!(text(&once.stdout), expected);
    assert!(env.emotionet(&["cloud", "down", "--poll-every", "0.05"]).status.success());
}

/// A campaign that resumes from its output folder, as the orchestrator does.
const RESUMABLE: &str = r#"#!/bin/bash
set -eu
out=$1; steps=$2
mkdir -p "$out"
done=0
if [ -f "$out/checkpoint" ]; then done=$(cat "$out/checkpoint"); fi
echo "start after $done" >> "$out/starts"
for i in $(seq $((done + 1)) "$steps"); do
  sleep 0.15
  echo "$i" > "$out/checkpoint.tmp" && mv "$out/checkpoint.tmp" "$out/checkpoint"
  echo "step $i of $steps"
done
"#;

fn checkpoint(out: &Path) -> u32 {
    std::fs::read_to_string(out.join("checkpoint")).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0)
}
