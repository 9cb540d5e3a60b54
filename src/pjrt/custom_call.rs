//! Host kernels as XLA custom calls on the CPU plugin (typed XLA FFI).
//!
//! A program calls a host kernel with
//! `stablehlo.custom_call @TARGET(...) {api_version = 4 : i32, backend_config = {...}}`;
//! XLA:CPU then calls the handler registered under `TARGET` for the platform
//! `host` with a call frame (argument and result buffers, the attributes of
//! `backend_config`). Handlers are registered through the plugin's PJRT FFI
//! extension (`PJRT_Extension_Type_FFI`) before any program naming them is
//! compiled, once per plugin: the registry lives inside the plugin library.
//!
//! Trap: the plugin ignores the registry's verdict. A handler it refuses
//! (one that reports an XLA FFI version outside the 0.1-0.2 it accepts, as
//! jaxlib 0.10.2's 0.3 header would) registers "successfully" and the
//! program naming it then fails to compile with "No FFI handler registered
//! for ...". Our bindings are XLA FFI 0.2 for that reason (`make xla-ffi`).
//!
//! This module owns the handler ABI: the trampoline XLA calls (metadata
//! query, stage check, panics turned into errors, Rust errors into
//! `XLA_FFI_Error`s) and the safe view of a call frame that kernels get
//! ([`HostCall`]). It knows nothing of the kernels' mathematics, and nothing
//! outside `pjrt` sees an XLA FFI type.

use std::collections::HashSet;
use std::ffi::{CString, c_void};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use super::api::Api;
use super::error::{PjrtError, Result};
use super::ffi;
use super::xla_ffi as x;

/// The platform XLA:CPU's handler registry files host handlers under (its
/// canonical name; `Host` and `cpu` canonicalize to it).
const HOST_PLATFORM: &str = "host";

/// A kernel XLA can call on the host. Implemented only inside `pjrt` (its
/// kernels touch raw memory); see [`register_host_kernels`].
pub(crate) trait HostKernel: 'static {
    /// The `custom_call` target name; unique in the process.
    const TARGET: &'static str;
    /// Computes the results from the arguments. An `Err` fails the
    /// execution with its message (the program's outputs are then unusable).
    fn run(call: &mut HostCall<'_>) -> std::result::Result<(), String>;
}

/// Whether the plugin offers the PJRT FFI extension (XLA custom calls with
/// typed handlers). The pinned CPU plugin does; libtpu and the GPU plugins
/// are never asked (their programs stay pure StableHLO).
pub fn has_ffi_extension(api: Api) -> bool {
    ffi_extension(api).is_some()
}

fn ffi_extension(api: Api) -> Option<&'static x::PJRT_FFI_Extension> {
    let mut ext = api.raw().extension_start;
    while !ext.is_null() {
        // SAFETY: `ext` is a non-null link of the plugin's extension chain,
        // which lives as long as the (never unloaded) plugin; every link
        // starts with a PJRT_Extension_Base.
        let base = unsafe { &*ext };
        if base.type_ == ffi::PJRT_Extension_Type_PJRT_Extension_Type_FFI && base.struct_size >= x::PJRT_FFI_Extension_STRUCT_SIZE as usize {
            // SAFETY: a link of type FFI is a PJRT_FFI_Extension, and its
            // struct_size (checked just above) covers every field we read.
            return Some(unsafe { &*(ext as *const x::PJRT_FFI_Extension) });
        }
        ext = base.next;
    }
    None
}

fn registered() -> &'static Mutex<HashSet<(&'static Path, &'static str)>> {
    static REGISTERED: OnceLock<Mutex<HashSet<(&'static Path, &'static str)>>> = OnceLock::new();
    REGISTERED.get_or_init(|| Mutex::new(HashSet::new()))
}

