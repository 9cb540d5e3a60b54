//! oneDNN convolutions as host kernels (XLA custom calls on the CPU plugin).
//!
//! oneDNN is Debian's `libdnnl` 2.6, opened at run time (`libdnnl.so.2`,
//! never linked): where it is absent, [`available`] says so in one log line
//! and callers keep XLA's own convolution ops. Three kernels, all on XLA's
//! layouts (NHWC activations, HWIO kernels, row-major), f32, any stride and
//! explicit padding, no dilation:
//! - `emotionet_onednn_conv_fwd`: `(x, w) -> y`;
//! - `emotionet_onednn_conv_bwd_data`: `(dy, w) -> dx` (the input gradient);
//! - `emotionet_onednn_conv_bwd_weights`: `(x, dy) -> dw` (the kernel gradient).
//!
//! Attributes (`backend_config`): `strides`, `pad_lo`, `pad_hi`, each
//! `array<i64: along H, along W>`. Each distinct call (kind, shapes,
//! window) gets a plan built on first use: oneDNN picks its preferred
//! (blocked) layouts, and reorders convert from and to XLA's buffers around
//! the primitive. Plans are kept for the process and locked while they run
//! (a plan owns its scratch buffers); different plans run concurrently.
//!
//! This module owns every oneDNN call. It knows nothing of models.

use std::collections::HashMap;
use std::ffi::{CStr, c_void};
use std::sync::{Arc, Mutex, OnceLock};

use super::custom_call::{HostCall, HostKernel};
use super::dnnl_ffi as d;

/// The library name searched on the usual paths (Debian: libdnnl2).
const LIBRARY: &str = "libdnnl.so.2";

/// The loaded library and its CPU engine.
struct OneDnn {
    lib: d::Dnnl,
    engine: d::dnnl_engine_t,
    version: String,
}

// SAFETY: oneDNN's engine and function table are safe to use from any
// thread (oneDNN documents engines as thread-safe; primitives are only run
// under their plan's lock, see `Plan`).
unsafe impl Send for OneDnn {}
// SAFETY: as above.
unsafe impl Sync for OneDnn {}

fn onednn() -> Option<&'static OneDnn> {
    static ONEDNN: OnceLock<Option<OneDnn>> = OnceLock::new();
    ONEDNN
        .get_or_init(|| match load() {
            Ok(lib) => Some(lib),
            Err(reason) => {
                tracing::info!("oneDNN is not available ({reason}); CPU convolutions stay XLA ops");
                None
            }
        })
        .as_ref()
}

fn load() -> Result<OneDnn, String> {
    // SAFETY: loading Debian's oneDNN runs its initializers, which is what
    // the library is for; every bound function is resolved here (bindgen's
    // --dynamic-link-require-all), so a missing one fails the load instead
    // of a later call.
    let lib = unsafe { d::Dnnl::new(LIBRARY) }.map_err(|e| format!("{LIBRARY}: {e}"))?;
    // SAFETY: dnnl_version returns a pointer to a static struct.
    let v = unsafe { lib.dnnl_version().as_ref() }.ok_or("dnnl_version returned null")?;
    if v.major != 2 {
        return Err(format!("{LIBRARY} is oneDNN {}.{}.{}; these bindings are for the 2.x C API", v.major, v.minor, v.patch));
    }
    let version = format!("{}.{}.{}", v.major, v.minor, v.patch);
    let mut engine: d::dnnl_engine_t = std::ptr::null_mut();
    // SAFETY: creating CPU engine 0 into a local out-pointer.
    check(unsafe { lib.dnnl_engine_create(&mut engine, d::dnnl_engine_kind_t_dnnl_cpu, 0) }, "dnnl_engine_create")?;
    Ok(OneDnn { lib, engine, version })
}

/// oneDNN's version (`2.6.3`) when the library loads here, or `None` (then
/// the XLA ops are used, and one log line said why).
pub fn available() -> Option<String> {
    onednn().map(|o| o.version.clone())
}

fn check(status: d::dnnl_status_t, what: &str) -> Result<(), String> {
    if status == d::dnnl_status_t_dnnl_success { Ok(()) } else { Err(format!("{what} failed (oneDNN status {status})")) }
}

/// Which convolution a kernel computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    Forward,
    BackwardData,
    BackwardWeights,
}

