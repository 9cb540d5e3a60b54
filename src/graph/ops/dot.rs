//! `dot_general`: batched tensor contraction (matmul and friends).
//!
//! Output dimensions: the batch dimensions (in `lhs_batch` order), then the
//! lhs's free dimensions, then the rhs's free dimensions, each in order.

use super::{Op, Operand, Primitive, signature};
use crate::graph::ir::{Graph, Tensor};
use crate::graph::shape::{Result, Shape, attr_err, shape_err};

/// Which dimensions are batch (paired) and which are contracted (summed).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DotDims {
    pub lhs_batch: Vec<i64>,
    pub rhs_batch: Vec<i64>,
    pub lhs_contract: Vec<i64>,
    pub rhs_contract: Vec<i64>,
}

impl DotDims {
    /// Plain matrix product `[m, k] x [k, n] -> [m, n]`.
    pub fn matmul() -> Self {
        DotDims { lhs_contract: vec![1], rhs_contract: vec![0], ..Default::default() }
    }
}

#[derive(Clone, Debug)]
pub(crate) struct DotGeneral {
    pub dims: DotDims,
}

/// Dimensions of a rank-`rank` operand that are neither batch nor contracted.
fn free_dims(rank: usize, batch: &[i64], contract: &[i64]) -> Vec<i64> {
    (0..rank as i64).filter(|d| !batch.contains(d) && !contract.contains(d)).collect()
}

/// Indices that sort `v` ascending (stable).
fn argsort(v: &[i64]) -> Vec<i64> {
    let mut idx: Vec<i64> = (0..v.len() as i64).collect();
    idx.sort_by_key(|&i| v[i as usize]);
    idx
}

/// The cotangent of the lhs `x` of `dot_general(x, y)` (JAX's transpose
/// rule, written from the algebra): contract the output cotangent with `y`
/// over `y`'s free dimensions, then permute back into `x`'s layout. With
/// `swap` the output has the operands' free dimensions the other way round
/// (used for the rhs, whose cotangent is the lhs rule with roles swapped).
fn transpose_lhs(g: &mut Graph, cot: Tensor, x_rank: usize, y: Tensor, dims: &DotDims, swap: bool) -> Result<Tensor> {
    let y_rank = g.dims(y).len();
    let x_kept = free_dims(x_rank, &dims.lhs_batch, &dims.lhs_contract);
    let y_kept = free_dims(y_rank, &dims.rhs_batch, &dims.rhs_contract);
    let nb = dims.lhs_batch.len() as i64;
    let ans_batch: Vec<i64> = (0..nb).collect();
    let ans_y: Vec<i64> = if swap {
        (nb..nb + y_kept.len() as i64).collect()
    } else {
        let start = nb + x_kept.len() as i64;
        (start..start + y_kept.len() as i64).collect()
    };
    let inner = DotDims { lhs_batch: ans_batch, rhs_batch: dims.rhs_batch.clone(), lhs_contract: ans_y, rhs_contract: y_kept };
    let product = g.dot_general(cot, y, inner)?;
    let order = argsort(&dims.rhs_contract);
    let x_contract_by_y: Vec<i64> = order.iter().map(|&i| dims.lhs_contract[i as usize]).collect();
    let layout: Vec<i64> = dims.lhs_batch.iter().chain(&x_kept).chain(&x_contract_by_y).copied().collect();
    g.transpose(product, &argsort(&layout))
}

