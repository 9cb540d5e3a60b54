//! Compiling for devices that are not here: a plugin's topology description
//! and `PJRT_Compile`, which takes a topology instead of a client.
//!
//! libtpu builds the description of a TPU slice from a name (`v3:2x2`) and
//! create options (`chip_config_name=megacore`) on any x86 machine, and its
//! compiler then produces the same executable it would on the slice. What
//! comes back is an unloaded [`CompiledExecutable`]: it cannot run, but it
//! knows its per-device memory (`GetCompiledMemoryStats`), the compiler's
//! cost analysis (flops, bytes accessed) and can be serialized for a client
//! on the real slice to load.
//!
//! libtpu needs three environment variables on a machine without a TPU
//! ([`LIBTPU_COMPILE_ONLY_ENV`]). This module never sets them: changing a
//! running process's environment is `unsafe` (edition 2024) because C code
//! on other threads may read it at the same moment, and in a process that
//! also runs real clients or starts VMs they would leak into those. The
//! caller runs the compile-only work in a child process that gets them
//! through `std::process::Command::envs` (see `crate::tpu::worker`);
//! [`Topology::create`] refuses to run without them when the plugin is
//! libtpu, so nothing can reach the metadata server by accident.

use std::sync::Arc;

use super::api::{Api, NamedValue, raw_named_values, read_named_values, read_str};
use super::compile::CompileOptions;
use super::error::{PjrtError, Result};
use super::ffi::{self, StructSize};
use crate::program::Program;

/// The environment libtpu needs to compile with no TPU present (measured
/// with libtpu 0.0.30): no metadata-server query, this host as the only
/// worker (without it libtpu logs an INVALID_ARGUMENT error about worker
/// hostnames), and no `/tmp/libtpu_lockfile` check, so several compiles
/// (and a real client elsewhere) may load the library at once.
pub const LIBTPU_COMPILE_ONLY_ENV: &[(&str, &str)] =
    &[("TPU_SKIP_MDS_QUERY", "1"), ("TPU_WORKER_HOSTNAMES", "localhost"), ("ALLOW_MULTIPLE_LIBTPU_LOAD", "true")];

/// The variables of [`LIBTPU_COMPILE_ONLY_ENV`] that this process lacks or
/// has with another value (empty: ready for compile-only work).
pub fn compile_only_env_missing() -> Vec<String> {
    LIBTPU_COMPILE_ONLY_ENV
        .iter()
        .filter(|(name, value)| std::env::var(name).ok().as_deref() != Some(*value))
        .map(|(name, value)| format!("{name}={value}"))
        .collect()
}

/// One device of a topology, as the plugin describes it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TopologyDevice {
    pub id: i32,
    pub process_index: i32,
    /// e.g. `TPU v3`, `TPU v5 lite`.
    pub kind: String,
    /// The plugin's attributes (libtpu: `coords`, `core_on_chip`, ...).
    pub attributes: Vec<(String, String)>,
}

struct TopologyInner {
    api: Api,
    raw: *mut ffi::PJRT_TopologyDescription,
}

// SAFETY: a topology description is immutable after creation and the PJRT C
// API allows its functions to be called from any thread.
unsafe impl Send for TopologyInner {}
// SAFETY: as above.
unsafe impl Sync for TopologyInner {}

impl Drop for TopologyInner {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_TopologyDescription_Destroy_Args { topology: self.raw, ..ffi::PJRT_TopologyDescription_Destroy_Args::sized() };
        // SAFETY: we own the description and destroy it once; every
        // executable compiled against it holds this `Arc`, so none outlives it.
        if let Err(e) = unsafe { call!(self.api, PJRT_TopologyDescription_Destroy, &mut args) } {
            tracing::warn!("destroying PJRT topology: {e}");
        }
    }
}

/// A device topology to compile for, with no client and no device.
pub struct Topology {
    inner: Arc<TopologyInner>,
    name: String,
    platform_name: String,
    platform_version: String,
    devices: Vec<TopologyDevice>,
}

impl std::fmt::Debug for Topology {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Topology({} on {} {}, {} devices)", self.name, self.platform_name, self.platform_version, self.devices.len())
    }
}

