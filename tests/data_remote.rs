//! Data sources in a bucket (`gs://...`), against the real Cloud Storage
//! emulator (fake-gcs-server): copied once into the cache folder, not
//! downloaded again when unchanged, a changed object downloaded again and a
//! removed one removed, a copy killed with SIGKILL half-way resumed with
//! what it had finished, clear errors for a missing prefix, object or bucket
//! and for credentials without permission, and `data prep` reading the real
//! LFW subset from a bucket.

mod cli_support;
mod gcs_emulator;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use emotionet::data::DataConfig;
use emotionet::data::remote::{self, SourceCopy};
use emotionet::storage::{Bucket, Location, Precondition, StorageConfig};
use gcs_emulator::{Emulator, SlowProxy};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Puts `files` (key, bytes) under `url`.
fn upload(host: &str, url: &str, files: &[(String, Vec<u8>)]) {
    runtime().block_on(async {
        let location = Location::parse(url).unwrap();
        let bucket = Bucket::connect(location.gcs().unwrap(), StorageConfig::emulator(host)).await.unwrap();
        for (key, bytes) in files {
            bucket.put(key, Bytes::from(bytes.clone()), Precondition::None).await.unwrap();
        }
    });
}

fn delete(host: &str, url: &str, key: &str) {
    runtime().block_on(async {
        let location = Location::parse(url).unwrap();
        let bucket = Bucket::connect(location.gcs().unwrap(), StorageConfig::emulator(host)).await.unwrap();
        let generation = bucket.list(key).await.unwrap()[0].generation;
        bucket.delete(key, generation).await.unwrap();
    });
}

/// A data config with LFW in `lfw_url` and the cache in `cache`.
fn lfw_config(cache: &Path, lfw_url: &str) -> DataConfig {
    serde_yaml::from_str(&format!("cache_dir: {}\nsource:\n  real: {{lfw: {lfw_url}}}\n", cache.display())).unwrap()
}

