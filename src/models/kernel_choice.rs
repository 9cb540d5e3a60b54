//! Who computes each part of each conv layer of a CPU training program,
//! XLA's op or oneDNN's kernel, chosen by measurement on the machine at hand
//! (`--cpu-kernels auto`, the default), and the cache that keeps a choice so
//! that each part is measured once per CPU, plugin, oneDNN, shape and
//! precision.
//!
//! Why measure: which form wins depends on the CPU (on an AVX-512 EPYC
//! oneDNN halves block 1's forward and weight gradient, on other CPUs it
//! may lose), on the shapes and on the plugin, so no table written here
//! could be right everywhere (docs/speed.md has the figures).
//!
//! Owns: a layer part as a program of its own ([`layer_part_graph`], also
//! what `bench --profile` times), the timing of both forms, the choice
//! ([`KernelChoice`], recorded in every CPU run's record and checkpoint) and
//! the cache file. Does not touch: the kernels themselves
//! (`src/pjrt/onednn.rs`, `src/graph/ops/host_conv.rs`) or training (the
//! trainer asks for a choice once per run and keeps it across resumes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::architecture::{Architecture, ConvChoice, CpuKernelMode, CpuKernels};
use super::programs::Precision;
use crate::graph::nn::ConvFormulation;
use crate::graph::{ConvKernels, DeclareParams, EmitOptions, Graph, Kernel, Params, Tensor};
use crate::machine::Machine;
use crate::pjrt::{Client, CompileOptions};
use crate::tensor::{DType, HostTensor};

/// One layer of a model, built into a graph with the given kernel (conv
/// layers; other layers ignore it).
pub type LayerFn = dyn Fn(&mut Graph, &mut dyn Params, Tensor, Kernel) -> crate::graph::Result<Tensor>;

/// One of the three computations a layer takes part in during a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerPart {
    Forward,
    InputGradient,
    /// The gradient with respect to the layer's weights (`kernel_gradient`
    /// in [`ConvKernels`]).
    WeightGradient,
}

impl LayerPart {
    pub const ALL: [LayerPart; 3] = [LayerPart::Forward, LayerPart::InputGradient, LayerPart::WeightGradient];

    pub fn label(self) -> &'static str {
        match self {
            LayerPart::Forward => "forward",
            LayerPart::InputGradient => "input gradient",
            LayerPart::WeightGradient => "weight gradient",
        }
    }

    /// The kernel `kernels` gives this part.
    pub fn of(self, kernels: ConvKernels) -> Kernel {
        match self {
            LayerPart::Forward => kernels.forward,
            LayerPart::InputGradient => kernels.input_gradient,
            LayerPart::WeightGradient => kernels.kernel_gradient,
        }
    }

    fn set(self, kernels: &mut ConvKernels, kernel: Kernel) {
        match self {
            LayerPart::Forward => kernels.forward = kernel,
            LayerPart::InputGradient => kernels.input_gradient = kernel,
            LayerPart::WeightGradient => kernels.kernel_gradient = kernel,
        }
    }
}

/// One part of one layer as a graph of its own, named `name` (the scope
/// its flops are counted under): the input `x` of `in_dims`, the layer's
/// parameters and, for a gradient, the cotangent `cot` of the layer's
/// output. Its output is the part's result: the layer's output, or the
/// gradient with respect to `x` or to the layer's first parameter (its
/// weights). The step's own derivative rules build it, so it takes the
/// same kernels the step would.
pub fn layer_part_graph(name: &str, in_dims: &[i64], dtype: DType, part: LayerPart, layer: &LayerFn, kernel: Kernel) -> crate::graph::Result<(Graph, Tensor)> {
    let mut g = Graph::new(format!("part_{}", name.replace('.', "_")));
    let mut params = DeclareParams::new(dtype);
    let x = g.parameter("x", dtype, in_dims)?;
    let y = g.scoped(name, |g| layer(g, &mut params, x, kernel))?;
    let out = match part {
        LayerPart::Forward => y,
        LayerPart::InputGradient | LayerPart::WeightGradient => {
            let y_dims = g.dims(y).to_vec();
            let cot = g.parameter("cot", dtype, &y_dims)?;
            let yc = g.mul(y, cot)?;
            let yc = g.convert(yc, DType::F32)?;
            let loss = g.sum_all(yc)?;
            let weight = params.tensors()[0];
            let grads = g.grad(loss, &[x, weight])?;
            if part == LayerPart::InputGradient { grads[0] } else { grads[1] }
        }
    };
    Ok((g, out))
}

