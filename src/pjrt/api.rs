//! Loading a PJRT plugin and calling through its function table.
//!
//! A plugin is a shared library exporting `GetPjrtApi`. We `dlopen` it once per
//! path for the life of the process (XLA plugins do not support unloading),
//! check its API version before touching anything else in the table, call
//! `PJRT_Plugin_Initialize` exactly once, and then hand out a copyable [`Api`].
//! [`Api::call`] is the only place a `PJRT_Error*` is turned into a Rust error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::error::{ErrorCode, PjrtError, Result};
use super::ffi::{self, StructSize};

/// The PJRT C API version this crate was built against (`ffi.rs`).
pub const HEADER_VERSION: (u32, u32) = (ffi::PJRT_API_MAJOR, ffi::PJRT_API_MINOR);

/// A loaded, initialized plugin's function table. Cheap to copy: the library
/// is never unloaded, so the table lives for the rest of the process.
#[derive(Clone, Copy)]
pub struct Api {
    raw: &'static ffi::PJRT_Api,
    path: &'static Path,
}

// SAFETY: `Api` only holds a shared reference to the plugin's immutable
// function table and a path; the PJRT C API requires its functions to be
// callable from any thread.
unsafe impl Send for Api {}
// SAFETY: as above, nothing in `Api` is mutated after loading.
unsafe impl Sync for Api {}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (major, minor) = self.version();
        write!(f, "Api({}, PJRT {major}.{minor})", self.path.display())
    }
}

type LoadedPlugins = Mutex<HashMap<PathBuf, Api>>;

fn loaded_plugins() -> &'static LoadedPlugins {
    static PLUGINS: OnceLock<LoadedPlugins> = OnceLock::new();
    PLUGINS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// What to tell a user whose plugin speaks another API version.
fn version_advice(major: i32, minor: i32) -> Option<String> {
    let (ours_major, ours_minor) = (HEADER_VERSION.0 as i32, HEADER_VERSION.1 as i32);
    if major != ours_major {
        Some(format!(
            "a different major version is ABI-incompatible; use a plugin speaking {ours_major}.x with x >= {ours_minor} \
             (pip: xla-cpu-pjrt==0.0.1, libtpu==0.0.30)"
        ))
    } else if minor < ours_minor {
        Some(format!(
            "the plugin is too old (its structs and function table lack fields we fill in); \
             install one speaking {ours_major}.{ours_minor} or newer (pip: xla-cpu-pjrt==0.0.1, libtpu==0.0.30)"
        ))
    } else {
        None
    }
}

impl Api {
    /// Loads the plugin at `path` (or returns the already-loaded one).
    pub fn load(path: &Path) -> Result<Api> {
        let path = std::fs::canonicalize(path)
            .map_err(|e| PjrtError::PluginNotFound { path: path.to_path_buf(), hint: format!("{e}; pass --plugin PATH or set EMOTIONET_PJRT_PLUGIN") })?;
        let mut plugins = loaded_plugins().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(api) = plugins.get(&path) {
            return Ok(*api);
        }
        let api = Self::open(&path)?;
        plugins.insert(path, api);
        Ok(api)
    }