/// Registers kernel `K` with the plugin behind `api` (a no-op if it already
/// is). Must happen before compiling a program that calls `K::TARGET`.
pub(crate) fn register<K: HostKernel>(api: Api) -> Result<()> {
    let mut done = registered().lock().unwrap_or_else(|p| p.into_inner());
    if done.contains(&(api.path(), K::TARGET)) {
        return Ok(());
    }
    let ext = ffi_extension(api).ok_or_else(|| PjrtError::InvalidArgument {
        op: "register host kernel",
        message: format!("the plugin {} has no PJRT FFI extension, so it cannot call host kernels such as {}", api.path().display(), K::TARGET),
    })?;
    let handler: unsafe extern "C" fn(*mut x::XLA_FFI_CallFrame) -> *mut x::XLA_FFI_Error = trampoline::<K>;
    let mut args = x::PJRT_FFI_Register_Handler_Args {
        struct_size: x::PJRT_FFI_Register_Handler_Args_STRUCT_SIZE as usize,
        target_name: K::TARGET.as_ptr().cast(),
        target_name_size: K::TARGET.len(),
        handler: handler as *mut c_void,
        platform_name: HOST_PLATFORM.as_ptr().cast(),
        platform_name_size: HOST_PLATFORM.len(),
        traits: 0,
    };
    // SAFETY: `args` is a complete PJRT_FFI_Register_Handler_Args (the size
    // the plugin expects, 52 bytes); the names are borrowed for the call only
    // (the plugin copies them) and `handler` is a typed XLA FFI handler
    // (`XLA_FFI_Handler*`) that lives for the whole process.
    unsafe { api.call("PJRT_FFI_Register_Handler", ext.register_handler, &mut args) }?;
    done.insert((api.path(), K::TARGET));
    tracing::debug!("registered host kernel {} with {}", K::TARGET, api.path().display());
    Ok(())
}

/// One buffer of a call: element type, dimensions (row-major), data.
pub(crate) struct HostBuffer<'a> {
    dtype: x::XLA_FFI_DataType,
    dims: &'a [i64],
    data: *mut c_void,
}

impl<'a> HostBuffer<'a> {
    pub fn dims(&self) -> &'a [i64] {
        self.dims
    }

    fn f32_len(&self) -> std::result::Result<usize, String> {
        if self.dtype != x::XLA_FFI_DataType_XLA_FFI_DataType_F32 {
            return Err(format!("expected an f32 buffer, got XLA FFI data type {}", self.dtype));
        }
        Ok(self.dims.iter().map(|&d| d.max(0) as usize).product())
    }
}

/// What a kernel sees of one call: its argument buffers (read only), its
/// result buffers (write only, distinct from the arguments: we declare no
/// aliasing) and its attributes by name.
pub(crate) struct HostCall<'a> {
    args: Vec<HostBuffer<'a>>,
    rets: Vec<HostBuffer<'a>>,
    attrs: &'a x::XLA_FFI_Attrs,
}

impl<'a> HostCall<'a> {
    pub fn arg_count(&self) -> usize {
        self.args.len()
    }

    pub fn ret_count(&self) -> usize {
        self.rets.len()
    }

