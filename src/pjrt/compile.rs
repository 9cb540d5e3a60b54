//! Compile options, validated here and serialized as `xla.CompileOptionsProto`.
//!
//! `PJRT_Client_Compile` takes the options as protobuf bytes. Some bad values
//! abort the whole process inside the plugin instead of returning an error
//! (empty options: `Check failed: replica_count > 0`), so no user value reaches
//! the plugin without passing [`CompileOptions::validate`] first. The proto is
//! written by hand: we set five fields and do not need a protobuf compiler.
//!
//! Field numbers (xla/pjrt/proto/compile_options.proto, xla/xla_data.proto):
//! - `CompileOptionsProto`: 3 = executable_build_options, 7 = env_option_overrides
//!   (map<string, OptionOverrideProto>);
//! - `ExecutableBuildOptionsProto`: 1 = device_ordinal, 4 = num_replicas,
//!   5 = num_partitions, 9 = device_assignment;
//! - `DeviceAssignmentProto`: 1 = replica_count, 2 = computation_count,
//!   3 = computation_devices { 1 = replica_device_ids };
//! - `OptionOverrideProto`: 1 = string, 2 = bool, 3 = int64, 4 = double.

use super::error::{PjrtError, Result};

/// A value for one XLA debug option, set per compilation through
/// `env_option_overrides` (the same names as `XLA_FLAGS`, without `--`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum OptionOverride {
    Bool(bool),
    Int(i64),
    Double(f64),
    String(String),
}

/// How to compile one program. Build with [`CompileOptions::single_device`] or
/// [`CompileOptions::replicated`]; the device ids are checked against the
/// client at compile time.
#[derive(Clone, Debug, PartialEq)]
pub struct CompileOptions {
    /// Number of replicas (data-parallel copies); at least 1.
    pub num_replicas: usize,
    /// Number of partitions (model-parallel shards); at least 1.
    pub num_partitions: usize,
    /// `device_assignment[replica][partition]` = global device id.
    pub device_assignment: Vec<Vec<i32>>,
    /// XLA debug options by name, e.g. `("xla_cpu_enable_fast_math", Bool(false))`.
    pub xla_options: Vec<(String, OptionOverride)>,
}

impl CompileOptions {
    /// One replica, one partition, on the device with this global id.
    pub fn single_device(device_id: i32) -> Self {
        CompileOptions { num_replicas: 1, num_partitions: 1, device_assignment: vec![vec![device_id]], xla_options: vec![] }
    }

    /// `device_ids.len()` replicas, replica `r` on `device_ids[r]`.
    pub fn replicated(device_ids: &[i32]) -> Self {
        CompileOptions {
            num_replicas: device_ids.len(),
            num_partitions: 1,
            device_assignment: device_ids.iter().map(|&d| vec![d]).collect(),
            xla_options: vec![],
        }
    }

    pub fn with_xla_option(mut self, name: impl Into<String>, value: OptionOverride) -> Self {
        self.xla_options.push((name.into(), value));
        self
    }

    /// Checks everything the plugin would otherwise check with a process
    /// abort. `known_devices` are the client's global device ids.
    pub fn validate(&self, known_devices: &[i32]) -> Result<()> {
        let bad = |message: String| Err(PjrtError::InvalidArgument { op: "compile options", message });
        if self.num_replicas == 0 || self.num_partitions == 0 {
            return bad(format!("num_replicas ({}) and num_partitions ({}) must both be at least 1", self.num_replicas, self.num_partitions));
        }
        if self.num_replicas * self.num_partitions > known_devices.len() {
            return bad(format!(
                "{} replicas x {} partitions need {} devices, the client has {} ({known_devices:?})",
                self.num_replicas,
                self.num_partitions,
                self.num_replicas * self.num_partitions,
                known_devices.len()
            ));
        }
        if self.device_assignment.len() != self.num_replicas || self.device_assignment.iter().any(|row| row.len() != self.num_partitions) {
            return bad(format!("device assignment {:?} must be {} replicas x {} partitions", self.device_assignment, self.num_replicas, self.num_partitions));
        }
        let mut seen = std::collections::HashSet::new();
        for &id in self.device_assignment.iter().flatten() {
            if !known_devices.contains(&id) {
                return bad(format!("device id {id} is not one of the client's devices {known_devices:?}"));
            }
            if !seen.insert(id) {
                return bad(format!("device id {id} appears twice in the device assignment {:?}", self.device_assignment));
            }
        }
        for (name, _) in &self.xla_options {
            if name.is_empty() || name.starts_with('-') || name.contains('=') {
                return bad(format!("XLA option name {name:?} must be a bare flag name such as xla_cpu_enable_fast_math"));
            }
        }
        Ok(())
    }

