//! The two CNNs of the paper as configuration: every width, kernel, input
//! size and class count is a value here, with the reconstruction of
//! `paper.md` as the default.
//!
//! Face model: conv5x5/32 + ReLU + pool2 -> conv5x5/64 + ReLU + pool2 ->
//! dense 1024 + ReLU -> dropout 0.4 -> dense 2. The emotion model adds a third
//! block with 92 filters and ends in 3 classes (happy / sad / neither).

use serde::{Deserialize, Serialize};

use crate::graph::nn::{ConvFormulation, DropoutKey};
use crate::graph::{ConvKernels, DeclareParams, Graph, GraphError, Kernel, ParamSpec, Params, Tensor};
use crate::tensor::DType;

/// Which of the hierarchy's two models.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Face / not face (model 1).
    Face,
    /// Emotion of a face (model 2).
    Emotion,
}

impl ModelKind {
    pub const ALL: [ModelKind; 2] = [ModelKind::Face, ModelKind::Emotion];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::Face => "face",
            ModelKind::Emotion => "emotion",
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A CNN of `conv_filters.len()` conv blocks and two dense layers, on
/// square grayscale images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// Input images are `input_size x input_size x 1` (grayscale).
    pub input_size: i64,
    /// Filters of each conv block (conv + bias + ReLU + max-pool).
    pub conv_filters: Vec<i64>,
    /// Convolution kernels are `kernel_size x kernel_size`, SAME padding.
    #[serde(default = "default_kernel")]
    pub kernel_size: i64,
    /// Max-pool window and stride after each convolution.
    #[serde(default = "default_pool")]
    pub pool: i64,
    /// Width of the hidden dense layer.
    #[serde(default = "default_dense")]
    pub dense_units: i64,
    /// Dropout rate after the hidden dense layer (training only).
    #[serde(default = "default_dropout")]
    pub dropout: f64,
    /// Number of output classes.
    pub classes: i64,
}

fn default_kernel() -> i64 {
    5
}
fn default_pool() -> i64 {
    2
}
fn default_dense() -> i64 {
    1024
}
fn default_dropout() -> f64 {
    0.4
}

impl Architecture {
    /// The paper's face model (reconstruction) at `size x size`.
    pub fn face(size: i64) -> Self {
        Architecture { input_size: size, conv_filters: vec![32, 64], kernel_size: 5, pool: 2, dense_units: 1024, dropout: 0.4, classes: 2 }
    }

    /// The paper's emotion model (reconstruction) at `size x size`, 3 classes.
    pub fn emotion(size: i64) -> Self {
        Architecture { input_size: size, conv_filters: vec![32, 64, 92], kernel_size: 5, pool: 2, dense_units: 1024, dropout: 0.4, classes: 3 }
    }

    pub fn for_kind(kind: ModelKind, size: i64) -> Self {
        match kind {
            ModelKind::Face => Self::face(size),
            ModelKind::Emotion => Self::emotion(size),
        }
    }

    /// The network, built once on a scratch graph: its parameters (names,
    /// shapes, initializers, in the order the layers declare them) and each
    /// layer's FLOPs, read off the graph. An error names the offending key
    /// and what is allowed.
    pub fn network(&self) -> Result<Network, String> {
        self.check_values()?;
        let mut g = Graph::new("declare");
        let mut params = DeclareParams::new(DType::F32);
        let n = self.input_size;
        let built =
            g.parameter("images", DType::F32, &[1, n, n, 1]).and_then(|images| self.forward(&mut g, &mut params, images, None, ConvChoice::Convolution));
        if let Err(e) = built {
            return Err(format!(
                "input_size {} cannot be pooled down {} times by {}: {e}; use a larger input_size or fewer conv_filters",
                self.input_size,
                self.conv_filters.len(),
                self.pool
            ));
        }
        let mut layer_flops: Vec<(String, f64)> = Vec::new();
        for (scope, flops) in g.flops_by_scope() {
            let layer = scope.split('.').next().unwrap_or_default().to_string();
            match layer_flops.last_mut() {
                Some((last, total)) if *last == layer => *total += flops,
                _ => layer_flops.push((layer, flops)),
            }
        }
        Ok(Network { params: params.specs(), layer_flops })
    }

