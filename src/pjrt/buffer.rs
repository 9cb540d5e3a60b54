//! Device buffers and the events that say when transfers are done.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::api::Api;
use super::client::ClientInner;
use super::error::{PjrtError, Result};
use super::ffi::{self, StructSize};
use crate::tensor::{DType, HostTensor};

/// A `PJRT_Event`, destroyed on drop.
pub(crate) struct Event {
    api: Api,
    raw: *mut ffi::PJRT_Event,
}

impl Event {
    pub(crate) fn new(api: Api, raw: *mut ffi::PJRT_Event) -> Self {
        Event { api, raw }
    }

    /// Blocks until the event fires; returns the error it carries, if any.
    pub(crate) fn wait(self, op: &'static str) -> Result<()> {
        let mut args = ffi::PJRT_Event_Await_Args { event: self.raw, ..ffi::PJRT_Event_Await_Args::sized() };
        // SAFETY: `raw` is a live event we own.
        unsafe { call!(self.api, PJRT_Event_Await, &mut args) }.map_err(|e| match e {
            PjrtError::Plugin { code, message, .. } => PjrtError::Plugin { op, code, message },
            other => other,
        })
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_Event_Destroy_Args { event: self.raw, ..ffi::PJRT_Event_Destroy_Args::sized() };
        // SAFETY: we own the event and destroy it exactly once.
        if let Err(e) = unsafe { call!(self.api, PJRT_Event_Destroy, &mut args) } {
            tracing::warn!("destroying PJRT event: {e}");
        }
    }
}

/// An array on one device. Dropping it frees the device memory.
///
/// A buffer passed as a donated argument to an execution gives its memory to
/// that execution: it is marked donated, and any later use is
/// [`PjrtError::BufferDonated`] rather than a read of freed memory.
pub struct Buffer {
    client: Arc<ClientInner>,
    raw: *mut ffi::PJRT_Buffer,
    dtype: DType,
    dims: Vec<i64>,
    device_id: i32,
    donated: AtomicBool,
}

// SAFETY: PJRT buffers may be used from any thread (PJRT C API contract);
// our own mutable state is the atomic `donated` flag.
unsafe impl Send for Buffer {}
// SAFETY: as above.
unsafe impl Sync for Buffer {}

impl std::fmt::Debug for Buffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buffer<{}{:?}>(device {}{})", self.dtype, self.dims, self.device_id, if self.is_donated() { ", donated" } else { "" })
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_Buffer_Destroy_Args { buffer: self.raw, ..ffi::PJRT_Buffer_Destroy_Args::sized() };
        // SAFETY: we own the buffer handle and destroy it once; the client is
        // kept alive by `self.client` until after this call. Destroying a
        // donated buffer's handle is valid (its data is already gone).
        if let Err(e) = unsafe { call!(self.client.api, PJRT_Buffer_Destroy, &mut args) } {
            tracing::warn!("destroying PJRT buffer: {e}");
        }
    }
}

impl Buffer {
    pub(crate) fn from_raw(client: Arc<ClientInner>, raw: *mut ffi::PJRT_Buffer, dtype: DType, dims: Vec<i64>, device_id: i32) -> Self {
        Buffer { client, raw, dtype, dims, device_id, donated: AtomicBool::new(false) }
    }