/// `n` small LFW-style files: `Person_k/Person_k_0001.jpg`.
fn people(n: usize, size: usize) -> Vec<(String, Vec<u8>)> {
    (0..n).map(|k| (format!("Person_{k}/Person_{k}_0001.jpg"), (0..size).map(|i| ((i * 7 + k) % 256) as u8).collect())).collect()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

fn copy_of(host: &str, config: &DataConfig) -> Vec<SourceCopy> {
    remote::localize_with(config, StorageConfig::emulator(host)).unwrap().copies
}

#[test]
fn a_bucket_folder_is_copied_once_and_follows_changes() {
    let emulator = Emulator::start(&["datasets"]);
    let cache = tempfile::tempdir().unwrap();
    let files = people(5, 3000);
    upload(&emulator.host, "gs://datasets/faces/lfw", &files);
    let config = lfw_config(cache.path(), "gs://datasets/faces/lfw");

    let localized = remote::localize_with(&config, StorageConfig::emulator(&emulator.host)).unwrap();
    let local = cache.path().join("gcs/datasets/faces/lfw");
    let emotionet::data::SourceConfig::Real(real) = &localized.config.source else { panic!("{:?}", localized.config.source) };
    assert_eq!(real.lfw.as_deref(), Some(local.as_path()), "the config now names the local copy");
    assert_eq!(localized.copies.len(), 1);
    let c = &localized.copies[0];
    assert_eq!((c.objects, c.downloaded, c.bytes, c.removed), (5, 5, 15000, 0));
    for (key, bytes) in &files {
        assert_eq!(&std::fs::read(local.join(key)).unwrap(), bytes, "{key}");
    }

    // Unchanged: nothing downloaded again.
    let again = copy_of(&emulator.host, &config);
    assert_eq!((again[0].objects, again[0].downloaded), (5, 0));

    // One object changed (a new generation), one removed, a stray temporary
    // left locally (as a killed copy leaves one): exactly the prefix again.
    upload(&emulator.host, "gs://datasets/faces/lfw", &[(files[1].0.clone(), b"changed".to_vec())]);
    delete(&emulator.host, "gs://datasets/faces/lfw", &files[2].0);
    std::fs::write(local.join("Person_0/Person_0_0001.jpg.123-0.tmp"), b"torn").unwrap();
    let third = copy_of(&emulator.host, &config);
    assert_eq!((third[0].objects, third[0].downloaded, third[0].removed), (4, 1, 2));
    assert_eq!(std::fs::read(local.join(&files[1].0)).unwrap(), b"changed");
    assert_eq!(files_under(&local).len(), 4);
    assert!(!local.join("Person_2").exists(), "a folder left empty goes too");

    // A local file damaged to another size is downloaded again.
    std::fs::write(local.join(&files[0].0), b"short").unwrap();
    let fourth = copy_of(&emulator.host, &config);
    assert_eq!(fourth[0].downloaded, 1);
    assert_eq!(&std::fs::read(local.join(&files[0].0)).unwrap(), &files[0].1);
}

#[test]
fn missing_prefixes_objects_and_buckets_are_clear_errors() {
    let emulator = Emulator::start(&["datasets"]);
    let cache = tempfile::tempdir().unwrap();
    let err = remote::localize_with(&lfw_config(cache.path(), "gs://datasets/nothing/here"), StorageConfig::emulator(&emulator.host)).unwrap_err().to_string();
    assert!(err.contains("gs://datasets/nothing/here") && err.contains("no objects under"), "{err}");

    upload(&emulator.host, "gs://datasets/arrays", &[("other.npy".into(), b"x".to_vec()), ("lfw_subset.npy.bak".into(), b"y".to_vec())]);
    let npy: DataConfig = serde_yaml::from_str(&format!(
        "cache_dir: {}\nsource:\n  real: {{npy: [{{path: gs://datasets/arrays/lfw_subset.npy, faces: [0, 1]}}]}}\n",
        cache.path().display()
    ))
    .unwrap();
    let err = remote::localize_with(&npy, StorageConfig::emulator(&emulator.host)).unwrap_err().to_string();
    assert!(err.contains("gs://datasets/arrays/lfw_subset.npy does not exist"), "{err}");

    let err = remote::localize_with(&lfw_config(cache.path(), "gs://no-such-bucket/lfw"), StorageConfig::emulator(&emulator.host)).unwrap_err().to_string();
    assert!(err.contains("gs://no-such-bucket/lfw") && err.contains("HTTP 404"), "{err}");
}

/// A stand-in for Cloud Storage refusing the credentials: every request is
/// answered 403 with the JSON error body the real service sends. (The
/// emulator has no access control, so it cannot refuse anyone.)
fn refusing_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 8192];
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.read(&mut buf);
            let body = r#"{"error":{"code":403,"message":"reader@p.iam.gserviceaccount.com does not have storage.objects.list access to the Google Cloud Storage bucket. Permission 'storage.objects.list' denied on resource (or it may not exist).","errors":[{"message":"denied","domain":"global","reason":"forbidden"}]}}"#;
            let _ =
                write!(stream, "HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
    });
    addr
}

#[test]
fn credentials_without_permission_are_a_clear_error() {
    let cache = tempfile::tempdir().unwrap();
    let host = refusing_server();
    let err = remote::localize_with(&lfw_config(cache.path(), "gs://private/lfw"), StorageConfig::emulator(&host)).unwrap_err().to_string();
    assert!(err.contains("gs://private/lfw") && err.contains("HTTP 403") && err.contains("storage.objects.list"), "{err}");
    assert!(err.contains("roles/storage.objectViewer"), "says what to grant: {err}");
    assert!(!cache.path().join("gcs/private/lfw").exists(), "nothing was copied");
}

/// The copier half of the kill test: runs in a child process (this test
/// binary again, with `EMOTIONET_TEST_COPY` set) and copies until killed.
#[test]
fn copier_child() {
    let Ok(spec) = std::env::var("EMOTIONET_TEST_COPY") else { return };
    let parts: Vec<&str> = spec.split('|').collect();
    let config = lfw_config(Path::new(parts[1]), parts[2]);
    remote::localize_with(&config, StorageConfig::emulator(parts[0])).unwrap();
    println!("COPIED");
}