/// Everything that makes two calls share a plan.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    kind: Kind,
    /// `[n, h, w, c]` of the convolution's input, `[kh, kw, c, o]` of its
    /// kernel, `[n, oh, ow, o]` of its output.
    x: [i64; 4],
    w: [i64; 4],
    y: [i64; 4],
    strides: [i64; 2],
    pad_lo: [i64; 2],
    pad_hi: [i64; 2],
}

/// A 64-byte aligned f32 buffer for oneDNN's own layouts and scratchpad.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(bytes: usize) -> Result<Aligned, String> {
        let layout = std::alloc::Layout::from_size_align(bytes.max(64), 64).map_err(|e| e.to_string())?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            return Err(format!("could not allocate {bytes} bytes"));
        }
        Ok(Aligned { ptr, layout })
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// One operand of a plan: a memory object over XLA's buffer (its handle is
/// set per call) and, when oneDNN wants another layout, a memory object in
/// that layout with the reorder between them.
struct Operand {
    user: d::dnnl_memory_t,
    inner: Option<(d::dnnl_memory_t, d::dnnl_primitive_t, Aligned)>,
}

/// A built convolution: the primitive, its stream, its operands in the
/// order (input 0, input 1, output), and its scratchpad.
struct Plan {
    primitive: d::dnnl_primitive_t,
    stream: d::dnnl_stream_t,
    args: [i32; 3],
    operands: [Operand; 3],
    scratchpad: Option<(d::dnnl_memory_t, Aligned)>,
    implementation: String,
}

// SAFETY: a plan's oneDNN objects are only used by one thread at a time
// (each plan sits behind a Mutex) and live until the process exits.
unsafe impl Send for Plan {}

type Plans = Mutex<HashMap<Key, Arc<Mutex<Plan>>>>;

fn plans() -> &'static Plans {
    static PLANS: OnceLock<Plans> = OnceLock::new();
    PLANS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// A plain (row-major XLA layout) f32 memory descriptor. `dims` are in
/// oneDNN's order (N, C, H, W or O, I, H, W); `tag` says how they lie.
fn plain_md(o: &OneDnn, dims: [i64; 4], tag: d::dnnl_format_tag_t) -> Result<d::dnnl_memory_desc_t, String> {
    let mut md = d::dnnl_memory_desc_t::default();
    let mut full: d::dnnl_dims_t = [0; 12];
    full[..4].copy_from_slice(&dims);
    // SAFETY: `md` and `full` are valid locals; 4 dims are read.
    check(unsafe { o.lib.dnnl_memory_desc_init_by_tag(&mut md, 4, full.as_ptr(), d::dnnl_data_type_t_dnnl_f32, tag) }, "dnnl_memory_desc_init_by_tag")?;
    Ok(md)
}

fn any_md(o: &OneDnn, dims: [i64; 4]) -> Result<d::dnnl_memory_desc_t, String> {
    plain_md(o, dims, d::dnnl_format_tag_t_dnnl_format_tag_any)
}

fn dims12(v: [i64; 2]) -> d::dnnl_dims_t {
    let mut full: d::dnnl_dims_t = [0; 12];
    full[..2].copy_from_slice(&v);
    full
}

/// A memory object over `md`, with no data yet (handle set per call) when
/// `data` is null.
fn memory(o: &OneDnn, md: &d::dnnl_memory_desc_t, data: *mut c_void) -> Result<d::dnnl_memory_t, String> {
    let mut m: d::dnnl_memory_t = std::ptr::null_mut();
    // SAFETY: `md` is an initialized descriptor; a null handle means no
    // buffer yet (oneDNN's DNNL_MEMORY_NONE), set before any execution.
    check(unsafe { o.lib.dnnl_memory_create(&mut m, md, o.engine, data) }, "dnnl_memory_create")?;
    Ok(m)
}

fn query_md(o: &OneDnn, pd: d::dnnl_primitive_desc_t, what: d::dnnl_query_t) -> Result<d::dnnl_memory_desc_t, String> {
    // SAFETY: `pd` is a live primitive descriptor; the returned descriptor
    // belongs to it, so it is copied out before `pd` may go away.
    let md = unsafe { o.lib.dnnl_primitive_desc_query_md(pd, what, 0).as_ref() }.ok_or("the primitive has no such memory")?;
    Ok(*md)
}

