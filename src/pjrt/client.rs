//! The PJRT client: devices, compilation and host-to-device transfers.

use std::sync::Arc;

use super::api::{Api, NamedValue, raw_named_values, read_named_values, read_str};
use super::buffer::{Buffer, Event};
use super::compile::CompileOptions;
use super::error::{PjrtError, Result};
use super::executable::LoadedExecutable;
use super::ffi::{self, StructSize};
use crate::program::Program;
use crate::tensor::{DType, HostTensor};

/// Options for `PJRT_Client_Create`, checked against the types the known
/// plugins expect. (The CPU plugin reads `cpu_device_count` with
/// `std::get<int64_t>` and aborts the process on any other type.)
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ClientOptions {
    values: Vec<(String, NamedValue)>,
}

/// Create options whose type we know, from the plugins' sources.
const KNOWN_OPTIONS: &[(&str, &str)] = &[
    ("cpu_device_count", "int64"),
    ("platform_name", "string"),
    ("allocator", "string"),
    ("memory_fraction", "float"),
    ("preallocate", "bool"),
    ("visible_devices", "int64 list"),
    ("node_id", "int64"),
    ("num_nodes", "int64"),
];

fn type_name(v: &NamedValue) -> &'static str {
    match v {
        NamedValue::String(_) => "string",
        NamedValue::Int64(_) => "int64",
        NamedValue::Int64List(_) => "int64 list",
        NamedValue::Float(_) => "float",
        NamedValue::Bool(_) => "bool",
    }
}

impl ClientOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of logical devices of the CPU plugin (default 4 there).
    pub fn cpu_device_count(self, n: i64) -> Self {
        self.set("cpu_device_count", NamedValue::Int64(n))
    }

    pub fn set(mut self, name: impl Into<String>, value: NamedValue) -> Self {
        let name = name.into();
        self.values.retain(|(n, _)| *n != name);
        self.values.push((name, value));
        self
    }

    /// Parses `name=value` as given on the command line (`--client-option`).
    pub fn parse_assignment(self, text: &str) -> Result<Self> {
        let bad = |message: String| PjrtError::InvalidArgument { op: "client option", message };
        let (name, raw) = text.split_once('=').ok_or_else(|| bad(format!("{text:?} is not of the form name=value")))?;
        let expected = KNOWN_OPTIONS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
        let value = match expected {
            Some("int64") => NamedValue::Int64(raw.parse().map_err(|_| bad(format!("{name} wants an integer, got {raw:?}")))?),
            Some("float") => NamedValue::Float(raw.parse().map_err(|_| bad(format!("{name} wants a number, got {raw:?}")))?),
            Some("bool") => NamedValue::Bool(raw.parse().map_err(|_| bad(format!("{name} wants true or false, got {raw:?}")))?),
            Some("int64 list") => NamedValue::Int64List(
                raw.split(',')
                    .map(|s| s.trim().parse())
                    .collect::<std::result::Result<_, _>>()
                    .map_err(|_| bad(format!("{name} wants comma-separated integers, got {raw:?}")))?,
            ),
            _ => NamedValue::String(raw.to_string()),
        };
        Ok(self.set(name, value))
    }

    fn validate(&self) -> Result<()> {
        for (name, value) in &self.values {
            if let Some((_, expected)) = KNOWN_OPTIONS.iter().find(|(n, _)| n == name)
                && type_name(value) != *expected
            {
                return Err(PjrtError::InvalidArgument {
                    op: "client option",
                    message: format!("{name} must be of type {expected}, got {} ({value})", type_name(value)),
                });
            }
            if name == "cpu_device_count" && !matches!(value, NamedValue::Int64(1..=2048)) {
                return Err(PjrtError::InvalidArgument { op: "client option", message: format!("cpu_device_count must be between 1 and 2048, got {value}") });
            }
        }
        Ok(())
    }
}

/// One device as the plugin describes it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DeviceInfo {
    /// Global device id (what device assignments use).
    pub id: i32,
    /// Index among this process's devices on the hardware (`-1` if unknown).
    pub local_hardware_id: i32,
    pub process_index: i32,
    /// e.g. `cpu`, `TPU v3`, `NVIDIA H200`.
    pub kind: String,
    pub description: String,
    pub addressable: bool,
    pub attributes: Vec<(String, NamedValue)>,
}

#[derive(Clone, Copy)]
pub(crate) struct DevicePtr(pub(crate) *mut ffi::PJRT_Device);
// SAFETY: a PJRT_Device is owned by its client and is thread-safe per the
// PJRT C API contract; we only pass the pointer back to the same plugin.
unsafe impl Send for DevicePtr {}
// SAFETY: as above.
unsafe impl Sync for DevicePtr {}

pub(crate) struct ClientInner {
    pub(crate) api: Api,
    pub(crate) raw: *mut ffi::PJRT_Client,
    platform_name: String,
    platform_version: String,
    devices: Vec<(DeviceInfo, DevicePtr)>,
}

