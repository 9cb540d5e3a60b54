//! Running things on the TPU VM, and moving files to and from it.
//!
//! A [`RemoteHost`] knows one thing: how to make a command that runs a bash
//! script in the remote user's home directory, on one worker or on all. Every
//! step is built on that one primitive by the shared functions below:
//! [`run_script`], [`spawn_script`], [`upload`] and [`download`] (the last two
//! stream a `tar` archive through the command's stdin or stdout). So the
//! [`LocalHost`], which runs the script with `bash` in a local folder, goes
//! through exactly the code the real VM goes through; only the transport differs.
//!
//! The real transport is [`GcloudTpuHost`]: `gcloud compute tpus tpu-vm ssh
//! NODE --worker=...  --command=...`. We use gcloud rather than plain `ssh` to
//! the node's external IP because gcloud puts the user's key on the VM (OS
//! Login or metadata), knows each worker's address and host key, and can
//! tunnel through IAP when the VM has no external IP (`--ssh-arg=--tunnel-through-iap`).
//! Commands that must run everywhere use `--worker=all`; files are sent to
//! each worker in turn (a stream cannot fan out), and fetched from worker 0,
//! the one that writes the campaign's records (a v3-8 has only that one).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt};
use tokio::process::{Child, Command};

use super::error::{CloudError, Result};
use super::spec::VmSpec;

/// Which worker (host) of a TPU slice a command runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Worker {
    All,
    One(usize),
}

pub trait RemoteHost: Send + Sync {
    /// For messages: which VM, and how we reach it.
    fn describe(&self) -> String;
    /// How many workers the VM has (1 for a v3-8).
    fn worker_count(&self) -> usize;
    /// A command that runs `script` with bash in the remote home directory of
    /// `worker`, with stdin and stdout usable as pipes.
    fn command(&self, worker: Worker, script: &str) -> Command;
}

/// Quotes `text` for a POSIX shell: `'...'`, with `'` written as `'\''`.
pub fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The stand-in for a TPU VM: a local folder playing the VM's home directory.
/// Used by the tests and by `emotionet cloud run --via local` to rehearse a
/// campaign's steps before paying for a VM.
#[derive(Clone, Debug)]
pub struct LocalHost {
    root: PathBuf,
}

impl LocalHost {
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| CloudError::io(&root, e))?;
        let root = root.canonicalize().map_err(|e| CloudError::io(&root, e))?;
        Ok(LocalHost { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl RemoteHost for LocalHost {
    fn describe(&self) -> String {
        format!("the local stand-in VM at {}", self.root.display())
    }

    fn worker_count(&self) -> usize {
        1
    }

    fn command(&self, _worker: Worker, script: &str) -> Command {
        let mut command = Command::new("bash");
        command.arg("-c").arg(script).current_dir(&self.root).env("HOME", &self.root);
        command
    }
}

/// A TPU VM reached through `gcloud compute tpus tpu-vm ssh`.
#[derive(Clone, Debug)]
pub struct GcloudTpuHost {
    gcloud: PathBuf,
    project: String,
    zone: String,
    node_id: String,
    workers: usize,
    extra_args: Vec<String>,
}

impl GcloudTpuHost {
    /// `workers` comes from the node's `networkEndpoints`; `extra_args` go to
    /// gcloud as they are (e.g. `--tunnel-through-iap`).
    pub fn new(gcloud: impl Into<PathBuf>, spec: &VmSpec, workers: usize, extra_args: Vec<String>) -> Self {
        GcloudTpuHost {
            gcloud: gcloud.into(),
            project: spec.project.clone(),
            zone: spec.zone.clone(),
            node_id: spec.node_id.clone(),
            workers: workers.max(1),
            extra_args,
        }
    }
}

impl RemoteHost for GcloudTpuHost {
    fn describe(&self) -> String {
        format!("TPU VM {} in {} (project {}) via gcloud ssh", self.node_id, self.zone, self.project)
    }

    fn worker_count(&self) -> usize {
        self.workers
    }

    fn command(&self, worker: Worker, script: &str) -> Command {
        let worker = match worker {
            Worker::All => "all".to_string(),
            Worker::One(i) => i.to_string(),
        };
        let mut command = Command::new(&self.gcloud);
        command
            .args(["compute", "tpus", "tpu-vm", "ssh", &self.node_id])
            .arg(format!("--project={}", self.project))
            .arg(format!("--zone={}", self.zone))
            .arg(format!("--worker={worker}"))
            // Creates an ssh key without prompting the first time.
            .arg("--quiet")
            .args(&self.extra_args)
            .arg(format!("--command=bash -c {}", sh_quote(script)));
        command
    }
}

/// What a finished remote command printed.
#[derive(Debug)]
pub struct RemoteOutput {
    pub stdout: String,
    pub stderr: String,
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let shown = all[all.len().saturating_sub(lines)..].join("\n");
    if shown.is_empty() { "(no output)".into() } else { shown }
}

fn remote_error(host: &dyn RemoteHost, step: &str, status: String, detail: String) -> CloudError {
    CloudError::Remote { step: step.to_string(), host: host.describe(), status, detail }
}

/// Runs `script` to completion (stdin closed), with a time limit.
pub async fn run_script(host: &dyn RemoteHost, worker: Worker, step: &str, script: &str, limit: Duration) -> Result<RemoteOutput> {
    let mut command = host.command(worker, script);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let child = command.spawn().map_err(|e| remote_error(host, step, "could not start".into(), e.to_string()))?;
    let output = match tokio::time::timeout(limit, child.wait_with_output()).await {
        Ok(result) => result.map_err(|e| remote_error(host, step, "lost".into(), e.to_string()))?,
        Err(_) => return Err(remote_error(host, step, format!("timed out after {}s", limit.as_secs()), String::new())),
    };
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        return Err(remote_error(host, step, output.status.to_string(), tail(&stderr, 8)));
    }
    Ok(RemoteOutput { stdout, stderr })
}

/// A long remote command (the campaign), its output read line by line.
pub struct RemoteProcess {
    pub(super) child: Child,
    pub(super) lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

/// Starts `script` in its own process group, so that [`RemoteProcess::kill`]
/// stops it and everything it started (the local `bash`, or gcloud and ssh).
pub fn spawn_script(host: &dyn RemoteHost, worker: Worker, step: &str, script: &str) -> Result<RemoteProcess> {
    let mut command = host.command(worker, script);
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true).process_group(0);
    let mut child = command.spawn().map_err(|e| remote_error(host, step, "could not start".into(), e.to_string()))?;
    let (sender, lines) = tokio::sync::mpsc::unbounded_channel();
    if let Some(stdout) = child.stdout.take() {
        let sender = sender.clone();
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = sender.send(line);
            }
        });
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(async move {
            let mut reader = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = sender.send(line);
            }
        });
    }
    Ok(RemoteProcess { child, lines })
}

