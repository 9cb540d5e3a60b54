//! What a CUDA PJRT plugin needs from the host, and a clear word when it
//! is missing.
//!
//! JAX's CUDA plugins (`jax-cuda12-pjrt`, `jax-cuda13-pjrt`) link no CUDA
//! library: they `dlopen` the NVIDIA runtime libraries lazily, by soname,
//! and find `ptxas` and `libdevice` next to themselves (`../../nvidia/...`,
//! where pip puts the `nvidia-*` wheels). JAX's Python side preloads those
//! libraries from the wheels before it creates a client; a Rust host has to
//! do the same, because the plugin's RPATH does not name all of them (cuDNN
//! needs nvrtc, which is not on it). [`preload`] does that, in JAX's order.
//!
//! Without a GPU the plugin itself only says "No visible GPU devices", after
//! its CUDA stub logs "Could not find cuda drivers". [`diagnose`] asks the
//! driver directly what is missing: its `libcuda.so.1`, a driver new enough
//! for the plugin's CUDA major version, or a device it can see.
//!
//! This module owns the `dlopen` of NVIDIA's libraries and the few driver
//! calls of the diagnosis; it never creates a CUDA context of its own.

use std::os::raw::{c_char, c_int, c_uint};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};

use super::api::Api;
use super::client::{Client, ClientOptions};
use super::error::{PjrtError, Result};

/// Creates a client on a CUDA plugin: preloads the NVIDIA libraries beside
/// it, and turns "No visible GPU devices" into what is really missing.
pub(crate) fn connect(api: Api, options: &ClientOptions) -> Result<Client> {
    let path = api.path();
    let cuda = CudaPlugin::identify(path);
    let preloaded = cuda.as_ref().map(preload);
    let client = Client::new(api, options).map_err(|e| match e {
        PjrtError::Plugin { op: "PJRT_Client_Create", .. } => match diagnose(cuda.as_ref().map(|c| c.cuda_major)) {
            Some(problem) => PjrtError::Gpu { plugin: path.to_path_buf(), problem: Box::new(problem) },
            None => e,
        },
        other => other,
    })?;
    // Checked after the driver: without a GPU the libraries do not matter.
    if let Some(missing) = preloaded.map(|p| p.missing).filter(|m| !m.is_empty()) {
        return Err(PjrtError::Gpu { plugin: path.to_path_buf(), problem: Box::new(GpuProblem::LibrariesMissing { missing }) });
    }
    Ok(client)
}

/// The NVIDIA driver's minimum version for a CUDA major version (NVIDIA's
/// CUDA compatibility table, minor-version compatibility on Linux; JAX's
/// install guide states the CUDA 12 figure).
pub fn minimum_driver(cuda_major: u32) -> &'static str {
    match cuda_major {
        12 => "525.60.13",
        13 => "580",
        _ => "the one your CUDA version documents",
    }
}

/// A CUDA plugin recognized by where pip puts it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CudaPlugin {
    pub path: PathBuf,
    /// CUDA major version the plugin was built for (12 or 13).
    pub cuda_major: u32,
    /// The `nvidia/` folder of the pip wheels beside it, if there is one.
    pub nvidia_root: Option<PathBuf>,
}

/// One NVIDIA library the plugin loads at run time.
struct CudaLibrary {
    /// Folder under `nvidia/` where its wheel puts it.
    dir: &'static str,
    soname: &'static str,
    wheel: &'static str,
}

const fn lib(dir: &'static str, soname: &'static str, wheel: &'static str) -> CudaLibrary {
    CudaLibrary { dir, soname, wheel }
}

