//! The compile-only process: libtpu loaded in a child of emotionet, with
//! the environment it needs, compiling programs for a topology.
//!
//! Why a child process: libtpu reads `TPU_SKIP_MDS_QUERY`,
//! `TPU_WORKER_HOSTNAMES` and `ALLOW_MULTIPLE_LIBTPU_LOAD` from the process
//! environment. Setting them in emotionet's own process would be `unsafe`
//! (edition 2024: another thread, ours or a C library's, may be reading the
//! environment at that moment, and glibc's `setenv` is not safe against
//! that), and they would leak into everything that process starts later: a
//! VM's command in a local campaign, or a real TPU client, which must query
//! the metadata server. `Command::envs` gives them to the child alone.
//! The child also keeps libtpu's 640 MB, its threads and any abort
//! (libtpu's CHECK failures end the process) away from the caller.
//!
//! Protocol: `emotionet tpu-compile-worker REQUEST.json RESPONSE.json`; the
//! request names the plugin, the topology and the programs; the response
//! holds per-program figures or the compiler's error, and serialized
//! executables are written where the request says.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::pjrt::{self, Api, CompileOptions, CostAnalysis, LIBTPU_COMPILE_ONLY_ENV, MemoryStats, NamedValue, Program, Topology, TopologyDevice};

/// The hidden subcommand the child runs.
pub const WORKER_SUBCOMMAND: &str = "tpu-compile-worker";

/// One program to compile.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProgramRequest {
    /// e.g. `face train_step`.
    pub name: String,
    /// StableHLO text.
    pub text: String,
    /// Replica `r` runs on device `device_ids[r]`.
    pub device_ids: Vec<i32>,
    /// Write `PJRT_Executable_Serialize`'s bytes here, if set.
    pub serialize_to: Option<PathBuf>,
}

/// What the child is asked to do.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Request {
    pub plugin: PathBuf,
    pub topology: String,
    pub create_options: Vec<(String, String)>,
    pub programs: Vec<ProgramRequest>,
    /// Programs compiled at once (each compile is mostly one thread).
    pub threads: usize,
}

/// The figures of one compiled program, per device.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ProgramResult {
    pub name: String,
    pub compile_s: f64,
    /// The compiler's error, if it rejected the program.
    pub error: Option<String>,
    pub memory: Option<MemoryStats>,
    pub cost: Option<CostAnalysis>,
    pub serialized: Option<PathBuf>,
    pub serialized_bytes: Option<u64>,
}

/// What the child answers.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Response {
    pub platform_name: String,
    pub platform_version: String,
    /// The plugin's attributes (`xla_version`, ...), as text.
    pub plugin_attributes: Vec<(String, String)>,
    pub devices: Vec<TopologyDevice>,
    pub programs: Vec<ProgramResult>,
}

/// Errors of running the child.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("starting the compile worker {exe}: {source}")]
    Spawn { exe: PathBuf, source: std::io::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("the compile worker failed ({status}): {message}")]
    Failed { status: String, message: String },
    #[error("the compile worker's answer {path} is unreadable: {source}")]
    Answer { path: PathBuf, source: serde_json::Error },
}

/// The command that runs the worker: `exe` (this emotionet binary) with
/// libtpu's compile-only environment added for the child alone.
pub fn command(exe: &Path) -> Command {
    let mut cmd = Command::new(exe);
    cmd.arg(WORKER_SUBCOMMAND);
    cmd.envs(LIBTPU_COMPILE_ONLY_ENV.iter().copied());
    cmd
}

/// Runs `request` in a child process (`exe` is this emotionet binary) and
/// returns its answer. Compile errors of single programs are in the
/// answer; a failure of the whole worker (no libtpu, a bad topology) is an
/// error carrying the end of its log.
pub fn run(exe: &Path, request: &Request, scratch: &Path) -> Result<Response, WorkerError> {
    let io = |what: String| move |source| WorkerError::Io { what, source };
    std::fs::create_dir_all(scratch).map_err(io(format!("creating {}", scratch.display())))?;
    let unique = format!("{}-{}", std::process::id(), crate::tpu::unique_suffix());
    let request_path = scratch.join(format!("request-{unique}.json"));
    let response_path = scratch.join(format!("response-{unique}.json"));
    let text = serde_json::to_vec(request).expect("a request serializes");
    std::fs::write(&request_path, text).map_err(io(format!("writing {}", request_path.display())))?;
    let mut child = command(exe)
        .arg(&request_path)
        .arg(&response_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| WorkerError::Spawn { exe: exe.to_path_buf(), source })?;
    // libtpu logs to stderr; keep it for the error message (its last lines).
    let mut log = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut log);
    }
    let status = child.wait().map_err(io("waiting for the compile worker".into()))?;
    let _ = std::fs::remove_file(&request_path);
    if !status.success() {
        let _ = std::fs::remove_file(&response_path);
        return Err(WorkerError::Failed { status: status.to_string(), message: log_tail(&log) });
    }
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        tracing::debug!("compile worker: {line}");
    }
    let bytes = std::fs::read(&response_path).map_err(io(format!("reading {}", response_path.display())))?;
    let _ = std::fs::remove_file(&response_path);
    serde_json::from_slice(&bytes).map_err(|source| WorkerError::Answer { path: response_path, source })
}