impl RemoteProcess {
    /// The next line of output, or `None` once both streams are closed.
    pub async fn next_line(&mut self) -> Option<String> {
        self.lines.recv().await
    }

    /// Waits for the exit status.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Stops the process group, then reaps the child.
    pub async fn kill(&mut self) {
        if let Some(pid) = self.child.id() {
            // The group id is the child's pid (process_group(0)).
            let _ = Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status().await;
        }
        let _ = self.child.kill().await;
    }
}

/// The VM side of every upload: unpack the archive on stdin into a staging
/// folder beside `DEST`, and only when the archive was complete move each
/// file into place with a rename. An interrupted upload, or one that gcloud
/// re-runs after ssh exits 255 (its stdin then half consumed, so `tar`
/// fails), leaves every file in `DEST` whole: old or new, never half written.
const UNPACK: &str = r#"set -euo pipefail
dest=DEST
mkdir -p "$dest"
find "$(dirname "$dest")" -maxdepth 1 -name "$(basename "$dest").incoming.*" -mmin +60 -exec rm -rf {} + 2>/dev/null || true
staging=$(mktemp -d "$dest.incoming.XXXXXX")
trap 'rm -rf "$staging"' EXIT
tar -C "$staging" -xf -
cd "$staging"
find . -mindepth 1 -type d -print0 | while IFS= read -r -d '' d; do
    if [ -e "$dest/$d" ] && [ ! -d "$dest/$d" ]; then rm -f "$dest/$d"; fi
    mkdir -p "$dest/$d"
done
find . -mindepth 1 ! -type d -print0 | while IFS= read -r -d '' f; do
    if [ -d "$dest/$f" ] && [ ! -L "$dest/$f" ]; then rm -rf "$dest/$f"; fi
    mv -f "$f" "$dest/$f"
done"#;

fn unpack_script(remote_dir: &str) -> String {
    UNPACK.replacen("DEST", &format!("\"$HOME\"/{}", sh_quote(remote_dir.trim_end_matches('/'))), 1)
}

/// Copies `entries` (paths relative to `local_root`, files or folders) into
/// `remote_dir` (relative to the remote home) on every worker, keeping their
/// relative paths. A `tar` stream goes through the remote command's stdin,
/// and is unpacked as [`UNPACK`] says: files appear whole or not at all.
pub async fn upload(host: &dyn RemoteHost, local_root: &Path, entries: &[PathBuf], remote_dir: &str, limit: Duration) -> Result<()> {
    let step = format!("upload to ~/{remote_dir}");
    for worker in 0..host.worker_count() {
        let mut pack = Command::new("tar");
        // --dereference: a symlink is shipped as what it points to, which the VM cannot follow.
        pack.arg("-C").arg(local_root).args(["--dereference", "-cf", "-"]).args(entries);
        pack.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut unpack = host.command(Worker::One(worker), &unpack_script(remote_dir));
        unpack.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        pipe(host, &step, pack, unpack, None, limit).await?;
    }
    Ok(())
}

