//! The bucket layer against a real Cloud Storage emulator (fake-gcs-server):
//! atomic puts with generation preconditions, listing under a prefix,
//! a folder mirrored up and restored down (local removals mirrored too), the lease lock, and an uploader
//! killed with SIGKILL in the middle of a checkpoint upload leaving no
//! object behind.

mod gcs_emulator;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use emotionet::lock::{Holder, HolderInfo, Wait};
use emotionet::storage::{Bucket, Lease, Location, Mirror, Precondition, StorageConfig, StorageError};
use gcs_emulator::{Emulator, SlowProxy};

async fn bucket(host: &str, url: &str) -> Bucket {
    let location = Location::parse(url).unwrap();
    Bucket::connect(location.gcs().unwrap(), StorageConfig::emulator(host)).await.unwrap()
}

#[tokio::test]
async fn puts_are_whole_and_obey_generation_preconditions() {
    let emulator = Emulator::start(&["emotionet-runs"]);
    let runs = bucket(&emulator.host, "gs://emotionet-runs/campaign/a").await;
    let first = runs.put("state.json", Bytes::from_static(b"{\"v\":1}"), Precondition::DoesNotExist).await.unwrap();
    let again = runs.put("state.json", Bytes::from_static(b"{\"v\":2}"), Precondition::DoesNotExist).await.unwrap_err();
    assert!(matches!(again, StorageError::PreconditionFailed { .. }), "{again:?}");
    assert!(again.to_string().contains("gs://emotionet-runs/campaign/a/state.json"), "{again}");
    let second = runs.put("state.json", Bytes::from_static(b"{\"v\":2}"), Precondition::GenerationIs(first)).await.unwrap();
    assert_ne!(first, second);
    let stale = runs.put("state.json", Bytes::from_static(b"{\"v\":3}"), Precondition::GenerationIs(first)).await.unwrap_err();
    assert!(matches!(stale, StorageError::PreconditionFailed { .. }), "{stale:?}");
    let (bytes, generation) = runs.get("state.json").await.unwrap().unwrap();
    assert_eq!((&bytes[..], generation), (&b"{\"v\":2}"[..], second));
    assert!(runs.get("missing.json").await.unwrap().is_none());

    // A neighbour whose name starts the same is not under this prefix.
    let neighbour = bucket(&emulator.host, "gs://emotionet-runs/campaign/a2").await;
    neighbour.put("other.json", Bytes::from_static(b"{}"), Precondition::None).await.unwrap();
    let keys: Vec<String> = runs.list("").await.unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(keys, ["state.json"]);
}

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

#[tokio::test]
async fn a_folder_is_mirrored_up_and_restored_on_a_fresh_machine() {
    let emulator = Emulator::start(&["emotionet-runs"]);
    let vm = tempfile::tempdir().unwrap();
    write(vm.path(), "face/cpu-r0/record.json", b"{\"run\":1}");
    write(vm.path(), "face/cpu-r0/checkpoint-000010.safetensors", &vec![7u8; 300_000]);
    write(vm.path(), "face/cpu-r0/checkpoint-000020.safetensors.4242-0.tmp", b"half a checkpoint");
    write(vm.path(), "campaign-state.json", b"{}");
    let mut mirror = Mirror::new(bucket(&emulator.host, "gs://emotionet-runs/tpu").await, vm.path());
    let first = mirror.sync(None).await.unwrap();
    assert_eq!(first.uploaded, 3, "the temporary file stays local");
    assert_eq!(mirror.sync(None).await.unwrap().uploaded, 0, "nothing changed");
    std::thread::sleep(Duration::from_millis(20));
    write(vm.path(), "campaign-state.json", b"{\"finished\":[\"face\"]}");
    assert_eq!(mirror.sync(None).await.unwrap().uploaded, 1, "only the changed file");
    let mut names = emulator.names("emotionet-runs", "tpu/");
    names.sort();
    assert_eq!(names, ["tpu/campaign-state.json", "tpu/face/cpu-r0/checkpoint-000010.safetensors", "tpu/face/cpu-r0/record.json"]);

    // A new VM: an empty folder gets every object back, whole.
    let fresh = tempfile::tempdir().unwrap();
    let mut restore = Mirror::new(bucket(&emulator.host, "gs://emotionet-runs/tpu").await, fresh.path());
    assert_eq!(restore.restore().await.unwrap(), 3);
    assert_eq!(std::fs::read(fresh.path().join("face/cpu-r0/checkpoint-000010.safetensors")).unwrap(), vec![7u8; 300_000]);
    assert_eq!(std::fs::read(fresh.path().join("campaign-state.json")).unwrap(), b"{\"finished\":[\"face\"]}");
    assert_eq!(restore.sync(None).await.unwrap().uploaded, 0, "restored files are not sent back");

    // Retention on the new machine: a newer checkpoint, the old one removed.
    // The bucket gets the new one and drops the old one.
    write(fresh.path(), "face/cpu-r0/checkpoint-000030.safetensors", &vec![9u8; 1000]);
    std::fs::remove_file(fresh.path().join("face/cpu-r0/checkpoint-000010.safetensors")).unwrap();
    let round = restore.sync(None).await.unwrap();
    assert_eq!((round.uploaded, round.deleted), (1, 1), "{round:?}");
    let mut names = emulator.names("emotionet-runs", "tpu/");
    names.sort();
    assert_eq!(names, ["tpu/campaign-state.json", "tpu/face/cpu-r0/checkpoint-000030.safetensors", "tpu/face/cpu-r0/record.json"]);
    // An object someone else has replaced since is theirs: a local removal does not delete it.
    let runs = bucket(&emulator.host, "gs://emotionet-runs/tpu").await;
    runs.put("face/cpu-r0/record.json", Bytes::from_static(b"{\"run\":2}"), Precondition::None).await.unwrap();
    std::fs::remove_file(fresh.path().join("face/cpu-r0/record.json")).unwrap();
    assert_eq!(restore.sync(None).await.unwrap().deleted, 0);
    assert_eq!(&runs.get("face/cpu-r0/record.json").await.unwrap().unwrap().0[..], b"{\"run\":2}");
}