/// The lines of a worker's log worth showing: our own error line if there
/// is one, else the last few lines.
fn log_tail(log: &str) -> String {
    if let Some(line) = log.lines().rev().find(|l| l.starts_with("error: ")) {
        return line.trim_start_matches("error: ").to_string();
    }
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(8);
    lines[start..].join("\n")
}

/// The child's side: called by the hidden subcommand.
pub fn serve(request_path: &Path, response_path: &Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let missing = pjrt::compile_only_env_missing();
    anyhow::ensure!(missing.is_empty(), "the compile worker runs only as a child of emotionet, which gives it {}", missing.join(" "));
    let text = std::fs::read(request_path).with_context(|| format!("reading {}", request_path.display()))?;
    let request: Request = serde_json::from_slice(&text).with_context(|| format!("parsing {}", request_path.display()))?;
    let response = compile_all(&request)?;
    let bytes = serde_json::to_vec_pretty(&response)?;
    crate::fsutil::write_atomic(response_path, &bytes).with_context(|| format!("writing {}", response_path.display()))?;
    Ok(())
}

fn compile_all(request: &Request) -> anyhow::Result<Response> {
    use anyhow::Context as _;
    let api = Api::load(&request.plugin).with_context(|| format!("loading {}", request.plugin.display()))?;
    let options: Vec<(String, NamedValue)> = request.create_options.iter().map(|(k, v)| (k.clone(), NamedValue::String(v.clone()))).collect();
    let topology = Topology::create(api, &request.topology, &options)?;
    let plugin_attributes = api.attributes().unwrap_or_default().into_iter().map(|(k, v)| (k, v.to_string())).collect();
    let threads = request.threads.clamp(1, request.programs.len().max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<Option<ProgramResult>> = vec![None; request.programs.len()];
    let slots = std::sync::Mutex::new(&mut results);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(program) = request.programs.get(i) else { break };
                    let result = compile_one(&topology, program);
                    slots.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
                }
            });
        }
    });
    Ok(Response {
        platform_name: topology.platform_name().to_string(),
        platform_version: topology.platform_version().to_string(),
        plugin_attributes,
        devices: topology.devices().to_vec(),
        programs: results.into_iter().flatten().collect(),
    })
}

fn compile_one(topology: &Topology, request: &ProgramRequest) -> ProgramResult {
    let mut result =
        ProgramResult { name: request.name.clone(), compile_s: 0.0, error: None, memory: None, cost: None, serialized: None, serialized_bytes: None };
    let options =
        if request.device_ids.len() == 1 { CompileOptions::single_device(request.device_ids[0]) } else { CompileOptions::replicated(&request.device_ids) };
    let program = Program::stablehlo(request.name.clone(), request.text.as_bytes().to_vec());
    let started = Instant::now();
    let compiled = topology.compile(&program, &options);
    result.compile_s = started.elapsed().as_secs_f64();
    let outcome = compiled.and_then(|exe| {
        result.memory = Some(exe.memory_stats()?);
        result.cost = Some(exe.cost_analysis()?);
        if let Some(path) = &request.serialize_to {
            let bytes = exe.serialize()?;
            crate::fsutil::write_atomic(path, &bytes)
                .map_err(|e| pjrt::PjrtError::InvalidArgument { op: "serialize", message: format!("writing {}: {e}", path.display()) })?;
            result.serialized = Some(path.clone());
            result.serialized_bytes = Some(bytes.len() as u64);
        }
        Ok(())
    });
    if let Err(e) = outcome {
        result.error = Some(e.to_string());
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_command_carries_the_libtpu_environment_and_the_parent_does_not() {
        let cmd = command(Path::new("/bin/true"));
        let envs: Vec<(String, String)> =
            cmd.get_envs().map(|(k, v)| (k.to_string_lossy().into_owned(), v.map(|v| v.to_string_lossy().into_owned()).unwrap_or_default())).collect();
        for (name, value) in LIBTPU_COMPILE_ONLY_ENV {
            assert!(envs.contains(&(name.to_string(), value.to_string())), "{name} missing from {envs:?}");
            assert!(std::env::var_os(name).is_none(), "{name} is set in the test process itself");
        }
    }

    #[test]
    fn a_failed_worker_is_reported_by_its_error_line() {
        assert_eq!(log_tail("I1207 noise\nerror: topology v9:2x2: bad\n"), "topology v9:2x2: bad");
        assert_eq!(log_tail("a\nb\n"), "a\nb");
    }
}