/// JAX's preload list (`jax_plugins/xla_cuda12/__init__.py`), in its order,
/// plus nvJitLink before the libraries that need it so that its absence is
/// named rather than reported as cuSPARSE failing to load.
const CUDA12_LIBRARIES: &[CudaLibrary] = &[
    lib("cuda_runtime/lib", "libcudart.so.12", "nvidia-cuda-runtime-cu12"),
    lib("cuda_nvrtc/lib", "libnvrtc.so.12", "nvidia-cuda-nvrtc-cu12"),
    lib("cublas/lib", "libcublas.so.12", "nvidia-cublas-cu12"),
    lib("cublas/lib", "libcublasLt.so.12", "nvidia-cublas-cu12"),
    lib("nccl/lib", "libnccl.so.2", "nvidia-nccl-cu12"),
    lib("cuda_cupti/lib", "libcupti.so.12", "nvidia-cuda-cupti-cu12"),
    lib("nvjitlink/lib", "libnvJitLink.so.12", "nvidia-nvjitlink-cu12"),
    lib("cusparse/lib", "libcusparse.so.12", "nvidia-cusparse-cu12"),
    lib("cusolver/lib", "libcusolver.so.11", "nvidia-cusolver-cu12"),
    lib("cufft/lib", "libcufft.so.11", "nvidia-cufft-cu12"),
    lib("nvshmem/lib", "libnvshmem_host.so.3", "nvidia-nvshmem-cu12"),
    lib("cudnn/lib", "libcudnn.so.9", "nvidia-cudnn-cu12"),
];

/// The CUDA 13 wheels share one `nvidia/cu13/lib` folder.
const CUDA13_LIBRARIES: &[CudaLibrary] = &[
    lib("cu13/lib", "libcudart.so.13", "nvidia-cuda-runtime"),
    lib("cu13/lib", "libnvrtc.so.13", "nvidia-cuda-nvrtc"),
    lib("cu13/lib", "libcublas.so.13", "nvidia-cublas"),
    lib("cu13/lib", "libcublasLt.so.13", "nvidia-cublas"),
    lib("nccl/lib", "libnccl.so.2", "nvidia-nccl-cu13"),
    lib("cu13/lib", "libcupti.so.13", "nvidia-cuda-cupti"),
    lib("cu13/lib", "libnvJitLink.so.13", "nvidia-nvjitlink"),
    lib("cu13/lib", "libcusparse.so.12", "nvidia-cusparse"),
    lib("cu13/lib", "libcusolver.so.12", "nvidia-cusolver"),
    lib("cu13/lib", "libcufft.so.12", "nvidia-cufft"),
    lib("nvshmem/lib", "libnvshmem_host.so.3", "nvidia-nvshmem-cu13"),
    lib("cudnn/lib", "libcudnn.so.9", "nvidia-cudnn-cu13"),
];

/// `ptxas` and `libdevice`: XLA compiles its kernels with them and looks
/// for them in `../../nvidia/<toolkit>` next to the plugin.
fn toolkit_files(cuda_major: u32) -> [(&'static str, &'static str); 2] {
    match cuda_major {
        12 => [("cuda_nvcc/bin/ptxas", "nvidia-cuda-nvcc-cu12"), ("cuda_nvcc/nvvm/libdevice/libdevice.10.bc", "nvidia-cuda-nvcc-cu12")],
        _ => [("cu13/bin/ptxas", "nvidia-cuda-nvcc"), ("cu13/nvvm/libdevice/libdevice.10.bc", "nvidia-nvvm")],
    }
}

impl CudaPlugin {
    /// Recognizes JAX's CUDA plugins (`jax_plugins/xla_cuda12|13/…`) and the
    /// OpenXLA one (`xla_plugins/xla_cuda12_pjrt/…`) by their folder.
    pub fn identify(path: &Path) -> Option<CudaPlugin> {
        let folder = path.parent()?.file_name()?.to_str()?;
        let cuda_major = match folder {
            "xla_cuda12" | "xla_cuda12_pjrt" => 12,
            "xla_cuda13" | "xla_cuda13_pjrt" => 13,
            _ => return None,
        };
        // The same two places the plugins' RPATH names.
        let dir = path.parent()?;
        let nvidia_root = [dir.join("../../nvidia"), dir.join("../nvidia")].into_iter().find(|p| p.is_dir()).and_then(|p| std::fs::canonicalize(p).ok());
        Some(CudaPlugin { path: path.to_path_buf(), cuda_major, nvidia_root })
    }

    fn libraries(&self) -> &'static [CudaLibrary] {
        if self.cuda_major == 12 { CUDA12_LIBRARIES } else { CUDA13_LIBRARIES }
    }
}

