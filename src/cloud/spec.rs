//! What a TPU VM should be, validated before anything is created.
//!
//! A [`VmRequest`] is what the user typed, every field optional; its
//! [`VmRequest::validate`] is the cost guard: no project, zone or accelerator
//! type is ever defaulted or guessed, because each of them decides what is
//! billed. The result, a [`VmSpec`], is stored with the VM so that a preempted
//! VM can be recreated exactly as it was asked for.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::api::{NetworkConfig, Node, QueuedResource, SchedulingConfig, ServiceAccount, queued_resource};
use super::error::{CloudError, Result};

/// The label every VM we create carries, so leftovers can be found.
pub const MANAGED_LABEL: (&str, &str) = ("managed-by", "emotionet");
/// The image with Ubuntu 22.04 and nothing ML-specific: we bring libtpu ourselves.
pub const DEFAULT_RUNTIME_VERSION: &str = "tpu-ubuntu2204-base";
/// Scope a service account needs for the VM to reach Cloud Storage and friends.
pub const CLOUD_PLATFORM_SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// A project and zone: `projects/{project}/locations/{zone}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub project: String,
    pub zone: String,
}

impl Location {
    pub fn new(project: &str, zone: &str) -> Result<Self> {
        check_project(project)?;
        check_zone(zone)?;
        Ok(Location { project: project.to_string(), zone: zone.to_string() })
    }

    pub fn parent(&self) -> String {
        format!("projects/{}/locations/{}", self.project, self.zone)
    }

    pub fn node_name(&self, node_id: &str) -> String {
        format!("{}/nodes/{node_id}", self.parent())
    }

    pub fn queued_resource_name(&self, id: &str) -> String {
        format!("{}/queuedResources/{id}", self.parent())
    }
}

/// Which kind of capacity to pay for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Capacity {
    /// Full price; Google will not take it back.
    OnDemand,
    /// Spot: much cheaper, may be preempted at any time, no 24 h limit.
    Spot,
    /// The older interruptible kind: preemptible, at most 24 h.
    Preemptible,
}

impl std::fmt::Display for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Capacity::OnDemand => "on-demand",
            Capacity::Spot => "spot",
            Capacity::Preemptible => "preemptible",
        })
    }
}

/// What the user asked for; nothing is defaulted that costs money.
#[derive(Clone, Debug, Default)]
pub struct VmRequest {
    pub project: Option<String>,
    pub zone: Option<String>,
    pub accelerator_type: Option<String>,
    pub node_id: String,
    pub runtime_version: Option<String>,
    pub capacity: Option<Capacity>,
    /// Ask through the queued resources API instead of creating the node directly.
    pub queued: bool,
    /// Give up on a queued request not fulfilled within this many seconds.
    pub queued_valid_for_secs: Option<u64>,
    pub network: Option<String>,
    pub subnetwork: Option<String>,
    pub service_account: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// The text of a startup script (runs as root at every boot).
    pub startup_script: Option<String>,
    pub external_ips: bool,
}

/// A validated request: everything needed to create (and recreate) the VM.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmSpec {
    pub project: String,
    pub zone: String,
    pub node_id: String,
    pub accelerator_type: String,
    pub runtime_version: String,
    pub capacity: Capacity,
    pub queued: bool,
    #[serde(default)]
    pub queued_valid_for_secs: Option<u64>,
    #[serde(default)]
    pub network: Option<String>,
    #[serde(default)]
    pub subnetwork: Option<String>,
    #[serde(default)]
    pub service_account: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub startup_script: Option<String>,
    pub external_ips: bool,
}