fn vm(name: &str, pid: u32) -> Holder {
    Holder {
        pid,
        host: name.into(),
        started_at: "2026-12-01T10:00:00Z".into(),
        command: "emotionet run tpu.yaml --out gs://emotionet-runs/tpu".into(),
        purpose: "running the campaign tpu".into(),
    }
}

#[tokio::test]
async fn the_lease_lets_one_writer_in_and_passes_on_when_it_expires() {
    let emulator = Emulator::start(&["emotionet-runs"]);
    let runs = bucket(&emulator.host, "gs://emotionet-runs/tpu").await;
    let mut first = Lease::acquire(&runs, ".emotionet-lock", vm("vm-1", 11), Duration::from_secs(60), Wait::No).await.unwrap();
    let refused = Lease::acquire(&runs, ".emotionet-lock", vm("vm-2", 22), Duration::from_secs(60), Wait::No).await.unwrap_err();
    let StorageError::Locked { holder, .. } = &refused else { panic!("{refused:?}") };
    assert_eq!(**holder, HolderInfo::Known(vm("vm-1", 11)));
    // Worded as the local lock's refusal: who, and the way out.
    let text = refused.to_string();
    assert!(text.contains("gs://emotionet-runs/tpu/.emotionet-lock is in use by `emotionet run tpu.yaml") && text.contains("pid 11 on vm-1"), "{text}");
    assert!(text.contains("--wait"), "{text}");
    first.renew().await.unwrap();
    first.release().await.unwrap();
    let second = Lease::acquire(&runs, ".emotionet-lock", vm("vm-2", 22), Duration::from_secs(1), Wait::No).await.unwrap();

    // vm-2 dies without releasing; once its lease expires, vm-3 takes over and vm-2 cannot renew.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let third = Lease::acquire(&runs, ".emotionet-lock", vm("vm-3", 33), Duration::from_secs(60), Wait::No).await.unwrap();
    let mut second = second;
    let lost = second.renew().await.unwrap_err();
    let StorageError::LeaseLost { holder, .. } = &lost else { panic!("{lost:?}") };
    assert_eq!(**holder, HolderInfo::Known(vm("vm-3", 33)), "the loss names the new holder");
    third.release().await.unwrap();
}

