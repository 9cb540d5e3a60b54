//! Neural-network building blocks composed from primitives. Nothing here
//! has gradient code: autodiff differentiates the primitives they are made
//! of.
//!
//! Gradient traps, decided here once:
//! - ReLU is `select(x > 0, x, 0)`, so its derivative at exactly 0 is 0
//!   (TensorFlow's and JAX's choice), not the 1/2 that `max(x, 0)` would give;
//! - the conv block's max pooling (`max_pool_tiled`) shares a tied tile's
//!   cotangent equally among its maxima (the `max_pool` primitive gives it
//!   all to the first one);
//! - `log_softmax` subtracts the row maximum for stability; the derivative
//!   through that maximum cancels exactly in the algebra.

use super::ir::{Graph, Tensor};
use super::ops::{ConvKernels, ConvSpec, Direction, DotDims, ReduceKind};
use super::params::{Init, Params};
use super::shape::{Result, attr_err, shape_err};
use crate::tensor::DType;

impl Graph {
    /// `max(x, 0)` with derivative 0 at 0.
    pub fn relu(&mut self, x: Tensor) -> Result<Tensor> {
        let zero = self.zeros_like(x)?;
        let positive = self.compare(x, zero, Direction::Gt)?;
        self.select(positive, x, zero)
    }

    /// `x + b`, with the vector `b` broadcast along `x`'s last dimension.
    pub fn add_bias(&mut self, x: Tensor, b: Tensor) -> Result<Tensor> {
        let dims = self.dims(x).to_vec();
        if dims.is_empty() {
            return shape_err("add_bias", &[self.shape(x), self.shape(b)], "bias needs an input of rank at least 1");
        }
        let bb = self.broadcast_in_dim(b, &dims, &[dims.len() as i64 - 1])?;
        self.add(x, bb)
    }

    /// `x @ w^T + b` for `x: [batch, in]`, `w: [out, in]`, `b: [out]`.
    ///
    /// The weight is stored `[out, in]` (as in PyTorch) because XLA:CPU runs
    /// the backward pass's `cot @ w` faster with that layout: on the face
    /// model's 40000x1024 layer, forward + both gradients took 164 ms
    /// against 217 ms with `[in, out]` (2 cores, batch 100).
    pub fn dense(&mut self, x: Tensor, w: Tensor, b: Tensor) -> Result<Tensor> {
        let y = self.dot_general(x, w, DotDims { lhs_contract: vec![1], rhs_contract: vec![1], ..Default::default() })?;
        self.add_bias(y, b)
    }

    /// Collapses every dimension after the first: `[b, ...] -> [b, n]`.
    pub fn flatten(&mut self, x: Tensor) -> Result<Tensor> {
        let dims = self.dims(x).to_vec();
        let rest: i64 = dims[1..].iter().product();
        self.reshape(x, &[dims[0], rest])
    }

    /// NHWC convolution with an HWIO kernel, stride `stride`, and
    /// TensorFlow's SAME padding (output size `ceil(in / stride)`).
    pub fn conv2d_same(&mut self, x: Tensor, w: Tensor, stride: i64) -> Result<Tensor> {
        self.conv2d_same_kernels(x, w, stride, ConvKernels::default())
    }

    /// [`Graph::conv2d_same`] with each part (forward, input gradient,
    /// kernel gradient) computed by the kernel `kernels` names.
    pub fn conv2d_same_kernels(&mut self, x: Tensor, w: Tensor, stride: i64, kernels: ConvKernels) -> Result<Tensor> {
        let (xd, wd) = (self.dims(x).to_vec(), self.dims(w).to_vec());
        if xd.len() != 4 || wd.len() != 4 {
            return shape_err("conv2d_same", &[self.shape(x), self.shape(w)], "expects NHWC input and HWIO kernel");
        }
        let pad = |n: i64, k: i64| {
            let out = (n + stride - 1) / stride;
            let total = ((out - 1) * stride + k - n).max(0);
            (total / 2, total - total / 2)
        };
        let spec = ConvSpec::nhwc([stride, stride], [pad(xd[1], wd[0]), pad(xd[2], wd[1])]);
        self.conv_with_kernels(x, w, spec, kernels)
    }

    /// A dense layer of `units` outputs on `x: [batch, in]`: asks `params`
    /// for `weight: [units, in]` (He-normal) and `bias: [units]` (zeros)
    /// under the current scope, and applies [`Graph::dense`].
    pub fn linear(&mut self, params: &mut dyn Params, x: Tensor, units: i64) -> Result<Tensor> {
        let dims = self.dims(x).to_vec();
        if dims.len() != 2 {
            return shape_err("linear", &[self.shape(x)], "expects [batch, features]");
        }
        let w = params.get(self, "weight", &[units, dims[1]], Init::HeNormal { fan_in: dims[1] })?;
        let b = params.get(self, "bias", &[units], Init::Zeros)?;
        self.dense(x, w, b)
    }