    /// Dimensions of argument `i`.
    pub fn arg_dims(&self, i: usize) -> std::result::Result<&'a [i64], String> {
        self.args.get(i).map(|b| b.dims()).ok_or_else(|| format!("no argument {i} (the call has {})", self.args.len()))
    }

    /// Dimensions of result `i`.
    pub fn ret_dims(&self, i: usize) -> std::result::Result<&'a [i64], String> {
        self.rets.get(i).map(|b| b.dims()).ok_or_else(|| format!("no result {i} (the call has {})", self.rets.len()))
    }

    /// Argument `i` as f32 elements, readable while results are written
    /// (arguments are never written and no result aliases them).
    pub fn arg_f32(&self, i: usize) -> std::result::Result<&'a [f32], String> {
        let b = self.args.get(i).ok_or_else(|| format!("no argument {i} (the call has {})", self.args.len()))?;
        let n = b.f32_len().map_err(|e| format!("argument {i}: {e}"))?;
        // SAFETY: XLA passes `n` f32 elements at `data` (its shape, checked
        // f32 just above), alive and unchanged for the whole call.
        Ok(unsafe { std::slice::from_raw_parts(b.data as *const f32, n) })
    }

    /// Result `i` as f32 elements to fill. Taking `&mut self` keeps two
    /// results (or one twice) from being borrowed at once.
    pub fn ret_f32(&mut self, i: usize) -> std::result::Result<&mut [f32], String> {
        let b = self.rets.get(i).ok_or_else(|| format!("no result {i} (the call has {})", self.rets.len()))?;
        let n = b.f32_len().map_err(|e| format!("result {i}: {e}"))?;
        // SAFETY: XLA passes a result buffer of `n` f32 elements that no
        // argument aliases (we declare no output_operand_aliases) and only
        // this call writes; `&mut self` makes the borrow unique.
        Ok(unsafe { std::slice::from_raw_parts_mut(b.data as *mut f32, n) })
    }

    fn attr(&self, name: &str) -> Option<(x::XLA_FFI_AttrType, *mut c_void)> {
        let n = self.attrs.size.max(0) as usize;
        (0..n).find_map(|i| {
            // SAFETY: XLA passes `size` attribute names, types and values;
            // each name is a byte span valid for the call.
            unsafe {
                let span = &**self.attrs.names.add(i);
                let key = std::slice::from_raw_parts(span.ptr as *const u8, span.len);
                (key == name.as_bytes()).then(|| (*self.attrs.types.add(i), *self.attrs.attrs.add(i)))
            }
        })
    }

    fn scalar(&self, name: &str) -> std::result::Result<&x::XLA_FFI_Scalar, String> {
        match self.attr(name) {
            // SAFETY: an attribute of type SCALAR points to an XLA_FFI_Scalar.
            Some((t, p)) if t == x::XLA_FFI_AttrType_XLA_FFI_AttrType_SCALAR => Ok(unsafe { &*(p as *const x::XLA_FFI_Scalar) }),
            Some(_) => Err(format!("attribute `{name}` is not a scalar")),
            None => Err(format!("missing attribute `{name}`")),
        }
    }

    /// An `f32` scalar attribute (`name = 1.5 : f32`).
    pub fn attr_f32(&self, name: &str) -> std::result::Result<f32, String> {
        let s = self.scalar(name)?;
        if s.dtype != x::XLA_FFI_DataType_XLA_FFI_DataType_F32 {
            return Err(format!("attribute `{name}` must be f32 (XLA FFI data type {}), got type {}", x::XLA_FFI_DataType_XLA_FFI_DataType_F32, s.dtype));
        }
        // SAFETY: an f32 scalar's value points to one f32.
        Ok(unsafe { *(s.value as *const f32) })
    }

    /// An `i64` array attribute (`name = array<i64: 1, 2>`).
    pub fn attr_i64s(&self, name: &str) -> std::result::Result<&[i64], String> {
        match self.attr(name) {
            Some((t, p)) if t == x::XLA_FFI_AttrType_XLA_FFI_AttrType_ARRAY => {
                // SAFETY: an attribute of type ARRAY points to an XLA_FFI_Array.
                let a = unsafe { &*(p as *const x::XLA_FFI_Array) };
                if a.dtype != x::XLA_FFI_DataType_XLA_FFI_DataType_S64 {
                    return Err(format!("attribute `{name}` must be an array of i64, got XLA FFI data type {}", a.dtype));
                }
                // SAFETY: an s64 array holds `size` i64 values at `data`.
                Ok(unsafe { std::slice::from_raw_parts(a.data as *const i64, a.size) })
            }
            Some(_) => Err(format!("attribute `{name}` is not an array")),
            None => Err(format!("missing attribute `{name}`")),
        }
    }
}

/// Reads the buffers of one side of a call frame.
///
/// # Safety
/// `types`/`buffers` must hold `n` entries as XLA passes them for the call.
unsafe fn buffers<'a>(n: i64, types: *const u32, buffers: *mut *mut c_void, side: &str) -> std::result::Result<Vec<HostBuffer<'a>>, String> {
    (0..n.max(0) as usize)
        .map(|i| {
            // SAFETY: the caller guarantees `n` entries; BUFFER (1) is the
            // only argument and result type of this XLA FFI version, and a
            // buffer entry points to an XLA_FFI_Buffer with `rank` dims.
            unsafe {
                if *types.add(i) != x::XLA_FFI_ArgType_XLA_FFI_ArgType_BUFFER {
                    return Err(format!("{side} {i} is not a buffer (type {})", *types.add(i)));
                }
                let b = &*(*buffers.add(i) as *const x::XLA_FFI_Buffer);
                let dims: &'a [i64] = if b.rank <= 0 { &[] } else { std::slice::from_raw_parts(b.dims, b.rank as usize) };
                Ok(HostBuffer { dtype: b.dtype, dims, data: b.data })
            }
        })
        .collect()
}

