//! Which plugin a backend name means, and where to find it.
//!
//! Order: `--plugin PATH`, then `EMOTIONET_PJRT_PLUGIN`, then (TPU only)
//! `TPU_LIBRARY_PATH`, then the project-local `.deps/pjrt` folder that
//! `make setup` fills (and, for the GPU, `.deps/cuda12` / `.deps/cuda13`
//! from `make gpu-plugin`), then the packages of the machine's `python3`. A plugin
//! that is not found is an error naming the pip package that provides it;
//! we never fall back to another backend.

use std::path::{Path, PathBuf};

use super::error::{PjrtError, Result};
pub use crate::backend::Backend;

impl Backend {
    /// The pinned pip package that provides this backend's plugin.
    pub fn pip_package(self) -> &'static str {
        match self {
            Backend::Cpu => "xla-cpu-pjrt==0.0.1",
            Backend::Gpu => "jax-cuda12-pjrt==0.11.2 with its pinned nvidia-*-cu12 wheels (or jax-cuda13-pjrt==0.11.2 with CUDA 13's)",
            Backend::Tpu => "libtpu==0.0.30",
        }
    }

    /// Where the plugin sits inside its pip package(s).
    fn relative_paths(self) -> &'static [&'static str] {
        match self {
            Backend::Cpu => &["xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so"],
            // JAX's plugins first: they load their CUDA libraries lazily and
            // find them in the nvidia wheels beside them. The OpenXLA wheel
            // (xla-cuda12-pjrt 0.0.1) links them and fails to load without.
            Backend::Gpu => {
                &["jax_plugins/xla_cuda12/xla_cuda_plugin.so", "jax_plugins/xla_cuda13/xla_cuda_plugin.so", "xla_plugins/xla_cuda12_pjrt/xla_gpu_pjrt.so"]
            }
            Backend::Tpu => &["libtpu/libtpu.so"],
        }
    }

    fn make_target(self) -> &'static str {
        match self {
            Backend::Cpu => "make setup",
            Backend::Gpu => "make gpu-plugin",
            Backend::Tpu => "make tpu-plugin",
        }
    }
}

/// The project-local dependency folder: `$EMOTIONET_DEPS`, else `.deps` next
/// to the binary's checkout (`target/release/emotionet` -> `./.deps`), else
/// the checkout this binary was built from.
pub fn deps_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EMOTIONET_DEPS") {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        for ancestor in exe.ancestors().skip(1).take(4) {
            let candidate = ancestor.join(".deps");
            if candidate.is_dir() {
                return candidate;
            }
        }
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps")
}

/// `site-packages` folders of the machine's python3 (empty if none).
fn python_site_dirs() -> Vec<PathBuf> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import site, sys; print('\\n'.join(site.getsitepackages() + [site.getusersitepackages()] + sys.path))"])
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).lines().filter(|l| !l.is_empty()).map(PathBuf::from).collect(),
        _ => Vec::new(),
    }
}

/// Finds the plugin library for `backend`, honouring an explicit path first.
pub fn resolve_plugin(backend: Backend, explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return existing(path, backend);
    }
    if let Some(path) = std::env::var_os("EMOTIONET_PJRT_PLUGIN") {
        return existing(Path::new(&path), backend);
    }
    if backend == Backend::Tpu
        && let Some(path) = std::env::var_os("TPU_LIBRARY_PATH")
    {
        return existing(Path::new(&path), backend);
    }
    let mut searched = Vec::new();
    let roots = local_roots(backend).into_iter().chain(python_site_dirs());
    for root in roots {
        for rel in backend.relative_paths() {
            let candidate = root.join(rel);
            if candidate.is_file() {
                return Ok(candidate);
            }
            searched.push(candidate);
        }
    }
    let first = searched.first().cloned().unwrap_or_default();
    Err(PjrtError::PluginNotFound {
        path: first,
        hint: format!(
            "the {backend} plugin comes from the pip package {} (`{}` installs it into {}); \
             or pass --plugin PATH / set EMOTIONET_PJRT_PLUGIN. Searched {} places",
            backend.pip_package(),
            backend.make_target(),
            match backend {
                Backend::Gpu => format!("{} (`make gpu-plugin CUDA=13`: {})", deps_dir().join("cuda12").display(), deps_dir().join("cuda13").display()),
                Backend::Cpu | Backend::Tpu => deps_dir().join("pjrt").display().to_string(),
            },
            searched.len()
        ),
    })
}