/// Builds the operand for XLA's layout `user_md` when the primitive wants
/// `inner_md`; `to_inner` says which way the reorder goes.
fn operand(o: &OneDnn, user_md: &d::dnnl_memory_desc_t, inner_md: &d::dnnl_memory_desc_t, to_inner: bool) -> Result<Operand, String> {
    let user = memory(o, user_md, std::ptr::null_mut())?;
    // SAFETY: both descriptors are initialized.
    if unsafe { o.lib.dnnl_memory_desc_equal(user_md, inner_md) } != 0 {
        return Ok(Operand { user, inner: None });
    }
    // SAFETY: as above; the size is what the layout occupies.
    let buffer = Aligned::new(unsafe { o.lib.dnnl_memory_desc_get_size(inner_md) })?;
    let inner = memory(o, inner_md, buffer.ptr.cast())?;
    let (from, to) = if to_inner { (user_md, inner_md) } else { (inner_md, user_md) };
    let mut rpd: d::dnnl_primitive_desc_t = std::ptr::null_mut();
    // SAFETY: two initialized descriptors on our CPU engine, default attributes.
    check(unsafe { o.lib.dnnl_reorder_primitive_desc_create(&mut rpd, from, o.engine, to, o.engine, std::ptr::null()) }, "dnnl_reorder_primitive_desc_create")?;
    let mut reorder: d::dnnl_primitive_t = std::ptr::null_mut();
    // SAFETY: `rpd` is the live descriptor just made; destroyed after use.
    let status = unsafe { o.lib.dnnl_primitive_create(&mut reorder, rpd) };
    // SAFETY: the primitive keeps what it needs of its descriptor.
    unsafe { o.lib.dnnl_primitive_desc_destroy(rpd) };
    check(status, "dnnl_primitive_create (reorder)")?;
    Ok(Operand { user, inner: Some((inner, reorder, buffer)) })
}

