//! What each Cloud TPU accelerator type is to the compiler and on paper:
//! the topology name and create options libtpu builds it from, and the
//! generation's published peak compute, HBM size and HBM bandwidth.
//!
//! Every figure is per PJRT device (what one replica runs on): a v2 or v3
//! chip is two devices (one per TensorCore), a v4 or v5p chip in megacore
//! mode is one device (its two TensorCores fused), a v5e or v6e chip has one
//! TensorCore. The topology names and device counts were measured with the
//! pinned libtpu 0.0.30 (tests/tpu_compile.rs checks them).

/// One accelerator type (`--accelerator-type` of the Cloud TPU API).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Target {
    /// e.g. `v3-8`.
    pub accelerator_type: &'static str,
    /// libtpu's topology name, e.g. `v3:2x2`.
    pub topology: &'static str,
    /// Topology create options (`name`, `value`), all strings.
    pub create_options: &'static [(&'static str, &'static str)],
    /// PJRT devices of the slice (replicas a data-parallel program can have).
    pub devices: usize,
    /// Hosts (VMs) of the slice; more than one cannot run here (multi-host
    /// slices are refused for running, but compile).
    pub hosts: usize,
    pub generation: &'static Generation,
}

/// Published figures of one TPU generation, per PJRT device.
#[derive(Debug, PartialEq, serde::Serialize)]
pub struct Generation {
    /// e.g. `v3`.
    pub name: &'static str,
    /// What libtpu's device descriptions call it (`TPU v3`).
    pub device_kind: &'static str,
    /// Peak FLOP/s in bf16 per device.
    pub peak_bf16_flops: f64,
    /// Peak FLOP/s for our f32 programs per device. They carry no
    /// `precision_config`, so XLA:TPU computes their dots and convolutions
    /// at DEFAULT precision: one bf16 pass with f32 accumulation, the bf16
    /// peak. (HIGHEST would take 6 passes; we never ask for it.)
    pub peak_f32_flops: f64,
    /// HBM bytes per device.
    pub hbm_bytes: f64,
    /// HBM bytes/s per device.
    pub hbm_bandwidth: f64,
    /// Where the figures come from and when they were read.
    pub source: &'static str,
}

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
const GB: f64 = 1e9;
const F32_NOTE: &str = "f32 = the bf16 peak: XLA:TPU runs f32 dots at DEFAULT precision as one bf16 pass \
(JAX docs, Matmul precision, docs.jax.dev/en/latest/201/precision.html, read 2026-12-07)";

pub static V2: Generation = Generation {
    name: "v2",
    device_kind: "TPU v2",
    peak_bf16_flops: 46e12 / 2.0,
    peak_f32_flops: 46e12 / 2.0,
    hbm_bytes: 16.0 * GIB / 2.0,
    hbm_bandwidth: 700.0 * GB / 2.0,
    source: "per chip 46 TFLOP/s bf16 (JAX's TPU hardware table, jax/_src/pallas/mosaic/tpu_info.py, shown at \
docs.jax.dev/en/latest/pallas/tpu/hardware.html, read 2026-12-08) and 700 GB/s of HBM bandwidth (Norrie et al., The Design Process for \
Google's Training Chips: TPUv2 and TPUv3, IEEE Micro 41(2), 2021, as quoted by notes on that paper read 2026-12-08, not the paper itself; JAX's table says 716 GB/s), 2 TensorCores; 8 GiB of HBM per core as the \
pinned libtpu itself states it (its v2 out-of-memory error: memory size=8589934592, 2026-12-08). cloud.google.com/tpu/docs/v2 gives no \
figures (it points to Jouppi et al., CACM 63(7), 2020)",
};

pub static V3: Generation = Generation {
    name: "v3",
    device_kind: "TPU v3",
    peak_bf16_flops: 123e12 / 2.0,
    peak_f32_flops: 123e12 / 2.0,
    hbm_bytes: 32.0 * GIB / 2.0,
    hbm_bandwidth: 900.0 * GB / 2.0,
    source: "per chip 123 TFLOP/s bf16, 32 GiB HBM2, 900 GB/s, 2 TensorCores: cloud.google.com/tpu/docs/v3 (read 2026-12-07)",
};

pub static V4: Generation = Generation {
    name: "v4",
    device_kind: "TPU v4",
    peak_bf16_flops: 275e12,
    peak_f32_flops: 275e12,
    hbm_bytes: 32.0 * GIB,
    hbm_bandwidth: 1200.0 * GB,
    source: "per chip (one megacore device) 275 TFLOP/s bf16, 32 GiB HBM2, 1200 GB/s: cloud.google.com/tpu/docs/v4 (read 2026-12-07)",
};