impl Primitive for DotGeneral {
    fn name(&self) -> &'static str {
        "dot_general"
    }

    fn shape(&self, inputs: &[&Shape]) -> Result<Shape> {
        let (a, b) = (inputs[0], inputs[1]);
        let d = &self.dims;
        if a.dtype != b.dtype {
            return shape_err(self.name(), inputs, "operands must have the same element type");
        }
        if d.lhs_batch.len() != d.rhs_batch.len() || d.lhs_contract.len() != d.rhs_contract.len() {
            return attr_err(
                self.name(),
                format!("batch {:?}/{:?} and contracting {:?}/{:?} dimensions must pair up", d.lhs_batch, d.rhs_batch, d.lhs_contract, d.rhs_contract),
            );
        }
        for (side, shape, batch, contract) in [("lhs", a, &d.lhs_batch, &d.lhs_contract), ("rhs", b, &d.rhs_batch, &d.rhs_contract)] {
            let all: Vec<i64> = batch.iter().chain(contract.iter()).copied().collect();
            crate::graph::shape::check_dims(self.name(), side, &all, shape.rank())?;
        }
        for (&l, &r) in d.lhs_batch.iter().zip(&d.rhs_batch).chain(d.lhs_contract.iter().zip(&d.rhs_contract)) {
            if a.dims[l as usize] != b.dims[r as usize] {
                return shape_err(
                    self.name(),
                    inputs,
                    format!("lhs dimension {l} (size {}) does not match rhs dimension {r} (size {})", a.dims[l as usize], b.dims[r as usize]),
                );
            }
        }
        let mut dims: Vec<i64> = d.lhs_batch.iter().map(|&i| a.dims[i as usize]).collect();
        dims.extend(free_dims(a.rank(), &d.lhs_batch, &d.lhs_contract).iter().map(|&i| a.dims[i as usize]));
        dims.extend(free_dims(b.rank(), &d.rhs_batch, &d.rhs_contract).iter().map(|&i| b.dims[i as usize]));
        Ok(Shape::new(a.dtype, &dims))
    }

    /// Bilinear: each operand's cotangent is a dot_general of the output
    /// cotangent with the other operand.
    fn vjp(&self, g: &mut Graph, inputs: &[Tensor], _y: Tensor, cot: Tensor) -> Result<Vec<Option<Tensor>>> {
        let (x, y) = (inputs[0], inputs[1]);
        let (x_rank, y_rank) = (g.dims(x).len(), g.dims(y).len());
        let dx = transpose_lhs(g, cot, x_rank, y, &self.dims, false)?;
        let swapped = DotDims {
            lhs_batch: self.dims.rhs_batch.clone(),
            rhs_batch: self.dims.lhs_batch.clone(),
            lhs_contract: self.dims.rhs_contract.clone(),
            rhs_contract: self.dims.lhs_contract.clone(),
        };
        let dy = transpose_lhs(g, cot, y_rank, x, &swapped, true)?;
        Ok(vec![Some(dx), Some(dy)])
    }

    /// Two per multiply-add: every output element sums over the contracted
    /// dimensions.
    fn flops(&self, inputs: &[&Shape], out: &Shape) -> f64 {
        let contracted: i64 = self.dims.lhs_contract.iter().map(|&d| inputs[0].dims[d as usize]).product();
        2.0 * out.element_count() as f64 * contracted as f64
    }

    fn emit(&self, result: &str, args: &[Operand], out: &Shape, loc: &str) -> String {
        let list = |v: &[i64]| v.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        let d = &self.dims;
        let batching = if d.lhs_batch.is_empty() { String::new() } else { format!(", batching_dims = [{}] x [{}]", list(&d.lhs_batch), list(&d.rhs_batch)) };
        format!(
            "{result} = stablehlo.dot_general {}, {}{batching}, contracting_dims = [{}] x [{}] : {} {loc}",
            args[0].name,
            args[1].name,
            list(&d.lhs_contract),
            list(&d.rhs_contract),
            signature(args, out)
        )
    }
}

impl Graph {
    pub fn dot_general(&mut self, a: Tensor, b: Tensor, dims: DotDims) -> Result<Tensor> {
        self.push(Op::DotGeneral(DotGeneral { dims }), &[a, b])
    }

    /// `[m, k] x [k, n] -> [m, n]`.
    pub fn matmul(&mut self, a: Tensor, b: Tensor) -> Result<Tensor> {
        self.dot_general(a, b, DotDims::matmul())
    }
}