    /// A SAME convolution of `filters` `kernel x kernel` filters plus bias on
    /// NHWC `x`: asks `params` for `weight: [k, k, in, filters]` (HWIO,
    /// He-normal) and `bias: [filters]` (zeros) under the current scope, and
    /// computes it as `formulation` says (the parameters are the same).
    pub fn conv2d(&mut self, params: &mut dyn Params, x: Tensor, filters: i64, kernel: i64, formulation: ConvFormulation) -> Result<Tensor> {
        let dims = self.dims(x).to_vec();
        if dims.len() != 4 {
            return shape_err("conv2d", &[self.shape(x)], "expects an NHWC input");
        }
        let cin = dims[3];
        let w = params.get(self, "weight", &[kernel, kernel, cin, filters], Init::HeNormal { fan_in: kernel * kernel * cin })?;
        let b = params.get(self, "bias", &[filters], Init::Zeros)?;
        let y = match formulation {
            ConvFormulation::Convolution => self.conv2d_same(x, w, 1)?,
            ConvFormulation::Patches => self.conv2d_same_patches(x, w)?,
            ConvFormulation::Kernels(kernels) => self.conv2d_same_kernels(x, w, 1, kernels)?,
        };
        self.add_bias(y, b)
    }

    /// The same function as `conv2d_same(x, w, 1)`, written as one matrix
    /// product: the `k x k` neighbourhoods of every pixel are gathered into
    /// `[n, h, w, k*k*in]` (im2col: `k*k` shifted slices of the padded
    /// input, concatenated) and multiplied by the kernel reshaped to
    /// `[k*k*in, out]`. Its kernel gradient is then one dot contracting
    /// `n*h*w`, where XLA:CPU's convolution of a one-channel input runs at a
    /// small fraction of its matmul speed. The patches are `k*k` times the
    /// input, so this pays off only for few input channels.
    pub fn conv2d_same_patches(&mut self, x: Tensor, w: Tensor) -> Result<Tensor> {
        let (xd, wd) = (self.dims(x).to_vec(), self.dims(w).to_vec());
        if xd.len() != 4 || wd.len() != 4 || wd[0] != wd[1] || wd[0] % 2 == 0 || wd[2] != xd[3] {
            return shape_err("conv2d_same_patches", &[self.shape(x), self.shape(w)], "expects NHWC input and a square, odd HWIO kernel over its channels");
        }
        let (n, h, wi, cin) = (xd[0], xd[1], xd[2], xd[3]);
        let (k, cout) = (wd[0], wd[3]);
        let half = k / 2;
        let zero = self.scalar(0.0, self.dtype(x))?;
        let padded = self.pad(x, zero, &[0, half, half, 0], &[0, half, half, 0], &[0, 0, 0, 0])?;
        let mut shifted = Vec::with_capacity((k * k) as usize);
        for dy in 0..k {
            for dx in 0..k {
                shifted.push(self.slice(padded, &[0, dy, dx, 0], &[n, dy + h, dx + wi, cin], &[1, 1, 1, 1])?);
            }
        }
        // Row-major (dy, dx, channel): the order of the HWIO kernel's first
        // three dimensions, so a reshape lines the two up.
        let patches = self.concatenate(&shifted, 3)?;
        let kernel = self.reshape(w, &[k * k * cin, cout])?;
        self.dot_general(patches, kernel, DotDims { lhs_contract: vec![3], rhs_contract: vec![0], ..Default::default() })
    }

    /// conv (SAME, scope `conv`) + bias + ReLU + max-pool `pool x pool` with
    /// stride `pool`.
    pub fn conv_block(&mut self, params: &mut dyn Params, x: Tensor, filters: i64, kernel: i64, pool: i64, formulation: ConvFormulation) -> Result<Tensor> {
        let y = self.scoped("conv", |g| g.conv2d(params, x, filters, kernel, formulation))?;
        let y = self.scoped("relu", |g| g.relu(y))?;
        self.scoped("pool", |g| g.max_pool_tiled(y, pool))
    }