    fn open(path: &Path) -> Result<Api> {
        // SAFETY: loading a library runs its initializers. We only do this for a
        // path the user named as a PJRT plugin, which is the contract of this
        // function; there is no way to validate a library before loading it.
        let lib = unsafe { libloading::Library::new(path) }.map_err(|e| PjrtError::PluginLoad { path: path.to_path_buf(), reason: e.to_string() })?;
        type GetPjrtApi = unsafe extern "C" fn() -> *const ffi::PJRT_Api;
        // SAFETY: `GetPjrtApi` is declared in pjrt_c_api.h as
        // `const PJRT_Api* GetPjrtApi(void)`, the type we ask for.
        let get_api = unsafe { lib.get::<GetPjrtApi>(b"GetPjrtApi\0") }.map_err(|_| PjrtError::NotAPlugin { path: path.to_path_buf() })?;
        // SAFETY: calling the plugin's entry point with no arguments, as the
        // header specifies.
        let raw = unsafe { get_api() };
        if raw.is_null() {
            return Err(PjrtError::NotAPlugin { path: path.to_path_buf() });
        }
        // Never unload: plugins keep threads and static state alive, and every
        // object they hand out points into the library.
        std::mem::forget(lib);
        // SAFETY: `raw` is non-null and points to the plugin's static table.
        // Only the leading `struct_size`, `extension_start` and
        // `pjrt_api_version` fields are read before the version check; their
        // layout is the same in every PJRT API version.
        let (struct_size, major, minor) = unsafe {
            let v = std::ptr::addr_of!((*raw).pjrt_api_version).read();
            (std::ptr::addr_of!((*raw).struct_size).read(), v.major_version, v.minor_version)
        };
        let incompatible = |advice: String| PjrtError::IncompatibleVersion {
            path: path.to_path_buf(),
            plugin_major: major,
            plugin_minor: minor,
            ours_major: HEADER_VERSION.0,
            ours_minor: HEADER_VERSION.1,
            advice,
        };
        if let Some(advice) = version_advice(major, minor) {
            return Err(incompatible(advice));
        }
        if struct_size < ffi::PJRT_Api_STRUCT_SIZE as usize {
            return Err(incompatible(format!("its function table has {struct_size} bytes, fewer than the {} of our header", ffi::PJRT_Api_STRUCT_SIZE)));
        }
        if minor > HEADER_VERSION.1 as i32 {
            tracing::info!(
                "plugin {} speaks PJRT {major}.{minor}, newer than our header {}.{}; minor versions are backward compatible",
                path.display(),
                HEADER_VERSION.0,
                HEADER_VERSION.1
            );
        }
        // SAFETY: the table is at least as large as the one in our header
        // (checked above) and lives as long as the process (never unloaded).
        let raw: &'static ffi::PJRT_Api = unsafe { &*raw };
        let path: &'static Path = Box::leak(path.to_path_buf().into_boxed_path());
        let api = Api { raw, path };
        let mut args = ffi::PJRT_Plugin_Initialize_Args::sized();
        // SAFETY: `args` is a fully initialized PJRT_Plugin_Initialize_Args;
        // called once per plugin, as required, because `load` caches by path.
        unsafe { call!(api, PJRT_Plugin_Initialize, &mut args) }?;
        tracing::debug!("loaded PJRT plugin {} (API {major}.{minor})", path.display());
        Ok(api)
    }