/// What [`preload`] found: each library's source, and what is missing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Preloaded {
    /// Loaded from the wheels beside the plugin.
    pub from_wheels: Vec<PathBuf>,
    /// Not in the wheels, but found by the system loader (a local CUDA).
    pub from_system: Vec<&'static str>,
    /// `soname (pip: wheel): why` for each library nobody provides, and
    /// `path (pip: wheel)` for a missing `ptxas`/`libdevice`.
    pub missing: Vec<String>,
}

/// Loads the NVIDIA libraries the plugin will ask for, from the wheels next
/// to it (else by soname from the system), so that its own later `dlopen`
/// by soname finds these copies. Idempotent per plugin path.
pub fn preload(plugin: &CudaPlugin) -> Preloaded {
    static DONE: OnceLock<Mutex<Vec<(PathBuf, Preloaded)>>> = OnceLock::new();
    let done = DONE.get_or_init(|| Mutex::new(Vec::new()));
    let mut done = done.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, report)) = done.iter().find(|(p, _)| *p == plugin.path) {
        return report.clone();
    }
    let mut report = Preloaded::default();
    for library in plugin.libraries() {
        let in_wheel = plugin.nvidia_root.as_ref().map(|root| root.join(library.dir).join(library.soname)).filter(|p| p.is_file());
        let wheel_error = match &in_wheel {
            Some(path) => match open(path.as_os_str()) {
                Ok(()) => {
                    report.from_wheels.push(path.clone());
                    continue;
                }
                Err(e) => Some(e),
            },
            None => None,
        };
        match open(std::ffi::OsStr::new(library.soname)) {
            Ok(()) => report.from_system.push(library.soname),
            Err(system_error) => {
                let why = wheel_error.unwrap_or(system_error);
                report.missing.push(format!("{} (pip: {}): {why}", library.soname, library.wheel));
            }
        }
    }
    if let Some(root) = &plugin.nvidia_root {
        for (file, wheel) in toolkit_files(plugin.cuda_major) {
            if !root.join(file).is_file() {
                report.missing.push(format!("{} (pip: {wheel})", root.join(file).display()));
            }
        }
    }
    tracing::debug!(
        "CUDA {} libraries for {}: {} from the wheels, {} from the system, {} missing",
        plugin.cuda_major,
        plugin.path.display(),
        report.from_wheels.len(),
        report.from_system.len(),
        report.missing.len()
    );
    done.push((plugin.path.clone(), report.clone()));
    report
}

/// `dlopen(name, RTLD_NOW | RTLD_LOCAL)`, as ctypes does for JAX, and keeps
/// the library loaded for the life of the process.
fn open(name: &std::ffi::OsStr) -> Result<(), String> {
    // SAFETY: loading a library runs its initializers. These are NVIDIA's
    // runtime libraries, which the plugin would load itself on first use;
    // loading them earlier changes only where they are found.
    let library = unsafe { Library::open(Some(name), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| e.to_string())?;
    // Never unloaded: the plugin keeps using them by soname.
    std::mem::forget(library);
    Ok(())
}

/// Why a CUDA plugin could not start, as far as the driver can tell.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GpuProblem {
    #[error(
        "the NVIDIA driver's libcuda.so.1 cannot be loaded ({reason}). `--backend gpu` needs an NVIDIA GPU with its driver installed{needs}; \
         on a machine without one use `--backend cpu`"
    )]
    DriverMissing { reason: String, needs: String },

    #[error("the NVIDIA driver supports CUDA {driver_cuda}{kernel}, but this plugin is built for CUDA {plugin_cuda} and needs driver >= {minimum}; {advice}")]
    DriverTooOld { driver_cuda: String, plugin_cuda: u32, minimum: &'static str, kernel: String, advice: String },

    #[error("no visible GPU: the NVIDIA driver (libcuda.so.1, CUDA {driver_cuda}{kernel}) is installed, but {detail}{visible}")]
    NoVisibleGpu { driver_cuda: String, kernel: String, detail: String, visible: String },

    #[error(
        "the CUDA libraries the plugin loads at run time are missing: {}. Run `make gpu-plugin` (it installs them beside the plugin, pinned, from PyPI)",
        missing.join("; ")
    )]
    LibrariesMissing { missing: Vec<String> },
}

