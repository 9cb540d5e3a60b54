//! The pinned libtpu (`make tpu-plugin`: the cp312 / manylinux_2_31 wheel
//! by exact name and SHA-256, `libtpu.so` taken out of it, the same script
//! the TPU VM's setup runs), loaded here as a PJRT plugin. `GetPjrtApi`
//! needs no TPU, so its API version is checked on any machine; creating a
//! client needs one, and without it the failure is libtpu's own clear error.
//!
//! Off Google Cloud, libtpu asks the GCE metadata server for the TPU's
//! topology, 30 times per variable, while it initializes (8 minutes here
//! before it gives up); `TPU_SKIP_MDS_QUERY=1` makes it skip that, as on any
//! host that is not a TPU VM. The variable must be set before libtpu is
//! loaded, so both checks run in child processes that have it, one after
//! the other (libtpu also holds a lock file while loaded).

mod cli_support;
mod skips;

use std::path::PathBuf;

use cli_support::{command, output, text};
use emotionet::pjrt;

/// The libtpu `make tpu-plugin` extracts (`make test` runs it first).
fn libtpu() -> Option<PathBuf> {
    let path = pjrt::deps_dir().join("libtpu/libtpu.so");
    if path.is_file() {
        return Some(path);
    }
    skips::missing_dependency("tpu_plugin", &path.display().to_string(), "`make tpu-plugin` fetches it, about 190 MB");
    None
}

const CHILD: &str = "EMOTIONET_TEST_LOAD_LIBTPU";

#[test]
fn the_pinned_libtpu_speaks_pjrt_0_81_and_without_a_tpu_says_so() {
    let Some(path) = libtpu() else { return };
    if std::env::var_os(CHILD).is_some() {
        // In the child process, which has TPU_SKIP_MDS_QUERY.
        let api = pjrt::Api::load(&path).expect("libtpu.so loads as a PJRT plugin without a TPU");
        let (major, minor) = api.version();
        println!("libtpu speaks PJRT C API {major}.{minor}");
        return;
    }
    let me = std::env::current_exe().unwrap();
    let child = std::process::Command::new(me)
        .args(["--exact", "the_pinned_libtpu_speaks_pjrt_0_81_and_without_a_tpu_says_so", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("TPU_SKIP_MDS_QUERY", "1")
        .output()
        .unwrap();
    let stdout = text(&child.stdout);
    assert!(child.status.success(), "{stdout}\n{}", text(&child.stderr));
    assert!(stdout.contains("libtpu speaks PJRT C API 0.81"), "libtpu 0.0.30 speaks the API of our header: {stdout}");
    assert_eq!(pjrt::HEADER_VERSION, (0, 81));

    let out = output(command().args(["devices", "--backend", "tpu", "--plugin"]).arg(&path).env("TPU_SKIP_MDS_QUERY", "1"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "error: cannot open the tpu backend: PJRT_Client_Create failed in the PJRT plugin (Unknown): TPU initialization failed: No jellyfish device found."
        ),
        "{stderr}"
    );
}