    pub(crate) fn raw(&self) -> &'static ffi::PJRT_Api {
        self.raw
    }

    /// The path the plugin was loaded from (canonical).
    pub fn path(&self) -> &'static Path {
        self.path
    }

    /// `(major, minor)` of the PJRT C API the plugin speaks.
    pub fn version(&self) -> (i32, i32) {
        (self.raw.pjrt_api_version.major_version, self.raw.pjrt_api_version.minor_version)
    }

    /// Calls one function of the table and turns a returned `PJRT_Error*` into
    /// [`PjrtError::Plugin`], freeing it. Use through the `call!` macro, which
    /// fills in the name.
    ///
    /// # Safety
    /// `args` must be the argument struct `f` expects, with `struct_size` set
    /// (`StructSize::sized`) and every pointer in it valid for the call.
    pub(crate) unsafe fn call<A>(&self, op: &'static str, f: Option<unsafe extern "C" fn(*mut A) -> *mut ffi::PJRT_Error>, args: &mut A) -> Result<()> {
        let f = f.ok_or(PjrtError::MissingFunction { path: self.path.to_path_buf(), function: op })?;
        // SAFETY: the caller guarantees `args` matches `f`'s signature and
        // holds valid pointers (this function's contract).
        let error = unsafe { f(args) };
        self.check(op, error)
    }

    /// Converts and frees a `PJRT_Error*` (null means success).
    pub(crate) fn check(&self, op: &'static str, error: *mut ffi::PJRT_Error) -> Result<()> {
        if error.is_null() {
            return Ok(());
        }
        let mut msg = ffi::PJRT_Error_Message_Args { error, ..ffi::PJRT_Error_Message_Args::sized() };
        let mut code = ffi::PJRT_Error_GetCode_Args { error, ..ffi::PJRT_Error_GetCode_Args::sized() };
        let message = match self.raw.PJRT_Error_Message {
            Some(f) => {
                // SAFETY: `error` is a live error object returned by the plugin;
                // the message it returns is borrowed from it, so we copy it
                // out before destroying the error below.
                unsafe { f(&mut msg) };
                if msg.message.is_null() {
                    String::new()
                } else {
                    // SAFETY: the plugin returned `message_size` bytes at
                    // `message`, valid until the error is destroyed.
                    let bytes = unsafe { std::slice::from_raw_parts(msg.message as *const u8, msg.message_size) };
                    String::from_utf8_lossy(bytes).into_owned()
                }
            }
            None => String::from("(plugin gave no message)"),
        };
        let code = match self.raw.PJRT_Error_GetCode {
            Some(f) => {
                // SAFETY: as above; GetCode only reads the live error.
                let e = unsafe { f(&mut code) };
                if e.is_null() {
                    ErrorCode::from_raw(code.code)
                } else {
                    // GetCode's own failure is an error object we own too.
                    self.destroy_error(e);
                    ErrorCode::Unknown
                }
            }
            None => ErrorCode::Unknown,
        };
        self.destroy_error(error);
        Err(PjrtError::Plugin { op, code, message })
    }

    /// Frees a `PJRT_Error*` the plugin handed us (exactly once per error).
    fn destroy_error(&self, error: *mut ffi::PJRT_Error) {
        if let Some(destroy) = self.raw.PJRT_Error_Destroy {
            let mut args = ffi::PJRT_Error_Destroy_Args { error, ..ffi::PJRT_Error_Destroy_Args::sized() };
            // SAFETY: `error` is a live error object the plugin returned to
            // us; every caller passes each error here once.
            unsafe { destroy(&mut args) };
        }
    }

    /// The plugin's own attributes (`xla_version`, `stablehlo_current_version`, ...).
    pub fn attributes(&self) -> Result<Vec<(String, NamedValue)>> {
        let mut args = ffi::PJRT_Plugin_Attributes_Args::sized();
        // SAFETY: args is initialized; the plugin fills a pointer to its own
        // static attribute array.
        unsafe { call!(self, PJRT_Plugin_Attributes, &mut args) }?;
        // SAFETY: the plugin returned `num_attributes` named values that live
        // as long as the plugin.
        Ok(unsafe { read_named_values(args.attributes, args.num_attributes) })
    }
}

/// A value in a PJRT named-value list (plugin and device attributes, client
/// create options).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum NamedValue {
    String(String),
    Int64(i64),
    Int64List(Vec<i64>),
    Float(f32),
    Bool(bool),
}

impl std::fmt::Display for NamedValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NamedValue::String(s) => f.write_str(s),
            NamedValue::Int64(v) => write!(f, "{v}"),
            NamedValue::Int64List(v) => write!(f, "{v:?}"),
            NamedValue::Float(v) => write!(f, "{v}"),
            NamedValue::Bool(v) => write!(f, "{v}"),
        }
    }
}

/// Named values in the C layout, pointing into the Rust values they were
/// made from: the borrow keeps those alive (and unmoved) for as long as the
/// raw array can be passed to the plugin.
pub(crate) struct RawNamedValues<'a> {
    raw: Vec<ffi::PJRT_NamedValue>,
    _values: std::marker::PhantomData<&'a [(String, NamedValue)]>,
}

impl RawNamedValues<'_> {
    /// The array to pass (null when empty: the plugins accept that).
    pub(crate) fn as_ptr(&self) -> *const ffi::PJRT_NamedValue {
        if self.raw.is_empty() { std::ptr::null() } else { self.raw.as_ptr() }
    }

    pub(crate) fn len(&self) -> usize {
        self.raw.len()
    }
}

/// `values` as `PJRT_NamedValue`s (client and topology create options).
pub(crate) fn raw_named_values(values: &[(String, NamedValue)]) -> RawNamedValues<'_> {
    let raw = values
        .iter()
        .map(|(name, value)| {
            let mut v = ffi::PJRT_NamedValue { name: name.as_ptr().cast(), name_size: name.len(), ..ffi::PJRT_NamedValue::sized() };
            match value {
                NamedValue::String(s) => {
                    v.type_ = ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kString;
                    v.__bindgen_anon_1.string_value = s.as_ptr().cast();
                    v.value_size = s.len();
                }
                NamedValue::Int64(i) => {
                    v.type_ = ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kInt64;
                    v.__bindgen_anon_1.int64_value = *i;
                    v.value_size = 1;
                }
                NamedValue::Int64List(list) => {
                    v.type_ = ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kInt64List;
                    v.__bindgen_anon_1.int64_array_value = list.as_ptr();
                    v.value_size = list.len();
                }
                NamedValue::Float(f) => {
                    v.type_ = ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kFloat;
                    v.__bindgen_anon_1.float_value = *f;
                    v.value_size = 1;
                }
                NamedValue::Bool(b) => {
                    v.type_ = ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kBool;
                    v.__bindgen_anon_1.bool_value = *b;
                    v.value_size = 1;
                }
            }
            v
        })
        .collect();
    RawNamedValues { raw, _values: std::marker::PhantomData }
}