#[tokio::test]
async fn a_lease_left_by_a_dead_process_of_this_host_is_taken_over_at_once() {
    let emulator = Emulator::start(&["emotionet-runs"]);
    let runs = bucket(&emulator.host, "gs://emotionet-runs/tpu").await;
    // A process of this host that has ended (it ran and was reaped).
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let here = |pid| Holder { host: emotionet::records::host_name(), ..vm("", pid) };
    let _dead = Lease::acquire(&runs, ".emotionet-lock", here(dead_pid), Duration::from_secs(600), Wait::No).await.unwrap();
    let taken = Lease::acquire(&runs, ".emotionet-lock", here(std::process::id()), Duration::from_secs(600), Wait::No).await.unwrap();
    // A live process of this host keeps its lease.
    let refused = Lease::acquire(&runs, ".emotionet-lock", here(1), Duration::from_secs(600), Wait::No).await.unwrap_err();
    assert!(matches!(refused, StorageError::Locked { .. }), "{refused:?}");
    taken.release().await.unwrap();
}

/// The uploader half of the kill test: runs in a child process (this test
/// binary, started again with `EMOTIONET_TEST_UPLOAD` set) and uploads one
/// file through the slow proxy until it is killed.
#[tokio::test]
async fn uploader_child() {
    let Ok(spec) = std::env::var("EMOTIONET_TEST_UPLOAD") else { return };
    let (host, url, key, file) = {
        let parts: Vec<&str> = spec.split('|').collect();
        (parts[0].to_string(), parts[1].to_string(), parts[2].to_string(), parts[3].to_string())
    };
    let bucket = bucket(&host, &url).await;
    bucket.put_file(&key, Path::new(&file)).await.unwrap();
    println!("UPLOADED");
}

#[tokio::test]
async fn kill_9_during_a_checkpoint_upload_leaves_no_partial_object() {
    let emulator = Emulator::start(&["emotionet-runs"]);
    let dir = tempfile::tempdir().unwrap();
    // 2 MiB goes up in one request, 20 MiB through a resumable session in chunks.
    for (name, size) in [("small.safetensors", 2usize << 20), ("large.safetensors", 20 << 20)] {
        let file = dir.path().join(name);
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        std::fs::write(&file, &data).unwrap();
        let proxy = SlowProxy::start(&emulator.host, 64 << 10, Duration::from_millis(5));
        let spec = format!("{}|gs://emotionet-runs/tpu|face/{name}|{}", proxy.host, file.display());
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "uploader_child", "--nocapture", "--test-threads=1"])
            .env("EMOTIONET_TEST_UPLOAD", &spec)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Kill it once about half the file has gone through the proxy.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while proxy.forwarded.load(std::sync::atomic::Ordering::Relaxed) < (size / 2) as u64 {
            assert!(std::time::Instant::now() < deadline, "the upload of {name} never got halfway");
            assert!(child.try_wait().unwrap().is_none(), "the uploader of {name} ended before it was killed");
            std::thread::sleep(Duration::from_millis(10));
        }
        // SIGKILL: no cleanup, no last words; and the line goes down with it,
        // so what the client had already handed to the kernel is lost too.
        child.kill().unwrap();
        proxy.cut();
        child.wait().unwrap();
        let sent = proxy.forwarded.load(std::sync::atomic::Ordering::Relaxed);
        assert!(sent < size as u64, "the whole of {name} reached the emulator ({sent} bytes) before the kill");
        drop(proxy);
        std::thread::sleep(Duration::from_millis(300));
        assert!(emulator.names("emotionet-runs", "tpu/").iter().all(|n| !n.ends_with(name)), "a killed upload of {name} left an object");

        // The same upload, left alone, lands whole.
        let runs = bucket(&emulator.host, "gs://emotionet-runs/tpu").await;
        runs.put_file(&format!("face/{name}"), &file).await.unwrap();
        let (bytes, _) = runs.get(&format!("face/{name}")).await.unwrap().unwrap();
        assert_eq!(bytes.len(), data.len());
        assert!(bytes[..] == data[..], "{name} differs after upload");
    }
}