fn build(o: &OneDnn, key: &Key) -> Result<Plan, String> {
    let [n, h, w, c] = key.x;
    let [kh, kw, _, oc] = key.w;
    let [_, oh, ow, _] = key.y;
    // oneDNN's logical dims: src N,C,H,W; weights O,I,H,W; dst N,O,H,W.
    let (src_dims, wei_dims, dst_dims) = ([n, c, h, w], [oc, c, kh, kw], [n, oc, oh, ow]);
    let src_user = plain_md(o, src_dims, d::dnnl_format_tag_t_dnnl_nhwc)?;
    let wei_user = plain_md(o, wei_dims, d::dnnl_format_tag_t_dnnl_hwio)?;
    let dst_user = plain_md(o, dst_dims, d::dnnl_format_tag_t_dnnl_nhwc)?;
    let (src_any, wei_any, dst_any) = (any_md(o, src_dims)?, any_md(o, wei_dims)?, any_md(o, dst_dims)?);
    let (strides, pad_lo, pad_hi) = (dims12(key.strides), dims12(key.pad_lo), dims12(key.pad_hi));
    let alg = d::dnnl_alg_kind_t_dnnl_convolution_direct;
    let mut desc = d::dnnl_convolution_desc_t::default();
    // The forward descriptor, always: backward primitives need it as a hint.
    // SAFETY: every descriptor and dims array is an initialized local.
    check(
        unsafe {
            o.lib.dnnl_convolution_forward_desc_init(
                &mut desc,
                d::dnnl_prop_kind_t_dnnl_forward_training,
                alg,
                &src_any,
                &wei_any,
                std::ptr::null(),
                &dst_any,
                strides.as_ptr(),
                pad_lo.as_ptr(),
                pad_hi.as_ptr(),
            )
        },
        "dnnl_convolution_forward_desc_init",
    )?;
    let mut fwd_pd: d::dnnl_primitive_desc_t = std::ptr::null_mut();
    // SAFETY: `desc` is initialized; default attributes; no hint.
    check(
        unsafe {
            o.lib.dnnl_primitive_desc_create(&mut fwd_pd, (&desc as *const d::dnnl_convolution_desc_t).cast(), std::ptr::null(), o.engine, std::ptr::null())
        },
        "dnnl_primitive_desc_create (forward)",
    )?;
    let pd = match key.kind {
        Kind::Forward => fwd_pd,
        Kind::BackwardData | Kind::BackwardWeights => {
            let mut bdesc = d::dnnl_convolution_desc_t::default();
            // SAFETY: as for the forward descriptor.
            let status = unsafe {
                if key.kind == Kind::BackwardData {
                    o.lib.dnnl_convolution_backward_data_desc_init(
                        &mut bdesc,
                        alg,
                        &src_any,
                        &wei_any,
                        &dst_any,
                        strides.as_ptr(),
                        pad_lo.as_ptr(),
                        pad_hi.as_ptr(),
                    )
                } else {
                    o.lib.dnnl_convolution_backward_weights_desc_init(
                        &mut bdesc,
                        alg,
                        &src_any,
                        &wei_any,
                        std::ptr::null(),
                        &dst_any,
                        strides.as_ptr(),
                        pad_lo.as_ptr(),
                        pad_hi.as_ptr(),
                    )
                }
            };
            check(status, "dnnl_convolution_backward_desc_init")?;
            let mut bpd: d::dnnl_primitive_desc_t = std::ptr::null_mut();
            // SAFETY: `bdesc` is initialized and `fwd_pd` is live (the hint).
            let status =
                unsafe { o.lib.dnnl_primitive_desc_create(&mut bpd, (&bdesc as *const d::dnnl_convolution_desc_t).cast(), std::ptr::null(), o.engine, fwd_pd) };
            // SAFETY: the backward descriptor keeps what it needs of its hint.
            unsafe { o.lib.dnnl_primitive_desc_destroy(fwd_pd) };
            check(status, "dnnl_primitive_desc_create (backward)")?;
            bpd
        }
    };
    let result = (|| {
        use d::{DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_SRC, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_SRC, DNNL_ARG_WEIGHTS};
        let q = |what| query_md(o, pd, what);
        let (args, operands) = match key.kind {
            Kind::Forward => (
                [DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST],
                [
                    operand(o, &src_user, &q(d::dnnl_query_t_dnnl_query_src_md)?, true)?,
                    operand(o, &wei_user, &q(d::dnnl_query_t_dnnl_query_weights_md)?, true)?,
                    operand(o, &dst_user, &q(d::dnnl_query_t_dnnl_query_dst_md)?, false)?,
                ],
            ),
            Kind::BackwardData => (
                [DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC],
                [
                    operand(o, &dst_user, &q(d::dnnl_query_t_dnnl_query_diff_dst_md)?, true)?,
                    operand(o, &wei_user, &q(d::dnnl_query_t_dnnl_query_weights_md)?, true)?,
                    operand(o, &src_user, &q(d::dnnl_query_t_dnnl_query_diff_src_md)?, false)?,
                ],
            ),
            Kind::BackwardWeights => (
                [DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS],
                [
                    operand(o, &src_user, &q(d::dnnl_query_t_dnnl_query_src_md)?, true)?,
                    operand(o, &dst_user, &q(d::dnnl_query_t_dnnl_query_diff_dst_md)?, true)?,
                    operand(o, &wei_user, &q(d::dnnl_query_t_dnnl_query_diff_weights_md)?, false)?,
                ],
            ),
        };
        let scratch_md = q(d::dnnl_query_t_dnnl_query_scratchpad_md)?;
        // SAFETY: an initialized descriptor (size 0 when none is needed).
        let scratch_size = unsafe { o.lib.dnnl_memory_desc_get_size(&scratch_md) };
        let scratchpad = if scratch_size > 0 {
            let buffer = Aligned::new(scratch_size)?;
            Some((memory(o, &scratch_md, buffer.ptr.cast())?, buffer))
        } else {
            None
        };
        let mut primitive: d::dnnl_primitive_t = std::ptr::null_mut();
        // SAFETY: `pd` is live; the primitive copies what it needs.
        check(unsafe { o.lib.dnnl_primitive_create(&mut primitive, pd) }, "dnnl_primitive_create")?;
        let mut info: *const std::os::raw::c_char = std::ptr::null();
        // SAFETY: impl_info_str writes a pointer to a string owned by `pd`,
        // copied out before `pd` is destroyed.
        let implementation = unsafe {
            o.lib.dnnl_primitive_desc_query(pd, d::dnnl_query_t_dnnl_query_impl_info_str, 0, (&mut info as *mut *const std::os::raw::c_char).cast());
            if info.is_null() { String::from("?") } else { CStr::from_ptr(info).to_string_lossy().into_owned() }
        };
        let mut stream: d::dnnl_stream_t = std::ptr::null_mut();
        // SAFETY: a stream on our live engine.
        check(unsafe { o.lib.dnnl_stream_create(&mut stream, o.engine, d::dnnl_stream_flags_t_dnnl_stream_default_flags) }, "dnnl_stream_create")?;
        Ok(Plan { primitive, stream, args: args.map(|a| a as i32), operands, scratchpad, implementation })
    })();
    // SAFETY: the primitive (if made) keeps what it needs of `pd`.
    unsafe { o.lib.dnnl_primitive_desc_destroy(pd) };
    result
}