/// Folders under `.deps` that `make` installs this backend's plugin into.
/// Each CUDA major version has its own, because its `nvidia/` wheels must
/// sit beside the plugin and pip's `--target` cannot merge two such trees.
fn local_roots(backend: Backend) -> Vec<PathBuf> {
    let deps = deps_dir();
    match backend {
        Backend::Gpu => vec![deps.join("cuda12"), deps.join("cuda13"), deps.join("pjrt")],
        Backend::Cpu | Backend::Tpu => vec![deps.join("pjrt")],
    }
}

fn existing(path: &Path, backend: Backend) -> Result<PathBuf> {
    if path.is_file() {
        Ok(path.to_path_buf())
    } else {
        Err(PjrtError::PluginNotFound {
            path: path.to_path_buf(),
            hint: format!("no such file; the {backend} plugin comes from the pip package {}", backend.pip_package()),
        })
    }
}

/// A plugin named by a description file (`--plugin FILE.json`) instead of
/// the library itself: a test-only way to let one platform stand in for
/// another, said out loud. The stand-in TPU VM of the cloud tests runs the
/// CPU plugin through one:
///
/// ```json
/// {"library": "/path/xla_cpu_pjrt.so", "platform": "cpu", "stands_in_for": "tpu",
///  "why": "tests: the local folder playing a TPU VM has no TPU"}
/// ```
///
/// A run through it is filed under the backend it stands in for, while its
/// record keeps the platform that really ran (`cpu`), and the report labels
/// it a stand-in. Without such a file a platform mismatch is an error.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StandIn {
    /// The plugin library; relative paths are taken from the file's folder.
    pub library: PathBuf,
    /// The platform that library reports (checked after connecting).
    pub platform: String,
    /// The backend whose runs it may take.
    pub stands_in_for: Backend,
    /// Why: shown in logs, so a stand-in never goes unnoticed.
    pub why: String,
}

/// The library to load for a resolved plugin path, and the stand-in
/// description it came from, if the path named one (a `.json` file).
pub fn plugin_library(path: &Path) -> Result<(PathBuf, Option<StandIn>)> {
    if path.extension().is_none_or(|e| e != "json") {
        return Ok((path.to_path_buf(), None));
    }
    let bad = |reason: String| PjrtError::PluginNotFound {
        path: path.to_path_buf(),
        hint: format!("{reason}; a .json plugin is a stand-in description with the keys library, platform, stands_in_for (cpu, gpu or tpu) and why"),
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let mut stand_in: StandIn = serde_json::from_str(&text).map_err(|e| bad(format!("not a stand-in description: {e}")))?;
    if stand_in.library.is_relative() {
        stand_in.library = path.parent().unwrap_or(Path::new(".")).join(&stand_in.library);
    }
    Ok((stand_in.library.clone(), Some(stand_in)))
}

/// The platform identity check, run right after connecting: a client for
/// `backend` must be on one of its platforms (cpu -> cpu, gpu -> cuda/rocm,
/// tpu -> tpu), so that nothing trained on one platform is ever filed under
/// another. The one exception is a declared [`StandIn`] for this backend
/// whose library reports the platform it declares.
pub fn check_platform(backend: Backend, platform: &str, plugin: &Path, stand_in: Option<&StandIn>) -> Result<()> {
    if backend.accepts_platform(platform) && stand_in.is_none_or(|s| s.platform.eq_ignore_ascii_case(platform)) {
        return Ok(());
    }
    if let Some(s) = stand_in
        && s.stands_in_for == backend
        && s.platform.eq_ignore_ascii_case(platform)
    {
        tracing::warn!("{} (platform {platform}) stands in for {backend}: {}", plugin.display(), s.why);
        return Ok(());
    }
    let declared = match stand_in {
        Some(s) => format!("its stand-in description declares platform {:?} standing in for {}; ", s.platform, s.stands_in_for),
        None => String::new(),
    };
    Err(PjrtError::PlatformMismatch {
        backend,
        platform: platform.to_string(),
        plugin: plugin.to_path_buf(),
        expected: backend.platform_names().join(" or "),
        advice: format!(
            "{declared}point --plugin or EMOTIONET_PJRT_PLUGIN at the {backend} plugin ({}), or ask for the backend this plugin is made for",
            backend.pip_package()
        ),
    })
}