impl Topology {
    /// `PJRT_TopologyDescription_Create` with a name and create options.
    /// For libtpu, the process must have [`LIBTPU_COMPILE_ONLY_ENV`].
    pub fn create(api: Api, name: &str, options: &[(String, NamedValue)]) -> Result<Topology> {
        let is_libtpu = api.path().file_name().is_some_and(|f| f.to_string_lossy().contains("libtpu"));
        let missing = compile_only_env_missing();
        if is_libtpu && !missing.is_empty() {
            return Err(PjrtError::InvalidArgument {
                op: "topology",
                message: format!(
                    "compiling with {} needs {} in the environment of the process that loads it (a child process: \
                     emotionet never sets them in its own)",
                    api.path().display(),
                    missing.join(" ")
                ),
            });
        }
        if name.is_empty() {
            return Err(PjrtError::InvalidArgument { op: "topology", message: "the topology name is empty (e.g. v3:2x2)".into() });
        }
        let raw_options = raw_named_values(options);
        let mut args = ffi::PJRT_TopologyDescription_Create_Args {
            topology_name: name.as_ptr().cast(),
            topology_name_size: name.len(),
            create_options: raw_options.as_ptr(),
            num_options: raw_options.len(),
            ..ffi::PJRT_TopologyDescription_Create_Args::sized()
        };
        // SAFETY: the name and the named values (and what they point to)
        // live until the call returns; the plugin copies what it keeps.
        unsafe { call!(api, PJRT_TopologyDescription_Create, &mut args) }.map_err(|e| match e {
            PjrtError::Plugin { code, message, .. } => PjrtError::Plugin { op: "topology", code, message: format!("{name}: {message}") },
            other => other,
        })?;
        if args.topology.is_null() {
            return Err(PjrtError::InvalidArgument { op: "topology", message: format!("{name}: the plugin returned no topology") });
        }
        let inner = Arc::new(TopologyInner { api, raw: args.topology });
        let raw = inner.raw;
        // SAFETY (the three calls below): `raw` is the live description
        // created above; the strings and the device array it returns are
        // owned by it and copied out before it can be destroyed.
        let platform = unsafe { call!(api, PJRT_TopologyDescription_PlatformName, PJRT_TopologyDescription_PlatformName_Args { topology: raw }) }?;
        // SAFETY: as above.
        let platform_name = unsafe { read_str(platform.platform_name, platform.platform_name_size) };
        // SAFETY: as above.
        let version = unsafe { call!(api, PJRT_TopologyDescription_PlatformVersion, PJRT_TopologyDescription_PlatformVersion_Args { topology: raw }) }?;
        // SAFETY: as above.
        let platform_version = unsafe { read_str(version.platform_version, version.platform_version_size) };
        // SAFETY: as above.
        let descs =
            unsafe { call!(api, PJRT_TopologyDescription_GetDeviceDescriptions, PJRT_TopologyDescription_GetDeviceDescriptions_Args { topology: raw }) }?;
        let desc_ptrs: Vec<*mut ffi::PJRT_DeviceDescription> = if descs.num_descriptions == 0 || descs.descriptions.is_null() {
            vec![]
        } else {
            // SAFETY: the plugin returned `num_descriptions` pointers, owned by the topology.
            unsafe { std::slice::from_raw_parts(descs.descriptions, descs.num_descriptions) }.to_vec()
        };
        let devices = desc_ptrs.into_iter().map(|d| describe(api, d)).collect::<Result<Vec<_>>>()?;
        Ok(Topology { inner, name: name.to_string(), platform_name, platform_version, devices })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// e.g. `tpu`.
    pub fn platform_name(&self) -> &str {
        &self.platform_name
    }

    pub fn platform_version(&self) -> &str {
        &self.platform_version
    }

    pub fn devices(&self) -> &[TopologyDevice] {
        &self.devices
    }

    pub fn device_ids(&self) -> Vec<i32> {
        self.devices.iter().map(|d| d.id).collect()
    }

    /// `PJRT_Compile` for this topology. Options are validated against the
    /// topology's device ids first (the plugin aborts on some bad values).
    pub fn compile(&self, program: &Program, options: &CompileOptions) -> Result<CompiledExecutable> {
        options.validate(&self.device_ids())?;
        let api = self.inner.api;
        let proto = options.to_proto();
        let format = "mlir";
        let raw_program = ffi::PJRT_Program {
            // The plugin takes a mutable pointer but does not write through it.
            code: program.code().as_ptr() as *mut _,
            code_size: program.code().len(),
            format: format.as_ptr().cast(),
            format_size: format.len(),
            ..ffi::PJRT_Program::sized()
        };
        let mut args = ffi::PJRT_Compile_Args {
            topology: self.inner.raw,
            program: &raw_program,
            compile_options: proto.as_ptr().cast(),
            compile_options_size: proto.len(),
            // No client: compile only.
            client: std::ptr::null_mut(),
            ..ffi::PJRT_Compile_Args::sized()
        };
        // SAFETY: the topology is live (held by `self`), and the program
        // text, format and option bytes live until the call returns; the
        // options were validated above.
        unsafe { call!(api, PJRT_Compile, &mut args) }.map_err(|e| match e {
            PjrtError::Plugin { code, message, .. } => PjrtError::Plugin { op: "compile", code, message: format!("{}: {message}", program.name()) },
            other => other,
        })?;
        if args.executable.is_null() {
            return Err(PjrtError::InvalidArgument { op: "compile", message: format!("{}: the plugin returned no executable", program.name()) });
        }
        Ok(CompiledExecutable { topology: self.inner.clone(), raw: args.executable, name: program.name().to_string() })
    }
}

fn describe(api: Api, desc: *mut ffi::PJRT_DeviceDescription) -> Result<TopologyDevice> {
    // SAFETY (every call below): `desc` is one of the live topology's device
    // descriptions; the calls only read it, and what they return is copied
    // out at once.
    let id = unsafe { call!(api, PJRT_DeviceDescription_Id, PJRT_DeviceDescription_Id_Args { device_description: desc }) }?.id;
    // SAFETY: as above.
    let process = unsafe { call!(api, PJRT_DeviceDescription_ProcessIndex, PJRT_DeviceDescription_ProcessIndex_Args { device_description: desc }) }?;
    // SAFETY: as above.
    let kind = unsafe { call!(api, PJRT_DeviceDescription_Kind, PJRT_DeviceDescription_Kind_Args { device_description: desc }) }?;
    // SAFETY: as above.
    let attrs = unsafe { call!(api, PJRT_DeviceDescription_Attributes, PJRT_DeviceDescription_Attributes_Args { device_description: desc }) }?;
    Ok(TopologyDevice {
        id,
        process_index: process.process_index,
        // SAFETY: a string owned by the description.
        kind: unsafe { read_str(kind.device_kind, kind.device_kind_size) },
        // SAFETY: the attribute array is owned by the description.
        attributes: unsafe { read_named_values(attrs.attributes, attrs.num_attributes) }.into_iter().map(|(k, v)| (k, v.to_string())).collect(),
    })
}

/// Per-device memory of a compiled program (`GetCompiledMemoryStats`), in
/// bytes. `total` is what must fit in one device's memory at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemoryStats {
    pub arguments: i64,
    pub outputs: i64,
    /// Outputs that reuse an argument's memory (donated parameters).
    pub aliased: i64,
    pub temp: i64,
    pub generated_code: i64,
    /// The plugin's own peak figure, where it gives one (0 if not).
    pub peak: i64,
    pub host_arguments: i64,
    pub host_outputs: i64,
    pub host_temp: i64,
}

