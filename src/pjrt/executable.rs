//! Programs, compiled executables and execution (one device or replicated).

use std::sync::Arc;

use super::buffer::Buffer;
use super::client::{Client, ClientInner, dtype_of};
use super::compile::CompileOptions;
use super::error::{PjrtError, Result};
use super::ffi::{self, StructSize};
use crate::program::{Program, TensorSpec};

/// A compiled program loaded on its devices.
pub struct LoadedExecutable {
    client: Arc<ClientInner>,
    raw: *mut ffi::PJRT_LoadedExecutable,
    name: String,
    /// Global ids of the devices it runs on, one per replica, in replica order.
    device_ids: Vec<i32>,
    inputs: Option<Vec<TensorSpec>>,
    outputs: Vec<TensorSpec>,
}

// SAFETY: loaded executables may be executed from any thread (PJRT C API
// contract); our own fields are immutable after compilation.
unsafe impl Send for LoadedExecutable {}
// SAFETY: as above.
unsafe impl Sync for LoadedExecutable {}

impl Drop for LoadedExecutable {
    fn drop(&mut self) {
        let mut args = ffi::PJRT_LoadedExecutable_Destroy_Args { executable: self.raw, ..ffi::PJRT_LoadedExecutable_Destroy_Args::sized() };
        // SAFETY: we own the handle and destroy it exactly once, before the
        // client (kept alive by `self.client`).
        if let Err(e) = unsafe { call!(self.client.api, PJRT_LoadedExecutable_Destroy, &mut args) } {
            tracing::warn!("destroying PJRT executable {}: {e}", self.name);
        }
    }
}

impl std::fmt::Debug for LoadedExecutable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoadedExecutable({}, devices {:?}, {} outputs)", self.name, self.device_ids, self.outputs.len())
    }
}

impl LoadedExecutable {
    pub(crate) fn compile(client: &Client, program: &Program, options: &CompileOptions) -> Result<Self> {
        let api = client.inner.api;
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
        let mut args = ffi::PJRT_Client_Compile_Args {
            client: client.inner.raw,
            program: &raw_program,
            compile_options: proto.as_ptr().cast(),
            compile_options_size: proto.len(),
            ..ffi::PJRT_Client_Compile_Args::sized()
        };
        // SAFETY: program text, format and options bytes live until the call
        // returns; the options were validated by `Client::compile` so none of
        // the plugin's fatal checks can fire.
        unsafe { call!(api, PJRT_Client_Compile, &mut args) }.map_err(|e| match e {
            PjrtError::Plugin { code, message, .. } => PjrtError::Plugin { op: "compile", code, message: format!("{}: {message}", program.name()) },
            other => other,
        })?;
        let mut exe = LoadedExecutable {
            client: client.inner.clone(),
            raw: args.executable,
            name: program.name().to_string(),
            device_ids: vec![],
            inputs: program.inputs().map(<[TensorSpec]>::to_vec),
            outputs: vec![],
        };
        exe.device_ids = exe.query_devices()?;
        exe.outputs = exe.query_outputs()?;
        Ok(exe)
    }

    fn query_devices(&self) -> Result<Vec<i32>> {
        let api = self.client.api;
        let mut args =
            ffi::PJRT_LoadedExecutable_AddressableDevices_Args { executable: self.raw, ..ffi::PJRT_LoadedExecutable_AddressableDevices_Args::sized() };
        // SAFETY: `raw` is our live executable; the array is owned by it.
        unsafe { call!(api, PJRT_LoadedExecutable_AddressableDevices, &mut args) }?;
        if args.num_addressable_devices == 0 {
            return Ok(vec![]);
        }
        // SAFETY: the plugin returned `num_addressable_devices` pointers.
        let ptrs = unsafe { std::slice::from_raw_parts(args.addressable_devices, args.num_addressable_devices) };
        Ok(ptrs.iter().map(|&p| self.client.device_id_of(p).unwrap_or(-1)).collect())
    }

