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

/// Reorders a dense array whose dimensions lie in memory as `minor_to_major`
/// (the first entry varies fastest) into row-major order.
pub(crate) fn to_row_major(bytes: &[u8], dims: &[i64], element_size: usize, minor_to_major: &[i64]) -> Vec<u8> {
    let rank = dims.len();
    // Element stride of each dimension in the source.
    let mut strides = vec![0usize; rank];
    let mut stride = 1usize;
    for &d in minor_to_major {
        strides[d as usize] = stride;
        stride *= dims[d as usize] as usize;
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = vec![0usize; rank];
    for _ in 0..bytes.len() / element_size.max(1) {
        let src = index.iter().zip(&strides).map(|(i, s)| i * s).sum::<usize>() * element_size;
        out.extend_from_slice(&bytes[src..src + element_size]);
        // Next row-major index: the last dimension varies fastest.
        for d in (0..rank).rev() {
            index[d] += 1;
            if index[d] < dims[d] as usize {
                break;
            }
            index[d] = 0;
        }
    }
    out
}

impl Buffer {
    pub(crate) fn from_raw(client: Arc<ClientInner>, raw: *mut ffi::PJRT_Buffer, dtype: DType, dims: Vec<i64>, device_id: i32) -> Self {
        Buffer { client, raw, dtype, dims, device_id, donated: AtomicBool::new(false) }
    }

    /// Takes ownership of an execution's output handle. Its type, shape and
    /// device are unknown until [`Buffer::read_metadata`]; owning every
    /// output first means a failed query cannot leak the others.
    pub(crate) fn from_output(client: Arc<ClientInner>, raw: *mut ffi::PJRT_Buffer) -> Self {
        Buffer::from_raw(client, raw, DType::F32, vec![], -1)
    }

    /// Reads type, shape and device of an output buffer from the plugin.
    pub(crate) fn read_metadata(&mut self) -> Result<()> {
        let api = self.client.api;
        let raw = self.raw;
        let mut t = ffi::PJRT_Buffer_ElementType_Args { buffer: raw, ..ffi::PJRT_Buffer_ElementType_Args::sized() };
        let mut d = ffi::PJRT_Buffer_Dimensions_Args { buffer: raw, ..ffi::PJRT_Buffer_Dimensions_Args::sized() };
        let mut dev = ffi::PJRT_Buffer_Device_Args { buffer: raw, ..ffi::PJRT_Buffer_Device_Args::sized() };
        // SAFETY: `raw` is a live buffer returned by the plugin.
        unsafe { call!(api, PJRT_Buffer_ElementType, &mut t) }?;
        // SAFETY: as above; the dims array is owned by the buffer.
        unsafe { call!(api, PJRT_Buffer_Dimensions, &mut d) }?;
        // SAFETY: as above.
        unsafe { call!(api, PJRT_Buffer_Device, &mut dev) }?;
        self.dtype = super::client::dtype_of("execute output", t.type_)?;
        self.dims = if d.num_dims == 0 || d.dims.is_null() {
            vec![]
        } else {
            // SAFETY: the plugin returned `num_dims` dimensions.
            unsafe { std::slice::from_raw_parts(d.dims, d.num_dims) }.to_vec()
        };
        self.device_id = self.client.device_id_of(dev.device).unwrap_or(-1);
        Ok(())
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
        // XLA copies a buffer out in its *device* layout (the C API's host
        // shape keeps the device's dimension order; the CPU plugin ignores a
        // requested `host_layout`). Ours are row-major, XLA's default, but a
        // compiler may give an output another order (GPU and TPU layout
        // assignment, or a program asking for it); then reorder here, so
        // the bytes mean what HostTensor says instead of coming back
        // silently transposed.
        let layout = self.device_minor_to_major(raw)?;
        let mut args =
            ffi::PJRT_Buffer_ToHostBuffer_Args { src: raw, dst: bytes.as_mut_ptr().cast(), dst_size: size, ..ffi::PJRT_Buffer_ToHostBuffer_Args::sized() };
        // SAFETY: `dst` points to `size` writable bytes, exactly the dense
        // size of the buffer's type and shape; `bytes` stays alive and
        // untouched until the event below has fired.
        unsafe { call!(self.client.api, PJRT_Buffer_ToHostBuffer, &mut args) }?;
        if !args.event.is_null() {
            Event::new(self.client.api, args.event).wait("to_host")?;
        }
        if let Some(minor_to_major) = layout {
            bytes = to_row_major(&bytes, &self.dims, self.dtype.size_bytes(), &minor_to_major);
        }
        Ok(HostTensor::from_bytes(self.dtype, &self.dims, bytes)?)
    }

    /// The buffer's dimension order on the device (`minor_to_major`) when it
    /// is not row-major; `None` for row-major, and for a plugin that cannot
    /// tell (taken to use XLA's default). Tiling is ignored: the host copy
    /// drops tiles.
    fn device_minor_to_major(&self, raw: *mut ffi::PJRT_Buffer) -> Result<Option<Vec<i64>>> {
        let rank = self.dims.len();
        let row_major: Vec<i64> = (0..rank as i64).rev().collect();
        let mut args = ffi::PJRT_Buffer_GetMemoryLayout_Args { buffer: raw, ..ffi::PJRT_Buffer_GetMemoryLayout_Args::sized() };
        // SAFETY: `raw` is a live buffer; the layout's arrays it fills are
        // owned by the buffer and read before it can be destroyed.
        if let Err(e) = unsafe { call!(self.client.api, PJRT_Buffer_GetMemoryLayout, &mut args) } {
            tracing::debug!("buffer layout unknown ({e}); reading it as row-major");
            return Ok(None);
        }
        let unsupported = |what: String| PjrtError::InvalidArgument { op: "to_host", message: format!("{self:?} has a device layout we cannot read: {what}") };
        if args.layout.type_ != ffi::PJRT_Buffer_MemoryLayout_Type_PJRT_Buffer_MemoryLayout_Type_Tiled {
            return Err(unsupported("a strided layout".into()));
        }
        // SAFETY: `type_` says the union holds `tiled`.
        let tiled = unsafe { args.layout.__bindgen_anon_1.tiled };
        let actual = if tiled.minor_to_major.is_null() || tiled.minor_to_major_size == 0 {
            Vec::new()
        } else {
            // SAFETY: the plugin returned `minor_to_major_size` entries.
            unsafe { std::slice::from_raw_parts(tiled.minor_to_major, tiled.minor_to_major_size) }.to_vec()
        };
        if actual == row_major {
            return Ok(None);
        }
        let mut sorted = actual.clone();
        sorted.sort_unstable();
        if sorted != (0..rank as i64).collect::<Vec<_>>() {
            return Err(unsupported(format!("minor_to_major {actual:?} is not a permutation of the {rank} dimensions")));
        }
        Ok(Some(actual))
    }

    /// Blocks until the buffer's data is ready (its producing computation is
    /// done); errors of that computation surface here.
    pub fn wait_ready(&self) -> Result<()> {
        self.ready_event()?.wait()
    }

    /// True once the buffer's data is ready, without blocking. On an
    /// asynchronous plugin an execution's outputs are not ready when
    /// `execute` returns; a failed computation counts as ready (its error
    /// surfaces when the buffer is read or waited on).
    pub fn is_ready(&self) -> Result<bool> {
        self.ready_event()?.is_ready()
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

#[cfg(test)]
mod tests {
    use super::to_row_major;

    #[test]
    fn column_major_and_permuted_arrays_are_reordered_to_row_major() {
        // [2, 3] stored column-major: 0 3 1 4 2 5 (element values = row-major index).
        let col: Vec<u8> = [0u8, 3, 1, 4, 2, 5].to_vec();
        assert_eq!(to_row_major(&col, &[2, 3], 1, &[0, 1]), vec![0, 1, 2, 3, 4, 5]);
        // Row-major in, row-major out.
        assert_eq!(to_row_major(&[0, 1, 2, 3, 4, 5], &[2, 3], 1, &[1, 0]), vec![0, 1, 2, 3, 4, 5]);
        // [2, 2, 2] with dimension 1 fastest, then 0, then 2; 2-byte elements.
        // Row-major index r = 4a + 2b + c lies at b + 2a + 4c.
        let mut src = vec![0u8; 16];
        for a in 0..2 {
            for b in 0..2 {
                for c in 0..2 {
                    let r = (4 * a + 2 * b + c) as u8;
                    let at = b + 2 * a + 4 * c;
                    src[2 * at] = r;
                    src[2 * at + 1] = 100 + r;
                }
            }
        }
        let out = to_row_major(&src, &[2, 2, 2], 2, &[1, 0, 2]);
        let expect: Vec<u8> = (0..8).flat_map(|r| [r, 100 + r]).collect();
        assert_eq!(out, expect);
        // Scalars and empty arrays.
        assert_eq!(to_row_major(&[7, 8, 9, 10], &[], 4, &[]), vec![7, 8, 9, 10]);
        assert!(to_row_major(&[], &[0, 3], 4, &[0, 1]).is_empty());
    }
}