pub static V5P: Generation = Generation {
    name: "v5p",
    device_kind: "TPU v5",
    peak_bf16_flops: 459e12,
    peak_f32_flops: 459e12,
    hbm_bytes: 95.0 * GB,
    hbm_bandwidth: 2765.0 * GB,
    source: "per chip (one megacore device) 459 TFLOP/s bf16, 95 GB HBM2e, 2765 GB/s: cloud.google.com/tpu/docs/v5p (read 2026-12-07)",
};

pub static V5E: Generation = Generation {
    name: "v5e",
    device_kind: "TPU v5 lite",
    peak_bf16_flops: 197e12,
    peak_f32_flops: 197e12,
    hbm_bytes: 16.0 * GB,
    hbm_bandwidth: 819.0 * GB,
    source: "per chip (one TensorCore) 197 TFLOP/s bf16, 16 GB HBM2, 819 GB/s: cloud.google.com/tpu/docs/v5e (read 2026-12-07)",
};

pub static V6E: Generation = Generation {
    name: "v6e",
    device_kind: "TPU v6 lite",
    peak_bf16_flops: 918e12,
    peak_f32_flops: 918e12,
    hbm_bytes: 32.0 * GB,
    hbm_bandwidth: 1638.0 * GB,
    source: "per chip (one TensorCore) 918 TFLOP/s bf16, 32 GB HBM, 1638 GB/s: cloud.google.com/tpu/docs/v6e (read 2026-12-07)",
};

const MEGACORE: &[(&str, &str)] = &[("chip_config_name", "megacore")];

/// The accelerator types `compile --target` and the preflight know.
pub static TARGETS: &[Target] = &[
    Target { accelerator_type: "v2-8", topology: "v2:2x2", create_options: &[], devices: 8, hosts: 1, generation: &V2 },
    Target { accelerator_type: "v3-8", topology: "v3:2x2", create_options: &[], devices: 8, hosts: 1, generation: &V3 },
    Target { accelerator_type: "v4-8", topology: "v4:2x2x1", create_options: MEGACORE, devices: 4, hosts: 1, generation: &V4 },
    Target { accelerator_type: "v5p-8", topology: "v5:2x2x1", create_options: MEGACORE, devices: 4, hosts: 1, generation: &V5P },
    Target { accelerator_type: "v5litepod-8", topology: "v5e:2x4", create_options: &[], devices: 8, hosts: 1, generation: &V5E },
    Target { accelerator_type: "v6e-8", topology: "v6e:2x4", create_options: &[], devices: 8, hosts: 1, generation: &V6E },
    Target { accelerator_type: "v3-32", topology: "v3:4x4", create_options: &[], devices: 32, hosts: 4, generation: &V3 },
];

/// The note every f32 peak comes with.
pub fn f32_peak_note() -> &'static str {
    F32_NOTE
}

/// Errors of the target table.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TargetError {
    #[error("unknown accelerator type {given:?}; known: {}", known_types().join(", "))]
    Unknown { given: String },
}

pub fn known_types() -> Vec<&'static str> {
    TARGETS.iter().map(|t| t.accelerator_type).collect()
}

/// The target for an accelerator type such as `v3-8`.
pub fn target(accelerator_type: &str) -> Result<&'static Target, TargetError> {
    TARGETS.iter().find(|t| t.accelerator_type == accelerator_type).ok_or_else(|| TargetError::Unknown { given: accelerator_type.to_string() })
}

impl Target {
    /// The peak FLOP/s per device for a program computing in `precision`.
    pub fn peak_flops(&self, precision: crate::models::Precision) -> f64 {
        match precision {
            crate::models::Precision::Bf16 => self.generation.peak_bf16_flops,
            crate::models::Precision::F32 => self.generation.peak_f32_flops,
        }
    }

    /// Topology create options as PJRT named values.
    pub fn named_options(&self) -> Vec<(String, crate::pjrt::NamedValue)> {
        self.create_options.iter().map(|(k, v)| (k.to_string(), crate::pjrt::NamedValue::String(v.to_string()))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_types_name_the_known_ones() {
        let e = target("v9-8").unwrap_err().to_string();
        assert!(e.contains("\"v9-8\"") && e.contains("v3-8") && e.contains("v5litepod-8") && e.contains("v3-32"), "{e}");
        assert_eq!(target("v3-8").unwrap().topology, "v3:2x2");
    }

    #[test]
    fn a_v3_core_has_16_gib_and_half_a_chip() {
        let v3 = target("v3-8").unwrap().generation;
        assert_eq!(v3.hbm_bytes, 16.0 * GIB);
        assert_eq!(v3.peak_bf16_flops, 61.5e12);
    }
}