// SAFETY: the PJRT C API requires clients to be usable from any thread.
unsafe impl Send for ClientInner {}
// SAFETY: as above; our own fields are immutable after creation.
unsafe impl Sync for ClientInner {}

impl Drop for ClientInner {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_Client_Destroy_Args { client: self.raw, ..ffi::PJRT_Client_Destroy_Args::sized() };
        // SAFETY: every buffer and executable holds an `Arc<ClientInner>`, so
        // when this runs nothing else refers to the client; destroyed once.
        if let Err(e) = unsafe { call!(self.api, PJRT_Client_Destroy, &mut args) } {
            tracing::warn!("destroying PJRT client: {e}");
        }
    }
}

impl ClientInner {
    pub(crate) fn device_ptr(&self, id: i32) -> Option<DevicePtr> {
        self.devices.iter().find(|(d, _)| d.id == id).map(|(_, p)| *p)
    }

    pub(crate) fn device_id_of(&self, ptr: *mut ffi::PJRT_Device) -> Option<i32> {
        self.devices.iter().find(|(_, p)| p.0 == ptr).map(|(d, _)| d.id)
    }
}

/// A PJRT client. Cloning is cheap (shared); buffers and executables keep
/// the client alive.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<ClientInner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({} {}, {} devices)", self.inner.platform_name, self.inner.platform_version, self.inner.devices.len())
    }
}

impl Client {
    /// Creates a client on a loaded plugin.
    pub fn new(api: Api, options: &ClientOptions) -> Result<Client> {
        options.validate()?;
        // The raw values point into `options.values`, which outlives the call.
        let raw_values = raw_named_values(&options.values);
        // SAFETY: the named values (and the strings and lists they point to)
        // live until the call returns; every option's type was checked above
        // against what the plugins read.
        let raw =
            unsafe { call!(api, PJRT_Client_Create, PJRT_Client_Create_Args { create_options: raw_values.as_ptr(), num_options: raw_values.len() }) }?.client;

        // From here on the client is owned by `inner` and destroyed on error.
        let mut inner = ClientInner { api, raw, platform_name: String::new(), platform_version: String::new(), devices: vec![] };

        // SAFETY: `raw` is the live client created above.
        let name = unsafe { call!(api, PJRT_Client_PlatformName, PJRT_Client_PlatformName_Args { client: raw }) }?;
        // SAFETY: the plugin returned a string owned by the client.
        inner.platform_name = unsafe { read_str(name.platform_name, name.platform_name_size) };

        // SAFETY: as above.
        let version = unsafe { call!(api, PJRT_Client_PlatformVersion, PJRT_Client_PlatformVersion_Args { client: raw }) }?;
        // SAFETY: as above.
        inner.platform_version = unsafe { read_str(version.platform_version, version.platform_version_size) };

        // SAFETY: as above; the device array is owned by the client.
        let devs = unsafe { call!(api, PJRT_Client_AddressableDevices, PJRT_Client_AddressableDevices_Args { client: raw }) }?;
        let device_ptrs: Vec<*mut ffi::PJRT_Device> = if devs.num_addressable_devices == 0 {
            vec![]
        } else {
            // SAFETY: the plugin returned `num_addressable_devices` pointers.
            unsafe { std::slice::from_raw_parts(devs.addressable_devices, devs.num_addressable_devices) }.to_vec()
        };
        for ptr in device_ptrs {
            inner.devices.push((describe_device(api, ptr)?, DevicePtr(ptr)));
        }
        Ok(Client { inner: Arc::new(inner) })
    }

    /// Loads the plugin at `path` and creates a client with default options.
    pub fn from_plugin_path(path: &std::path::Path, options: &ClientOptions) -> Result<Client> {
        Client::new(Api::load(path)?, options)
    }

    pub fn api(&self) -> Api {
        self.inner.api
    }

    /// e.g. `cpu`, `tpu`, `cuda`.
    pub fn platform_name(&self) -> &str {
        &self.inner.platform_name
    }

    pub fn platform_version(&self) -> &str {
        &self.inner.platform_version
    }

    /// The devices this process can address, in the plugin's order.
    pub fn devices(&self) -> Vec<DeviceInfo> {
        self.inner.devices.iter().map(|(d, _)| d.clone()).collect()
    }

    pub fn device_ids(&self) -> Vec<i32> {
        self.inner.devices.iter().map(|(d, _)| d.id).collect()
    }

    /// Compiles a program. Options are validated here, never in the plugin.
    pub fn compile(&self, program: &Program, options: &CompileOptions) -> Result<LoadedExecutable> {
        options.validate(&self.device_ids())?;
        LoadedExecutable::compile(self, program, options)
    }