impl VmRequest {
    /// The cost guard, then every name checked against the API's rules.
    pub fn validate(self) -> Result<VmSpec> {
        let given = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.trim().is_empty());
        let mut missing = Vec::new();
        if !given(&self.project) {
            missing.push("--project");
        }
        if !given(&self.zone) {
            missing.push("--zone");
        }
        if !given(&self.accelerator_type) {
            missing.push("--accelerator-type");
        }
        if !missing.is_empty() {
            return Err(CloudError::CostGuard { missing });
        }
        let project = self.project.unwrap_or_default().trim().to_string();
        let zone = self.zone.unwrap_or_default().trim().to_string();
        let accelerator_type = self.accelerator_type.unwrap_or_default().trim().to_string();
        Location::new(&project, &zone)?;
        check_node_id(&self.node_id)?;
        check_accelerator_type(&accelerator_type)?;
        check_single_host(&accelerator_type)?;
        let runtime_version = self.runtime_version.unwrap_or_else(|| DEFAULT_RUNTIME_VERSION.to_string());
        check_simple("runtime version", &runtime_version)?;
        let capacity = self.capacity.unwrap_or(Capacity::OnDemand);
        if self.queued && capacity == Capacity::Preemptible {
            return Err(CloudError::InvalidName {
                what: "capacity",
                value: capacity.to_string(),
                rule: "queued resources take spot or on-demand capacity; use --spot (or neither) with --queued",
            });
        }
        let mut labels = self.labels;
        for (key, value) in &labels {
            check_label(key, value)?;
        }
        labels.insert(MANAGED_LABEL.0.to_string(), MANAGED_LABEL.1.to_string());
        Ok(VmSpec {
            project,
            zone,
            node_id: self.node_id,
            accelerator_type,
            runtime_version,
            capacity,
            queued: self.queued,
            queued_valid_for_secs: self.queued_valid_for_secs,
            network: self.network,
            subnetwork: self.subnetwork,
            service_account: self.service_account,
            labels,
            startup_script: self.startup_script,
            external_ips: self.external_ips,
        })
    }
}

impl VmSpec {
    pub fn location(&self) -> Location {
        Location { project: self.project.clone(), zone: self.zone.clone() }
    }

    pub fn node_name(&self) -> String {
        self.location().node_name(&self.node_id)
    }

    /// The queued resource id we use: the node id, so the two are easy to pair.
    pub fn queued_resource_name(&self) -> String {
        self.location().queued_resource_name(&self.node_id)
    }

    /// The `Node` body of a create call.
    pub fn to_node(&self) -> Node {
        let mut metadata = std::collections::HashMap::new();
        if let Some(script) = &self.startup_script {
            metadata.insert("startup-script".to_string(), script.clone());
        }
        // Inside a queued resource the tier says spot; the node must not repeat it.
        let scheduling = match (self.capacity, self.queued) {
            (Capacity::Spot, false) => Some(SchedulingConfig::new().set_spot(true)),
            (Capacity::Preemptible, _) => Some(SchedulingConfig::new().set_preemptible(true)),
            _ => None,
        };
        let mut network = NetworkConfig::new().set_enable_external_ips(self.external_ips);
        if let Some(n) = &self.network {
            network = network.set_network(n);
        }
        if let Some(n) = &self.subnetwork {
            network = network.set_subnetwork(n);
        }
        let mut node = Node::new()
            .set_description("emotionet campaign VM")
            .set_accelerator_type(&self.accelerator_type)
            .set_runtime_version(&self.runtime_version)
            .set_network_config(network)
            .set_labels(self.labels.clone())
            .set_metadata(metadata)
            .set_or_clear_scheduling_config(scheduling);
        if let Some(email) = &self.service_account {
            node = node.set_service_account(ServiceAccount::new().set_email(email).set_scope([CLOUD_PLATFORM_SCOPE]));
        }
        node
    }

    /// The `QueuedResource` body of a create call.
    pub fn to_queued_resource(&self) -> QueuedResource {
        let spec = queued_resource::tpu::NodeSpec::new().set_parent(self.location().parent()).set_node_id(&self.node_id).set_node(self.to_node());
        let mut resource = QueuedResource::new().set_tpu(queued_resource::Tpu::new().set_node_spec([spec]));
        if self.capacity == Capacity::Spot {
            resource = resource.set_spot(queued_resource::Spot::new());
        }
        if let Some(secs) = self.queued_valid_for_secs {
            let valid = google_cloud_wkt::Duration::clamp(secs as i64, 0);
            resource = resource.set_queueing_policy(queued_resource::QueueingPolicy::new().set_valid_until_duration(valid));
        }
        resource
    }
}

fn is_lower_alnum_dash(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Node ids follow the Compute Engine rule (RFC 1035 labels).
pub fn check_node_id(id: &str) -> Result<()> {
    let ok = !id.is_empty() && id.len() <= 63 && id.starts_with(|c: char| c.is_ascii_lowercase()) && !id.ends_with('-') && is_lower_alnum_dash(id);
    if ok {
        Ok(())
    } else {
        Err(CloudError::InvalidName {
            what: "TPU VM name",
            value: id.to_string(),
            rule: "1-63 characters: lowercase letters, digits and '-', starting with a letter, not ending with '-'",
        })
    }
}

fn check_project(project: &str) -> Result<()> {
    // Project ids are lowercase letters, digits and '-'; old domain-scoped ones
    // look like `example.com:my-project`.
    let ok = !project.is_empty() && project.len() <= 100 && project.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CloudError::InvalidName { what: "project id", value: project.to_string(), rule: "lowercase letters, digits and '-' (see `gcloud projects list`)" })
    }
}

