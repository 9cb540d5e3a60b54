//! General convolution (any layout, strides, padding, input and kernel
//! dilation; one feature group).
//!
//! Dimension numbers follow XLA/JAX: `lhs = [batch, feature, spatial...]`,
//! `rhs = [out_feature, in_feature, spatial...]`, `out = [batch, feature,
//! spatial...]`, each entry the index of that dimension in the tensor. So
//! NHWC / HWIO is `lhs [0, 3, 1, 2]`, `rhs [3, 2, 0, 1]`, `out [0, 3, 1, 2]`.
//!
//! Output size per spatial dimension, with `dilate(n, d) = (n - 1) * d + 1`:
//! `out = (dilate(in, lhs_dilation) + pad_lo + pad_hi - dilate(k, rhs_dilation)) / stride + 1`.
//!
//! Convolution is bilinear, and both cotangents are convolutions again: the
//! input's is the output cotangent convolved with the flipped kernel (strides
//! become input dilation), the kernel's is the input convolved with the output
//! cotangent (batch and feature roles swapped, strides become kernel dilation).

use super::{Op, Operand, Primitive, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, attr_err, check_dims, shape_err};

/// Which tensor dimension plays which role (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvDims {
    pub lhs: Vec<i64>,
    pub rhs: Vec<i64>,
    pub out: Vec<i64>,
}

impl ConvDims {
    /// Images NHWC, kernels HWIO, outputs NHWC (TensorFlow's layout).
    pub fn nhwc_hwio() -> Self {
        ConvDims { lhs: vec![0, 3, 1, 2], rhs: vec![3, 2, 0, 1], out: vec![0, 3, 1, 2] }
    }
}

/// Everything about a convolution except its operands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvSpec {
    pub strides: Vec<i64>,
    pub padding: Vec<(i64, i64)>,
    pub lhs_dilation: Vec<i64>,
    pub rhs_dilation: Vec<i64>,
    pub dims: ConvDims,
}