#[test]
fn a_copy_killed_half_way_resumes_with_what_it_finished() {
    let emulator = Emulator::start(&["datasets"]);
    let cache = tempfile::tempdir().unwrap();
    let files = people(120, 2000);
    upload(&emulator.host, "gs://datasets/lfw", &files);
    // Requests crawl through the proxy, so the copy takes seconds.
    let proxy = SlowProxy::start(&emulator.host, 16, Duration::from_millis(4));
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "copier_child", "--nocapture", "--test-threads=1"])
        .env("EMOTIONET_TEST_COPY", format!("{}|{}|gs://datasets/lfw", proxy.host, cache.path().display()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let journal = cache.path().join("gcs/datasets/lfw.emotionet-sync");
    let lines = || std::fs::read_to_string(&journal).map(|t| t.lines().count()).unwrap_or(0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while lines() < 10 {
        assert!(std::time::Instant::now() < deadline, "the copy never got going");
        assert!(child.try_wait().unwrap().is_none(), "the copy ended before it was killed");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    proxy.cut();
    let finished = std::fs::read_to_string(&journal).unwrap().lines().filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()).count();
    assert!((10..120).contains(&finished), "killed half-way: {finished} of 120 finished");

    let resumed = copy_of(&emulator.host, &lfw_config(cache.path(), "gs://datasets/lfw"));
    assert_eq!(resumed[0].objects, 120);
    assert_eq!(resumed[0].downloaded, 120 - finished, "only what the killed copy had not finished is downloaded");
    let local = cache.path().join("gcs/datasets/lfw");
    assert_eq!(files_under(&local).len(), 120, "no temporaries left");
    for (key, bytes) in &files {
        assert_eq!(&std::fs::read(local.join(key)).unwrap(), bytes, "{key}");
    }
}

/// `data prep` on a config whose real source is the LFW subset in a bucket:
/// copied once, prepared, and a second prep is a cache hit that downloads nothing.
#[test]
fn data_prep_reads_the_lfw_subset_from_a_bucket() {
    let deps = std::env::var_os("EMOTIONET_DEPS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".deps"));
    let npy = std::fs::read(deps.join("data/lfw_subset.npy")).expect("the LFW subset (make setup)");
    let emulator = Emulator::start(&["datasets"]);
    upload(&emulator.host, "gs://datasets/skimage", &[("lfw_subset.npy".into(), npy.clone())]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("data.yaml");
    std::fs::write(
        &config,
        format!(
            "cache_dir: {}\nimage_size: 32\nsource:\n  real: {{npy: [{{path: gs://datasets/skimage/lfw_subset.npy, faces: [0, 100], non_faces: [100, 200]}}]}}\n",
            dir.path().join("cache").display()
        ),
    )
    .unwrap();
    let prep = || {
        let mut cmd = cli_support::command();
        cmd.args(["data", "prep", "--config", config.to_str().unwrap(), "--task", "face", "--quiet"]).env("STORAGE_EMULATOR_HOST", &emulator.host);
        cli_support::output(&mut cmd)
    };
    let first = prep();
    assert!(first.status.success(), "{}", cli_support::text(&first.stderr));
    let copy = dir.path().join("cache/gcs/datasets/skimage/lfw_subset.npy");
    assert_eq!(std::fs::read(&copy).unwrap(), npy);
    let stdout = cli_support::text(&first.stdout);
    assert!(stdout.contains("gs://datasets/skimage/lfw_subset.npy: 1 object(s), 1 downloaded") && stdout.contains("cache: written"), "{stdout}");
    let modified = std::fs::metadata(&copy).unwrap().modified().unwrap();
    let second = prep();
    assert!(second.status.success(), "{}", cli_support::text(&second.stderr));
    let stdout = cli_support::text(&second.stdout);
    assert!(stdout.contains("1 object(s), 0 downloaded") && stdout.contains("cache: hit"), "{stdout}");
    assert_eq!(std::fs::metadata(&copy).unwrap().modified().unwrap(), modified, "not downloaded again");
}

/// experiments/paper-tpu-real.yaml: its three datasets come from the bucket
/// the user names; as shipped (`BUCKET`) it stops with an error naming the
/// placeholder, and with a bucket named it copies all three.
#[test]
fn the_real_data_tpu_experiment_reads_its_datasets_from_the_bucket_it_names() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments/paper-tpu-real.yaml");
    let shipped = emotionet::experiment::Experiment::from_file(&file).unwrap();
    assert_eq!(remote::bucket_sources(&shipped.data), ["gs://BUCKET/emotionet/lfw", "gs://BUCKET/emotionet/SUN397", "gs://BUCKET/emotionet/KDEF"]);
    assert_eq!((shipped.data.image_size, shipped.name.as_str()), (256, "paper-tpu-real"));
    let err = remote::localize_with(&shipped.data, StorageConfig::emulator("127.0.0.1:9")).unwrap_err().to_string();
    assert!(err.contains("gs://BUCKET/emotionet/lfw") && err.contains("not a Cloud Storage bucket name"), "{err}");

    let emulator = Emulator::start(&["my-data"]);
    upload(
        &emulator.host,
        "gs://my-data/emotionet",
        &[("lfw/Ann/Ann_0001.jpg".into(), b"a".to_vec()), ("SUN397/a/abbey/sun_1.jpg".into(), b"b".to_vec()), ("KDEF/AF01/AF01HAS.JPG".into(), b"c".to_vec())],
    );
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("paper-tpu-real.yaml");
    let text =
        std::fs::read_to_string(&file).unwrap().replace("BUCKET", "my-data").replace("cache_dir: data/cache", &format!("cache_dir: {}", dir.path().display()));
    std::fs::write(&named, text).unwrap();
    let experiment = emotionet::experiment::Experiment::from_file(&named).unwrap();
    let copies = copy_of(&emulator.host, &experiment.data);
    let got: Vec<(&str, usize)> = copies.iter().map(|c| (c.url.as_str(), c.downloaded)).collect();
    assert_eq!(got, [("gs://my-data/emotionet/lfw", 1), ("gs://my-data/emotionet/SUN397", 1), ("gs://my-data/emotionet/KDEF", 1)]);
    assert_eq!(std::fs::read(dir.path().join("gcs/my-data/emotionet/KDEF/AF01/AF01HAS.JPG")).unwrap(), b"c");
}

/// `data prep --out gs://...` puts the prepared set (cache file and both
/// reports) in the bucket, byte for byte; a local --out is refused before
/// any work.
#[test]
fn data_prep_out_puts_the_prepared_set_in_a_bucket() {
    let emulator = Emulator::start(&["datasets"]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("data.yaml");
    std::fs::write(
        &config,
        format!("cache_dir: {}\nimage_size: 16\nsource:\n  synthetic: {{faces: 60, non_faces: 40, size: 32}}\n", dir.path().join("cache").display()),
    )
    .unwrap();
    let prep = |out: &str| {
        let mut cmd = cli_support::command();
        cmd.args(["data", "prep", "--config", config.to_str().unwrap(), "--task", "face", "--quiet", "--out", out])
            .env("STORAGE_EMULATOR_HOST", &emulator.host);
        cli_support::output(&mut cmd)
    };
    let done = prep("gs://datasets/prepared/v1");
    assert!(done.status.success(), "{}", cli_support::text(&done.stderr));
    let mut names = emulator.names("datasets", "prepared/v1/");
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    let cache = names.iter().find(|n| n.ends_with(".emods")).expect("the cache file").clone();
    assert!(names.iter().any(|n| n.ends_with(".report.json")) && names.iter().any(|n| n.ends_with(".report.txt")), "{names:?}");
    let local = dir.path().join("cache").join(cache.strip_prefix("prepared/v1/").unwrap());
    let uploaded = runtime().block_on(async {
        let bucket = Bucket::connect(Location::parse("gs://datasets").unwrap().gcs().unwrap(), StorageConfig::emulator(&emulator.host)).await.unwrap();
        bucket.get(&cache).await.unwrap().unwrap().0
    });
    assert!(uploaded[..] == std::fs::read(&local).unwrap()[..], "the object is the cache file");
    assert!(cli_support::text(&done.stdout).contains(&format!("to gs://datasets/{cache}")));

    let refused = prep(dir.path().join("elsewhere").to_str().unwrap());
    assert_eq!(refused.status.code(), Some(1));
    assert!(cli_support::text(&refused.stderr).contains("expected gs://BUCKET/PREFIX"), "{}", cli_support::text(&refused.stderr));
}

/// `data.prepared: gs://...` names the prepared set `data prep --out`
/// uploaded: a fresh machine copies that one compact file (no raw image),
/// reads it as its set (the same counts as where it was prepared), does not
/// download it again while its generation is unchanged, and does when it
/// changed. A prefix without a set for the task, and a config naming both
/// a prepared set and raw sources, are clear errors.
#[test]
fn an_experiment_names_a_prepared_set_in_a_bucket_and_copies_only_that_file() {
    let deps = std::env::var_os("EMOTIONET_DEPS").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".deps"));
    let npy = deps.join("data/lfw_subset.npy");
    assert!(npy.exists(), "the LFW subset (make setup)");
    let emulator = Emulator::start(&["datasets"]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let laptop = write(
        "laptop.yaml",
        format!(
            "cache_dir: {}\nimage_size: 32\nsource:\n  real: {{npy: [{{path: {}, faces: [0, 100], non_faces: [100, 200]}}]}}\n",
            dir.path().join("laptop-cache").display(),
            npy.display()
        ),
    );
    let vm = write("vm.yaml", format!("cache_dir: {}\nimage_size: 32\nprepared: gs://datasets/prepared\n", dir.path().join("vm-cache").display()));
    let prep = |config: &Path, extra: &[&str]| {
        let mut cmd = cli_support::command();
        cmd.args(["data", "prep", "--config", config.to_str().unwrap(), "--task", "face", "--quiet"]).args(extra).env("STORAGE_EMULATOR_HOST", &emulator.host);
        cli_support::output(&mut cmd)
    };
    let made = prep(&laptop, &["--out", "gs://datasets/prepared"]);
    assert!(made.status.success(), "{}", cli_support::text(&made.stderr));
    let object = emulator.names("datasets", "prepared/").into_iter().find(|n| n.ends_with(".emods")).expect("the prepared set in the bucket");
    let name = object.strip_prefix("prepared/").unwrap().to_string();

    let first = prep(&vm, &[]);
    let stdout = cli_support::text(&first.stdout);
    assert!(first.status.success(), "{}", cli_support::text(&first.stderr));
    assert!(stdout.contains(&format!("gs://datasets/prepared/{name}: 1 object(s), 1 downloaded")) && stdout.contains("cache: hit"), "{stdout}");
    // The one file, byte for byte, and nothing of the raw images.
    let copied = dir.path().join("vm-cache/gcs/datasets/prepared").join(&name);
    assert_eq!(std::fs::read(&copied).unwrap(), std::fs::read(dir.path().join("laptop-cache").join(&name)).unwrap());
    let mut files: Vec<String> = files_under(&dir.path().join("vm-cache")).iter().filter_map(|p| p.file_name()?.to_str().map(str::to_string)).collect();
    files.sort();
    let stem = name.strip_suffix(".emods").unwrap();
    assert_eq!(files, [name.clone(), format!("{name}.emotionet-sync"), format!("{stem}.report.json"), format!("{stem}.report.txt")], "{files:?}");
    // The same set: the same report (counts, skips, key) as where it was prepared.
    let report = |path: PathBuf| -> serde_json::Value { serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap() };
    assert_eq!(report(copied.with_extension("report.json")), report(dir.path().join("laptop-cache").join(format!("{stem}.report.json"))));

    let modified = std::fs::metadata(&copied).unwrap().modified().unwrap();
    let again = prep(&vm, &[]);
    assert!(cli_support::text(&again.stdout).contains("1 object(s), 0 downloaded"), "{}", cli_support::text(&again.stdout));
    assert_eq!(std::fs::metadata(&copied).unwrap().modified().unwrap(), modified, "downloaded again though unchanged");
    // A new generation of the object (prepared again, uploaded again) is downloaded again.
    upload(&emulator.host, "gs://datasets/prepared", &[(name.clone(), std::fs::read(&copied).unwrap())]);
    let changed = prep(&vm, &[]);
    assert!(cli_support::text(&changed.stdout).contains("1 object(s), 1 downloaded"), "{}", cli_support::text(&changed.stdout));

    // The prefix holds no set for the emotion task.
    let mut cmd = cli_support::command();
    cmd.args(["data", "prep", "--config", vm.to_str().unwrap(), "--task", "emotion", "--quiet"]).env("STORAGE_EMULATOR_HOST", &emulator.host);
    let none = cli_support::output(&mut cmd);
    assert_eq!(none.status.code(), Some(1));
    let err = cli_support::text(&none.stderr);
    assert!(err.contains("gs://datasets/prepared") && err.contains("prep-emotion-KEY.emods") && err.contains("it holds none"), "{err}");
    let both = write("both.yaml", std::fs::read_to_string(&laptop).unwrap() + "prepared: gs://datasets/prepared\n");
    let both = prep(&both, &[]);
    assert_eq!(both.status.code(), Some(1));
    assert!(cli_support::text(&both.stderr).contains("either `prepared` or `source`"), "{}", cli_support::text(&both.stderr));
}
