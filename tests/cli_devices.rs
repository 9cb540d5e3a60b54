//! `emotionet devices` through the real binary.

mod cli_support;

use cli_support::emotionet;

#[test]
fn devices_lists_the_cpu_plugin_and_its_devices() {
    let out = emotionet(&["devices"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("PJRT API version: 0.81"), "{stdout}");
    assert!(stdout.contains("xla_cpu_pjrt.so"), "{stdout}");
    assert!(stdout.contains("CpuDevice(id=3)"), "{stdout}");
}

#[test]
fn devices_json_honours_client_options() {
    let out = emotionet(&["devices", "--json", "--client-option", "cpu_device_count=2"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["platform"], "cpu");
    assert_eq!(v["pjrt_api_version"], "0.81");
    assert_eq!(v["devices"].as_array().unwrap().len(), 2);
}

#[test]
fn a_missing_plugin_exits_1_and_names_the_package() {
    let out = emotionet(&["devices", "--backend", "tpu", "--plugin", "/nonexistent/libtpu.so"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("libtpu==0.0.30") && stderr.contains("`make tpu-plugin`") && stderr.contains(".deps/libtpu/libtpu.so"), "{stderr}");
}

/// `--plugin` naming a file that is not there says what to type to get the
/// plugin (`make setup`), not only which pip package has it.
#[test]
fn a_missing_plugin_file_names_make_setup() {
    let out = emotionet(&["devices", "--plugin", "missing.so"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no PJRT plugin at missing.so: no such file"), "{stderr}");
    assert!(stderr.contains("xla-cpu-pjrt==0.0.1") && stderr.contains("run `make setup`") && stderr.contains(".deps/pjrt"), "{stderr}");
}

#[test]
fn bad_usage_exits_2() {
    let out = emotionet(&["devices", "--backend", "quantum"]);
    assert_eq!(out.status.code(), Some(2));
}