impl Plan {
    /// Runs the plan on XLA's buffers: reorders in, the convolution,
    /// reorder out, then waits for the stream.
    ///
    /// # Safety
    /// `inputs` and `output` must point to buffers of exactly the plan's
    /// shapes in XLA's layouts, valid for the call, the output distinct
    /// from the inputs.
    unsafe fn run(&mut self, o: &OneDnn, inputs: [*const c_void; 2], output: *mut c_void) -> Result<(), String> {
        let exec = |primitive: d::dnnl_primitive_t, stream, args: &[d::dnnl_exec_arg_t]| {
            // SAFETY: every memory in `args` has its buffer set; the
            // primitive runs on its own plan's stream under the plan's lock.
            check(unsafe { o.lib.dnnl_primitive_execute(primitive, stream, args.len() as i32, args.as_ptr()) }, "dnnl_primitive_execute")
        };
        let handles = [inputs[0] as *mut c_void, inputs[1] as *mut c_void, output];
        let mut conv_args = Vec::with_capacity(4);
        for (i, op) in self.operands.iter().enumerate() {
            // SAFETY: `handles[i]` is XLA's buffer for this operand (the
            // caller's contract); oneDNN reads inputs and writes the output.
            check(unsafe { o.lib.dnnl_memory_set_data_handle(op.user, handles[i]) }, "dnnl_memory_set_data_handle")?;
            let inner = match &op.inner {
                Some((inner, reorder, _)) if i < 2 => {
                    exec(
                        *reorder,
                        self.stream,
                        &[
                            d::dnnl_exec_arg_t { arg: d::DNNL_ARG_FROM as i32, memory: op.user },
                            d::dnnl_exec_arg_t { arg: d::DNNL_ARG_TO as i32, memory: *inner },
                        ],
                    )?;
                    *inner
                }
                Some((inner, _, _)) => *inner,
                None => op.user,
            };
            conv_args.push(d::dnnl_exec_arg_t { arg: self.args[i], memory: inner });
        }
        if let Some((scratch, _)) = &self.scratchpad {
            conv_args.push(d::dnnl_exec_arg_t { arg: d::DNNL_ARG_SCRATCHPAD as i32, memory: *scratch });
        }
        exec(self.primitive, self.stream, &conv_args)?;
        if let Some((inner, reorder, _)) = &self.operands[2].inner {
            exec(
                *reorder,
                self.stream,
                &[
                    d::dnnl_exec_arg_t { arg: d::DNNL_ARG_FROM as i32, memory: *inner },
                    d::dnnl_exec_arg_t { arg: d::DNNL_ARG_TO as i32, memory: self.operands[2].user },
                ],
            )?;
        }
        // SAFETY: our live stream.
        check(unsafe { o.lib.dnnl_stream_wait(self.stream) }, "dnnl_stream_wait")
    }
}

fn two(call: &HostCall<'_>, name: &str) -> Result<[i64; 2], String> {
    let v = call.attr_i64s(name)?;
    <[i64; 2]>::try_from(v).map_err(|_| format!("attribute `{name}` must have 2 values (H, W), got {v:?}"))
}

fn four(dims: &[i64], what: &str) -> Result<[i64; 4], String> {
    <[i64; 4]>::try_from(dims).map_err(|_| format!("{what} must have rank 4, got dims {dims:?}"))
}

