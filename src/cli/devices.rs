//! `emotionet devices`: what a backend's plugin offers.

use std::io::Write;

use clap::Args;

use super::BackendArgs;

#[derive(Args, Debug)]
pub struct DevicesArgs {
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: DevicesArgs) -> anyhow::Result<()> {
    let client = args.backend.connect()?;
    let api = client.api();
    let (major, minor) = api.version();
    let attributes = api.attributes().unwrap_or_default();
    let devices = client.devices();
    let mut out = std::io::stdout().lock();
    if args.json {
        let value = serde_json::json!({
            "platform": client.platform_name(),
            "platform_version": client.platform_version(),
            "pjrt_api_version": format!("{major}.{minor}"),
            "plugin": api.path(),
            "plugin_attributes": attributes.iter().map(|(k, v)| (k.clone(), v.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
            "devices": devices,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(());
    }
    writeln!(out, "platform:         {} {}", client.platform_name(), client.platform_version())?;
    writeln!(out, "PJRT API version: {major}.{minor} (emotionet built on {}.{})", crate::pjrt::HEADER_VERSION.0, crate::pjrt::HEADER_VERSION.1)?;
    writeln!(out, "plugin:           {}", api.path().display())?;
    for (k, v) in &attributes {
        writeln!(out, "  {k}: {v}")?;
    }
    writeln!(out, "devices:          {}", devices.len())?;
    writeln!(out, "  {:>4}  {:>6}  {:<12}  description", "id", "local", "kind")?;
    for d in &devices {
        writeln!(out, "  {:>4}  {:>6}  {:<12}  {}", d.id, d.local_hardware_id, d.kind, d.description)?;
    }
    Ok(())
}