fn check_zone(zone: &str) -> Result<()> {
    if !zone.is_empty() && zone.len() <= 63 && is_lower_alnum_dash(zone) && zone.contains('-') {
        Ok(())
    } else {
        Err(CloudError::InvalidName { what: "zone", value: zone.to_string(), rule: "a zone such as europe-west4-a or us-central1-a" })
    }
}

fn check_accelerator_type(kind: &str) -> Result<()> {
    let ok = kind.starts_with('v') && kind.contains('-') && kind.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(CloudError::InvalidName {
            what: "accelerator type",
            value: kind.to_string(),
            rule: "a TPU type such as v3-8 (see `gcloud compute tpus accelerator-types list`)",
        })
    }
}

/// TensorCores (v2, v3, v4, v5p) or chips (v5litepod, v6e) that one TPU VM
/// host drives, per generation: the number in an accelerator type divided by
/// this is the number of hosts (workers) of the slice.
const PER_HOST: &[(&str, u32)] = &[("v2", 8), ("v3", 8), ("v4", 8), ("v5p", 8), ("v5litepod", 8), ("v6e", 8)];

/// The single-host types: the ones emotionet runs on.
pub const SINGLE_HOST_TYPES: &[&str] = &["v2-8", "v3-8", "v4-8", "v5p-8", "v5litepod-1", "v5litepod-4", "v5litepod-8", "v6e-1", "v6e-4", "v6e-8"];

/// Whether `kind` is a Cloud TPU type that exists (as Google's TPU pages list
/// them, read 2026-12-07): the single-host types, and the multi-host slices
/// v2-32..512, v3-32..2048, v4 and v5p in steps of 8 from 16, and
/// v5litepod/v6e-16..256. Anything else (v3-9, v5litepod-2) is a typo.
pub fn is_known_type(kind: &str) -> bool {
    if SINGLE_HOST_TYPES.contains(&kind) {
        return true;
    }
    let Some((generation, size)) = kind.rsplit_once('-') else { return false };
    let Ok(size) = size.parse::<u32>() else { return false };
    match generation {
        "v2" => [32, 128, 256, 512].contains(&size),
        "v3" => [32, 64, 128, 256, 512, 1024, 2048].contains(&size),
        "v4" => (16..=4096).contains(&size) && size % 8 == 0,
        "v5p" => (16..=12288).contains(&size) && size % 8 == 0,
        "v5litepod" | "v6e" => [16, 32, 64, 128, 256].contains(&size),
        _ => false,
    }
}

/// How many hosts (workers) a slice of this type has, if we know its generation.
pub fn hosts_of(accelerator_type: &str) -> Option<u32> {
    let (generation, size) = accelerator_type.rsplit_once('-')?;
    let size: u32 = size.parse().ok()?;
    let per_host = PER_HOST.iter().find(|(g, _)| *g == generation)?.1;
    Some(size.div_ceil(per_host).max(1))
}

/// Refuses multi-host slices: emotionet runs one process, with one PJRT
/// client, on one host. A slice such as v3-32 has 4 hosts; running there would
/// need one process per worker and a distributed PJRT client (and the output
/// of every worker collected), none of which emotionet sets up, so it would
/// train four unrelated copies and bring back one.
fn check_single_host(kind: &str) -> Result<()> {
    const RULE: &str = "emotionet runs on a single-host TPU slice (v2-8, v3-8, v4-8, v5p-8, v5litepod-1/4/8, v6e-1/4/8): \
                        a multi-host slice needs one process per worker and a distributed PJRT client, which emotionet does not set up";
    if !is_known_type(kind) {
        return Err(CloudError::UnknownAcceleratorType { value: kind.to_string(), known: SINGLE_HOST_TYPES.join(", ") });
    }
    match hosts_of(kind) {
        Some(1) => Ok(()),
        _ => Err(CloudError::InvalidName { what: "accelerator type (a multi-host slice)", value: kind.to_string(), rule: RULE }),
    }
}

fn check_simple(what: &'static str, value: &str) -> Result<()> {
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)) {
        Ok(())
    } else {
        Err(CloudError::InvalidName { what, value: value.to_string(), rule: "letters, digits, '-', '.' and '_'" })
    }
}