impl ConvSpec {
    /// NHWC/HWIO, given strides and padding, no dilation.
    pub fn nhwc(strides: [i64; 2], padding: [(i64, i64); 2]) -> Self {
        ConvSpec { strides: strides.to_vec(), padding: padding.to_vec(), lhs_dilation: vec![1, 1], rhs_dilation: vec![1, 1], dims: ConvDims::nhwc_hwio() }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Convolution {
    pub spec: ConvSpec,
}

fn dilate(n: i64, d: i64) -> i64 {
    if n == 0 { 0 } else { (n - 1) * d + 1 }
}

fn swap01(spec: &[i64]) -> Vec<i64> {
    let mut s = spec.to_vec();
    s.swap(0, 1);
    s
}

fn spatial_sizes(dims: &[i64], spec: &[i64]) -> Vec<i64> {
    spec[2..].iter().map(|&d| dims[d as usize]).collect()
}

/// Padding of the input-cotangent convolution.
fn vjp_lhs_padding(input: &[i64], window: &[i64], strides: &[i64], out: &[i64], padding: &[(i64, i64)], lhs_dil: &[i64], rhs_dil: &[i64]) -> Vec<(i64, i64)> {
    (0..input.len())
        .map(|i| {
            let (lhs_d, rhs_d, out_d) = (dilate(input[i], lhs_dil[i]), dilate(window[i], rhs_dil[i]), dilate(out[i], strides[i]));
            let before = rhs_d - padding[i].0 - 1;
            let after = lhs_d + rhs_d - 1 - out_d - before;
            (before, after)
        })
        .collect()
}

/// Padding of the kernel-cotangent convolution.
fn vjp_rhs_padding(input: &[i64], window: &[i64], strides: &[i64], out: &[i64], padding: &[(i64, i64)], lhs_dil: &[i64], rhs_dil: &[i64]) -> Vec<(i64, i64)> {
    (0..input.len())
        .map(|i| {
            let (lhs_d, rhs_d, out_d) = (dilate(input[i], lhs_dil[i]), dilate(window[i], rhs_dil[i]), dilate(out[i], strides[i]));
            let lo = padding[i].0;
            (lo, (out_d - lhs_d) + (rhs_d - lo - 1))
        })
        .collect()
}

/// `[b, 0, 1, f]`: the role of each tensor dimension, as StableHLO spells it.
fn layout_string(spec: &[i64], major: char, minor: char) -> String {
    let items: Vec<String> = (0..spec.len() as i64)
        .map(|p| {
            if p == spec[0] {
                major.to_string()
            } else if p == spec[1] {
                minor.to_string()
            } else {
                (spec[2..].iter().position(|&s| s == p).unwrap_or(0)).to_string()
            }
        })
        .collect();
    format!("[{}]", items.join(", "))
}

impl Primitive for Convolution {
    fn name(&self) -> &'static str {
        "convolution"
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        let (x, w) = (inputs[0], inputs[1]);
        let s = &self.spec;
        let rank = x.rank();
        let n = rank.saturating_sub(2);
        if rank < 3 || w.rank() != rank {
            return shape_err(self.name(), inputs, "input and kernel must have the same rank, at least 3");
        }
        if x.dtype != w.dtype || !x.dtype.is_float() {
            return shape_err(self.name(), inputs, "input and kernel must have the same float type");
        }
        for (what, spec) in [("lhs dimension numbers", &s.dims.lhs), ("rhs dimension numbers", &s.dims.rhs), ("output dimension numbers", &s.dims.out)] {
            if spec.len() != rank {
                return attr_err(self.name(), format!("{what} {spec:?} must list all {rank} dimensions"));
            }
            check_dims(self.name(), what, spec, rank)?;
        }
        for (what, v) in [("strides", &s.strides), ("lhs_dilation", &s.lhs_dilation), ("rhs_dilation", &s.rhs_dilation)] {
            if v.len() != n || v.iter().any(|&x| x < 1) {
                return attr_err(self.name(), format!("{what} {v:?} must have {n} entries, each at least 1"));
            }
        }
        if s.padding.len() != n {
            return attr_err(self.name(), format!("padding {:?} must have {n} (low, high) pairs", s.padding));
        }
        let in_features = x.dims[s.dims.lhs[1] as usize];
        let kernel_in = w.dims[s.dims.rhs[1] as usize];
        if in_features != kernel_in {
            return shape_err(self.name(), inputs, format!("input has {in_features} features, the kernel expects {kernel_in}"));
        }
        let in_sp = spatial_sizes(&x.dims, &s.dims.lhs);
        let k_sp = spatial_sizes(&w.dims, &s.dims.rhs);
        let mut out = vec![0i64; rank];
        out[s.dims.out[0] as usize] = x.dims[s.dims.lhs[0] as usize];
        out[s.dims.out[1] as usize] = w.dims[s.dims.rhs[0] as usize];
        for i in 0..n {
            let padded = dilate(in_sp[i], s.lhs_dilation[i]) + s.padding[i].0 + s.padding[i].1;
            let window = dilate(k_sp[i], s.rhs_dilation[i]);
            if padded < window {
                return shape_err(self.name(), inputs, format!("spatial dimension {i}: padded input {padded} is smaller than the dilated kernel {window}"));
            }
            out[s.dims.out[2 + i] as usize] = (padded - window) / s.strides[i] + 1;
        }
        Ok(Shape::new(x.dtype, &out))
    }

    fn vjp(&self, g: &mut Graph, inputs: &[Tensor], y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, w) = (inputs[0], inputs[1]);
        let s = &self.spec;
        let in_sp = spatial_sizes(g.dims(x), &s.dims.lhs);
        let k_sp = spatial_sizes(g.dims(w), &s.dims.rhs);
        let out_sp = spatial_sizes(g.dims(y), &s.dims.out);

        // Input cotangent: cot (laid out as `out`) convolved with the
        // spatially flipped kernel, whose in/out feature roles swap.
        let lhs_spec = ConvSpec {
            strides: s.lhs_dilation.clone(),
            padding: vjp_lhs_padding(&in_sp, &k_sp, &s.strides, &out_sp, &s.padding, &s.lhs_dilation, &s.rhs_dilation),
            lhs_dilation: s.strides.clone(),
            rhs_dilation: s.rhs_dilation.clone(),
            dims: ConvDims { lhs: s.dims.out.clone(), rhs: swap01(&s.dims.rhs), out: s.dims.lhs.clone() },
        };
        let flipped = g.reverse(w, &s.dims.rhs[2..])?;
        let dx = g.conv(cot, flipped, lhs_spec)?;

        // Kernel cotangent: the input convolved with cot, treating the
        // input's feature dimension as batch and its batch as feature.
        let rhs_spec = ConvSpec {
            strides: s.rhs_dilation.clone(),
            padding: vjp_rhs_padding(&in_sp, &k_sp, &s.strides, &out_sp, &s.padding, &s.lhs_dilation, &s.rhs_dilation),
            lhs_dilation: s.lhs_dilation.clone(),
            rhs_dilation: s.strides.clone(),
            dims: ConvDims { lhs: swap01(&s.dims.lhs), rhs: swap01(&s.dims.out), out: swap01(&s.dims.rhs) },
        };
        let dw = g.conv(x, cot, rhs_spec)?;
        // The paddings above make both results exactly the operands' sizes
        // for an undilated input; with input dilation (a transposed
        // convolution, differentiated again) the strided division can leave
        // trailing positions that never reached the output: they get zeros.
        let (x_dims, w_dims) = (g.dims(x).to_vec(), g.dims(w).to_vec());
        let dx = fit_to(g, dx, &x_dims)?;
        let dw = fit_to(g, dw, &w_dims)?;
        Ok(vec![Some(dx), Some(dw)])
    }