    /// Copies a host tensor to the device with global id `device_id` and
    /// waits until the host memory is no longer needed.
    pub fn upload(&self, tensor: &HostTensor, device_id: i32) -> Result<Buffer> {
        let device = self.inner.device_ptr(device_id).ok_or_else(|| PjrtError::InvalidArgument {
            op: "upload",
            message: format!("device id {device_id} is not one of the client's devices {:?}", self.device_ids()),
        })?;
        let api = self.inner.api;
        let dims = tensor.dims().to_vec();
        let mut args = ffi::PJRT_Client_BufferFromHostBuffer_Args {
            client: self.inner.raw,
            data: tensor.bytes().as_ptr().cast(),
            type_: buffer_type(tensor.dtype()),
            dims: dims.as_ptr(),
            num_dims: dims.len(),
            host_buffer_semantics: ffi::PJRT_HostBufferSemantics_PJRT_HostBufferSemantics_kImmutableUntilTransferCompletes,
            device: device.0,
            ..ffi::PJRT_Client_BufferFromHostBuffer_Args::sized()
        };
        // SAFETY: `HostTensor` guarantees that its bytes match dtype and dims
        // (checked at construction), so the plugin reads exactly the bytes we
        // own; they stay borrowed until `done_with_host_buffer` fires below.
        unsafe { call!(api, PJRT_Client_BufferFromHostBuffer, &mut args) }?;
        let buffer = Buffer::from_raw(self.inner.clone(), args.buffer, tensor.dtype(), dims, device_id);
        if !args.done_with_host_buffer.is_null() {
            Event::new(api, args.done_with_host_buffer).wait("upload")?;
        }
        Ok(buffer)
    }
}

fn describe_device(api: Api, ptr: *mut ffi::PJRT_Device) -> Result<DeviceInfo> {
    // SAFETY (every call below): `ptr` is one of the client's live devices
    // and `desc` the description it owns; the calls only read them.
    let desc = unsafe { call!(api, PJRT_Device_GetDescription, PJRT_Device_GetDescription_Args { device: ptr }) }?.device_description;
    // SAFETY: as above.
    let id = unsafe { call!(api, PJRT_DeviceDescription_Id, PJRT_DeviceDescription_Id_Args { device_description: desc }) }?.id;
    // SAFETY: as above.
    let process = unsafe { call!(api, PJRT_DeviceDescription_ProcessIndex, PJRT_DeviceDescription_ProcessIndex_Args { device_description: desc }) }?;
    // SAFETY: as above.
    let kind = unsafe { call!(api, PJRT_DeviceDescription_Kind, PJRT_DeviceDescription_Kind_Args { device_description: desc }) }?;
    // SAFETY: as above.
    let text = unsafe { call!(api, PJRT_DeviceDescription_ToString, PJRT_DeviceDescription_ToString_Args { device_description: desc }) }?;
    // SAFETY: as above.
    let attrs = unsafe { call!(api, PJRT_DeviceDescription_Attributes, PJRT_DeviceDescription_Attributes_Args { device_description: desc }) }?;
    // SAFETY: as above. Some plugins do not implement this; the id is
    // informative only, so a failure becomes -1.
    let local_hardware_id =
        unsafe { call!(api, PJRT_Device_LocalHardwareId, PJRT_Device_LocalHardwareId_Args { device: ptr }) }.map_or(-1, |hw| hw.local_hardware_id);
    // SAFETY: as above.
    let addressable = unsafe { call!(api, PJRT_Device_IsAddressable, PJRT_Device_IsAddressable_Args { device: ptr }) }?.is_addressable;
    Ok(DeviceInfo {
        id,
        local_hardware_id,
        process_index: process.process_index,
        // SAFETY: strings owned by the device description.
        kind: unsafe { read_str(kind.device_kind, kind.device_kind_size) },
        // SAFETY: as above.
        description: unsafe { read_str(text.to_string, text.to_string_size) },
        addressable,
        // SAFETY: the attribute array is owned by the device description.
        attributes: unsafe { read_named_values(attrs.attributes, attrs.num_attributes) },
    })
}

/// Our element type as a PJRT buffer type.
pub(crate) fn buffer_type(dtype: DType) -> ffi::PJRT_Buffer_Type {
    match dtype {
        DType::F32 => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_F32,
        DType::F64 => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_F64,
        DType::BF16 => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_BF16,
        DType::I32 => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_S32,
        DType::U32 => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_U32,
        DType::U8 => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_U8,
        DType::Pred => ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_PRED,
    }
}

/// A PJRT buffer type as our element type, if we have one.
pub(crate) fn dtype_of(op: &'static str, t: ffi::PJRT_Buffer_Type) -> Result<DType> {
    Ok(match t {
        ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_F32 => DType::F32,
        ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_F64 => DType::F64,
        ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_BF16 => DType::BF16,
        ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_S32 => DType::I32,
        ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_U32 => DType::U32,
        ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_U8 => DType::U8,
        ffi::PJRT_Buffer_Type_PJRT_Buffer_Type_PRED => DType::Pred,
        other => return Err(PjrtError::UnsupportedType { op, raw: other }),
    })
}