/// Asks the driver why a CUDA plugin (built for `cuda_major`, if known)
/// could not create a client. `None` when the driver sees a device: then
/// the plugin's own error is the better one.
pub fn diagnose(cuda_major: Option<u32>) -> Option<GpuProblem> {
    let kernel = kernel_module();
    let needs = cuda_major.map(|m| format!(" (driver >= {} for this CUDA {m} plugin)", minimum_driver(m))).unwrap_or_default();
    let driver = match Driver::open() {
        Ok(driver) => driver,
        Err(reason) => return Some(GpuProblem::DriverMissing { reason, needs }),
    };
    let kernel_note = match &kernel {
        Some(line) => format!(", kernel module: {line}"),
        None => ", and /proc/driver/nvidia/version is missing: the kernel module is not loaded".to_string(),
    };
    let version = driver.version();
    let driver_cuda = version.clone().map(|v| format!("{}.{}", v / 1000, (v % 1000) / 10)).unwrap_or_else(|e| format!("unknown ({e})"));
    if let (Some(major), Ok(v)) = (cuda_major, version) {
        if (v / 1000) < major as i32 {
            let advice = if major > 12 {
                format!("update the driver, or use the CUDA 12 plugin (`make gpu-plugin`, driver >= {})", minimum_driver(12))
            } else {
                "update the driver".to_string()
            };
            return Some(GpuProblem::DriverTooOld { driver_cuda, plugin_cuda: major, minimum: minimum_driver(major), kernel: kernel_note, advice });
        }
    }
    let visible = match std::env::var("CUDA_VISIBLE_DEVICES") {
        Ok(v) => format!(" (CUDA_VISIBLE_DEVICES={v:?} limits what it may see)"),
        Err(_) => String::new(),
    };
    let detail = match driver.init() {
        Err(e) => format!("cuInit fails: {e}"),
        Ok(()) => match driver.device_count() {
            Ok(0) => "it sees 0 devices".to_string(),
            Ok(_) => return None,
            Err(e) => format!("cuDeviceGetCount fails: {e}"),
        },
    };
    Some(GpuProblem::NoVisibleGpu { driver_cuda, kernel: kernel_note, detail, visible })
}

/// First line of `/proc/driver/nvidia/version` (the loaded kernel module).
fn kernel_module() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    text.lines().next().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The driver API entry points the diagnosis uses (`cuda.h`).
struct Driver {
    library: Library,
}

type CuResult = c_uint;

impl Driver {
    fn open() -> Result<Driver, String> {
        // SAFETY: libcuda.so.1 is the NVIDIA driver's user-space library;
        // loading it runs no code that needs anything from us.
        let library = unsafe { Library::open(Some("libcuda.so.1"), RTLD_NOW | RTLD_LOCAL) }.map_err(|e| e.to_string())?;
        Ok(Driver { library })
    }

    /// Calls `CUresult f(args)` by name and turns a non-zero result into
    /// the driver's own error name and text.
    fn status(&self, code: CuResult) -> Result<(), String> {
        if code == 0 {
            return Ok(());
        }
        type GetString = unsafe extern "C" fn(CuResult, *mut *const c_char) -> CuResult;
        let text = |symbol: &[u8]| -> String {
            // SAFETY: `cuGetErrorName`/`cuGetErrorString` have this
            // signature in cuda.h and work before cuInit.
            let Ok(f) = (unsafe { self.library.get::<GetString>(symbol) }) else { return String::new() };
            let mut s: *const c_char = std::ptr::null();
            // SAFETY: `s` is a valid out-pointer; the driver returns a
            // static string or leaves it null.
            if unsafe { f(code, &mut s) } != 0 || s.is_null() {
                return String::new();
            }
            // SAFETY: a NUL-terminated static string owned by the driver.
            unsafe { std::ffi::CStr::from_ptr(s) }.to_string_lossy().into_owned()
        };
        Err(format!("{} {code}: {}", text(b"cuGetErrorName\0"), text(b"cuGetErrorString\0")).trim().to_string())
    }

