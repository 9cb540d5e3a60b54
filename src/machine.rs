//! The CPU this process runs on: its model name, core count and the vector
//! and matrix extensions that decide XLA's and oneDNN's kernels. Benchmarks
//! name it beside every figure, and the CPU kernel choice
//! (`models::kernel_choice`) keys its cache by it: a choice measured on one
//! CPU says nothing about another.

/// The CPU at hand: what makes figures (and kernel choices) from different
/// machines comparable, or not.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Machine {
    /// `model name` from /proc/cpuinfo.
    pub cpu: String,
    /// Logical CPUs this process may use.
    pub cores: usize,
    /// The vector and matrix extensions present, of those that decide
    /// XLA's and oneDNN's kernels: `avx2`, `fma`, `avx512f`, `avx512bw`,
    /// `avx512vl`, `avx512_vnni`, `avx512_bf16`, `avx512_fp16`, `amx_tile`,
    /// `amx_bf16`, `amx_int8`.
    pub features: Vec<String>,
}

/// The features [`Machine::features`] looks for, as /proc/cpuinfo spells them.
const FEATURES: [&str; 11] =
    ["avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8"];

impl Machine {
    /// This machine, from /proc/cpuinfo (Linux); elsewhere the CPU is
    /// "unknown" and the features are what the Rust runtime detects.
    pub fn detect() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match std::fs::read_to_string("/proc/cpuinfo") {
            Ok(text) => Self::from_cpuinfo(&text, cores),
            Err(_) => {
                #[allow(unused_mut)]
                let mut features: Vec<String> = Vec::new();
                #[cfg(target_arch = "x86_64")]
                {
                    for (name, present) in
                        [("avx2", is_x86_feature_detected!("avx2")), ("fma", is_x86_feature_detected!("fma")), ("avx512f", is_x86_feature_detected!("avx512f"))]
                    {
                        if present {
                            features.push(name.to_string());
                        }
                    }
                }
                Machine { cpu: "unknown".into(), cores, features }
            }
        }
    }

    /// Parses the first processor's `model name` and `flags` lines.
    pub fn from_cpuinfo(text: &str, cores: usize) -> Self {
        let field =
            |key: &str| text.lines().find(|l| l.split(':').next().is_some_and(|k| k.trim() == key)).and_then(|l| l.split_once(':')).map(|(_, v)| v.trim());
        let flags: Vec<&str> = field("flags").unwrap_or_default().split_whitespace().collect();
        let features = FEATURES.iter().filter(|f| flags.contains(f)).map(|f| f.to_string()).collect();
        Machine { cpu: field("model name").unwrap_or("unknown").to_string(), cores, features }
    }

    /// What bf16 means on this CPU, said plainly wherever a CPU program is
    /// asked for bf16: without AMX-BF16, XLA:CPU emulates bf16 arithmetic
    /// (converts around f32 math), so a bf16 step is slower than f32; with
    /// it, the oneDNN bf16 kernels that would use it are not wired yet, so
    /// bf16 runs on XLA's ops all the same.
    pub fn bf16_note(&self) -> String {
        if self.features.iter().any(|f| f == "amx_bf16") {
            "bf16 on this CPU: AMX-BF16 is present, but emotionet's oneDNN kernels are f32 only, so bf16 runs on XLA's ops (emulated); expect it slower than f32".into()
        } else {
            "bf16 on this CPU: no AMX-BF16, so XLA:CPU emulates bf16 (f32 math with conversions around it); expect it slower than f32 (docs/speed.md)".into()
        }
    }

    /// One line: `AMD EPYC, 2 cores, AVX2 FMA (no AVX-512, no AMX)`.
    pub fn summary(&self) -> String {
        let has = |f: &str| self.features.iter().any(|x| x == f);
        let mut parts: Vec<String> = self.features.iter().map(|f| f.to_uppercase().replace('_', "-")).collect();
        if !has("avx512f") {
            parts.push("no AVX-512".into());
        }
        if !has("amx_tile") {
            parts.push("no AMX".into());
        }
        format!("{}, {} cores, {}", self.cpu, self.cores, parts.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_is_called_emulated_without_amx_and_unwired_with_it() {
        let avx2 = Machine::from_cpuinfo("model name\t: AMD EPYC\nflags\t\t: fpu avx2 fma\n", 2);
        assert!(avx2.bf16_note().contains("no AMX-BF16, so XLA:CPU emulates bf16"), "{}", avx2.bf16_note());
        let amx = Machine::from_cpuinfo("model name\t: Intel Xeon\nflags\t\t: avx2 avx512f amx_tile amx_bf16\n", 2);
        assert!(amx.bf16_note().contains("AMX-BF16 is present, but"), "{}", amx.bf16_note());
    }
}