    /// Max pooling of NHWC over non-overlapping `k x k` tiles (stride `k`,
    /// VALID: a trailing row or column that does not fill a tile is dropped,
    /// as in `reduce_window`). Written as a reshape to
    /// `[n, h/k, k, w/k, k, c]` and a max over the two tile dimensions, so its
    /// gradient is the reduction's (elementwise, which XLA fuses) instead of
    /// `select_and_scatter`, which XLA:CPU runs as a slow serial scatter
    /// (measured 4.6x slower on the face model's first pooling layer).
    /// Trap: ties within a tile share the cotangent equally, where
    /// `max_pool` gives it all to the first maximum; both are valid
    /// subgradients, and they agree wherever the maximum is unique.
    pub fn max_pool_tiled(&mut self, x: Tensor, k: i64) -> Result<Tensor> {
        let d = self.dims(x).to_vec();
        if d.len() != 4 || k < 1 {
            return shape_err("max_pool_tiled", &[self.shape(x)], format!("expects NHWC input and a tile size of at least 1, got {k}"));
        }
        let (h, w) = (d[1] / k * k, d[2] / k * k);
        if h == 0 || w == 0 {
            return shape_err("max_pool_tiled", &[self.shape(x)], format!("a {}x{} image is smaller than the {k}x{k} tile", d[1], d[2]));
        }
        let cropped = if (h, w) == (d[1], d[2]) { x } else { self.slice(x, &[0, 0, 0, 0], &[d[0], h, w, d[3]], &[1, 1, 1, 1])? };
        let tiles = self.reshape(cropped, &[d[0], h / k, k, w / k, k, d[3]])?;
        self.reduce(tiles, ReduceKind::Max, &[2, 4])
    }

    /// Log-softmax over the last dimension.
    pub fn log_softmax(&mut self, logits: Tensor) -> Result<Tensor> {
        let dims = self.dims(logits).to_vec();
        let last = dims.len() as i64 - 1;
        let kept: Vec<i64> = (0..last).collect();
        let m = self.reduce(logits, ReduceKind::Max, &[last])?;
        let mb = self.broadcast_in_dim(m, &dims, &kept)?;
        let shifted = self.sub(logits, mb)?;
        let e = self.exp(shifted)?;
        let s = self.reduce(e, ReduceKind::Sum, &[last])?;
        let ls = self.log(s)?;
        let lsb = self.broadcast_in_dim(ls, &dims, &kept)?;
        self.sub(shifted, lsb)
    }

    /// Softmax over the last dimension.
    pub fn softmax(&mut self, logits: Tensor) -> Result<Tensor> {
        let l = self.log_softmax(logits)?;
        self.exp(l)
    }

    /// `[batch] i32 -> [batch, classes]` of the float type `dtype`.
    pub fn one_hot(&mut self, labels: Tensor, classes: i64, dtype: DType) -> Result<Tensor> {
        let batch = self.dims(labels).to_vec();
        if batch.len() != 1 || self.dtype(labels) != DType::I32 {
            return shape_err("one_hot", &[self.shape(labels)], "labels must be a vector of i32");
        }
        let dims = [batch[0], classes];
        let ids = self.iota(DType::I32, &dims, 1)?;
        let lb = self.broadcast_in_dim(labels, &dims, &[0])?;
        let hit = self.compare(ids, lb, Direction::Eq)?;
        self.convert(hit, dtype)
    }

    /// Mean softmax cross-entropy of `logits: [batch, classes]` against
    /// integer `labels: [batch]`, and its per-example sum (for averaging
    /// across replicas).
    pub fn softmax_cross_entropy(&mut self, logits: Tensor, labels: Tensor) -> Result<CrossEntropy> {
        let dims = self.dims(logits).to_vec();
        if dims.len() != 2 {
            return shape_err("softmax_cross_entropy", &[self.shape(logits)], "logits must be [batch, classes]");
        }
        let dtype = self.dtype(logits);
        let logp = self.log_softmax(logits)?;
        let target = self.one_hot(labels, dims[1], dtype)?;
        let picked = self.mul(logp, target)?;
        let total = self.sum_all(picked)?;
        let sum = self.neg(total)?;
        let mean = self.mul_scalar(sum, 1.0 / dims[0] as f64)?;
        Ok(CrossEntropy { mean, sum })
    }

    /// Index of the largest logit per row (the first one when tied), i32.
    pub fn argmax(&mut self, logits: Tensor) -> Result<Tensor> {
        let dims = self.dims(logits).to_vec();
        if dims.len() != 2 {
            return shape_err("argmax", &[self.shape(logits)], "logits must be [batch, classes]");
        }
        let m = self.reduce(logits, ReduceKind::Max, &[1])?;
        let mb = self.broadcast_in_dim(m, &dims, &[0])?;
        let is_max = self.compare(logits, mb, Direction::Eq)?;
        let ids = self.iota(DType::I32, &dims, 1)?;
        let none = self.full(dims[1] as f64, DType::I32, &dims)?;
        let candidates = self.select(is_max, ids, none)?;
        self.reduce(candidates, ReduceKind::Min, &[1])
    }

    /// Number of rows whose argmax equals the label, as f32 (a count, so
    /// that replicas can sum it).
    pub fn correct_count(&mut self, logits: Tensor, labels: Tensor) -> Result<Tensor> {
        let predicted = self.argmax(logits)?;
        let hit = self.compare(predicted, labels, Direction::Eq)?;
        let hit = self.convert(hit, DType::F32)?;
        self.sum_all(hit)
    }

