//! The one door to XLA: a safe wrapper over the PJRT C API.
//!
//! This module owns every `unsafe` block of the crate. It loads a plugin
//! (`dlopen` + `GetPjrtApi`), checks its API version against the header we
//! were generated from (0.81), creates clients, compiles StableHLO, moves
//! buffers between host and device and runs executables on one device or
//! replicated over several; and compiles for a device topology that is not
//! here (libtpu on a machine without a TPU: `topology`).
//!
//! Invariants the rest of the crate relies on:
//! - every C handle has exactly one Rust owner, freed once in `Drop`;
//!   buffers and executables hold the client (`Arc`) so it outlives them;
//! - every `PJRT_Error*` becomes a [`PjrtError`] in `Api::check`, and is freed;
//! - sizes, dtypes, device ids, compile options and client options are
//!   validated on the Rust side first, because the plugins abort the process
//!   on some misuse instead of returning an error;
//! - a donated buffer can never be read again: using it is an error.
//!
//! It must not know about graphs, models or training.

/// Calls the plugin function named like its `PJRT_Api` field; must be used
/// inside an `unsafe` block whose `// SAFETY:` comment covers the arguments.
///
/// Two shapes: `call!(api, PJRT_F, &mut args)` with an argument struct the
/// caller built, or one expression per C call with its inputs named,
/// `call!(api, PJRT_F, PJRT_F_Args { input: value })`, which builds the
/// struct (sized, the rest zeroed) and returns it filled in, so the caller
/// reads the outputs by name: `call!(...)?.output`.
macro_rules! call {
    ($api:expr, $f:ident, $args_type:ident { $($field:ident : $value:expr),* $(,)? }) => {{
        let mut args = crate::pjrt::ffi::$args_type { $($field: $value,)* ..crate::pjrt::ffi::$args_type::sized() };
        $api.call(stringify!($f), $api.raw().$f, &mut args).map(|()| args)
    }};
    ($api:expr, $f:ident, $args:expr) => {
        $api.call(stringify!($f), $api.raw().$f, $args)
    };
}

mod api;
mod backend;
mod buffer;
mod client;
mod compile;
mod cuda;
mod custom_call;
#[allow(unsafe_op_in_unsafe_fn)]
mod dnnl_ffi;
mod error;
mod executable;
#[allow(unsafe_op_in_unsafe_fn)]
mod ffi;
mod onednn;
mod topology;
#[allow(unsafe_op_in_unsafe_fn)]
mod xla_ffi;

pub use crate::program::{Program, TensorSpec};
pub use api::{Api, HEADER_VERSION, NamedValue};
pub use backend::{ALLOW_STAND_IN_ENV, Backend, StandIn, StandIns, check_platform, deps_dir, plugin_library, resolve_plugin};
pub use buffer::{Buffer, ReadyEvent};
pub use client::{Client, ClientOptions, DeviceInfo};
pub use compile::{CompileOptions, OptionOverride};
pub use cuda::{CudaPlugin, GpuProblem, Preloaded, minimum_driver, preload};
pub use custom_call::{has_ffi_extension, register_host_kernels};
pub use error::{ErrorCode, PjrtError, Result};
pub use executable::LoadedExecutable;
pub use onednn::{available as onednn_version, implementations as onednn_implementations};
pub use topology::{CompiledExecutable, CostAnalysis, LIBTPU_COMPILE_ONLY_ENV, MemoryStats, Topology, TopologyDevice, compile_only_env_missing};

/// Loads the plugin for `backend` (or `plugin`, if given) and creates a
/// client. A GPU plugin first gets its CUDA libraries preloaded, and a
/// failure to start names what the host lacks (see `cuda`). The client must
/// then run the platform `backend` means ([`check_platform`]). A stand-in
/// description is loaded only under `EMOTIONET_ALLOW_STAND_IN=1`
/// ([`StandIns::from_env`]).
pub fn connect(backend: Backend, plugin: Option<&std::path::Path>, options: &ClientOptions) -> Result<Client> {
    connect_with(backend, plugin, options, StandIns::from_env())
}

/// [`connect`], with whether stand-in descriptions may be loaded said by the
/// caller instead of the environment.
pub fn connect_with(backend: Backend, plugin: Option<&std::path::Path>, options: &ClientOptions, stand_ins: StandIns) -> Result<Client> {
    let path = resolve_plugin(backend, plugin)?;
    let (library, stand_in) = plugin_library(&path, stand_ins)?;
    let api = Api::load(&library)?;
    let client = match backend {
        Backend::Gpu => cuda::connect(api, options)?,
        Backend::Cpu | Backend::Tpu => Client::new(api, options)?,
    };
    check_platform(backend, client.platform_name(), &path, stand_in.as_ref())?;
    Ok(client)
}
