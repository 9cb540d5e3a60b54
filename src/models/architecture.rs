//! The two CNNs of the paper as configuration: every width, kernel, input
//! size and class count is a value here, with the reconstruction of
//! `paper.md` as the default.
//!
//! Face model: conv5x5/32 + ReLU + pool2 -> conv5x5/64 + ReLU + pool2 ->
//! dense 1024 + ReLU -> dropout 0.4 -> dense 2. The emotion model adds a third
//! block with 92 filters and ends in 3 classes (happy / sad / neither).

use serde::{Deserialize, Serialize};

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

/// How a parameter is initialized.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Normal with standard deviation `sqrt(2 / fan_in)` (He et al.).
    HeNormal {
        fan_in: i64,
    },
    Zeros,
}

/// One trainable tensor: its stable dotted name, shape and initializer.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub dims: Vec<i64>,
    pub init: Init,
}

impl ParamSpec {
    pub fn element_count(&self) -> i64 {
        self.dims.iter().product()
    }
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

    /// Spatial size after each block (max-pool with floor, as VALID pooling).
    pub fn feature_sizes(&self) -> Vec<i64> {
        let mut s = self.input_size;
        self.conv_filters
            .iter()
            .map(|_| {
                s /= self.pool.max(1);
                s
            })
            .collect()
    }

    /// Size of the flattened features entering the dense layer.
    pub fn flat_features(&self) -> i64 {
        let s = self.feature_sizes().last().copied().unwrap_or(self.input_size);
        s * s * self.conv_filters.last().copied().unwrap_or(1)
    }

    /// Checks the values make a buildable network; the message names the
    /// offending key and what is allowed.
    pub fn validate(&self) -> Result<(), String> {
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
        let mut s = self.input_size;
        for (i, _) in self.conv_filters.iter().enumerate() {
            if s < self.pool {
                return Err(format!(
                    "input_size {} cannot be pooled down {} times by {}: block {} gets {s}x{s}; use a larger input_size or fewer conv_filters",
                    self.input_size,
                    self.conv_filters.len(),
                    self.pool,
                    i + 1
                ));
            }
            s /= self.pool;
        }
        Ok(())
    }

    /// The trainable parameters in their fixed order.
    pub fn params(&self) -> Vec<ParamSpec> {
        let k = self.kernel_size;
        let mut specs = Vec::new();
        let mut cin = 1;
        for (i, &f) in self.conv_filters.iter().enumerate() {
            let block = format!("block{}.conv", i + 1);
            specs.push(ParamSpec { name: format!("{block}.weight"), dims: vec![k, k, cin, f], init: Init::HeNormal { fan_in: k * k * cin } });
            specs.push(ParamSpec { name: format!("{block}.bias"), dims: vec![f], init: Init::Zeros });
            cin = f;
        }
        let flat = self.flat_features();
        specs.push(ParamSpec { name: "dense.weight".into(), dims: vec![self.dense_units, flat], init: Init::HeNormal { fan_in: flat } });
        specs.push(ParamSpec { name: "dense.bias".into(), dims: vec![self.dense_units], init: Init::Zeros });
        specs.push(ParamSpec { name: "logits.weight".into(), dims: vec![self.classes, self.dense_units], init: Init::HeNormal { fan_in: self.dense_units } });
        specs.push(ParamSpec { name: "logits.bias".into(), dims: vec![self.classes], init: Init::Zeros });
        specs
    }

    pub fn parameter_count(&self) -> i64 {
        self.params().iter().map(|p| p.element_count()).sum()
    }

    /// Multiply-adds x 2 of one image's forward pass (convolutions and dense
    /// layers; elementwise work is not counted).
    pub fn forward_flops(&self) -> f64 {
        self.layer_flops().iter().sum()
    }

    /// Forward + backward of one image: every layer's weight gradient costs
    /// its forward again, and every layer but the first also propagates a
    /// gradient to its input (the images need none).
    pub fn train_flops(&self) -> f64 {
        let layers = self.layer_flops();
        3.0 * layers.iter().sum::<f64>() - layers[0]
    }

    fn layer_flops(&self) -> Vec<f64> {
        let k = self.kernel_size as f64;
        let mut s = self.input_size as f64;
        let mut cin = 1.0;
        let mut out = Vec::new();
        for &f in &self.conv_filters {
            out.push(2.0 * s * s * k * k * cin * f as f64);
            cin = f as f64;
            s = (s / self.pool as f64).floor();
        }
        out.push(2.0 * self.flat_features() as f64 * self.dense_units as f64);
        out.push(2.0 * self.dense_units as f64 * self.classes as f64);
        out
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
            assert!((arch.forward_flops() / 1e9 - gflop).abs() < 0.01, "{arch:?}: {}", arch.forward_flops());
            assert!((arch.parameter_count() as f64 / 1e6 - mparams).abs() < 0.1, "{arch:?}: {}", arch.parameter_count());
        }
        assert!((Architecture::face(100).train_flops() / 1e9 - 1.04).abs() < 0.03);
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
        let names: Vec<String> = Architecture::emotion(100).params().into_iter().map(|p| p.name).collect();
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