/// Deterministic inputs for a part program (values in [-0.5, 0.5)).
pub fn fill(dtype: DType, dims: &[i64]) -> Result<HostTensor, crate::tensor::TensorError> {
    let n: i64 = dims.iter().product();
    let values: Vec<f32> = (0..n).map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5).collect();
    match dtype {
        DType::BF16 => HostTensor::from_bf16(dims, &values.iter().map(|v| half::bf16::from_f32(*v)).collect::<Vec<_>>()),
        _ => HostTensor::from_f32(dims, &values),
    }
}

/// Why the kernels are what they are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChoiceSource {
    /// `--cpu-kernels xla` or `onednn`.
    Forced,
    /// `auto`: timed on this machine (some parts may come from the cache,
    /// see each part's `cached`).
    Measured,
    /// `auto`: every part from the cache, measured by an earlier run.
    Cached,
    /// A resumed run keeps the choice its checkpoint was trained with (a
    /// checkpoint from before the choice existed was trained on XLA's ops).
    Checkpoint,
    /// `auto` on a platform other than the CPU: TPU and GPU programs are
    /// pure StableHLO.
    NotCpu,
    /// `auto` where oneDNN (libdnnl.so.2) does not load.
    OnednnAbsent,
    /// `auto` at a precision the oneDNN kernels here do not take (they are
    /// f32).
    NotF32,
}

/// One part's measurement (or cache entry).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartChoice {
    /// 1-based, as in `block1.conv`.
    pub block: usize,
    pub part: LayerPart,
    /// Median milliseconds of the part alone, each form.
    pub xla_ms: f64,
    pub onednn_ms: f64,
    pub chosen: Kernel,
    /// Read from the cache rather than timed by this run.
    pub cached: bool,
}

/// The CPU kernels a run trained with, and why: kept in the run's record
/// (`config.cpu_kernels`) and in each checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelChoice {
    /// What was asked for.
    pub mode: CpuKernelMode,
    /// What each part of each conv block got.
    pub kernels: CpuKernels,
    pub source: ChoiceSource,
    /// `auto`'s measurements, one per part (empty otherwise).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<PartChoice>,
}

impl KernelChoice {
    /// One line: `auto (measured): block1 forward=onednn ...`.
    pub fn describe(&self) -> String {
        let mode = serde_json::to_string(&self.mode).unwrap_or_default();
        let source = serde_json::to_string(&self.source).unwrap_or_default();
        format!("{} ({}): {}", mode.trim_matches('"'), source.trim_matches('"').replace('_', " "), self.kernels.describe())
    }
}

/// Errors while choosing.
#[derive(Debug, thiserror::Error)]
pub enum ChoiceError {
    #[error("building the {part} program of block{block}: {source}")]
    Graph { block: usize, part: &'static str, source: crate::graph::GraphError },
    #[error("timing the {part} of block{block} with {kernel}: {source}")]
    Runtime { block: usize, part: &'static str, kernel: &'static str, source: Box<crate::pjrt::PjrtError> },
    #[error("the input of block{block}: {source}")]
    Tensor { block: usize, source: crate::tensor::TensorError },
    #[error("the CPU kernel cache {}: {detail}; delete it to measure again", path.display())]
    Cache { path: PathBuf, detail: String },
}

/// The cache of measured parts: one JSON object, key -> [`PartChoice`].
/// Keys name the CPU, its features, the plugin, oneDNN, the precision and
/// the part's shape, so a changed machine or library is measured anew.
pub struct KernelCache {
    path: PathBuf,
}

impl KernelCache {
    pub fn at(path: impl Into<PathBuf>) -> Self {
        KernelCache { path: path.into() }
    }

