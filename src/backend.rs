//! The accelerator family a run asks for ([`Backend`]) and the PJRT
//! platform names that answer for each: a plain value shared by records,
//! experiments, the command line and the runtime.
//!
//! Where a backend's plugin is found is the runtime's business
//! (`pjrt::resolve_plugin`); this module loads nothing.

/// The accelerator family a run asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cpu,
    Gpu,
    Tpu,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Backend::Cpu => "cpu",
            Backend::Gpu => "gpu",
            Backend::Tpu => "tpu",
        })
    }
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "cpu" => Ok(Backend::Cpu),
            "gpu" => Ok(Backend::Gpu),
            "tpu" => Ok(Backend::Tpu),
            other => Err(format!("unknown backend {other:?}; allowed: cpu, gpu, tpu")),
        }
    }
}

impl Backend {
    /// The PJRT platform names (`PJRT_Client_PlatformName`) a plugin for this
    /// backend reports: the CPU plugin says `cpu`, CUDA and ROCm plugins say
    /// `cuda` or `rocm`, libtpu says `tpu`.
    pub fn platform_names(self) -> &'static [&'static str] {
        match self {
            Backend::Cpu => &["cpu"],
            Backend::Gpu => &["cuda", "rocm"],
            Backend::Tpu => &["tpu"],
        }
    }

    /// Whether a client on `platform` is what this backend asked for.
    pub fn accepts_platform(self, platform: &str) -> bool {
        self.platform_names().iter().any(|p| p.eq_ignore_ascii_case(platform))
    }
}