    /// Checks the values make a buildable network; the message names the
    /// offending key and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        self.network().map(drop)
    }

    /// The trainable parameters in the order the layers declare them.
    pub fn params(&self) -> Result<Vec<ParamSpec>, String> {
        Ok(self.network()?.params)
    }

    /// The values each key allows, on their own (whether they fit together
    /// is found by building the network).
    fn check_values(&self) -> Result<(), String> {
        if self.input_size < 1 {
            return Err(format!("input_size {} must be at least 1", self.input_size));
        }
        if self.conv_filters.is_empty() || self.conv_filters.iter().any(|&f| f < 1) {
            return Err(format!("conv_filters {:?} must list at least one block, each with at least 1 filter", self.conv_filters));
        }
        if self.kernel_size < 1 || self.kernel_size % 2 == 0 {
            return Err(format!("kernel_size {} must be a positive odd number", self.kernel_size));
        }
        if self.pool < 1 {
            return Err(format!("pool {} must be at least 1", self.pool));
        }
        if self.dense_units < 1 {
            return Err(format!("dense_units {} must be at least 1", self.dense_units));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        if self.classes < 2 {
            return Err(format!("classes {} must be at least 2", self.classes));
        }
        Ok(())
    }

    /// The network on NHWC `images`: conv blocks (`block1`, ...), flatten,
    /// dense + ReLU (`dense`), dropout when a key is given (training),
    /// logits (`logits`). Each layer takes its parameters from `params`
    /// under its scope, which is where the parameter names come from.
    pub fn forward(
        &self,
        g: &mut Graph,
        params: &mut dyn Params,
        images: Tensor,
        dropout: Option<&DropoutKey>,
        conv: ConvChoice,
    ) -> Result<Tensor, GraphError> {
        self.forward_with_kernels(g, params, images, dropout, conv, &CpuKernels::default())
    }

    /// [`Architecture::forward`] with the conv layers' parts computed where
    /// `kernels` says (a layer it gives oneDNN parts to is one convolution,
    /// whatever `conv` says).
    pub fn forward_with_kernels(
        &self,
        g: &mut Graph,
        params: &mut dyn Params,
        images: Tensor,
        dropout: Option<&DropoutKey>,
        conv: ConvChoice,
        kernels: &CpuKernels,
    ) -> Result<Tensor, GraphError> {
        let mut h = images;
        for (i, &filters) in self.conv_filters.iter().enumerate() {
            let formulation = match kernels.block(i) {
                k if k.is_xla() => conv.for_input_channels(g.dims(h).last().copied().unwrap_or(1)),
                k => ConvFormulation::Kernels(k),
            };
            h = g.scoped(&format!("block{}", i + 1), |g| g.conv_block(params, h, filters, self.kernel_size, self.pool, formulation))?;
        }
        let flat = g.scoped("flatten", |g| g.flatten(h))?;
        let hidden = g.scoped("dense", |g| {
            let y = g.linear(params, flat, self.dense_units)?;
            g.relu(y)
        })?;
        let hidden = match dropout {
            Some(key) => g.scoped("dropout", |g| g.dropout(hidden, self.dropout, key))?,
            None => hidden,
        };
        g.scoped("logits", |g| g.linear(params, hidden, self.classes))
    }
}

/// Which formulation the conv layers take (see [`ConvFormulation`]); the
/// function and the parameters are the same either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ConvChoice {
    /// A convolution op in every layer (the default: measured fastest).
    #[default]
    Convolution,
    /// Patches (im2col + one dot) in a layer with one input channel, where
    /// the patches are small (`k*k` values a pixel); a convolution op in the
    /// others. Measured slower than `convolution` with the pinned XLA:CPU
    /// (docs/speed.md), kept to be measured on other CPUs and plugins.
    Patches,
}

impl ConvChoice {
    pub fn for_input_channels(self, channels: i64) -> ConvFormulation {
        match self {
            ConvChoice::Patches if channels == 1 => ConvFormulation::Patches,
            _ => ConvFormulation::Convolution,
        }
    }
}

/// `--cpu-kernels`: who computes the conv layers of a CPU program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CpuKernelMode {
    /// Per part of each conv layer, the faster of XLA's op and oneDNN's
    /// kernel, timed on this machine once and cached
    /// (`models::kernel_choice`); XLA's ops where oneDNN does not load.
    #[default]
    Auto,
    /// XLA's convolution ops everywhere (pure StableHLO).
    Xla,
    /// oneDNN for every part of every conv layer (an error where oneDNN
    /// does not load).
    Onednn,
}

impl CpuKernelMode {
    /// The per-layer choice a forcing mode makes for `arch`; `None` for
    /// `auto`, which measures ([`super::kernel_choice::choose`]).
    pub fn forced(self, arch: &Architecture) -> Option<CpuKernels> {
        match self {
            CpuKernelMode::Auto => None,
            CpuKernelMode::Xla => Some(CpuKernels::default()),
            CpuKernelMode::Onednn => Some(CpuKernels::uniform(arch.conv_filters.len(), Kernel::Onednn)),
        }
    }
}