impl MemoryStats {
    /// Arguments + outputs - aliased + temp + generated code: the device
    /// memory the program needs while it runs (how XLA sums it).
    pub fn total(&self) -> i64 {
        self.arguments + self.outputs - self.aliased + self.temp + self.generated_code
    }
}

/// The compiler's cost analysis of one device's program.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CostAnalysis {
    /// Floating-point operations per execution (per device).
    pub flops: f64,
    /// Bytes read and written from device memory per execution.
    pub bytes_accessed: f64,
    pub transcendentals: f64,
    /// Every property the plugin gave, by name.
    pub properties: Vec<(String, f64)>,
}

/// A program compiled for a topology: not loaded, not runnable here.
pub struct CompiledExecutable {
    topology: Arc<TopologyInner>,
    raw: *mut ffi::PJRT_Executable,
    name: String,
}

// SAFETY: an unloaded executable is immutable after compilation; the PJRT C
// API allows its query functions to be called from any thread.
unsafe impl Send for CompiledExecutable {}
// SAFETY: as above.
unsafe impl Sync for CompiledExecutable {}

impl Drop for CompiledExecutable {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_Executable_Destroy_Args { executable: self.raw, ..ffi::PJRT_Executable_Destroy_Args::sized() };
        // SAFETY: PJRT_Compile gave us ownership of `raw`; destroyed once,
        // before the topology (held by `self.topology`).
        if let Err(e) = unsafe { call!(self.topology.api, PJRT_Executable_Destroy, &mut args) } {
            tracing::warn!("destroying compiled executable {}: {e}", self.name);
        }
    }
}

