//! Run records filled from a real PJRT client, as the trainer fills them.

use emotionet::pjrt::{self, Backend, ClientOptions};

#[test]
fn platform_from_the_cpu_plugin() {
    let client = pjrt::connect(Backend::Cpu, None, &ClientOptions::new().cpu_device_count(2)).expect("the CPU plugin from `make setup`");
    let platform = emotionet::train::platform_of(&client, 2);
    assert_eq!(platform.name, "cpu");
    assert_eq!(platform.device_kind, "cpu");
    assert_eq!(platform.device_count, 2);
    assert_eq!(platform.pjrt_api_version, "0.81");
    assert!(platform.plugin.ends_with("xla_cpu_pjrt.so"), "{}", platform.plugin);
    assert!(!platform.host.is_empty());
}