fn check_label(key: &str, value: &str) -> Result<()> {
    let key_ok = !key.is_empty()
        && key.len() <= 63
        && key.starts_with(|c: char| c.is_ascii_lowercase())
        && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    let value_ok = value.len() <= 63 && value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if key_ok && value_ok {
        Ok(())
    } else {
        Err(CloudError::InvalidName {
            what: "label",
            value: format!("{key}={value}"),
            rule: "keys start with a lowercase letter; keys and values use lowercase letters, digits, '-' and '_', at most 63 characters",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> VmRequest {
        VmRequest {
            project: Some("my-proj".into()),
            zone: Some("europe-west4-a".into()),
            accelerator_type: Some("v3-8".into()),
            node_id: "emotionet-tpu".into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_cost_guard_names_every_missing_flag() {
        let err = VmRequest { node_id: "n".into(), ..Default::default() }.validate().unwrap_err();
        assert!(matches!(&err, CloudError::CostGuard { missing } if missing == &["--project", "--zone", "--accelerator-type"]), "{err}");
        let err = VmRequest { zone: Some("  ".into()), ..request() }.validate().unwrap_err();
        assert!(err.to_string().contains("--zone"), "{err}");
    }

    #[test]
    fn names_the_api_would_reject_are_caught_here() {
        assert!(VmRequest { node_id: "Bad_Name".into(), ..request() }.validate().is_err());
        assert!(VmRequest { zone: Some("europe west".into()), ..request() }.validate().is_err());
        assert!(VmRequest { accelerator_type: Some("../v3-8".into()), ..request() }.validate().is_err());
        let mut labels = BTreeMap::new();
        labels.insert("Team".into(), "x".into());
        assert!(VmRequest { labels, ..request() }.validate().is_err());
    }

    #[test]
    fn multi_host_slices_are_refused_with_what_is_supported() {
        for single in ["v2-8", "v3-8", "v4-8", "v5p-8", "v5litepod-1", "v5litepod-8", "v6e-4", "v6e-8"] {
            assert_eq!(hosts_of(single), Some(1), "{single}");
            VmRequest { accelerator_type: Some(single.into()), ..request() }.validate().unwrap();
        }
        for (multi, hosts) in [("v3-32", 4), ("v2-32", 4), ("v4-16", 2), ("v5p-16", 2), ("v5litepod-16", 2), ("v6e-256", 32), ("v3-2048", 256)] {
            assert_eq!(hosts_of(multi), Some(hosts), "{multi}");
            let err = VmRequest { accelerator_type: Some(multi.into()), ..request() }.validate().unwrap_err().to_string();
            assert!(err.contains(multi) && err.contains("multi-host") && err.contains("v3-8") && err.contains("distributed PJRT client"), "{err}");
        }
        for unknown in ["v9x-8", "v3-9", "v5litepod-2", "v2-64", "v4-12"] {
            let err = VmRequest { accelerator_type: Some(unknown.into()), ..request() }.validate().unwrap_err().to_string();
            assert!(err.contains(&format!("unknown accelerator type \"{unknown}\"")) && !err.contains("multi-host"), "{err}");
            assert!(err.contains("v2-8, v3-8, v4-8, v5p-8, v5litepod-1, v5litepod-4, v5litepod-8, v6e-1, v6e-4, v6e-8"), "{err}");
        }
    }

    #[test]
    fn spot_goes_in_the_node_or_in_the_queued_tier() {
        let direct = VmRequest { capacity: Some(Capacity::Spot), ..request() }.validate().unwrap();
        assert_eq!(direct.to_node().scheduling_config, Some(SchedulingConfig::new().set_spot(true)));
        assert_eq!(direct.to_node().labels.get("managed-by").map(String::as_str), Some("emotionet"));
        let queued = VmRequest { capacity: Some(Capacity::Spot), queued: true, ..request() }.validate().unwrap();
        // On the wire, as the official client writes it.
        let qr = serde_json::to_value(queued.to_queued_resource()).unwrap();
        assert_eq!(qr["spot"], serde_json::json!({}));
        assert!(qr["tpu"]["nodeSpec"][0]["node"].get("schedulingConfig").is_none(), "{qr}");
        assert_eq!(qr["tpu"]["nodeSpec"][0]["parent"], "projects/my-proj/locations/europe-west4-a");
        assert_eq!(qr["tpu"]["nodeSpec"][0]["nodeId"], "emotionet-tpu");
    }
}