    /// Inverted dropout: each element is kept with probability `1 - rate`
    /// and scaled by `1 / (1 - rate)`. The mask comes from a counter-based
    /// hash of (seed, step, global element index) computed inside the
    /// program, so it is the same for an example wherever it runs: a batch
    /// split over N replicas (each passing its `example_offset`) drops
    /// exactly what one device would.
    pub fn dropout(&mut self, x: Tensor, rate: f64, key: &DropoutKey) -> Result<Tensor> {
        if !(0.0..1.0).contains(&rate) {
            return attr_err("dropout", format!("rate {rate} must be in [0, 1)"));
        }
        if rate == 0.0 {
            return Ok(x);
        }
        let dims = self.dims(x).to_vec();
        if dims.len() != 2 {
            return shape_err("dropout", &[self.shape(x)], "expects [batch, units]");
        }
        let bits = self.scoped("rng", |g| g.random_bits(&dims, key))?;
        let threshold = (rate * 4294967296.0).round().min(4294967295.0);
        let t = self.full(threshold, DType::U32, &dims)?;
        let keep = self.compare(bits, t, Direction::Ge)?;
        let scaled = self.mul_scalar(x, 1.0 / (1.0 - rate))?;
        let zero = self.zeros_like(x)?;
        self.select(keep, scaled, zero)
    }

    /// Uniform u32 bits for a `[batch, units]` array, from the murmur3
    /// finalizer applied to the global element index mixed with a key
    /// derived from (seed, step, salt).
    pub fn random_bits(&mut self, dims: &[i64], key: &DropoutKey) -> Result<Tensor> {
        let u = DType::U32;
        // Scalar key: fmix(seed ^ (step * golden) ^ salt).
        let step = self.convert(key.step, u)?;
        let golden = self.scalar(0x9E37_79B9u32 as f64, u)?;
        let salted = self.scalar(key.salt as f64, u)?;
        let k = self.mul(step, golden)?;
        let k = self.xor(k, key.seed)?;
        let k = self.xor(k, salted)?;
        let k = self.fmix32(k)?;
        // Counter: (offset + row) * units + column.
        let row = self.iota(u, dims, 0)?;
        let col = self.iota(u, dims, 1)?;
        let offset = self.broadcast_in_dim(key.example_offset, dims, &[])?;
        let row = self.add(row, offset)?;
        let units = self.full(dims[1] as f64, u, dims)?;
        let counter = self.mul(row, units)?;
        let counter = self.add(counter, col)?;
        let kb = self.broadcast_in_dim(k, dims, &[])?;
        let h = self.xor(counter, kb)?;
        let h = self.fmix32(h)?;
        let h = self.add(h, kb)?;
        self.fmix32(h)
    }

    /// MurmurHash3's 32-bit finalizer (a bijection with good avalanche).
    fn fmix32(&mut self, h: Tensor) -> Result<Tensor> {
        let dims = self.dims(h).to_vec();
        let u = DType::U32;
        let s16 = self.full(16.0, u, &dims)?;
        let s13 = self.full(13.0, u, &dims)?;
        let c1 = self.full(0x85EB_CA6Bu32 as f64, u, &dims)?;
        let c2 = self.full(0xC2B2_AE35u32 as f64, u, &dims)?;
        let t = self.shift_right_logical(h, s16)?;
        let h = self.xor(h, t)?;
        let h = self.mul(h, c1)?;
        let t = self.shift_right_logical(h, s13)?;
        let h = self.xor(h, t)?;
        let h = self.mul(h, c2)?;
        let t = self.shift_right_logical(h, s16)?;
        self.xor(h, t)
    }
}

/// How a convolution layer is computed; both give the same function and
/// take the same parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConvFormulation {
    /// One `convolution` op; its gradients are convolutions.
    Convolution,
    /// im2col: shifted slices of the input gathered into patches, then one
    /// dot (`Graph::conv2d_same_patches`).
    Patches,
    /// One convolution whose parts run where `ConvKernels` says (XLA's
    /// op or oneDNN through custom calls; CPU programs only).
    Kernels(ConvKernels),
}

/// The loss of a batch: its mean (what is differentiated) and its sum.
#[derive(Clone, Copy, Debug)]
pub struct CrossEntropy {
    pub mean: Tensor,
    pub sum: Tensor,
}

/// Where dropout masks come from: u32 scalar `seed`, i32 or u32 scalar
/// `step`, u32 scalar `example_offset` (index of this replica's first example
/// in the global batch), and a per-layer `salt`.
#[derive(Clone, Copy, Debug)]
pub struct DropoutKey {
    pub seed: Tensor,
    pub step: Tensor,
    pub example_offset: Tensor,
    pub salt: u32,
}