/// Which kernel computes each part of each conv layer of a CPU program:
/// entry `i` is block `i + 1`; blocks past the end, and an empty list (the
/// default, and what TPU and GPU programs always get), are XLA's ops.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CpuKernels(pub Vec<ConvKernels>);

impl CpuKernels {
    /// Every part of `blocks` conv layers on `kernel`.
    pub fn uniform(blocks: usize, kernel: Kernel) -> Self {
        CpuKernels(vec![ConvKernels::all(kernel); blocks])
    }

    pub fn block(&self, i: usize) -> ConvKernels {
        self.0.get(i).copied().unwrap_or_default()
    }

    /// Whether no part uses a host kernel (then no custom call is emitted).
    pub fn is_xla(&self) -> bool {
        self.0.iter().all(ConvKernels::is_xla)
    }

    /// `block1 forward=onednn input_gradient=xla kernel_gradient=onednn; ...`
    /// (or `xla` when every part is XLA's).
    pub fn describe(&self) -> String {
        if self.is_xla() {
            return "xla".into();
        }
        let blocks: Vec<String> = self
            .0
            .iter()
            .enumerate()
            .map(|(i, k)| {
                format!(
                    "block{} forward={} input_gradient={} kernel_gradient={}",
                    i + 1,
                    k.forward.as_str(),
                    k.input_gradient.as_str(),
                    k.kernel_gradient.as_str()
                )
            })
            .collect();
        blocks.join("; ")
    }
}

/// A built network's parameters and costs (see [`Architecture::network`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Network {
    pub params: Vec<ParamSpec>,
    /// FLOPs of one image's forward pass per layer (`block1`, ..., `dense`,
    /// `logits`), in order.
    pub layer_flops: Vec<(String, f64)>,
}

impl Network {
    pub fn parameter_count(&self) -> i64 {
        self.params.iter().map(|p| p.element_count()).sum()
    }

    /// Multiply-adds x 2 of one image's forward pass (convolutions and dense
    /// layers; elementwise work is not counted).
    pub fn forward_flops(&self) -> f64 {
        self.layer_flops.iter().map(|(_, f)| f).sum()
    }

    /// Forward + backward of one image: every layer's weight gradient costs
    /// its forward again, and every layer but the first also propagates a
    /// gradient to its input (the images need none).
    pub fn train_flops(&self) -> f64 {
        3.0 * self.forward_flops() - self.layer_flops.first().map_or(0.0, |(_, f)| *f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_match_the_brief() {
        // paper.md: face 0.35 GFLOP / 41.0 M params at 100x100, 2.32 GFLOP / 268.5 M at 256;
        // emotion 0.48 GFLOP / 13.8 M at 100, 3.18 GFLOP / 96.7 M at 256.
        let cases = [
            (Architecture::face(100), 0.35, 41.0),
            (Architecture::face(256), 2.32, 268.5),
            (Architecture::emotion(100), 0.48, 13.8),
            (Architecture::emotion(256), 3.18, 96.7),
        ];
        for (arch, gflop, mparams) in cases {
            let net = arch.network().unwrap();
            assert!((net.forward_flops() / 1e9 - gflop).abs() < 0.01, "{arch:?}: {}", net.forward_flops());
            assert!((net.parameter_count() as f64 / 1e6 - mparams).abs() < 0.1, "{arch:?}: {}", net.parameter_count());
        }
        assert!((Architecture::face(100).network().unwrap().train_flops() / 1e9 - 1.04).abs() < 0.03);
    }

    #[test]
    fn validation_names_the_problem() {
        let mut a = Architecture::emotion(4);
        assert!(a.validate().unwrap_err().contains("cannot be pooled down 3 times"));
        a.input_size = 100;
        assert!(a.validate().is_ok());
        a.kernel_size = 4;
        assert!(a.validate().unwrap_err().contains("kernel_size"));
        let mut b = Architecture::face(100);
        b.classes = 1;
        assert!(b.validate().unwrap_err().contains("classes"));
        b.classes = 2;
        b.dropout = 1.0;
        assert!(b.validate().unwrap_err().contains("dropout"));
    }

    #[test]
    fn parameter_names_are_stable() {
        let names: Vec<String> = Architecture::emotion(100).params().unwrap().into_iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            [
                "block1.conv.weight",
                "block1.conv.bias",
                "block2.conv.weight",
                "block2.conv.bias",
                "block3.conv.weight",
                "block3.conv.bias",
                "dense.weight",
                "dense.bias",
                "logits.weight",
                "logits.bias"
            ]
        );
    }
}
