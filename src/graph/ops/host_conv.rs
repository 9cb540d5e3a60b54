//! A 2-D convolution layer (NHWC input, HWIO kernel, no dilation) whose
//! parts may run as host kernels on the CPU: oneDNN's convolutions called as
//! XLA custom calls (`stablehlo.custom_call`, typed FFI, api_version 4; the
//! kernels live in `pjrt::onednn`). Which part runs where is the caller's
//! [`ConvKernels`]; the function is the same either way, within f32
//! rounding.
//!
//! One primitive, three parts: the forward `(x, w) -> y` (emitted as XLA's
//! `convolution` when its own part is XLA's), and, made only by its VJP,
//! the input gradient `(dy, w) -> dx` and the kernel gradient
//! `(x, dy) -> dw` as custom calls; a gradient part that is XLA's is the
//! plain convolution's rule. Programs for TPUs and GPUs never contain this
//! primitive: only a CPU program built with a oneDNN choice does.

use super::conv::{ConvSpec, Convolution};
use super::{Op, Operand, Primitive, i64_array, non_differentiable, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, shape_err};

/// Who computes one part of a convolution layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kernel {
    /// XLA's own `convolution` op.
    #[default]
    Xla,
    /// oneDNN through an XLA custom call (CPU only).
    Onednn,
}

impl Kernel {
    pub fn as_str(self) -> &'static str {
        match self {
            Kernel::Xla => "xla",
            Kernel::Onednn => "onednn",
        }
    }
}

/// The kernel of each part of one convolution layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvKernels {
    pub forward: Kernel,
    pub input_gradient: Kernel,
    pub kernel_gradient: Kernel,
}

impl ConvKernels {
    /// Every part the same.
    pub fn all(k: Kernel) -> Self {
        ConvKernels { forward: k, input_gradient: k, kernel_gradient: k }
    }

    /// Whether every part is XLA's (then the layer is a plain convolution).
    pub fn is_xla(&self) -> bool {
        *self == ConvKernels::all(Kernel::Xla)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Part {
    Forward,
    InputGradient,
    KernelGradient,
}

#[derive(Clone, Debug)]
pub(crate) struct HostConv {
    /// The forward convolution's spec (NHWC/HWIO, no dilation).
    spec: ConvSpec,
    part: Part,
    kernels: ConvKernels,
    /// The result's dims for a gradient part (the input's or the kernel's),
    /// which its operands do not determine alone.
    result_dims: Vec<i64>,
}

impl HostConv {
    fn target(&self) -> &'static str {
        match self.part {
            Part::Forward => "emotionet_onednn_conv_fwd",
            Part::InputGradient => "emotionet_onednn_conv_bwd_data",
            Part::KernelGradient => "emotionet_onednn_conv_bwd_weights",
        }
    }
}

impl Primitive for HostConv {
    fn name(&self) -> &'static str {
        match self.part {
            Part::Forward => "host_convolution",
            Part::InputGradient => "host_convolution_input_gradient",
            Part::KernelGradient => "host_convolution_kernel_gradient",
        }
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        let (a, b) = (inputs[0], inputs[1]);
        if a.rank() != 4 || b.rank() != 4 || a.dtype != b.dtype || a.dtype != crate::tensor::DType::F32 {
            return shape_err(self.name(), inputs, "host convolutions take two f32 tensors of rank 4");
        }
        match self.part {
            Part::Forward => Convolution { spec: self.spec.clone() }.shape(inputs),
            Part::InputGradient | Part::KernelGradient => Ok(Shape::new(a.dtype, &self.result_dims)),
        }
    }

    fn vjp(&self, g: &mut Graph, inputs: &[Tensor], y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        if self.part != Part::Forward {
            return non_differentiable(self.name());
        }
        let (x, w) = (inputs[0], inputs[1]);
        let xla = if self.kernels.input_gradient == Kernel::Xla || self.kernels.kernel_gradient == Kernel::Xla {
            Convolution { spec: self.spec.clone() }.vjp(g, inputs, y, cot)?
        } else {
            vec![None, None]
        };
        let part = |part, result_dims: Vec<i64>| Op::HostConv(HostConv { spec: self.spec.clone(), part, kernels: self.kernels, result_dims });
        let dx = match self.kernels.input_gradient {
            Kernel::Xla => xla[0],
            Kernel::Onednn => {
                let dims = g.dims(x).to_vec();
                Some(g.push(part(Part::InputGradient, dims), &[cot, w])?)
            }
        };
        let dw = match self.kernels.kernel_gradient {
            Kernel::Xla => xla[1],
            Kernel::Onednn => {
                let dims = g.dims(w).to_vec();
                Some(g.push(part(Part::KernelGradient, dims), &[x, cot])?)
            }
        };
        Ok(vec![dx, dw])
    }

    /// The same multiply-adds in each part: `n*oh*ow * kh*kw*c * o`.
    fn flops(&self, inputs: &[&Shape], out: &Shape) -> f64 {
        let (x, w, y) = match self.part {
            Part::Forward => (inputs[0], inputs[1], out),
            Part::InputGradient => (out, inputs[1], inputs[0]),
            Part::KernelGradient => (inputs[0], out, inputs[1]),
        };
        let _ = x;
        2.0 * y.element_count() as f64 * (w.element_count() / w.dims[3].max(1)) as f64
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        if self.part == Part::Forward && self.kernels.forward == Kernel::Xla {
            return Convolution { spec: self.spec.clone() }.emit(result, args, out, loc);
        }
        let s = &self.spec;
        let (lo, hi): (Vec<i64>, Vec<i64>) = s.padding.iter().copied().unzip();
        format!(
            "{result} = stablehlo.custom_call @{}({}, {}) {{api_version = 4 : i32, backend_config = {{pad_hi = {}, pad_lo = {}, strides = {}}}}} : {} {loc}",
            self.target(),
            args[0].name,
            args[1].name,
            i64_array(&hi),
            i64_array(&lo),
            i64_array(&s.strides),
            signature(args, out)
        )
    }
}

impl Graph {
    /// A convolution (NHWC/HWIO, `spec` without dilation) whose parts run
    /// as `kernels` says. All XLA's: the plain `conv` op.
    pub fn conv_with_kernels(&mut self, x: Tensor, kernel: Tensor, spec: ConvSpec, kernels: ConvKernels) -> Result<Tensor> {
        if kernels.is_xla() {
            return self.conv(x, kernel, spec);
        }
        if spec.dims != super::ConvDims::nhwc_hwio() || spec.lhs_dilation != [1, 1] || spec.rhs_dilation != [1, 1] {
            return shape_err("host_convolution", &[self.shape(x), self.shape(kernel)], "oneDNN parts need a 2-D NHWC/HWIO convolution without dilation");
        }
        self.push(Op::HostConv(HostConv { spec, part: Part::Forward, kernels, result_dims: vec![] }), &[x, kernel])
    }
}