    /// `$EMOTIONET_KERNEL_CACHE`, else `$XDG_CACHE_HOME/emotionet/cpu-kernels.json`,
    /// else `~/.cache/emotionet/cpu-kernels.json` (else in the temp dir).
    pub fn default_location() -> Self {
        if let Some(p) = std::env::var_os("EMOTIONET_KERNEL_CACHE") {
            return Self::at(p);
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        Self::at(base.join("emotionet").join("cpu-kernels.json"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn load(&self) -> Result<BTreeMap<String, PartChoice>, ChoiceError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| ChoiceError::Cache { path: self.path.clone(), detail: format!("not a kernel cache ({e})") })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(ChoiceError::Cache { path: self.path.clone(), detail: e.to_string() }),
        }
    }

    /// Adds `entries` to what the file holds now (another run may have
    /// added its own meanwhile) and replaces it whole.
    fn store(&self, entries: &BTreeMap<String, PartChoice>) -> Result<(), ChoiceError> {
        let mut all = self.load().unwrap_or_default();
        all.extend(entries.iter().map(|(k, v)| (k.clone(), v.clone())));
        let text = serde_json::to_vec_pretty(&all).map_err(|e| ChoiceError::Cache { path: self.path.clone(), detail: e.to_string() })?;
        crate::fsutil::write_atomic(&self.path, &text).map_err(|e| ChoiceError::Cache { path: self.path.clone(), detail: e.to_string() })
    }
}

/// What [`choose`] needs to know of the program.
#[derive(Clone, Copy)]
pub struct ChoiceRequest<'a> {
    pub mode: CpuKernelMode,
    pub arch: &'a Architecture,
    /// The batch one device computes (the global batch over the devices).
    pub replica_batch: i64,
    pub precision: Precision,
    pub conv: ConvChoice,
    /// Timed runs per form (after one untimed run).
    pub repeats: usize,
}

/// The kernels for a CPU program: forced by the mode, or for `auto` the
/// faster form of each part, measured now or read from `cache`.
pub fn choose(client: &Client, request: &ChoiceRequest<'_>, cache: &KernelCache) -> Result<KernelChoice, ChoiceError> {
    let blocks = request.arch.conv_filters.len();
    let plain = |kernels: CpuKernels, source| KernelChoice { mode: request.mode, kernels, source, parts: vec![] };
    match request.mode {
        CpuKernelMode::Xla => return Ok(plain(CpuKernels::default(), ChoiceSource::Forced)),
        CpuKernelMode::Onednn => return Ok(plain(CpuKernels::uniform(blocks, Kernel::Onednn), ChoiceSource::Forced)),
        CpuKernelMode::Auto => {}
    }
    if !client.platform_name().eq_ignore_ascii_case("cpu") {
        return Ok(plain(CpuKernels::default(), ChoiceSource::NotCpu));
    }
    let dtype = request.precision.compute_dtype();
    if dtype != DType::F32 {
        tracing::info!("cpu kernels: XLA's ops ({} programs; the oneDNN kernels here are f32 only)", dtype.mlir_name());
        return Ok(plain(CpuKernels::default(), ChoiceSource::NotF32));
    }
    let Some(onednn) = crate::pjrt::onednn_version() else {
        tracing::info!("cpu kernels: XLA's ops (oneDNN, libdnnl.so.2, does not load here)");
        return Ok(plain(CpuKernels::default(), ChoiceSource::OnednnAbsent));
    };
    crate::pjrt::register_host_kernels(client.api()).map_err(|source| ChoiceError::Runtime {
        block: 0,
        part: "registration",
        kernel: "onednn",
        source: Box::new(source),
    })?;

    let machine = Machine::detect();
    let prefix = format!(
        "{} [{}] | {} {} | oneDNN {onednn} | {}",
        machine.cpu,
        machine.features.join(" "),
        client.platform_name(),
        client.platform_version(),
        dtype.mlir_name()
    );
    let cached = cache.load()?;
    let mut fresh: BTreeMap<String, PartChoice> = BTreeMap::new();
    let mut kernels = CpuKernels::uniform(blocks, Kernel::Xla);
    let mut parts = Vec::new();
    let (mut size, mut cin) = (request.arch.input_size, 1i64);
    let t0 = Instant::now();
    for (i, &filters) in request.arch.conv_filters.iter().enumerate() {
        let k = request.arch.kernel_size;
        let formulation = request.conv.for_input_channels(cin);
        let in_dims = [request.replica_batch, size, size, cin];
        for part in LayerPart::ALL {
            if i == 0 && part == LayerPart::InputGradient {
                continue; // the images need no gradient
            }
            let key = format!("{prefix} | conv in {in_dims:?} filters {filters} kernel {k} {formulation:?} | {}", part.label());
            let entry = match cached.get(&key) {
                Some(hit) => PartChoice { cached: true, ..hit.clone() },
                None => {
                    let layer = move |g: &mut Graph, p: &mut dyn Params, x, kernel| match kernel {
                        Kernel::Xla => g.conv2d(p, x, filters, k, formulation),
                        Kernel::Onednn => g.conv2d(p, x, filters, k, ConvFormulation::Kernels(ConvKernels::all(Kernel::Onednn))),
                    };
                    let [xla_ms, onednn_ms] = time_both(client, &in_dims, dtype, part, &layer, request.repeats, i + 1)?;
                    let chosen = if onednn_ms < xla_ms { Kernel::Onednn } else { Kernel::Xla };
                    let entry = PartChoice { block: i + 1, part, xla_ms, onednn_ms, chosen, cached: false };
                    fresh.insert(key, entry.clone());
                    entry
                }
            };
            part.set(&mut kernels.0[i], entry.chosen);
            parts.push(entry);
        }
        size /= request.arch.pool;
        cin = filters;
    }
    let source = if fresh.is_empty() { ChoiceSource::Cached } else { ChoiceSource::Measured };
    if !fresh.is_empty() {
        cache.store(&fresh)?;
        tracing::info!("cpu kernels: measured {} parts in {:.1} s (cache {})", fresh.len(), t0.elapsed().as_secs_f64(), cache.path().display());
    }
    let choice = KernelChoice { mode: request.mode, kernels, source, parts };
    tracing::info!("cpu kernels: {}", choice.describe());
    Ok(choice)
}

/// Median milliseconds of one part with XLA's op and with oneDNN's kernel,
/// timed alternately so that a burst of load lands on both.
fn time_both(client: &Client, in_dims: &[i64], dtype: DType, part: LayerPart, layer: &LayerFn, repeats: usize, block: usize) -> Result<[f64; 2], ChoiceError> {
    let device = client.device_ids()[0];
    let label = part.label();
    let mut forms = Vec::new();
    for kernel in [Kernel::Xla, Kernel::Onednn] {
        let runtime = |source| ChoiceError::Runtime { block, part: label, kernel: kernel.as_str(), source: Box::new(source) };
        let graph = |source| ChoiceError::Graph { block, part: label, source };
        let (g, out) = layer_part_graph(&format!("block{block}.conv"), in_dims, dtype, part, layer, kernel).map_err(graph)?;
        let program = g.to_program(&[out], &EmitOptions::default()).map_err(graph)?;
        let exe = client.compile(&program, &CompileOptions::single_device(device)).map_err(runtime)?;
        let mut buffers = Vec::new();
        for p in g.parameters() {
            let host = fill(g.dtype(*p), g.dims(*p)).map_err(|source| ChoiceError::Tensor { block, source })?;
            buffers.push(client.upload(&host, device).map_err(runtime)?);
        }
        forms.push((exe, buffers, kernel));
    }
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..=repeats.max(1) {
        for (f, (exe, buffers, kernel)) in forms.iter().enumerate() {
            let runtime = |source| ChoiceError::Runtime { block, part: label, kernel: kernel.as_str(), source: Box::new(source) };
            let args: Vec<&crate::pjrt::Buffer> = buffers.iter().collect();
            let t = Instant::now();
            let outputs = exe.execute(&args, &[]).map_err(runtime)?;
            outputs[0].wait_ready().map_err(runtime)?;
            if round > 0 {
                times[f].push(t.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    Ok(times.map(|mut t| {
        t.sort_by(f64::total_cmp);
        t[t.len() / 2]
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_choice_reads_back_as_written_and_describes_itself() {
        let mut kernels = CpuKernels::uniform(2, Kernel::Xla);
        LayerPart::WeightGradient.set(&mut kernels.0[1], Kernel::Onednn);
        let choice = KernelChoice {
            mode: CpuKernelMode::Auto,
            kernels,
            source: ChoiceSource::Measured,
            parts: vec![PartChoice { block: 2, part: LayerPart::WeightGradient, xla_ms: 2.0, onednn_ms: 1.0, chosen: Kernel::Onednn, cached: false }],
        };
        let text = serde_json::to_string(&choice).unwrap();
        assert_eq!(serde_json::from_str::<KernelChoice>(&text).unwrap(), choice);
        assert_eq!(
            choice.describe(),
            "auto (measured): block1 forward=xla input_gradient=xla kernel_gradient=xla; block2 forward=xla input_gradient=xla kernel_gradient=onednn"
        );
    }

    #[test]
    fn a_damaged_cache_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cpu-kernels.json");
        std::fs::write(&path, b"{ half").unwrap();
        let err = KernelCache::at(&path).load().unwrap_err().to_string();
        assert!(err.contains(path.to_str().unwrap()) && err.contains("delete it"), "{err}");
    }
}
