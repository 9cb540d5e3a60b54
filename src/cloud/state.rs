//! The local record of the TPU VMs we created: a small JSON file, so that
//! `status`, `run`, `fetch` and `down` find them without the user repeating
//! every flag, and a preempted VM can be recreated exactly as it was.
//!
//! Written like the checkpoints ([`crate::fsutil::write_atomic`]: temporary
//! file, fsync, rename, fsync of the folder): a crash or a power loss leaves
//! the old record or the new one, never half of one. It holds no secrets.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{CloudError, Result};
use super::spec::VmSpec;

const VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmRecord {
    pub spec: VmSpec,
    /// When `up` created it (Unix seconds, local clock).
    pub created_unix: i64,
    /// How many times it was recreated after a preemption.
    #[serde(default)]
    pub recreations: u32,
}

impl VmRecord {
    pub fn node_id(&self) -> &str {
        &self.spec.node_id
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u32,
    vms: Vec<VmRecord>,
}

#[derive(Clone, Debug)]
pub struct StateStore {
    path: PathBuf,
    /// The file the cloud commands use when no `--state` is given, when it
    /// is another one: a VM recorded there but not here is named in the
    /// "no VM" errors (a campaign's `cloud.state` pointing elsewhere).
    default: Option<PathBuf>,
}

impl StateStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        StateStore { path: path.into(), default: None }
    }

    /// The same store, knowing the default file (ignored if it is this one).
    pub fn with_default(mut self, default: PathBuf) -> Self {
        self.default = (default != self.path).then_some(default);
        self
    }

    /// The default state file: `$EMOTIONET_CLOUD_STATE` if set, else
    /// [`StateStore::default_path`]. The cloud commands and campaigns agree
    /// on it: a campaign without `cloud.state` runs `cloud run` without
    /// `--state`, which reads this file.
    pub fn default_file() -> PathBuf {
        std::env::var_os("EMOTIONET_CLOUD_STATE").filter(|v| !v.is_empty()).map(PathBuf::from).unwrap_or_else(Self::default_path)
    }

    /// `$XDG_STATE_HOME/emotionet/cloud-vms.json`, else `~/.local/state/emotionet/cloud-vms.json`.
    pub fn default_path() -> PathBuf {
        let base = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("."));
        base.join("emotionet").join("cloud-vms.json")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every recorded VM; none when the file does not exist yet.
    pub fn load(&self) -> Result<Vec<VmRecord>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.error(format!("cannot read: {e}"))),
        };
        let file: StateFile = serde_json::from_str(&text).map_err(|e| self.error(format!("not a cloud state file ({e}); move it away to start afresh")))?;
        if file.version != VERSION {
            return Err(self.error(format!("version {} is not the {VERSION} this emotionet writes", file.version)));
        }
        Ok(file.vms)
    }

    fn save(&self, vms: Vec<VmRecord>) -> Result<()> {
        let text = serde_json::to_string_pretty(&StateFile { version: VERSION, vms }).map_err(|e| self.error(e.to_string()))?;
        Ok(crate::fsutil::write_atomic(&self.path, (text + "\n").as_bytes())?)
    }

    /// Adds `record`, replacing one for the same project, zone and name.
    pub fn upsert(&self, record: VmRecord) -> Result<()> {
        let mut vms = self.load()?;
        vms.retain(|r| !same_vm(&r.spec, &record.spec));
        vms.push(record);
        self.save(vms)
    }

    /// Forgets a VM; returns whether it was recorded.
    pub fn remove(&self, spec: &VmSpec) -> Result<bool> {
        let mut vms = self.load()?;
        let before = vms.len();
        vms.retain(|r| !same_vm(&r.spec, spec));
        let removed = vms.len() != before;
        if removed {
            self.save(vms)?;
        }
        Ok(removed)
    }

    /// The VM called `name`, or the only one when no name is given.
    pub fn find(&self, name: Option<&str>) -> Result<VmRecord> {
        let vms = self.load()?;
        let names = || vms.iter().map(|r| format!("{} ({})", r.spec.node_id, r.spec.zone)).collect::<Vec<_>>().join(", ");
        match name {
            Some(name) => {
                let matching: Vec<&VmRecord> = vms.iter().filter(|r| r.spec.node_id == name).collect();
                match matching.as_slice() {
                    [one] => Ok((*one).clone()),
                    [] if vms.is_empty() => {
                        Err(self.error(format!("no TPU VM named {name} was created from here; `emotionet cloud up` first{}", self.elsewhere())))
                    }
                    [] => Err(self.error(format!("no TPU VM named {name}; recorded: {}", names()))),
                    _ => Err(self.error(format!("several TPU VMs are named {name} (in different zones or projects): {}", names()))),
                }
            }
            None => match vms.as_slice() {
                [one] => Ok(one.clone()),
                [] => Err(self.error(format!("no TPU VM was created from here; `emotionet cloud up` first{}", self.elsewhere()))),
                _ => Err(self.error(format!("several TPU VMs are recorded ({}); pick one with --name", names()))),
            },
        }
    }

    /// When this file records nothing but the default file records VMs:
    /// says so, so that a `--state` (or `cloud.state`) pointing at the wrong
    /// file is seen at once.
    fn elsewhere(&self) -> String {
        let Some(default) = &self.default else { return String::new() };
        match StateStore::new(default).load() {
            Ok(vms) if !vms.is_empty() => format!(
                ". But the default state file {} records {}: `emotionet cloud up` without --state recorded it there. \
                 Drop --state (in a campaign: drop `cloud.state`) to use it, or pass --state {}",
                default.display(),
                vms.iter().map(|r| format!("{} ({})", r.spec.node_id, r.spec.zone)).collect::<Vec<_>>().join(", "),
                default.display()
            ),
            _ => String::new(),
        }
    }

    fn error(&self, message: String) -> CloudError {
        CloudError::State { path: self.path.clone(), message }
    }
}

fn same_vm(a: &VmSpec, b: &VmSpec) -> bool {
    a.project == b.project && a.zone == b.zone && a.node_id == b.node_id
}