/// Copies a plugin-owned named-value array into Rust values.
///
/// # Safety
/// `values` must point to `count` valid `PJRT_NamedValue`s (or be null with
/// `count == 0`), alive for the duration of the call.
pub(crate) unsafe fn read_named_values(values: *const ffi::PJRT_NamedValue, count: usize) -> Vec<(String, NamedValue)> {
    if values.is_null() || count == 0 {
        return Vec::new();
    }
    // SAFETY: guaranteed by this function's contract.
    let values = unsafe { std::slice::from_raw_parts(values, count) };
    values
        .iter()
        .filter_map(|v| {
            // SAFETY: name/name_size describe the plugin's string; the union
            // member read matches `type_`, as the header specifies. Null
            // pointers (allowed with size 0) never reach `from_raw_parts`.
            unsafe {
                let name = read_str(v.name, v.name_size);
                let u = &v.__bindgen_anon_1;
                let value = match v.type_ {
                    ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kString => NamedValue::String(read_str(u.string_value, v.value_size)),
                    ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kInt64 => NamedValue::Int64(u.int64_value),
                    ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kInt64List => NamedValue::Int64List(if u.int64_array_value.is_null() || v.value_size == 0 {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(u.int64_array_value, v.value_size).to_vec()
                    }),
                    ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kFloat => NamedValue::Float(u.float_value),
                    ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kBool => NamedValue::Bool(u.bool_value),
                    _ => return None,
                };
                Some((name, value))
            }
        })
        .collect()
}

/// Reads a (pointer, length) string the plugin owns.
///
/// # Safety
/// `ptr` must point to `len` readable bytes (or be null).
pub(crate) unsafe fn read_str(ptr: *const std::os::raw::c_char, len: usize) -> String {
    if ptr.is_null() || len == 0 {
        return String::new();
    }
    // SAFETY: this function's contract.
    String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(ptr as *const u8, len) }).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_values_with_null_pointers_and_zero_sizes_are_read_safely() {
        // A plugin may leave a name, a string or a list null when its size
        // is 0; none of these may reach `from_raw_parts`.
        let mut empty_string = ffi::PJRT_NamedValue { name: std::ptr::null(), name_size: 0, ..ffi::PJRT_NamedValue::sized() };
        empty_string.type_ = ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kString;
        empty_string.__bindgen_anon_1.string_value = std::ptr::null();
        let name = "ids";
        let mut empty_list = ffi::PJRT_NamedValue { name: name.as_ptr().cast(), name_size: name.len(), ..ffi::PJRT_NamedValue::sized() };
        empty_list.type_ = ffi::PJRT_NamedValue_Type_PJRT_NamedValue_kInt64List;
        empty_list.__bindgen_anon_1.int64_array_value = std::ptr::null();
        let values = [empty_string, empty_list];
        // SAFETY: two valid named values, alive for the call.
        let read = unsafe { read_named_values(values.as_ptr(), values.len()) };
        assert_eq!(read, vec![(String::new(), NamedValue::String(String::new())), ("ids".to_string(), NamedValue::Int64List(vec![]))]);
        // SAFETY: null with count 0 is allowed by the contract.
        assert!(unsafe { read_named_values(std::ptr::null(), 0) }.is_empty());
    }

    #[test]
    fn version_rule() {
        assert!(version_advice(0, 81).is_none());
        assert!(version_advice(0, 115).is_none(), "newer minors are backward compatible");
        assert!(version_advice(0, 54).unwrap().contains("too old"));
        assert!(version_advice(1, 0).unwrap().contains("major"));
    }
}