/// Checks the shapes of one call against each other and runs its plan.
fn run_conv(kind: Kind, call: &mut HostCall<'_>) -> Result<(), String> {
    let o = onednn().ok_or("oneDNN is not loaded in this process")?;
    if call.arg_count() != 2 || call.ret_count() != 1 {
        return Err(format!("takes 2 arguments and 1 result, got {} and {}", call.arg_count(), call.ret_count()));
    }
    let (a, b, r) = (four(call.arg_dims(0)?, "argument 0")?, four(call.arg_dims(1)?, "argument 1")?, four(call.ret_dims(0)?, "the result")?);
    let (x, w, y) = match kind {
        Kind::Forward => (a, b, r),
        Kind::BackwardData => (r, b, a),
        Kind::BackwardWeights => (a, r, b),
    };
    let (strides, pad_lo, pad_hi) = (two(call, "strides")?, two(call, "pad_lo")?, two(call, "pad_hi")?);
    // The output size the window implies must be the one XLA gave us.
    let out = |i: usize| {
        let s = strides[i];
        if s < 1 { None } else { Some((x[1 + i] + pad_lo[i] + pad_hi[i] - w[i]) / s + 1) }
    };
    if x[0] != y[0] || x[3] != w[2] || w[3] != y[3] || out(0) != Some(y[1]) || out(1) != Some(y[2]) || pad_lo.iter().chain(&pad_hi).any(|&p| p < 0) {
        return Err(format!("shapes disagree: input {x:?}, kernel {w:?}, output {y:?}, strides {strides:?}, padding {pad_lo:?}/{pad_hi:?}"));
    }
    // Both inputs must be f32 buffers of their shapes (checked by the typed
    // accessors), and the result too.
    let (in0, in1) = (call.arg_f32(0)?.as_ptr().cast::<c_void>(), call.arg_f32(1)?.as_ptr().cast::<c_void>());
    let output = call.ret_f32(0)?.as_mut_ptr().cast::<c_void>();
    let key = Key { kind, x, w, y, strides, pad_lo, pad_hi };
    let plan = {
        let mut plans = plans().lock().unwrap_or_else(|p| p.into_inner());
        match plans.get(&key) {
            Some(plan) => plan.clone(),
            None => {
                let plan = Arc::new(Mutex::new(build(o, &key)?));
                tracing::debug!("oneDNN plan {key:?}: {}", plan.lock().unwrap_or_else(|p| p.into_inner()).implementation);
                plans.insert(key, plan.clone());
                plan
            }
        }
    };
    let mut plan = plan.lock().unwrap_or_else(|p| p.into_inner());
    // SAFETY: the three buffers are XLA's, of the shapes checked above (the
    // plan was built for exactly these), f32, and the result aliases no
    // argument.
    unsafe { plan.run(o, [in0, in1], output) }
}

pub(crate) struct ConvForward;
pub(crate) struct ConvBackwardData;
pub(crate) struct ConvBackwardWeights;

impl HostKernel for ConvForward {
    const TARGET: &'static str = "emotionet_onednn_conv_fwd";
    fn run(call: &mut HostCall<'_>) -> Result<(), String> {
        run_conv(Kind::Forward, call)
    }
}

impl HostKernel for ConvBackwardData {
    const TARGET: &'static str = "emotionet_onednn_conv_bwd_data";
    fn run(call: &mut HostCall<'_>) -> Result<(), String> {
        run_conv(Kind::BackwardData, call)
    }
}

impl HostKernel for ConvBackwardWeights {
    const TARGET: &'static str = "emotionet_onednn_conv_bwd_weights";
    fn run(call: &mut HostCall<'_>) -> Result<(), String> {
        run_conv(Kind::BackwardWeights, call)
    }
}

/// The implementations oneDNN chose for the plans built so far, e.g.
/// `emotionet_onednn_conv_fwd [100, 50, 50, 32]x[5, 5, 32, 64]: jit:avx512_core`.
pub fn implementations() -> Vec<String> {
    let plans = plans().lock().unwrap_or_else(|p| p.into_inner());
    let mut out: Vec<String> = plans
        .iter()
        .map(|(k, p)| {
            let target = match k.kind {
                Kind::Forward => ConvForward::TARGET,
                Kind::BackwardData => ConvBackwardData::TARGET,
                Kind::BackwardWeights => ConvBackwardWeights::TARGET,
            };
            format!("{target} {:?}x{:?}: {}", k.x, k.w, p.lock().unwrap_or_else(|p| p.into_inner()).implementation)
        })
        .collect();
    out.sort();
    out
}