    /// The serialized `CompileOptionsProto`. Call [`Self::validate`] first.
    pub fn to_proto(&self) -> Vec<u8> {
        let mut assignment = Vec::new();
        put_varint_field(&mut assignment, 1, self.num_replicas as u64);
        put_varint_field(&mut assignment, 2, self.num_partitions as u64);
        for partition in 0..self.num_partitions {
            let mut computation = Vec::new();
            let ids: Vec<u64> = self.device_assignment.iter().map(|row| row[partition] as i64 as u64).collect();
            put_packed_varints(&mut computation, 1, &ids);
            put_bytes_field(&mut assignment, 3, &computation);
        }

        let mut build = Vec::new();
        // -1: let the device assignment place the program.
        put_varint_field(&mut build, 1, -1i64 as u64);
        put_varint_field(&mut build, 4, self.num_replicas as u64);
        put_varint_field(&mut build, 5, self.num_partitions as u64);
        put_bytes_field(&mut build, 9, &assignment);

        let mut out = Vec::new();
        put_bytes_field(&mut out, 3, &build);
        for (name, value) in &self.xla_options {
            let mut ov = Vec::new();
            match value {
                OptionOverride::String(s) => put_bytes_field(&mut ov, 1, s.as_bytes()),
                OptionOverride::Bool(b) => put_varint_field(&mut ov, 2, *b as u64),
                OptionOverride::Int(i) => put_varint_field(&mut ov, 3, *i as u64),
                OptionOverride::Double(d) => {
                    put_tag(&mut ov, 4, 1);
                    ov.extend_from_slice(&d.to_le_bytes());
                }
            }
            // A map entry is a message { 1: key, 2: value }.
            let mut entry = Vec::new();
            put_bytes_field(&mut entry, 1, name.as_bytes());
            put_bytes_field(&mut entry, 2, &ov);
            put_bytes_field(&mut out, 7, &entry);
        }
        out
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, ((field as u64) << 3) | wire_type as u64);
}

fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_tag(out, field, 0);
    put_varint(out, v);
}

fn put_bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn put_packed_varints(out: &mut Vec<u8>, field: u32, values: &[u64]) {
    let mut packed = Vec::new();
    for &v in values {
        put_varint(&mut packed, v);
    }
    put_bytes_field(out, field, &packed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_options_match_the_documented_bytes() {
        // platform.md: `executable_build_options { num_replicas: 1, num_partitions: 1 }`
        // is `1a 04 20 01 28 01`. Ours adds device_ordinal = -1 and the assignment.
        let proto = CompileOptions::single_device(0).to_proto();
        assert_eq!(proto[0], 0x1a, "field 3, length-delimited");
        let build = &proto[2..];
        // device_ordinal = -1 as a 10-byte varint.
        assert_eq!(&build[..11], &[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(&build[11..15], &[0x20, 0x01, 0x28, 0x01]);
        // device_assignment { replica_count 1, computation_count 1, computation_devices { ids [0] } }
        assert_eq!(&build[15..], &[0x4a, 0x09, 0x08, 0x01, 0x10, 0x01, 0x1a, 0x03, 0x0a, 0x01, 0x00]);
    }

    #[test]
    fn validation_rejects_what_would_abort_the_plugin() {
        let devices = [0, 1, 2, 3];
        assert!(CompileOptions::single_device(0).validate(&devices).is_ok());
        assert!(CompileOptions::replicated(&[0, 1, 2, 3]).validate(&devices).is_ok());
        let zero = CompileOptions { num_replicas: 0, ..CompileOptions::single_device(0) };
        assert!(zero.validate(&devices).unwrap_err().to_string().contains("at least 1"));
        let too_many = CompileOptions::replicated(&[0, 1, 2, 3, 4]);
        assert!(too_many.validate(&devices).unwrap_err().to_string().contains("need 5 devices"));
        let unknown = CompileOptions::single_device(9);
        assert!(unknown.validate(&devices).unwrap_err().to_string().contains("device id 9"));
        let dup = CompileOptions::replicated(&[1, 1]);
        assert!(dup.validate(&devices).unwrap_err().to_string().contains("twice"));
        let ragged = CompileOptions { device_assignment: vec![vec![0, 1]], ..CompileOptions::single_device(0) };
        assert!(ragged.validate(&devices).is_err());
        let flag = CompileOptions::single_device(0).with_xla_option("--xla_foo", OptionOverride::Bool(true));
        assert!(flag.validate(&devices).is_err());
    }
}