    /// `cuDriverGetVersion`: the CUDA version the driver supports, e.g. 12090.
    fn version(&self) -> Result<i32, String> {
        // SAFETY: `CUresult cuDriverGetVersion(int*)`, per cuda.h.
        let f = unsafe { self.library.get::<unsafe extern "C" fn(*mut c_int) -> CuResult>(b"cuDriverGetVersion\0") }.map_err(|e| e.to_string())?;
        let mut v: c_int = 0;
        // SAFETY: `v` is a valid out-pointer; the call needs no cuInit.
        self.status(unsafe { f(&mut v) })?;
        Ok(v)
    }

    fn init(&self) -> Result<(), String> {
        // SAFETY: `CUresult cuInit(unsigned int flags)`; flags must be 0.
        let f = unsafe { self.library.get::<unsafe extern "C" fn(c_uint) -> CuResult>(b"cuInit\0") }.map_err(|e| e.to_string())?;
        // SAFETY: as above; cuInit is idempotent and thread-safe.
        self.status(unsafe { f(0) })
    }

    fn device_count(&self) -> Result<i32, String> {
        // SAFETY: `CUresult cuDeviceGetCount(int*)`, per cuda.h.
        let f = unsafe { self.library.get::<unsafe extern "C" fn(*mut c_int) -> CuResult>(b"cuDeviceGetCount\0") }.map_err(|e| e.to_string())?;
        let mut n: c_int = 0;
        // SAFETY: `n` is a valid out-pointer; called after a successful cuInit.
        self.status(unsafe { f(&mut n) })?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugins_are_recognized_by_their_pip_folder() {
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("jax_plugins/xla_cuda12/xla_cuda_plugin.so");
        std::fs::create_dir_all(plugin.parent().unwrap()).unwrap();
        assert_eq!(CudaPlugin::identify(&plugin).unwrap().cuda_major, 12);
        assert_eq!(CudaPlugin::identify(&plugin).unwrap().nvidia_root, None, "no wheels beside it");
        std::fs::create_dir_all(dir.path().join("nvidia")).unwrap();
        assert_eq!(CudaPlugin::identify(&plugin).unwrap().nvidia_root, Some(std::fs::canonicalize(dir.path().join("nvidia")).unwrap()));
        assert_eq!(CudaPlugin::identify(Path::new("/x/jax_plugins/xla_cuda13/xla_cuda_plugin.so")).unwrap().cuda_major, 13);
        assert_eq!(CudaPlugin::identify(Path::new("/x/xla_plugins/xla_cuda12_pjrt/xla_gpu_pjrt.so")).unwrap().cuda_major, 12);
        assert_eq!(CudaPlugin::identify(Path::new("/x/xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so")), None);
    }

    #[test]
    fn missing_wheels_are_named_with_their_pip_package() {
        // A wheel folder whose libraries are absent or broken: each is named
        // with the wheel that provides it, unless the system has it.
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("jax_plugins/xla_cuda12/xla_cuda_plugin.so");
        std::fs::create_dir_all(plugin.parent().unwrap()).unwrap();
        std::fs::create_dir_all(dir.path().join("nvidia/cudnn/lib")).unwrap();
        std::fs::write(dir.path().join("nvidia/cudnn/lib/libcudnn.so.9"), b"not a library").unwrap();
        let report = preload(&CudaPlugin::identify(&plugin).unwrap());
        let missing = report.missing.join("\n");
        assert!(report.from_wheels.is_empty(), "{report:?}");
        for (soname, wheel) in [("libcublas.so.12", "nvidia-cublas-cu12"), ("libcudnn.so.9", "nvidia-cudnn-cu12"), ("ptxas", "nvidia-cuda-nvcc-cu12")] {
            let found_on_system = report.from_system.contains(&soname);
            assert!(found_on_system || missing.contains(soname) && missing.contains(wheel), "{soname} / {wheel} not named in:\n{missing}");
        }
        // The broken file's loader error is kept, not replaced by "not found".
        if !report.from_system.contains(&"libcudnn.so.9") {
            assert!(missing.contains("libcudnn.so.9 (pip: nvidia-cudnn-cu12): ") && missing.contains("nvidia/cudnn/lib/libcudnn.so.9"), "{missing}");
        }
    }
}