impl std::fmt::Debug for CompiledExecutable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CompiledExecutable({})", self.name)
    }
}

impl CompiledExecutable {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn memory_stats(&self) -> Result<MemoryStats> {
        let api = self.topology.api;
        // SAFETY: `raw` is our live executable; the call fills plain integers.
        let m = unsafe { call!(api, PJRT_Executable_GetCompiledMemoryStats, PJRT_Executable_GetCompiledMemoryStats_Args { executable: self.raw }) }?;
        Ok(MemoryStats {
            arguments: m.argument_size_in_bytes,
            outputs: m.output_size_in_bytes,
            aliased: m.alias_size_in_bytes,
            temp: m.temp_size_in_bytes,
            generated_code: m.generated_code_size_in_bytes,
            peak: m.peak_memory_in_bytes,
            host_arguments: m.host_argument_size_in_bytes,
            host_outputs: m.host_output_size_in_bytes,
            host_temp: m.host_temp_size_in_bytes,
        })
    }

    pub fn cost_analysis(&self) -> Result<CostAnalysis> {
        let api = self.topology.api;
        // SAFETY: `raw` is our live executable; the properties array is
        // owned by it and copied out below while it lives.
        let args = unsafe { call!(api, PJRT_Executable_GetCostAnalysis, PJRT_Executable_GetCostAnalysis_Args { executable: self.raw }) }?;
        // SAFETY: the plugin returned `num_properties` named values.
        let values = unsafe { read_named_values(args.properties, args.num_properties) };
        Ok(cost_from_properties(values))
    }

    /// `PJRT_Executable_Serialize`: bytes a client of the same plugin
    /// version on the target can load (`Client::load_serialized`).
    pub fn serialize(&self) -> Result<Vec<u8>> {
        let api = self.topology.api;
        // SAFETY: `raw` is our live executable; the bytes are owned by the
        // returned `serialized_executable` until its deleter runs below.
        let args = unsafe { call!(api, PJRT_Executable_Serialize, PJRT_Executable_Serialize_Args { executable: self.raw }) }?;
        let bytes = if args.serialized_bytes.is_null() || args.serialized_bytes_size == 0 {
            Vec::new()
        } else {
            // SAFETY: the plugin returned `serialized_bytes_size` bytes, alive
            // until the deleter is called.
            unsafe { std::slice::from_raw_parts(args.serialized_bytes as *const u8, args.serialized_bytes_size) }.to_vec()
        };
        if let Some(deleter) = args.serialized_executable_deleter
            && !args.serialized_executable.is_null()
        {
            // SAFETY: the deleter the plugin gave for this object, called once.
            unsafe { deleter(args.serialized_executable) };
        }
        if bytes.is_empty() {
            return Err(PjrtError::InvalidArgument { op: "serialize", message: format!("{}: the plugin serialized it to 0 bytes", self.name) });
        }
        Ok(bytes)
    }
}

/// Reads the properties libtpu and the CPU plugin give (`flops`, `bytes
/// accessed`, `transcendentals`, ...; per-operand `bytes accessed0{}` too).
pub(crate) fn cost_from_properties(values: Vec<(String, NamedValue)>) -> CostAnalysis {
    let mut cost = CostAnalysis::default();
    for (name, value) in values {
        let v = match value {
            NamedValue::Float(f) => f as f64,
            NamedValue::Int64(i) => i as f64,
            _ => continue,
        };
        match name.as_str() {
            "flops" => cost.flops = v,
            "bytes accessed" => cost.bytes_accessed = v,
            "transcendentals" => cost.transcendentals = v,
            _ => {}
        }
        cost.properties.push((name, v));
    }
    cost
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_properties_are_read_by_name() {
        let cost = cost_from_properties(vec![
            ("flops".into(), NamedValue::Float(1.5e11)),
            ("bytes accessed".into(), NamedValue::Float(2.0e10)),
            ("bytes accessed0{}".into(), NamedValue::Float(1.0)),
            ("name".into(), NamedValue::String("x".into())),
        ]);
        assert_eq!(cost.flops, 1.5e11_f32 as f64);
        assert_eq!(cost.bytes_accessed, 2.0e10_f32 as f64);
        assert_eq!(cost.properties.len(), 3);
    }

    #[test]
    fn memory_total_counts_aliased_outputs_once() {
        let m = MemoryStats { arguments: 100, outputs: 90, aliased: 80, temp: 50, generated_code: 5, ..Default::default() };
        assert_eq!(m.total(), 165);
    }
}