/// The function XLA calls: answers the registration-time metadata query,
/// runs `K` on an execution, and never lets a panic cross into C.
unsafe extern "C" fn trampoline<K: HostKernel>(frame: *mut x::XLA_FFI_CallFrame) -> *mut x::XLA_FFI_Error {
    if frame.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: XLA passes a call frame valid for the duration of the call.
    let frame = unsafe { &*frame };
    // At registration XLA calls the handler once with a metadata extension
    // and nothing else, to learn which XLA FFI version it was built for.
    // SAFETY: a non-null extension_start is a chain of extension links.
    if !frame.extension_start.is_null() && unsafe { (*frame.extension_start).type_ } == x::XLA_FFI_Extension_Type_XLA_FFI_Extension_Metadata {
        // SAFETY: a link of type Metadata is an XLA_FFI_Metadata_Extension
        // whose `metadata` XLA owns for the call. We write only the fields
        // its struct_size says it has.
        unsafe {
            let ext = &*(frame.extension_start as *const x::XLA_FFI_Metadata_Extension);
            if let Some(metadata) = ext.metadata.as_mut() {
                metadata.api_version.major_version = x::XLA_FFI_API_MAJOR as i32;
                metadata.api_version.minor_version = x::XLA_FFI_API_MINOR as i32;
                if metadata.struct_size >= x::XLA_FFI_Metadata_STRUCT_SIZE as usize {
                    metadata.traits = 0;
                }
            }
        }
        return std::ptr::null_mut();
    }
    if frame.stage != x::XLA_FFI_ExecutionStage_XLA_FFI_ExecutionStage_EXECUTE {
        return std::ptr::null_mut();
    }
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> std::result::Result<(), String> {
        // SAFETY: the frame's argument and result lists hold `size` entries
        // each, valid for the call.
        let (args, rets) = unsafe {
            (buffers(frame.args.size, frame.args.types, frame.args.args, "argument")?, buffers(frame.rets.size, frame.rets.types, frame.rets.rets, "result")?)
        };
        let mut call = HostCall { args, rets, attrs: &frame.attrs };
        K::run(&mut call)
    }));
    let message = match outcome {
        Ok(Ok(())) => return std::ptr::null_mut(),
        Ok(Err(message)) => format!("host kernel {}: {message}", K::TARGET),
        Err(_) => format!("host kernel {} panicked", K::TARGET),
    };
    error(frame.api, &message)
}

/// An XLA_FFI_Error carrying `message` (code INTERNAL), made by XLA's API.
fn error(api: *const x::XLA_FFI_Api, message: &str) -> *mut x::XLA_FFI_Error {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    // SAFETY: `api` is the XLA FFI API table of the call frame (or null);
    // Error_Create copies the message into the error it returns.
    let create = unsafe { api.as_ref() }.and_then(|a| a.XLA_FFI_Error_Create);
    match create {
        Some(create) => {
            let mut args = x::XLA_FFI_Error_Create_Args {
                struct_size: x::XLA_FFI_Error_Create_Args_STRUCT_SIZE as usize,
                extension_start: std::ptr::null_mut(),
                message: text.as_ptr(),
                errc: x::XLA_FFI_Error_Code_XLA_FFI_Error_Code_INTERNAL,
            };
            // SAFETY: `args` is complete and `text` outlives the call.
            unsafe { create(&mut args) }
        }
        None => {
            // Returning null would report success with garbage outputs.
            eprintln!("{message} (and XLA gave no way to report it)");
            std::process::abort();
        }
    }
}

/// `y = x * scale + shift` elementwise on f32: the smallest kernel that
/// proves the whole path (registration, attributes, buffers, errors) through
/// the real plugin.
pub(crate) struct ScaleShift;

impl HostKernel for ScaleShift {
    const TARGET: &'static str = "emotionet_scale_shift";

    fn run(call: &mut HostCall<'_>) -> std::result::Result<(), String> {
        if call.arg_count() != 1 || call.ret_count() != 1 {
            return Err(format!("takes 1 argument and 1 result, got {} and {}", call.arg_count(), call.ret_count()));
        }
        if call.arg_dims(0)? != call.ret_dims(0)? {
            return Err(format!("argument shape {:?} differs from result shape {:?}", call.arg_dims(0)?, call.ret_dims(0)?));
        }
        let (scale, shift) = (call.attr_f32("scale")?, call.attr_f32("shift")?);
        let x = call.arg_f32(0)?;
        let y = call.ret_f32(0)?;
        for (y, x) in y.iter_mut().zip(x) {
            *y = x * scale + shift;
        }
        Ok(())
    }
}

/// Registers every host kernel this crate has with the plugin behind `api`
/// (call before compiling a CPU program that uses one) and returns their
/// target names: the oneDNN convolutions only where oneDNN loads.
pub fn register_host_kernels(api: Api) -> Result<Vec<&'static str>> {
    use super::onednn::{ConvBackwardData, ConvBackwardWeights, ConvForward};
    register::<ScaleShift>(api)?;
    let mut names = vec![ScaleShift::TARGET];
    if super::onednn::available().is_some() {
        register::<ConvForward>(api)?;
        register::<ConvBackwardData>(api)?;
        register::<ConvBackwardWeights>(api)?;
        names.extend([ConvForward::TARGET, ConvBackwardData::TARGET, ConvBackwardWeights::TARGET]);
    }
    Ok(names)
}
