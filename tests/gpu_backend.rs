//! `--backend gpu` on a host without a GPU: JAX's real CUDA plugin, loaded
//! by the real binary, must end in an error that names what is missing
//! (the driver's libcuda.so.1 here), never a bare loader message.
//!
//! Needs the plugin wheel alone (`make gpu-loader`, 188 MB, part of
//! `make test`). Where the full `make gpu-plugin` set is installed, the
//! CUDA libraries beside the plugin are checked to load too.

mod cli_support;

use std::path::PathBuf;

use cli_support::emotionet;
use emotionet::pjrt::{self, Backend, ClientOptions, CudaPlugin, GpuProblem, PjrtError};

fn loader_plugin() -> PathBuf {
    let path = pjrt::deps_dir().join("gpu-loader/jax_plugins/xla_cuda12/xla_cuda_plugin.so");
    assert!(path.is_file(), "{} is missing: run `make gpu-loader` (part of `make test`)", path.display());
    path
}

/// True where this host has an NVIDIA driver the loader could find.
fn host_has_libcuda() -> bool {
    let cache = std::process::Command::new("ldconfig").arg("-p").output().map(|o| String::from_utf8_lossy(&o.stdout).contains("libcuda.so.1")).unwrap_or(false);
    let path = std::env::var("LD_LIBRARY_PATH").unwrap_or_default().split(':').any(|d| !d.is_empty() && std::path::Path::new(d).join("libcuda.so.1").exists());
    cache || path
}

#[test]
fn without_a_driver_the_gpu_backend_names_libcuda() {
    let plugin = loader_plugin();
    let out = emotionet(&["devices", "--backend", "gpu", "--plugin", plugin.to_str().unwrap()]);
    let stderr = cli_support::text(&out.stderr);
    if host_has_libcuda() {
        // A GPU host: either it works or the error says what is wrong.
        assert!(out.status.success() || stderr.contains("no visible GPU") || stderr.contains("NVIDIA driver"), "{stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let error = stderr.lines().find(|l| l.starts_with("error:")).unwrap_or_default();
    assert!(error.contains("libcuda.so.1 cannot be loaded"), "names the missing driver library: {error}");
    assert!(error.contains("NVIDIA GPU with its driver installed (driver >= 525.60.13 for this CUDA 12 plugin)"), "{error}");
    assert!(error.contains("--backend cpu"), "says what to do instead: {error}");
    assert!(!error.contains("No visible GPU devices"), "the plugin's vaguer message is replaced: {error}");
}

#[test]
fn the_library_reports_a_typed_gpu_problem() {
    let plugin = loader_plugin();
    if host_has_libcuda() {
        return;
    }
    let err = pjrt::connect(Backend::Gpu, Some(&plugin), &ClientOptions::new()).expect_err("no GPU here");
    let PjrtError::Gpu { plugin: p, problem } = err else { panic!("expected a GPU problem, got: {err}") };
    assert_eq!(p, std::fs::canonicalize(&plugin).unwrap());
    match *problem {
        GpuProblem::DriverMissing { reason, .. } => assert!(reason.contains("libcuda.so.1"), "the loader's own reason is kept: {reason}"),
        other => panic!("expected a missing driver, got: {other}"),
    }
    // The plugin itself loaded and speaks a newer C API than our header.
    let api = pjrt::Api::load(&plugin).unwrap();
    assert_eq!(api.version().0, 0);
    assert!(api.version().1 >= pjrt::HEADER_VERSION.1 as i32, "{:?}", api.version());
}

#[test]
fn no_gpu_plugin_installed_names_make_gpu_plugin() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = cli_support::command();
    // An empty deps folder and no python3 site-packages to search.
    cmd.args(["devices", "--backend", "gpu"]).env("EMOTIONET_DEPS", dir.path()).env("PATH", dir.path()).env_remove("EMOTIONET_PJRT_PLUGIN");
    let out = cli_support::output(&mut cmd);
    let stderr = cli_support::text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("make gpu-plugin") && stderr.contains("jax-cuda12-pjrt==0.11.2"), "{stderr}");
}

#[test]
fn a_full_gpu_plugin_install_loads_all_its_cuda_libraries() {
    // Only where `make gpu-plugin` ran (several GB, not in CI).
    let installed: Vec<PathBuf> = ["cuda12/jax_plugins/xla_cuda12/xla_cuda_plugin.so", "cuda13/jax_plugins/xla_cuda13/xla_cuda_plugin.so"]
        .iter()
        .map(|rel| pjrt::deps_dir().join(rel))
        .filter(|p| p.is_file())
        .collect();
    if installed.is_empty() {
        eprintln!("no `make gpu-plugin` install under {}; nothing to check", pjrt::deps_dir().display());
        return;
    }
    for plugin in installed {
        let cuda = CudaPlugin::identify(&plugin).unwrap();
        assert!(cuda.nvidia_root.is_some(), "{}: the nvidia wheels sit beside the plugin", plugin.display());
        let report = pjrt::preload(&cuda);
        assert_eq!(report.missing, Vec::<String>::new(), "{}", plugin.display());
        assert_eq!(report.from_wheels.len(), 12, "{report:?}");
        // With every library in place, what stops it here is the driver.
        if !host_has_libcuda() {
            let err = pjrt::connect(Backend::Gpu, Some(&plugin), &ClientOptions::new()).expect_err("no driver here");
            assert!(matches!(&err, PjrtError::Gpu { problem, .. } if matches!(**problem, GpuProblem::DriverMissing { .. })), "{err}");
        }
    }
}