/// The bucket's newest copy wins: a local file is trusted only when the
/// mirror knows it matches the object's current generation. A copy the
/// mirror cannot vouch for (a laptop's older copy, a cache read earlier) is
/// replaced by the bucket's object; a file the bucket dropped goes too; and
/// an upload over an object someone else changed fails its precondition
/// instead of overwriting it.
#[tokio::test]
async fn the_buckets_newer_object_replaces_a_local_copy_the_mirror_cannot_vouch_for() {
    let emulator = Emulator::start(&["emotionet-runs"]);
    let url = "gs://emotionet-runs/newest";
    let vm = tempfile::tempdir().unwrap();
    write(vm.path(), "run/record.json", b"{\"state\":\"running\"}");
    write(vm.path(), "run/ckpt-1", b"one");
    let mut writer = Mirror::new(bucket(&emulator.host, url).await, vm.path());
    assert_eq!(writer.sync(None).await.unwrap().uploaded, 2);
    // A laptop copies the folder's files now (not the mirror's manifest: it knows nothing of them).
    let laptop = tempfile::tempdir().unwrap();
    write(laptop.path(), "run/record.json", b"{\"state\":\"running\"}");
    write(laptop.path(), "run/ckpt-1", b"one");
    // The run goes on: a newer record, a newer checkpoint, the old one dropped.
    std::thread::sleep(Duration::from_millis(20));
    write(vm.path(), "run/record.json", b"{\"state\":\"finished\"}");
    write(vm.path(), "run/ckpt-2", b"two");
    std::fs::remove_file(vm.path().join("run/ckpt-1")).unwrap();
    let round = writer.sync(None).await.unwrap();
    assert_eq!((round.uploaded, round.deleted), (2, 1), "{round:?}");

    // The laptop's copy meets the bucket: the bucket's files win.
    let mut reader = Mirror::new(bucket(&emulator.host, url).await, laptop.path());
    assert_eq!(reader.restore().await.unwrap(), 2, "record.json (newer there) and ckpt-2 (missing here)");
    assert_eq!(std::fs::read(laptop.path().join("run/record.json")).unwrap(), b"{\"state\":\"finished\"}");
    assert_eq!(std::fs::read(laptop.path().join("run/ckpt-2")).unwrap(), b"two");
    // ckpt-1 was never known to match the bucket here: kept (it may be work of this machine), and uploaded as new.
    assert!(laptop.path().join("run/ckpt-1").exists());
    // Now the mirror vouches for its files: a second look downloads nothing.
    let mut again = Mirror::new(bucket(&emulator.host, url).await, laptop.path());
    assert_eq!(again.restore().await.unwrap(), 0, "files known to match the bucket are trusted");
    // The writer drops ckpt-2; a reader whose copy is unchanged since it matched drops it too.
    std::fs::remove_file(vm.path().join("run/ckpt-2")).unwrap();
    assert_eq!(writer.sync(None).await.unwrap().deleted, 1);
    assert_eq!(again.restore().await.unwrap(), 0);
    assert!(!laptop.path().join("run/ckpt-2").exists(), "a file the bucket dropped stayed in an unchanged local copy");

    // Someone else writes the record; our own edit of it must not overwrite theirs.
    let runs = bucket(&emulator.host, url).await;
    runs.put("run/record.json", Bytes::from_static(b"{\"state\":\"theirs\"}"), Precondition::None).await.unwrap();
    std::thread::sleep(Duration::from_millis(20));
    write(laptop.path(), "run/record.json", b"{\"state\":\"ours\"}");
    let err = again.sync(None).await.unwrap_err();
    assert!(matches!(err, StorageError::PreconditionFailed { .. }), "{err:?}");
    assert_eq!(&runs.get("run/record.json").await.unwrap().unwrap().0[..], b"{\"state\":\"theirs\"}");
}

/// The lease fences the uploads: cut off from the bucket, an upload begun
/// under a valid lease (the storage client retrying it meanwhile) is
/// dropped once the lease's expiry less its margin comes without a
/// renewal, well before another writer may take the lease; and when the
/// line is back, none of its retries lands.
#[tokio::test]
async fn an_upload_retried_across_a_cut_is_dropped_before_the_lease_runs_out() {
    let emulator = Emulator::start(&["emotionet-runs"]);
    let line = SlowProxy::start(&emulator.host, 1 << 16, Duration::ZERO);
    let url = "gs://emotionet-runs/fenced";
    let runs = bucket(&line.host, url).await;
    let ttl = Duration::from_secs(3);
    let mut lease = Lease::acquire(&runs, emotionet::storage::LOCK_KEY, vm("vm-a", 1), ttl, Wait::No).await.unwrap();
    lease.vouch().await.unwrap();
    let vouched = lease.vouched_for();
    assert!(vouched > Duration::ZERO && vouched <= ttl - lease.margin(), "vouched for {vouched:?}");
    line.cut();
    let started = std::time::Instant::now();
    let err = lease.guard(runs.put("run/checkpoint-1", Bytes::from(vec![7u8; 4096]), Precondition::DoesNotExist)).await.unwrap_err();
    let ran = started.elapsed();
    assert!(matches!(err, StorageError::LeaseUnsure { .. }), "{err:?}");
    assert!(err.to_string().contains("gs://emotionet-runs/fenced/.emotionet-lock"), "{err}");
    // Dropped before the lease ran out (by this machine's clock), not retried on.
    assert!(ran < ttl, "the upload ran {ran:?} under a {ttl:?} lease");
    line.restore();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(emulator.names("emotionet-runs", "fenced/run/").is_empty(), "an upload dropped under the lease landed later");
    // Nothing starts once the lease cannot be vouched for.
    line.cut();
    tokio::time::sleep(lease.vouched_for()).await;
    let late = lease.guard(runs.put("run/checkpoint-2", Bytes::from_static(b"x"), Precondition::DoesNotExist)).await.unwrap_err();
    assert!(matches!(late, StorageError::LeaseUnsure { .. }), "{late:?}");
    line.restore();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(emulator.names("emotionet-runs", "fenced/run/").is_empty());
    // With the line back, the lease is confirmed again and uploads go on.
    lease.vouch().await.unwrap();
    lease.guard(runs.put("run/checkpoint-3", Bytes::from_static(b"x"), Precondition::DoesNotExist)).await.unwrap();
    assert_eq!(emulator.names("emotionet-runs", "fenced/run/"), ["fenced/run/checkpoint-3"]);
}