    fn query_outputs(&self) -> Result<Vec<TensorSpec>> {
        let api = self.client.api;
        let mut get = ffi::PJRT_LoadedExecutable_GetExecutable_Args { loaded_executable: self.raw, ..ffi::PJRT_LoadedExecutable_GetExecutable_Args::sized() };
        // SAFETY: `raw` is our live executable.
        unsafe { call!(api, PJRT_LoadedExecutable_GetExecutable, &mut get) }?;
        let exe = get.executable;
        let result = (|| {
            let mut n = ffi::PJRT_Executable_NumOutputs_Args { executable: exe, ..ffi::PJRT_Executable_NumOutputs_Args::sized() };
            // SAFETY: `exe` is live until destroyed below.
            unsafe { call!(api, PJRT_Executable_NumOutputs, &mut n) }?;
            let mut types = ffi::PJRT_Executable_OutputElementTypes_Args { executable: exe, ..ffi::PJRT_Executable_OutputElementTypes_Args::sized() };
            // SAFETY: as above; the array is owned by `exe`.
            unsafe { call!(api, PJRT_Executable_OutputElementTypes, &mut types) }?;
            let mut dims = ffi::PJRT_Executable_OutputDimensions_Args { executable: exe, ..ffi::PJRT_Executable_OutputDimensions_Args::sized() };
            // SAFETY: as above.
            unsafe { call!(api, PJRT_Executable_OutputDimensions, &mut dims) }?;
            if types.num_output_types != n.num_outputs || dims.num_outputs != n.num_outputs {
                return Err(PjrtError::InvalidArgument {
                    op: "compile",
                    message: format!("plugin reported {} outputs but {} types and {} shapes", n.num_outputs, types.num_output_types, dims.num_outputs),
                });
            }
            let mut specs = Vec::with_capacity(n.num_outputs);
            if n.num_outputs > 0 {
                // SAFETY: the plugin returned `num_outputs` entries in each array,
                // and `dims` holds the sum of `dim_sizes` values.
                let (types, sizes) =
                    unsafe { (std::slice::from_raw_parts(types.output_types, n.num_outputs), std::slice::from_raw_parts(dims.dim_sizes, n.num_outputs)) };
                let total: usize = sizes.iter().sum();
                // SAFETY: as above.
                let all_dims = if total == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(dims.dims, total) } };
                let mut offset = 0;
                for (t, &k) in types.iter().zip(sizes) {
                    specs.push(TensorSpec { dtype: dtype_of("compile", *t)?, dims: all_dims[offset..offset + k].to_vec() });
                    offset += k;
                }
            }
            Ok(specs)
        })();
        let mut destroy = ffi::PJRT_Executable_Destroy_Args { executable: exe, ..ffi::PJRT_Executable_Destroy_Args::sized() };
        // SAFETY: GetExecutable hands us ownership of `exe`; destroyed once here.
        unsafe { call!(api, PJRT_Executable_Destroy, &mut destroy) }?;
        result
    }

    /// The plugin's cost analysis of this program (`flops`, `bytes
    /// accessed` per execution, per device), as it compiled it for this
    /// client's platform; an error where the plugin gives none.
    pub fn cost_analysis(&self) -> Result<super::CostAnalysis> {
        let api = self.client.api;
        let mut get = ffi::PJRT_LoadedExecutable_GetExecutable_Args { loaded_executable: self.raw, ..ffi::PJRT_LoadedExecutable_GetExecutable_Args::sized() };
        // SAFETY: `raw` is our live executable.
        unsafe { call!(api, PJRT_LoadedExecutable_GetExecutable, &mut get) }?;
        let exe = get.executable;
        // SAFETY: `exe` is live until destroyed below; the properties are
        // owned by it and copied out before that.
        let cost = unsafe { call!(api, PJRT_Executable_GetCostAnalysis, PJRT_Executable_GetCostAnalysis_Args { executable: exe }) }.map(|args| {
            // SAFETY: the plugin returned `num_properties` named values, alive with `exe`.
            super::topology::cost_from_properties(unsafe { super::api::read_named_values(args.properties, args.num_properties) })
        });
        let mut destroy = ffi::PJRT_Executable_Destroy_Args { executable: exe, ..ffi::PJRT_Executable_Destroy_Args::sized() };
        // SAFETY: GetExecutable hands us ownership of `exe`; destroyed once here.
        unsafe { call!(api, PJRT_Executable_Destroy, &mut destroy) }?;
        cost
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Global ids of the devices it runs on, in replica order.
    pub fn device_ids(&self) -> &[i32] {
        &self.device_ids
    }

    pub fn num_replicas(&self) -> usize {
        self.device_ids.len()
    }

    /// Per-replica output types and shapes.
    pub fn outputs(&self) -> &[TensorSpec] {
        &self.outputs
    }

    pub fn inputs(&self) -> Option<&[TensorSpec]> {
        self.inputs.as_deref()
    }

    /// Runs on one device (a single-replica executable).
    pub fn execute(&self, args: &[&Buffer], donate: &[usize]) -> Result<Vec<Buffer>> {
        let mut out = self.execute_replicated(&[args.to_vec()], donate)?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Runs all replicas: `args[r]` are replica `r`'s arguments, on device
    /// `device_ids()[r]`. Arguments whose index is in `donate` give their
    /// memory to the execution (on every replica) and are marked donated;
    /// all others are left intact. Returns each replica's outputs. The call
    /// returns once the work is enqueued; reading an output waits for it.
    pub fn execute_replicated(&self, args: &[Vec<&Buffer>], donate: &[usize]) -> Result<Vec<Vec<Buffer>>> {
        let op = "execute";
        let bad = |message: String| Err(PjrtError::InvalidArgument { op, message });
        if args.len() != self.device_ids.len() {
            return bad(format!("{} runs on {} devices {:?}, got {} argument lists", self.name, self.device_ids.len(), self.device_ids, args.len()));
        }
        let num_args = args.first().map_or(0, |a| a.len());
        if let Some(inputs) = &self.inputs
            && num_args != inputs.len()
        {
            return bad(format!("{} takes {} arguments, got {num_args}", self.name, inputs.len()));
        }
        for &d in donate {
            if d >= num_args {
                return bad(format!("donated argument index {d} is out of range for {num_args} arguments"));
            }
        }
        let mut handles: Vec<Vec<*mut ffi::PJRT_Buffer>> = Vec::with_capacity(args.len());
        for (replica, list) in args.iter().enumerate() {
            if list.len() != num_args {
                return bad(format!("replica {replica} has {} arguments, replica 0 has {num_args}", list.len()));
            }
            let device = self.device_ids[replica];
            let mut row = Vec::with_capacity(num_args);
            for (i, buf) in list.iter().enumerate() {
                if let Some(inputs) = &self.inputs {
                    let want = &inputs[i];
                    if buf.dtype() != want.dtype || buf.dims() != want.dims.as_slice() {
                        return bad(format!(
                            "{} argument {i} (replica {replica}) must be {want}, got {}",
                            self.name,
                            TensorSpec { dtype: buf.dtype(), dims: buf.dims().to_vec() }
                        ));
                    }
                }
                if buf.device_id() != device {
                    return bad(format!(
                        "{} argument {i} of replica {replica} is on device {}, the replica runs on device {device}",
                        self.name,
                        buf.device_id()
                    ));
                }
                let handle = buf.live_handle(op, || format!("argument {i} of replica {replica} ({buf:?})"))?;
                if donate.contains(&i) && row.contains(&handle) {
                    return bad(format!("argument {i} of replica {replica} is donated but also passed at another position"));
                }
                row.push(handle);
            }
            if donate.iter().any(|&d| row.iter().filter(|&&h| h == row[d]).count() > 1) {
                return bad(format!("replica {replica}: a donated buffer is passed more than once"));
            }
            handles.push(row);
        }

        let non_donatable: Vec<i64> = (0..num_args as i64).filter(|i| !donate.contains(&(*i as usize))).collect();
        let mut options = ffi::PJRT_ExecuteOptions {
            non_donatable_input_indices: non_donatable.as_ptr(),
            num_non_donatable_input_indices: non_donatable.len(),
            ..ffi::PJRT_ExecuteOptions::sized()
        };
        let arg_ptrs: Vec<*const *mut ffi::PJRT_Buffer> = handles.iter().map(|r| r.as_ptr()).collect();
        let num_outputs = self.outputs.len();
        let mut outputs: Vec<Vec<*mut ffi::PJRT_Buffer>> = (0..args.len()).map(|_| vec![std::ptr::null_mut(); num_outputs]).collect();
        let out_ptrs: Vec<*mut *mut ffi::PJRT_Buffer> = outputs.iter_mut().map(|r| r.as_mut_ptr()).collect();
        let mut exec = ffi::PJRT_LoadedExecutable_Execute_Args {
            executable: self.raw,
            options: &mut options,
            argument_lists: arg_ptrs.as_ptr(),
            num_devices: args.len(),
            num_args,
            output_lists: out_ptrs.as_ptr(),
            ..ffi::PJRT_LoadedExecutable_Execute_Args::sized()
        };
        // SAFETY: argument handles are live (checked above, and borrowed for
        // the call); the output arrays hold `num_outputs` slots per device,
        // the count the plugin reported for this executable; all arrays
        // outlive the call.
        unsafe { call!(self.client.api, PJRT_LoadedExecutable_Execute, &mut exec) }?;
        for list in args {
            for &d in donate {
                list[d].mark_donated();
            }
        }
        // Own every returned handle before asking the plugin anything about
        // them: an error on one output must still free all the others.
        let null_outputs = outputs.iter().flatten().filter(|raw| raw.is_null()).count();
        let mut owned: Vec<Vec<Buffer>> = outputs
            .into_iter()
            .map(|row| row.into_iter().filter(|raw| !raw.is_null()).map(|raw| Buffer::from_output(self.client.clone(), raw)).collect())
            .collect();
        if null_outputs > 0 {
            return bad(format!("{}: the plugin returned {null_outputs} null output buffer(s) of {}", self.name, num_outputs * args.len()));
        }
        for buffer in owned.iter_mut().flatten() {
            buffer.read_metadata()?;
        }
        Ok(owned)
    }
}
