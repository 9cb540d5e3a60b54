//! Optimizers as graph functions: `(params, grads, state, lr, step) ->
//! (new params, new state)`. The learning rate is an input, so a schedule
//! computed on the host costs no recompilation.

use super::ir::{Graph, Tensor};
use super::shape::{Result, attr_err};
use crate::tensor::DType;

/// Update rule and its hyper-parameters.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Optimizer {
    /// `p -= lr * g`
    Sgd,
    /// `v = momentum * v + g; p -= lr * v` (or Nesterov: `p -= lr * (g + momentum * v)`)
    Momentum {
        #[serde(default = "default_momentum")]
        momentum: f64,
        #[serde(default)]
        nesterov: bool,
    },
    /// Adam (Kingma & Ba), with bias correction.
    Adam {
        #[serde(default = "default_beta1")]
        beta1: f64,
        #[serde(default = "default_beta2")]
        beta2: f64,
        #[serde(default = "default_epsilon")]
        epsilon: f64,
    },
}

fn default_momentum() -> f64 {
    0.9
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_epsilon() -> f64 {
    1e-8
}

impl Optimizer {
    pub fn name(&self) -> &'static str {
        match self {
            Optimizer::Sgd => "sgd",
            Optimizer::Momentum { .. } => "momentum",
            Optimizer::Adam { .. } => "adam",
        }
    }

    /// Names of the state tensors kept for one parameter, e.g.
    /// `opt.adam.m.block1.conv.weight`; each has the parameter's shape.
    pub fn state_names(&self, param: &str) -> Vec<String> {
        match self {
            Optimizer::Sgd => vec![],
            Optimizer::Momentum { .. } => vec![format!("opt.momentum.v.{param}")],
            Optimizer::Adam { .. } => vec![format!("opt.adam.m.{param}"), format!("opt.adam.v.{param}")],
        }
    }

    /// Checks hyper-parameters; the message names the offending one.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            Optimizer::Sgd => Ok(()),
            Optimizer::Momentum { momentum, .. } if !(0.0..1.0).contains(momentum) => Err(format!("momentum {momentum} must be in [0, 1)")),
            Optimizer::Adam { beta1, .. } if !(0.0..1.0).contains(beta1) => Err(format!("beta1 {beta1} must be in [0, 1)")),
            Optimizer::Adam { beta2, .. } if !(0.0..1.0).contains(beta2) => Err(format!("beta2 {beta2} must be in [0, 1)")),
            Optimizer::Adam { epsilon, .. } if *epsilon <= 0.0 => Err(format!("epsilon {epsilon} must be positive")),
            _ => Ok(()),
        }
    }

    /// One update. `state` holds, for each parameter in order, its
    /// `state_names` tensors; `lr` is an f32 scalar, `step` an i32 scalar
    /// (0 for the first update).
    pub fn update(&self, g: &mut Graph, params: &[Tensor], grads: &[Tensor], state: &[Tensor], lr: Tensor, step: Tensor) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
        let per = self.state_names("").len();
        if grads.len() != params.len() || state.len() != per * params.len() {
            return attr_err(
                "optimizer",
                format!("{} params, {} grads and {} state tensors do not match ({} state tensors per param)", params.len(), grads.len(), state.len(), per),
            );
        }
        if let Err(e) = self.validate() {
            return attr_err("optimizer", e);
        }
        let mut new_params = Vec::with_capacity(params.len());
        let mut new_state = Vec::with_capacity(state.len());
        let adam_scale = match self {
            Optimizer::Adam { beta1, beta2, .. } => {
                // lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t), t = step + 1.
                let t = g.convert(step, DType::F32)?;
                let t = g.add_scalar(t, 1.0)?;
                let pow = |g: &mut Graph, beta: f64| -> Result<Tensor> {
                    let e = g.mul_scalar(t, beta.ln())?;
                    let p = g.exp(e)?;
                    let np = g.neg(p)?;
                    g.add_scalar(np, 1.0)
                };
                let bc1 = pow(g, *beta1)?;
                let bc2 = pow(g, *beta2)?;
                let s = g.sqrt(bc2)?;
                let s = g.div(s, bc1)?;
                Some(g.mul(lr, s)?)
            }
            _ => None,
        };
        for (i, (&p, &grad)) in params.iter().zip(grads).enumerate() {
            let dims = g.dims(p).to_vec();
            let dtype = g.dtype(p);
            let lr_b = {
                let lr = g.convert(adam_scale.unwrap_or(lr), dtype)?;
                g.broadcast_in_dim(lr, &dims, &[])?
            };
            let grad = g.convert(grad, dtype)?;
            match self {
                Optimizer::Sgd => {
                    let d = g.mul(lr_b, grad)?;
                    new_params.push(g.sub(p, d)?);
                }
                Optimizer::Momentum { momentum, nesterov } => {
                    let v = state[i];
                    let mv = g.mul_scalar(v, *momentum)?;
                    let v = g.add(mv, grad)?;
                    let direction = if *nesterov {
                        let mv = g.mul_scalar(v, *momentum)?;
                        g.add(grad, mv)?
                    } else {
                        v
                    };
                    let d = g.mul(lr_b, direction)?;
                    new_params.push(g.sub(p, d)?);
                    new_state.push(v);
                }
                Optimizer::Adam { beta1, beta2, epsilon, .. } => {
                    let (m, v) = (state[2 * i], state[2 * i + 1]);
                    let m1 = g.mul_scalar(m, *beta1)?;
                    let m2 = g.mul_scalar(grad, 1.0 - beta1)?;
                    let m = g.add(m1, m2)?;
                    let g2 = g.mul(grad, grad)?;
                    let v1 = g.mul_scalar(v, *beta2)?;
                    let v2 = g.mul_scalar(g2, 1.0 - beta2)?;
                    let v = g.add(v1, v2)?;
                    let root = g.sqrt(v)?;
                    let denom = g.add_scalar(root, *epsilon)?;
                    let step_dir = g.div(m, denom)?;
                    let d = g.mul(lr_b, step_dir)?;
                    new_params.push(g.sub(p, d)?);
                    new_state.push(m);
                    new_state.push(v);
                }
            }
        }
        Ok((new_params, new_state))
    }
}