/// Writes `files` (name, contents, executable) into `remote_dir` on every
/// worker, the same all-or-nothing way as [`upload`]; the archive is built
/// in memory (used for the scripts emotionet carries inside its binary).
pub async fn upload_files(host: &dyn RemoteHost, files: &[(&str, &[u8], bool)], remote_dir: &str, limit: Duration) -> Result<()> {
    let step = format!("upload to ~/{remote_dir}");
    let mut archive = tar::Builder::new(Vec::new());
    for (name, contents, executable) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(if *executable { 0o755 } else { 0o644 });
        header.set_mtime(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()));
        header.set_cksum();
        archive.append_data(&mut header, name, *contents).map_err(|e| remote_error(host, &step, "could not pack".into(), e.to_string()))?;
    }
    let archive = archive.into_inner().map_err(|e| remote_error(host, &step, "could not pack".into(), e.to_string()))?;
    for worker in 0..host.worker_count() {
        let mut unpack = host.command(Worker::One(worker), &unpack_script(remote_dir));
        unpack.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
        let mut child = unpack.spawn().map_err(|e| remote_error(host, &step, "could not start".into(), e.to_string()))?;
        let mut stdin = child.stdin.take().ok_or_else(|| remote_error(host, &step, "no pipe".into(), String::new()))?;
        let bytes = archive.clone();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let written = stdin.write_all(&bytes).await;
            drop(stdin);
            written
        });
        let output = match tokio::time::timeout(limit, child.wait_with_output()).await {
            Ok(result) => result.map_err(|e| remote_error(host, &step, "lost".into(), e.to_string()))?,
            Err(_) => return Err(remote_error(host, &step, format!("timed out after {}s", limit.as_secs()), String::new())),
        };
        let written = writer.await.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string()));
        if !output.status.success() || written.is_err() {
            let mut detail = tail(&String::from_utf8_lossy(&output.stderr), 8);
            if let Err(e) = written {
                detail.push_str(&format!(" (sending: {e})"));
            }
            return Err(remote_error(host, &step, output.status.to_string(), detail));
        }
    }
    Ok(())
}

/// Copies the contents of `remote_dir` on worker 0 into `local_dir`.
///
/// The remote side first takes a hard-link snapshot of the folder (`cp -al`,
/// near-instant), so files replaced while the archive is written stay whole;
/// a snapshot that fails is an error, never an empty or partial archive. The
/// local side unpacks into a sibling staging folder and only then moves each
/// file into place, so a failed or interrupted transfer (a preemption
/// mid-sync) keeps the last good copy in `local_dir` as it was.
pub async fn download(host: &dyn RemoteHost, remote_dir: &str, local_dir: &Path, limit: Duration) -> Result<()> {
    let step = format!("download of ~/{remote_dir}");
    let dir = sh_quote(remote_dir.trim_end_matches('/'));
    let script = format!(
        "set -euo pipefail; mkdir -p {dir}; snap=$(mktemp -d {dir}.snapshot.XXXXXX); trap 'rm -rf \"$snap\"' EXIT; \
         cp -al {dir}/. \"$snap\"/; printf '%s\\n' {STREAM_MARKER}; tar -C \"$snap\" -cf - ."
    );
    let mut pack = host.command(Worker::One(0), &script);
    pack.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let staging = staging_dir(local_dir);
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| CloudError::io(&staging, e))?;
    let mut unpack = Command::new("tar");
    unpack.arg("-C").arg(&staging).args(["--no-same-owner", "-xf", "-"]);
    unpack.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    let piped = pipe(host, &step, pack, unpack, Some(STREAM_MARKER), limit).await;
    let merged = piped.and_then(|()| {
        std::fs::create_dir_all(local_dir).map_err(|e| CloudError::io(local_dir, e))?;
        merge_tree(&staging, local_dir).map_err(|e| CloudError::io(local_dir, e))
    });
    let _ = std::fs::remove_dir_all(&staging);
    merged.map_err(|e| match e {
        CloudError::Remote { step, host, status, detail } => {
            CloudError::Remote { step, host, status, detail: format!("{detail}; {} keeps the last good copy, unchanged", local_dir.display()) }
        }
        other => other,
    })
}

fn staging_dir(local_dir: &Path) -> PathBuf {
    let name = local_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    local_dir.with_file_name(format!(".{name}.incoming-{}", std::process::id()))
}