/// A restore lists the prefix, then downloads: an object deleted in
/// between (the writer's checkpoint retention, while a desk runs `report
/// gs://`) is skipped, not an error, and a local copy of it that matched
/// the bucket goes too.
#[tokio::test]
async fn an_object_deleted_between_listing_and_download_is_skipped() {
    let emulator = Emulator::start(&["emotionet-runs"]);
    let url = "gs://emotionet-runs/vanish";
    let vm = tempfile::tempdir().unwrap();
    write(vm.path(), "run/checkpoints/ckpt-1", b"one");
    write(vm.path(), "run/record.json", b"{\"state\":\"running\"}");
    let mut writer = Mirror::new(bucket(&emulator.host, url).await, vm.path());
    assert_eq!(writer.sync(None).await.unwrap().uploaded, 2);
    let desk = tempfile::tempdir().unwrap();
    let mut reader = Mirror::new(bucket(&emulator.host, url).await, desk.path());
    assert_eq!(reader.restore().await.unwrap(), 2);
    // The run goes on: ckpt-2 and a newer record. The desk's next restore
    // lists ckpt-2; just after the listing, the writer's retention drops it.
    std::thread::sleep(Duration::from_millis(20));
    write(vm.path(), "run/checkpoints/ckpt-2", b"two");
    write(vm.path(), "run/record.json", b"{\"state\":\"finished\"}");
    assert_eq!(writer.sync(None).await.unwrap().uploaded, 2);
    let host = emulator.host.clone();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = log.clone();
    reader.before_download(move |key| {
        seen.lock().unwrap().push(key.to_string());
        if key.contains("/checkpoints/") {
            let name = format!("vanish%2F{}", key.replace('/', "%2F"));
            let status = delete_object(&host, &name);
            assert!((200..300).contains(&status), "deleting {key}: HTTP {status}");
        }
    });
    // ckpt-1 is trusted (the desk vouches for it): only ckpt-2 and the record are downloaded, and ckpt-2 vanished.
    let got = reader.restore().await.expect("a restore that meets a deleted object");
    assert_eq!(got, 1, "only the record arrives");
    assert_eq!(*log.lock().unwrap(), ["run/checkpoints/ckpt-2", "run/record.json"]);
    assert_eq!(std::fs::read(desk.path().join("run/record.json")).unwrap(), b"{\"state\":\"finished\"}");
    assert!(!desk.path().join("run/checkpoints/ckpt-2").exists());
    // ckpt-1 was still listed then (deleted only after this restore's listing): kept; the next restore drops it.
    let status = delete_object(&emulator.host, "vanish%2Frun%2Fcheckpoints%2Fckpt-1");
    assert!((200..300).contains(&status), "HTTP {status}");
    assert_eq!(reader.restore().await.unwrap(), 0);
    assert!(!desk.path().join("run/checkpoints/ckpt-1").exists(), "a copy of an object the bucket dropped stayed");
}

/// `DELETE` of one object straight at the emulator (blocking: called from a sync hook).
fn delete_object(host: &str, escaped_name: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect((host, 80)).unwrap();
    write!(stream, "DELETE /storage/v1/b/emotionet-runs/o/{escaped_name} HTTP/1.0\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n").unwrap();
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}