    /// Wraps an output buffer of an execution, reading its type and shape.
    pub(crate) fn from_output(client: Arc<ClientInner>, raw: *mut ffi::PJRT_Buffer) -> Result<Self> {
        let api = client.api;
        let mut t = ffi::PJRT_Buffer_ElementType_Args { buffer: raw, ..ffi::PJRT_Buffer_ElementType_Args::sized() };
        let mut d = ffi::PJRT_Buffer_Dimensions_Args { buffer: raw, ..ffi::PJRT_Buffer_Dimensions_Args::sized() };
        let mut dev = ffi::PJRT_Buffer_Device_Args { buffer: raw, ..ffi::PJRT_Buffer_Device_Args::sized() };
        // Wrap first so the handle is freed even if a query below fails.
        let mut buffer = Buffer::from_raw(client.clone(), raw, DType::F32, vec![], -1);
        // SAFETY: `raw` is a live buffer returned by the plugin.
        unsafe { call!(api, PJRT_Buffer_ElementType, &mut t) }?;
        // SAFETY: as above; the dims array is owned by the buffer.
        unsafe { call!(api, PJRT_Buffer_Dimensions, &mut d) }?;
        // SAFETY: as above.
        unsafe { call!(api, PJRT_Buffer_Device, &mut dev) }?;
        buffer.dtype = super::client::dtype_of("execute output", t.type_)?;
        buffer.dims = if d.num_dims == 0 {
            vec![]
        } else {
            // SAFETY: the plugin returned `num_dims` dimensions.
            unsafe { std::slice::from_raw_parts(d.dims, d.num_dims) }.to_vec()
        };
        buffer.device_id = client.device_id_of(dev.device).unwrap_or(-1);
        Ok(buffer)
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn dims(&self) -> &[i64] {
        &self.dims
    }

    /// Global id of the device holding the buffer.
    pub fn device_id(&self) -> i32 {
        self.device_id
    }

    /// True once the buffer was donated to an execution.
    pub fn is_donated(&self) -> bool {
        self.donated.load(Ordering::Acquire)
    }

    pub(crate) fn mark_donated(&self) {
        self.donated.store(true, Ordering::Release);
    }

    /// The raw handle for an FFI call, after checking the buffer still holds
    /// data (not donated, not deleted by the plugin).
    pub(crate) fn live_handle(&self, op: &'static str, name: impl FnOnce() -> String) -> Result<*mut ffi::PJRT_Buffer> {
        if self.is_donated() {
            return Err(PjrtError::BufferDonated { op, name: name() });
        }
        let mut args = ffi::PJRT_Buffer_IsDeleted_Args { buffer: self.raw, ..ffi::PJRT_Buffer_IsDeleted_Args::sized() };
        // SAFETY: `raw` is our live handle (handles outlive their data).
        unsafe { call!(self.client.api, PJRT_Buffer_IsDeleted, &mut args) }?;
        if args.is_deleted {
            return Err(PjrtError::BufferDonated { op, name: name() });
        }
        Ok(self.raw)
    }

    /// Copies the buffer to the host, waiting for the computation that
    /// produces it (errors of that computation surface here).
    pub fn to_host(&self) -> Result<HostTensor> {
        let raw = self.live_handle("to_host", || format!("{self:?}"))?;
        let size = crate::tensor::element_count(&self.dims)? * self.dtype.size_bytes();
        let mut bytes = vec![0u8; size];
        let mut args =
            ffi::PJRT_Buffer_ToHostBuffer_Args { src: raw, dst: bytes.as_mut_ptr().cast(), dst_size: size, ..ffi::PJRT_Buffer_ToHostBuffer_Args::sized() };
        // SAFETY: `dst` points to `size` writable bytes, exactly the dense
        // size of the buffer's type and shape; `bytes` stays alive and
        // untouched until the event below has fired.
        unsafe { call!(self.client.api, PJRT_Buffer_ToHostBuffer, &mut args) }?;
        if !args.event.is_null() {
            Event::new(self.client.api, args.event).wait("to_host")?;
        }
        Ok(HostTensor::from_bytes(self.dtype, &self.dims, bytes)?)
    }

    /// Blocks until the buffer's data is ready (its producing computation is
    /// done); errors of that computation surface here.
    pub fn wait_ready(&self) -> Result<()> {
        let raw = self.live_handle("wait_ready", || format!("{self:?}"))?;
        let mut args = ffi::PJRT_Buffer_ReadyEvent_Args { buffer: raw, ..ffi::PJRT_Buffer_ReadyEvent_Args::sized() };
        // SAFETY: `raw` is a live buffer.
        unsafe { call!(self.client.api, PJRT_Buffer_ReadyEvent, &mut args) }?;
        Event::new(self.client.api, args.event).wait("wait_ready")
    }

    /// Bytes the buffer occupies on the device.
    pub fn on_device_size(&self) -> Result<usize> {
        let raw = self.live_handle("on_device_size", || format!("{self:?}"))?;
        let mut args = ffi::PJRT_Buffer_OnDeviceSizeInBytes_Args { buffer: raw, ..ffi::PJRT_Buffer_OnDeviceSizeInBytes_Args::sized() };
        // SAFETY: `raw` is a live buffer.
        unsafe { call!(self.client.api, PJRT_Buffer_OnDeviceSizeInBytes, &mut args) }?;
        Ok(args.on_device_size_in_bytes)
    }
}

/// The moment a buffer's data becomes ready, as a handle that can be polled
/// or waited on from any thread. Timing uses it: a step's device time ends
/// when every output of every replica is ready, whatever the host is doing
/// meanwhile (an asynchronous plugin returns from execute long before).
pub struct ReadyEvent {
    /// `None` when the plugin gave no event: the data is ready already.
    event: Option<Event>,
    /// The event keeps pointing into plugin state owned by the client.
    _client: Arc<ClientInner>,
}

// SAFETY: PJRT events may be queried and awaited from any thread (PJRT C
// API contract); we own the handle and destroy it once, on drop.
unsafe impl Send for ReadyEvent {}

impl ReadyEvent {
    /// Whether the data is ready now (never blocks).
    pub fn is_ready(&self) -> Result<bool> {
        let Some(event) = &self.event else { return Ok(true) };
        let mut args = ffi::PJRT_Event_IsReady_Args { event: event.raw, ..ffi::PJRT_Event_IsReady_Args::sized() };
        // SAFETY: `raw` is a live event we own.
        unsafe { call!(event.api, PJRT_Event_IsReady, &mut args) }?;
        Ok(args.is_ready)
    }

    /// Blocks until the data is ready; the producing computation's error, if any.
    pub fn wait(self) -> Result<()> {
        match self.event {
            Some(event) => event.wait("ready_event"),
            None => Ok(()),
        }
    }
}

impl Buffer {
    /// An event that fires when this buffer's data is ready.
    pub fn ready_event(&self) -> Result<ReadyEvent> {
        let raw = self.live_handle("ready_event", || format!("{self:?}"))?;
        let mut args = ffi::PJRT_Buffer_ReadyEvent_Args { buffer: raw, ..ffi::PJRT_Buffer_ReadyEvent_Args::sized() };
        // SAFETY: `raw` is a live buffer.
        unsafe { call!(self.client.api, PJRT_Buffer_ReadyEvent, &mut args) }?;
        let event = (!args.event.is_null()).then(|| Event::new(self.client.api, args.event));
        Ok(ReadyEvent { event, _client: self.client.clone() })
    }
}