/// Moves every file of `from` into `to`, replacing what is there (a rename
/// per file: each file in `to` is at all times the old one or the new one).
fn merge_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            if target.exists() && !target.is_dir() {
                std::fs::remove_file(&target)?;
            }
            std::fs::create_dir_all(&target)?;
            merge_tree(&entry.path(), &target)?;
        } else {
            if target.is_dir() {
                std::fs::remove_dir_all(&target)?;
            }
            std::fs::rename(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Printed by the VM just before an archive, so that anything a transport
/// writes to stdout first (a banner, a gcloud notice) is skipped, not untarred.
const STREAM_MARKER: &str = "EMOTIONET-TAR-STREAM-BEGINS";

/// Copies `from` to `to`, dropping everything up to and including the line
/// `marker`; an error if the marker never comes.
async fn copy_after_marker<R, W>(from: &mut R, to: &mut W, marker: &str) -> std::io::Result<u64>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let needle = format!("{marker}\n").into_bytes();
    let mut seen = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let n = from.read(&mut chunk).await?;
        if n == 0 {
            let shown = String::from_utf8_lossy(&seen[..seen.len().min(200)]).into_owned();
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("no archive in the VM's answer (it said: {shown:?})")));
        }
        seen.extend_from_slice(&chunk[..n]);
        if let Some(at) = seen.windows(needle.len()).position(|w| w == needle.as_slice()) {
            if at > 0 {
                tracing::debug!("skipped {at} bytes before the archive: {:?}", String::from_utf8_lossy(&seen[..at.min(200)]));
            }
            let rest = &seen[at + needle.len()..];
            to.write_all(rest).await?;
            return Ok(rest.len() as u64 + tokio::io::copy(from, to).await?);
        }
    }
}

/// Runs `source | sink` and checks both ends; with a `marker`, what the
/// source prints before it is dropped.
async fn pipe(host: &dyn RemoteHost, step: &str, mut source: Command, mut sink: Command, marker: Option<&str>, limit: Duration) -> Result<()> {
    let start = |c: &mut Command, what: &str| c.spawn().map_err(|e| remote_error(host, step, format!("could not start {what}"), e.to_string()));
    let mut source = start(&mut source, "the sending side")?;
    let mut sink = start(&mut sink, "the receiving side")?;
    let work = async {
        let (Some(mut out), Some(mut input)) = (source.stdout.take(), sink.stdin.take()) else {
            return Err(remote_error(host, step, "no pipe".into(), String::new()));
        };
        // Drained while the data flows, so a chatty side cannot block on a full pipe.
        let source_err = tokio::spawn(read_all(source.stderr.take()));
        let sink_err = tokio::spawn(read_all(sink.stderr.take()));
        let copied = match marker {
            Some(marker) => copy_after_marker(&mut out, &mut input, marker).await,
            None => tokio::io::copy(&mut out, &mut input).await,
        };
        drop(input);
        let source_status = source.wait().await;
        let sink_status = sink.wait().await;
        let errors = format!("{}{}", source_err.await.unwrap_or_default(), sink_err.await.unwrap_or_default());
        let describe = |status: &std::io::Result<std::process::ExitStatus>| match status {
            Ok(s) => s.to_string(),
            Err(e) => format!("lost ({e})"),
        };
        let ok = |status: &std::io::Result<std::process::ExitStatus>| status.as_ref().is_ok_and(|s| s.success());
        if !ok(&source_status) || !ok(&sink_status) {
            let status = format!("sending side {}, receiving side {}", describe(&source_status), describe(&sink_status));
            return Err(remote_error(host, step, status, tail(&errors, 8)));
        }
        copied.map(|_| ()).map_err(|e| remote_error(host, step, "stream broken".into(), e.to_string()))
    };
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(remote_error(host, step, format!("timed out after {}s", limit.as_secs()), String::new())),
    }
}

async fn read_all<R: tokio::io::AsyncRead + Unpin>(stream: Option<R>) -> String {
    let mut text = String::new();
    if let Some(mut stream) = stream {
        let _ = stream.read_to_string(&mut text).await;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_comes_before_the_marker_is_not_part_of_the_archive() {
        let mut from: &[u8] = b"Using ssh batch size of 1.\nEMOTIONET-TAR-STREAM-BEGINS\narchive bytes";
        let mut to = Vec::new();
        assert_eq!(copy_after_marker(&mut from, &mut to, STREAM_MARKER).await.unwrap(), 13);
        assert_eq!(to, b"archive bytes");
        let mut silent: &[u8] = b"Permission denied (publickey).\n";
        let err = copy_after_marker(&mut silent, &mut Vec::new(), STREAM_MARKER).await.unwrap_err();
        assert!(err.to_string().contains("Permission denied"), "{err}");
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