    /// Two per multiply-add: every output element sums over the kernel's
    /// window and input features (padding positions included, as
    /// frameworks count them).
    fn flops(&self, inputs: &[&Shape], out: &Shape) -> f64 {
        let kernel = inputs[1];
        let per_output = kernel.element_count() / kernel.dims[self.spec.dims.rhs[0] as usize].max(1);
        2.0 * out.element_count() as f64 * per_output as f64
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        let s = &self.spec;
        let list = |v: &[i64]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        let pad = s.padding.iter().map(|(lo, hi)| format!("[{lo}, {hi}]")).collect::<Vec<_>>().join(", ");
        format!(
            "{result} = stablehlo.convolution({}, {}) dim_numbers = {}x{}->{}, window = {{stride = [{}], pad = [{pad}], lhs_dilate = [{}], rhs_dilate = [{}]}} {{batch_group_count = 1 : i64, feature_group_count = 1 : i64}} : {} {loc}",
            args[0].name,
            args[1].name,
            layout_string(&s.dims.lhs, 'b', 'f'),
            layout_string(&s.dims.rhs, 'o', 'i'),
            layout_string(&s.dims.out, 'b', 'f'),
            list(&s.strides),
            list(&s.lhs_dilation),
            list(&s.rhs_dilation),
            signature(args, out)
        )
    }
}

/// Pads `t` with zeros at the high end up to `dims` (each at least as large).
fn fit_to(g: &mut Graph, t: Tensor, dims: &[i64]) -> Result<Tensor> {
    let have = g.dims(t).to_vec();
    if have == dims {
        return Ok(t);
    }
    let high: Vec<i64> = dims.iter().zip(&have).map(|(want, got)| want - got).collect();
    let zero = g.scalar(0.0, g.dtype(t))?;
    g.pad(t, zero, &vec![0; dims.len()], &high, &vec![0; dims.len()])
}

impl Graph {
    pub fn conv(&mut self, x: Tensor, kernel: Tensor, spec: ConvSpec) -> Result<Tensor> {
        self.push(Op::Convolution(Convolution { spec }), &[x, kernel])
    }
}
