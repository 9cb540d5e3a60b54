//! Every primitive's forward pass against a plain Rust reference, and every
//! differentiable primitive's VJP against central finite differences, all
//! run through the real CPU plugin. Gradient checks run in f64 so that the
//! finite differences are sharp (tolerance 1e-5 relative).

// The reference implementations below walk flat indices and unravel them,
// as the formulas they check are written.
#![allow(clippy::needless_range_loop)]

mod common;

use common::{Rng, assert_close, check_vjp, count, run};
use emotionet::graph::{ConvDims, ConvSpec, Direction, DotDims, Graph, GraphError, PoolKind, ReduceKind, Tensor, WindowSpec};
use emotionet::tensor::{DType, HostTensor};

// ---------- small reference helpers ----------

fn strides(dims: &[i64]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1] as usize;
    }
    s
}

fn unravel(mut flat: usize, dims: &[i64]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for i in (0..dims.len()).rev() {
        idx[i] = flat % dims[i] as usize;
        flat /= dims[i] as usize;
    }
    idx
}

fn ravel(idx: &[usize], dims: &[i64]) -> usize {
    idx.iter().zip(strides(dims)).map(|(i, s)| i * s).sum()
}

fn f64s(t: &HostTensor) -> Vec<f64> {
    t.to_f64().unwrap()
}

/// Runs a one-output graph built by `f` over parameters shaped like `inputs`.
fn forward(inputs: &[HostTensor], f: impl Fn(&mut Graph, &[Tensor]) -> Tensor) -> HostTensor {
    let mut g = Graph::new("forward");
    let params: Vec<Tensor> = inputs.iter().enumerate().map(|(i, t)| g.parameter(&format!("x{i}"), t.dtype(), t.dims()).unwrap()).collect();
    let y = f(&mut g, &params);
    run(&g, &[y], inputs).remove(0)
}

fn positive(rng: &mut Rng, dims: &[i64]) -> HostTensor {
    let v: Vec<f64> = rng.vec(count(dims)).iter().map(|x| x.abs() + 0.5).collect();
    HostTensor::from_f64(dims, &v).unwrap()
}

// ---------- elementwise ----------

#[test]
fn unary_functions_forward_and_vjp() {
    let mut rng = Rng::new(1);
    let x = positive(&mut rng, &[3, 4]);
    let xv = f64s(&x);
    type Case = (&'static str, fn(&mut Graph, Tensor) -> Tensor, fn(f64) -> f64);
    let cases: [Case; 6] = [
        ("neg", |g, x| g.neg(x).unwrap(), |v| -v),
        ("exp", |g, x| g.exp(x).unwrap(), f64::exp),
        ("log", |g, x| g.log(x).unwrap(), f64::ln),
        ("sqrt", |g, x| g.sqrt(x).unwrap(), f64::sqrt),
        ("rsqrt", |g, x| g.rsqrt(x).unwrap(), |v| 1.0 / v.sqrt()),
        ("tanh", |g, x| g.tanh(x).unwrap(), f64::tanh),
    ];
    for (name, build, reference) in cases {
        let y = forward(std::slice::from_ref(&x), |g, p| build(g, p[0]));
        let want: Vec<f64> = xv.iter().map(|&v| reference(v)).collect();
        assert_close(&f64s(&y), &want, 1e-12, name);
        check_vjp(name, std::slice::from_ref(&x), 10, |g, p| build(g, p[0]));
    }
}

#[test]
fn binary_functions_forward_and_vjp() {
    let mut rng = Rng::new(2);
    let a = rng.tensor(&[2, 5]);
    let b = positive(&mut rng, &[2, 5]);
    let (av, bv) = (f64s(&a), f64s(&b));
    type Case = (&'static str, fn(&mut Graph, Tensor, Tensor) -> Tensor, fn(f64, f64) -> f64);
    let cases: [Case; 6] = [
        ("add", |g, a, b| g.add(a, b).unwrap(), |a, b| a + b),
        ("sub", |g, a, b| g.sub(a, b).unwrap(), |a, b| a - b),
        ("mul", |g, a, b| g.mul(a, b).unwrap(), |a, b| a * b),
        ("div", |g, a, b| g.div(a, b).unwrap(), |a, b| a / b),
        ("max", |g, a, b| g.max(a, b).unwrap(), f64::max),
        ("min", |g, a, b| g.min(a, b).unwrap(), f64::min),
    ];
    let inputs = [a.clone(), b.clone()];
    for (name, build, reference) in cases {
        let y = forward(&inputs, |g, p| build(g, p[0], p[1]));
        let want: Vec<f64> = av.iter().zip(&bv).map(|(&x, &y)| reference(x, y)).collect();
        assert_close(&f64s(&y), &want, 1e-12, name);
        check_vjp(name, &inputs, 20, |g, p| build(g, p[0], p[1]));
    }
}

#[test]
fn max_and_min_split_the_cotangent_at_ties() {
    // Trap: max(a, b) is not differentiable where a == b; the rule gives each
    // operand half, so the total is preserved and the rule is symmetric.
    let a = HostTensor::from_f64(&[3], &[1.0, 2.0, 3.0]).unwrap();
    let b = HostTensor::from_f64(&[3], &[1.0, 5.0, -3.0]).unwrap();
    for (name, is_max) in [("max", true), ("min", false)] {
        let mut g = Graph::new("ties");
        let (pa, pb) = (g.parameter("a", DType::F64, &[3]).unwrap(), g.parameter("b", DType::F64, &[3]).unwrap());
        let y = if is_max { g.max(pa, pb).unwrap() } else { g.min(pa, pb).unwrap() };
        let loss = g.sum_all(y).unwrap();
        let grads = g.grad(loss, &[pa, pb]).unwrap();
        let out = run(&g, &grads, &[a.clone(), b.clone()]);
        let (ga, gb) = (f64s(&out[0]), f64s(&out[1]));
        let (wa, wb) = if is_max { (vec![0.5, 0.0, 1.0], vec![0.5, 1.0, 0.0]) } else { (vec![0.5, 1.0, 0.0], vec![0.5, 0.0, 1.0]) };
        assert_eq!(ga, wa, "{name} lhs");
        assert_eq!(gb, wb, "{name} rhs");
    }
}

#[test]
fn relu_has_derivative_zero_at_zero() {
    // Trap: relu(x) = select(x > 0, x, 0): derivative 0 at exactly 0 (as in
    // TensorFlow and JAX). Away from 0 it must match finite differences.
    let x = HostTensor::from_f64(&[6], &[0.0, -0.0, 1.5, -2.0, 1e-300, -1e-300]).unwrap();
    let mut g = Graph::new("relu");
    let p = g.parameter("x", DType::F64, &[6]).unwrap();
    let y = g.relu(p).unwrap();
    let loss = g.sum_all(y).unwrap();
    let grad = g.grad(loss, &[p]).unwrap();
    let out = run(&g, &[y, grad[0]], &[x]);
    assert_eq!(f64s(&out[0]), vec![0.0, 0.0, 1.5, 0.0, 1e-300, 0.0]);
    assert_eq!(f64s(&out[1]), vec![0.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    let mut rng = Rng::new(3);
    let away: Vec<f64> = rng.vec(12).iter().map(|v| if v.abs() < 0.1 { v + 0.3 } else { *v }).collect();
    check_vjp("relu", &[HostTensor::from_f64(&[3, 4], &away).unwrap()], 30, |g, p| g.relu(p[0]).unwrap());
}

#[test]
fn integer_ops_compare_select_convert_and_iota() {
    let a = HostTensor::from_u32(&[4], &[1, 0xFFFF_FFFF, 123_456_789, 7]).unwrap();
    let b = HostTensor::from_u32(&[4], &[3, 2, 0x8000_0001, 4]).unwrap();
    let inputs = [a.clone(), b.clone()];
    let (av, bv) = (a.to_u32().unwrap(), b.to_u32().unwrap());
    let xor = forward(&inputs, |g, p| g.xor(p[0], p[1]).unwrap()).to_u32().unwrap();
    assert_eq!(xor, av.iter().zip(&bv).map(|(x, y)| x ^ y).collect::<Vec<_>>());
    let mul = forward(&inputs, |g, p| g.mul(p[0], p[1]).unwrap()).to_u32().unwrap();
    assert_eq!(mul, av.iter().zip(&bv).map(|(x, y)| x.wrapping_mul(*y)).collect::<Vec<_>>(), "u32 multiply wraps");
    let shifts = HostTensor::from_u32(&[4], &[1, 31, 16, 0]).unwrap();
    let shr = forward(&[a.clone(), shifts.clone()], |g, p| g.shift_right_logical(p[0], p[1]).unwrap()).to_u32().unwrap();
    assert_eq!(shr, av.iter().zip(shifts.to_u32().unwrap()).map(|(x, s)| x >> s).collect::<Vec<_>>());

    let x = HostTensor::from_f64(&[5], &[-1.5, 0.0, 2.5, 2.5, -0.25]).unwrap();
    let y = HostTensor::from_f64(&[5], &[-1.0, 0.0, 2.0, 2.5, 3.0]).unwrap();
    for (dir, f) in [
        (Direction::Eq, (|a, b| a == b) as fn(f64, f64) -> bool),
        (Direction::Ne, |a, b| a != b),
        (Direction::Lt, |a, b| a < b),
        (Direction::Le, |a, b| a <= b),
        (Direction::Gt, |a, b| a > b),
        (Direction::Ge, |a, b| a >= b),
    ] {
        let got = forward(&[x.clone(), y.clone()], |g, p| g.compare(p[0], p[1], dir).unwrap()).to_pred().unwrap();
        let want: Vec<bool> = f64s(&x).iter().zip(f64s(&y)).map(|(a, b)| f(*a, b)).collect();
        assert_eq!(got, want, "{dir:?}");
    }
    let sel = forward(&[x.clone(), y.clone()], |g, p| {
        let c = g.compare(p[0], p[1], Direction::Gt).unwrap();
        g.select(c, p[0], p[1]).unwrap()
    });
    assert_eq!(f64s(&sel), vec![-1.0, 0.0, 2.5, 2.5, 3.0]);
    // (Away from the switch at x = 0, where select's output jumps.)
    let x_away = HostTensor::from_f64(&[5], &[-1.5, 0.7, 2.5, 2.5, -0.25]).unwrap();
    check_vjp("select", &[x_away, y.clone()], 40, |g, p| {
        let zero = g.zeros_like(p[0]).unwrap();
        let c = g.compare(p[0], zero, Direction::Gt).unwrap();
        g.select(c, p[0], p[1]).unwrap()
    });

    let conv = forward(std::slice::from_ref(&x), |g, p| g.convert(p[0], DType::I32).unwrap()).to_i32().unwrap();
    assert_eq!(conv, vec![-1, 0, 2, 2, 0], "float to int truncates toward zero");
    let as_f32 = forward(std::slice::from_ref(&x), |g, p| g.convert(p[0], DType::F32).unwrap()).to_f32().unwrap();
    assert_eq!(as_f32, vec![-1.5, 0.0, 2.5, 2.5, -0.25]);
    // Through f32, finite differences at h = 1e-6 drown in rounding, so the
    // derivative of sum(f32(x)^2) is checked directly: 2 * f32(x).
    let mut g = Graph::new("convert vjp");
    let p = g.parameter("x", DType::F64, &[5]).unwrap();
    let f = g.convert(p, DType::F32).unwrap();
    let sq = g.mul(f, f).unwrap();
    let back = g.convert(sq, DType::F64).unwrap();
    let loss = g.sum_all(back).unwrap();
    let grad = g.grad(loss, &[p]).unwrap();
    let out = run(&g, &grad, std::slice::from_ref(&x));
    assert_eq!(f64s(&out[0]), f64s(&x).iter().map(|v| 2.0 * *v).collect::<Vec<_>>());

    let mut g = Graph::new("iota");
    let i0 = g.iota(DType::I32, &[2, 3], 0).unwrap();
    let i1 = g.iota(DType::U32, &[2, 3], 1).unwrap();
    let out = run(&g, &[i0, i1], &[]);
    assert_eq!(out[0].to_i32().unwrap(), vec![0, 0, 0, 1, 1, 1]);
    assert_eq!(out[1].to_u32().unwrap(), vec![0, 1, 2, 0, 1, 2]);
}

#[test]
fn bf16_computation_matches_f32_within_bf16_precision() {
    // A bf16 matmul + ReLU + reduction, converted from and back to f32.
    let mut rng = Rng::new(15);
    let a: Vec<f32> = rng.vec(6 * 8).iter().map(|v| *v as f32).collect();
    let b: Vec<f32> = rng.vec(8 * 5).iter().map(|v| *v as f32).collect();
    let mut g = Graph::new("bf16");
    let pa = g.parameter("a", DType::F32, &[6, 8]).unwrap();
    let pb = g.parameter("b", DType::BF16, &[8, 5]).unwrap();
    let ha = g.convert(pa, DType::BF16).unwrap();
    let y = g.matmul(ha, pb).unwrap();
    let y = g.relu(y).unwrap();
    let s = g.sum(y, &[0]).unwrap();
    let out = g.convert(s, DType::F32).unwrap();
    assert_eq!(g.dtype(y), DType::BF16);
    let b16: Vec<half::bf16> = b.iter().map(|v| half::bf16::from_f32(*v)).collect();
    let got = run(&g, &[out], &[HostTensor::from_f32(&[6, 8], &a).unwrap(), HostTensor::from_bf16(&[8, 5], &b16).unwrap()])[0].to_f32().unwrap();
    // The standard forward error bound for round-to-nearest with bf16's unit
    // roundoff u = 2^-8 (8 significant bits, about 2.4 decimal digits):
    // gamma(n) = n*u / (1 - n*u). Rounding `a` to bf16 and the 8-term dot
    // cost at most gamma(9) * sum|a*b|; the 6-term column sum adds
    // gamma(6) * sum|y|. The reference is exact (f64) on the bf16 value of b.
    let u = 2f64.powi(-8);
    let gamma = |n: f64| n * u / (1.0 - n * u);
    let b_seen: Vec<f64> = b16.iter().map(|v| f64::from(v.to_f32())).collect();
    for j in 0..5 {
        let (mut want, mut abs_products, mut abs_rows) = (0.0, 0.0, 0.0);
        for i in 0..6 {
            let dot: f64 = (0..8).map(|k| f64::from(a[i * 8 + k]) * b_seen[k * 5 + j]).sum();
            abs_products += (0..8).map(|k| (f64::from(a[i * 8 + k]) * b_seen[k * 5 + j]).abs()).sum::<f64>();
            want += dot.max(0.0);
            abs_rows += dot.abs();
        }
        let bound = gamma(9.0) * abs_products + gamma(6.0) * abs_rows;
        let err = (f64::from(got[j]) - want).abs();
        assert!(err <= bound, "column {j}: bf16 {} vs exact {want}: error {err:.2e} over the bf16 bound {bound:.2e}", got[j]);
    }
}

#[test]
fn constants_are_exact() {
    let values = [0.1f32, -3.0, 1e-7, f32::MAX, f32::MIN_POSITIVE, 12345.678];
    let host = HostTensor::from_f32(&[2, 3], &values).unwrap();
    let mut g = Graph::new("constants");
    let dense = g.constant(&host).unwrap();
    let splat = g.full(0.1, DType::F32, &[2]).unwrap();
    let inf = g.full(f64::NEG_INFINITY, DType::F32, &[1]).unwrap();
    let i = g.full(-7.0, DType::I32, &[2]).unwrap();
    let out = run(&g, &[dense, splat, inf, i], &[]);
    assert_eq!(out[0].to_f32().unwrap(), values.to_vec());
    assert_eq!(out[1].to_f32().unwrap(), vec![0.1f32, 0.1]);
    assert_eq!(out[2].to_f32().unwrap(), vec![f32::NEG_INFINITY]);
    assert_eq!(out[3].to_i32().unwrap(), vec![-7, -7]);
}

// ---------- shapes ----------

#[test]
fn broadcast_forward_and_vjp_in_both_directions() {
    let mut rng = Rng::new(4);
    // [3] -> [2, 3] (new leading dim), [2, 1] -> [2, 4] (size-1 expanded).
    let v = rng.tensor(&[3]);
    let y = forward(std::slice::from_ref(&v), |g, p| g.broadcast_in_dim(p[0], &[2, 3], &[1]).unwrap());
    let vv = f64s(&v);
    assert_eq!(f64s(&y), [vv.clone(), vv].concat());
    check_vjp("broadcast new dim", &[rng.tensor(&[3])], 50, |g, p| g.broadcast_in_dim(p[0], &[4, 3], &[1]).unwrap());
    check_vjp("broadcast size-1 dim", &[rng.tensor(&[2, 1])], 51, |g, p| g.broadcast_in_dim(p[0], &[2, 4], &[0, 1]).unwrap());
    check_vjp("broadcast scalar", &[rng.tensor(&[])], 52, |g, p| g.broadcast_in_dim(p[0], &[2, 2], &[]).unwrap());
    // NumPy-style: a column [3, 1] against a row [1, 4], both broadcast.
    let col = rng.tensor(&[3, 1]);
    let row = rng.tensor(&[1, 4]);
    let out = forward(&[col.clone(), row.clone()], |g, p| {
        let a = g.broadcast_to(p[0], &[3, 4]).unwrap();
        let b = g.broadcast_to(p[1], &[3, 4]).unwrap();
        g.mul(a, b).unwrap()
    });
    let (cv, rv) = (f64s(&col), f64s(&row));
    let want: Vec<f64> = (0..12).map(|k| cv[k / 4] * rv[k % 4]).collect();
    assert_close(&f64s(&out), &want, 1e-12, "outer product by broadcasting");
    check_vjp("broadcast both directions", &[col, row], 53, |g, p| {
        let a = g.broadcast_to(p[0], &[3, 4]).unwrap();
        let b = g.broadcast_to(p[1], &[3, 4]).unwrap();
        let s = g.add(a, b).unwrap();
        g.mul(s, a).unwrap()
    });
}

#[test]
fn reshape_transpose_reverse_forward_and_vjp() {
    let mut rng = Rng::new(5);
    let x = rng.tensor(&[2, 3, 4]);
    let xv = f64s(&x);
    let r = forward(std::slice::from_ref(&x), |g, p| g.reshape(p[0], &[6, 4]).unwrap());
    assert_eq!(f64s(&r), xv, "reshape keeps row-major order");
    let t = forward(std::slice::from_ref(&x), |g, p| g.transpose(p[0], &[2, 0, 1]).unwrap());
    assert_eq!(t.dims(), &[4, 2, 3]);
    let tv = f64s(&t);
    for flat in 0..24 {
        let o = unravel(flat, &[4, 2, 3]);
        assert_eq!(tv[flat], xv[ravel(&[o[1], o[2], o[0]], &[2, 3, 4])]);
    }
    let rev = forward(std::slice::from_ref(&x), |g, p| g.reverse(p[0], &[0, 2]).unwrap());
    let rv = f64s(&rev);
    for flat in 0..24 {
        let o = unravel(flat, &[2, 3, 4]);
        assert_eq!(rv[flat], xv[ravel(&[1 - o[0], o[1], 3 - o[2]], &[2, 3, 4])]);
    }
    check_vjp("reshape", std::slice::from_ref(&x), 60, |g, p| g.reshape(p[0], &[4, 6]).unwrap());
    check_vjp("transpose", std::slice::from_ref(&x), 61, |g, p| g.transpose(p[0], &[1, 2, 0]).unwrap());
    check_vjp("reverse", &[x], 62, |g, p| g.reverse(p[0], &[1]).unwrap());
}

#[test]
fn concatenate_forward_and_vjp() {
    let mut rng = Rng::new(14);
    let (a, b) = (rng.tensor(&[2, 3, 2]), rng.tensor(&[2, 1, 2]));
    let y = forward(&[a.clone(), b.clone()], |g, p| g.concatenate(&[p[0], p[1], p[0]], 1).unwrap());
    assert_eq!(y.dims(), &[2, 7, 2]);
    let (av, bv, yv) = (f64s(&a), f64s(&b), f64s(&y));
    for n in 0..2 {
        for j in 0..7 {
            for c in 0..2 {
                let want = match j {
                    0..=2 => av[(n * 3 + j) * 2 + c],
                    3 => bv[n * 2 + c],
                    _ => av[(n * 3 + j - 4) * 2 + c],
                };
                assert_eq!(yv[(n * 7 + j) * 2 + c], want);
            }
        }
    }
    check_vjp("concatenate", &[a, b], 140, |g, p| g.concatenate(&[p[0], p[1], p[0]], 1).unwrap());
}

#[test]
fn slice_and_pad_forward_and_vjp_including_edges() {
    let mut rng = Rng::new(6);
    let x = rng.tensor(&[5, 7]);
    let xv = f64s(&x);
    let s = forward(std::slice::from_ref(&x), |g, p| g.slice(p[0], &[1, 0], &[5, 7], &[2, 3]).unwrap());
    assert_eq!(s.dims(), &[2, 3]);
    let want: Vec<f64> = [1usize, 3].iter().flat_map(|&i| [0usize, 3, 6].map(|j| xv[i * 7 + j])).collect();
    assert_eq!(f64s(&s), want);
    check_vjp("strided slice", std::slice::from_ref(&x), 70, |g, p| g.slice(p[0], &[1, 2], &[4, 7], &[2, 2]).unwrap());

    // Pad: low 2 / high -1 (crop) / interior 1 on dim 0; low -1 / high 1 on dim 1.
    let small = rng.tensor(&[3, 4]);
    let sv = f64s(&small);
    let value = HostTensor::from_f64(&[], &[9.0]).unwrap();
    let padded = forward(&[small.clone(), value.clone()], |g, p| g.pad(p[0], p[1], &[2, -1], &[-1, 1], &[1, 0]).unwrap());
    // dim 0: 2 + 3 + 2 (interior) - 1 = 6; dim 1: -1 + 4 + 1 = 4.
    assert_eq!(padded.dims(), &[6, 4]);
    let pv = f64s(&padded);
    for r in 0..6 {
        for c in 0..4 {
            let src_r = (r as i64 - 2).checked_div(1).filter(|v| *v >= 0 && v % 2 == 0).map(|v| v / 2);
            let src_c = c as i64 + 1;
            let want = match src_r {
                Some(rr) if rr < 3 && src_c < 4 => sv[rr as usize * 4 + src_c as usize],
                _ => 9.0,
            };
            assert_eq!(pv[r * 4 + c], want, "pad at ({r}, {c})");
        }
    }
    check_vjp("pad operand and value", &[small, value], 71, |g, p| g.pad(p[0], p[1], &[2, -1], &[-1, 1], &[1, 0]).unwrap());
}

#[test]
fn reductions_forward_and_vjp() {
    let mut rng = Rng::new(7);
    let x = rng.tensor(&[3, 4, 2]);
    let xv = f64s(&x);
    for (kind, init, f) in [
        (ReduceKind::Sum, 0.0, (|a, b| a + b) as fn(f64, f64) -> f64),
        (ReduceKind::Max, f64::NEG_INFINITY, f64::max),
        (ReduceKind::Min, f64::INFINITY, f64::min),
    ] {
        let y = forward(std::slice::from_ref(&x), |g, p| g.reduce(p[0], kind, &[0, 2]).unwrap());
        let want: Vec<f64> =
            (0..4).map(|j| (0..3).flat_map(|i| (0..2).map(move |k| (i, k))).fold(init, |acc, (i, k)| f(acc, xv[(i * 4 + j) * 2 + k]))).collect();
        assert_close(&f64s(&y), &want, 1e-12, &format!("{kind:?}"));
        check_vjp(&format!("reduce {kind:?}"), std::slice::from_ref(&x), 80, |g, p| g.reduce(p[0], kind, &[1]).unwrap());
    }
    // Trap: ties in a max share the cotangent equally.
    let tied = HostTensor::from_f64(&[2, 3], &[1.0, 4.0, 4.0, 2.0, 2.0, 2.0]).unwrap();
    let mut g = Graph::new("max ties");
    let p = g.parameter("x", DType::F64, &[2, 3]).unwrap();
    let m = g.reduce(p, ReduceKind::Max, &[1]).unwrap();
    let loss = g.sum_all(m).unwrap();
    let grad = g.grad(loss, &[p]).unwrap();
    let out = run(&g, &grad, &[tied]);
    assert_close(&f64s(&out[0]), &[0.0, 0.5, 0.5, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0], 1e-15, "tied max");
}

#[test]
fn dot_general_forward_and_vjp() {
    let mut rng = Rng::new(8);
    let a = rng.tensor(&[3, 4]);
    let b = rng.tensor(&[4, 5]);
    let y = forward(&[a.clone(), b.clone()], |g, p| g.matmul(p[0], p[1]).unwrap());
    let (av, bv) = (f64s(&a), f64s(&b));
    let want: Vec<f64> = (0..15).map(|k| (0..4).map(|t| av[(k / 5) * 4 + t] * bv[t * 5 + k % 5]).sum()).collect();
    assert_close(&f64s(&y), &want, 1e-12, "matmul");
    check_vjp("matmul", &[a, b], 90, |g, p| g.matmul(p[0], p[1]).unwrap());

    // Batched, contracting a leading dim of the rhs and a middle one of the lhs:
    // out[b, i, j] = sum_k x[b, k, i] * y[j, b, k]
    let x = rng.tensor(&[2, 3, 4]);
    let yb = rng.tensor(&[5, 2, 3]);
    let dims = DotDims { lhs_batch: vec![0], rhs_batch: vec![1], lhs_contract: vec![1], rhs_contract: vec![2] };
    let out = forward(&[x.clone(), yb.clone()], |g, p| g.dot_general(p[0], p[1], dims.clone()).unwrap());
    assert_eq!(out.dims(), &[2, 4, 5]);
    let (xv, yv) = (f64s(&x), f64s(&yb));
    let ov = f64s(&out);
    for bb in 0..2 {
        for i in 0..4 {
            for j in 0..5 {
                let s: f64 = (0..3).map(|k| xv[(bb * 3 + k) * 4 + i] * yv[(j * 2 + bb) * 3 + k]).sum();
                assert!((ov[(bb * 4 + i) * 5 + j] - s).abs() < 1e-12);
            }
        }
    }
    check_vjp("dot_general batched", &[x, yb], 91, move |g, p| g.dot_general(p[0], p[1], dims.clone()).unwrap());

    // Two contracting dims in swapped order.
    let p1 = rng.tensor(&[2, 3, 4]);
    let p2 = rng.tensor(&[4, 5, 2]);
    let dims2 = DotDims { lhs_contract: vec![2, 0], rhs_contract: vec![0, 2], ..Default::default() };
    check_vjp("dot_general two contractions", &[p1, p2], 92, move |g, p| g.dot_general(p[0], p[1], dims2.clone()).unwrap());
}

// ---------- convolution ----------

/// Reference convolution on NHWC input / HWIO kernel.
fn reference_conv(x: &HostTensor, w: &HostTensor, spec: &ConvSpec) -> (Vec<i64>, Vec<f64>) {
    let (xd, wd) = (x.dims().to_vec(), w.dims().to_vec());
    let (xv, wv) = (f64s(x), f64s(w));
    let dil = |n: i64, d: i64| if n == 0 { 0 } else { (n - 1) * d + 1 };
    let out_sp: Vec<i64> = (0..2)
        .map(|i| (dil(xd[1 + i], spec.lhs_dilation[i]) + spec.padding[i].0 + spec.padding[i].1 - dil(wd[i], spec.rhs_dilation[i])) / spec.strides[i] + 1)
        .collect();
    let od = vec![xd[0], out_sp[0], out_sp[1], wd[3]];
    let mut out = vec![0.0; count(&od)];
    for flat in 0..out.len() {
        let o = unravel(flat, &od);
        let mut acc = 0.0;
        for ky in 0..wd[0] {
            for kx in 0..wd[1] {
                let pos = [
                    o[1] as i64 * spec.strides[0] + ky * spec.rhs_dilation[0] - spec.padding[0].0,
                    o[2] as i64 * spec.strides[1] + kx * spec.rhs_dilation[1] - spec.padding[1].0,
                ];
                let mut src = [0i64; 2];
                let mut inside = true;
                for i in 0..2 {
                    if pos[i] < 0 || pos[i] >= dil(xd[1 + i], spec.lhs_dilation[i]) || pos[i] % spec.lhs_dilation[i] != 0 {
                        inside = false;
                    }
                    src[i] = pos[i] / spec.lhs_dilation[i];
                }
                if !inside {
                    continue;
                }
                for ci in 0..xd[3] {
                    acc +=
                        xv[ravel(&[o[0], src[0] as usize, src[1] as usize, ci as usize], &xd)] * wv[ravel(&[ky as usize, kx as usize, ci as usize, o[3]], &wd)];
                }
            }
        }
        out[flat] = acc;
    }
    (od, out)
}

fn conv_cases() -> Vec<(&'static str, [i64; 4], [i64; 4], ConvSpec)> {
    let spec = |strides: [i64; 2], padding: [(i64, i64); 2], lhs: [i64; 2], rhs: [i64; 2]| ConvSpec {
        strides: strides.to_vec(),
        padding: padding.to_vec(),
        lhs_dilation: lhs.to_vec(),
        rhs_dilation: rhs.to_vec(),
        dims: ConvDims::nhwc_hwio(),
    };
    vec![
        ("same padding", [2, 5, 6, 2], [3, 3, 2, 3], spec([1, 1], [(1, 1), (1, 1)], [1, 1], [1, 1])),
        ("valid 5x5 one channel", [1, 7, 7, 1], [5, 5, 1, 2], spec([1, 1], [(0, 0), (0, 0)], [1, 1], [1, 1])),
        ("stride 2, uneven padding", [2, 7, 6, 2], [3, 2, 2, 2], spec([2, 2], [(2, 0), (0, 1)], [1, 1], [1, 1])),
        ("stride that skips inputs", [1, 8, 8, 1], [2, 2, 1, 2], spec([3, 3], [(0, 0), (0, 0)], [1, 1], [1, 1])),
        ("kernel dilation", [1, 9, 8, 2], [3, 3, 2, 2], spec([1, 2], [(1, 2), (2, 1)], [1, 1], [2, 2])),
        ("input dilation", [1, 4, 5, 1], [3, 3, 1, 2], spec([1, 1], [(1, 1), (2, 2)], [2, 2], [1, 1])),
    ]
}

#[test]
fn convolution_forward_matches_reference() {
    let mut rng = Rng::new(9);
    for (name, xd, wd, spec) in conv_cases() {
        let (x, w) = (rng.tensor(&xd), rng.tensor(&wd));
        let y = forward(&[x.clone(), w.clone()], |g, p| g.conv(p[0], p[1], spec.clone()).unwrap());
        let (od, want) = reference_conv(&x, &w, &spec);
        assert_eq!(y.dims(), od.as_slice(), "{name}: shape");
        assert_close(&f64s(&y), &want, 1e-12, name);
    }
}

#[test]
fn convolution_vjp_matches_finite_differences() {
    let mut rng = Rng::new(10);
    for (k, (name, xd, wd, spec)) in conv_cases().into_iter().enumerate() {
        let (x, w) = (rng.tensor(&xd), rng.tensor(&wd));
        check_vjp(name, &[x, w], 100 + k as u64, move |g, p| g.conv(p[0], p[1], spec.clone()).unwrap());
    }
    // Another layout (NCHW input, OIHW kernel) exercises the dimension numbers.
    let spec = ConvSpec {
        strides: vec![2, 1],
        padding: vec![(1, 0), (1, 1)],
        lhs_dilation: vec![1, 1],
        rhs_dilation: vec![1, 2],
        dims: ConvDims { lhs: vec![0, 1, 2, 3], rhs: vec![0, 1, 2, 3], out: vec![0, 1, 2, 3] },
    };
    let (x, w) = (rng.tensor(&[2, 3, 6, 7]), rng.tensor(&[4, 3, 2, 3]));
    check_vjp("NCHW/OIHW", &[x, w], 120, move |g, p| g.conv(p[0], p[1], spec.clone()).unwrap());
}

// ---------- pooling ----------

fn reference_pool(x: &HostTensor, spec: &WindowSpec, kind: PoolKind) -> Vec<f64> {
    let xd = x.dims().to_vec();
    let xv = f64s(x);
    let od: Vec<i64> = (0..xd.len()).map(|i| (xd[i] + spec.padding[i].0 + spec.padding[i].1 - spec.window[i]) / spec.strides[i] + 1).collect();
    (0..count(&od))
        .map(|flat| {
            let o = unravel(flat, &od);
            let mut acc = if kind == PoolKind::Max { f64::NEG_INFINITY } else { 0.0 };
            for wflat in 0..count(&spec.window) {
                let w = unravel(wflat, &spec.window);
                let pos: Vec<i64> = (0..xd.len()).map(|i| o[i] as i64 * spec.strides[i] + w[i] as i64 - spec.padding[i].0).collect();
                if pos.iter().zip(&xd).any(|(p, d)| *p < 0 || p >= d) {
                    continue; // padding contributes the init value
                }
                let idx: Vec<usize> = pos.iter().map(|p| *p as usize).collect();
                let v = xv[ravel(&idx, &xd)];
                acc = if kind == PoolKind::Max { acc.max(v) } else { acc + v };
            }
            acc
        })
        .collect()
}

#[test]
fn pooling_forward_and_vjp() {
    let mut rng = Rng::new(11);
    let cases = [
        ("2x2/2", WindowSpec::nhwc(2, 2)),
        ("3x3/2 padded", WindowSpec { window: vec![1, 3, 3, 1], strides: vec![1, 2, 2, 1], padding: vec![(0, 0), (1, 1), (1, 0), (0, 0)] }),
        ("overlapping 3x2/1", WindowSpec { window: vec![1, 3, 2, 1], strides: vec![1, 1, 1, 1], padding: vec![(0, 0); 4] }),
    ];
    for (name, spec) in cases {
        let x = rng.tensor(&[2, 5, 6, 3]);
        for kind in [PoolKind::Max, PoolKind::Sum] {
            let y = forward(std::slice::from_ref(&x), |g, p| g.reduce_window(p[0], kind, spec.clone()).unwrap());
            assert_close(&f64s(&y), &reference_pool(&x, &spec, kind), 1e-12, &format!("{name} {kind:?}"));
            let s = spec.clone();
            check_vjp(&format!("{name} {kind:?}"), std::slice::from_ref(&x), 130, move |g, p| g.reduce_window(p[0], kind, s.clone()).unwrap());
        }
    }
    let x = rng.tensor(&[1, 4, 4, 2]);
    check_vjp("avg pool", &[x], 131, |g, p| g.avg_pool(p[0], WindowSpec::nhwc(2, 2)).unwrap());
}

#[test]
fn max_pool_with_ties_sends_the_cotangent_to_the_first_maximum() {
    // Trap: a window of equal values has no derivative; select_and_scatter
    // (select = GE) gives it all to the first maximum in row-major order.
    let x = HostTensor::from_f64(&[1, 2, 4, 1], &[3.0, 3.0, 1.0, 5.0, 3.0, 3.0, 5.0, 2.0]).unwrap();
    let mut g = Graph::new("pool ties");
    let p = g.parameter("x", DType::F64, &[1, 2, 4, 1]).unwrap();
    let y = g.max_pool(p, WindowSpec::nhwc(2, 2)).unwrap();
    let r = g.parameter("r", DType::F64, &[1, 1, 2, 1]).unwrap();
    let wy = g.mul(y, r).unwrap();
    let loss = g.sum_all(wy).unwrap();
    let grad = g.grad(loss, &[p]).unwrap();
    let out = run(&g, &[y, grad[0]], &[x, HostTensor::from_f64(&[1, 1, 2, 1], &[10.0, 20.0]).unwrap()]);
    assert_eq!(f64s(&out[0]), vec![3.0, 5.0]);
    // Window 1 = {3, 3, 3, 3}: all to (0, 0). Window 2 = {1, 5, 5, 2}: to (0, 3).
    assert_eq!(f64s(&out[1]), vec![10.0, 0.0, 0.0, 20.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn select_and_scatter_matches_reference() {
    let mut rng = Rng::new(12);
    let x = rng.tensor(&[1, 4, 6, 2]);
    let src = rng.tensor(&[1, 3, 5, 2]);
    let spec = WindowSpec { window: vec![1, 2, 2, 1], strides: vec![1, 1, 1, 1], padding: vec![(0, 0); 4] };
    let got = forward(&[x.clone(), src.clone()], |g, p| g.select_and_scatter(p[0], p[1], spec.clone()).unwrap());
    let (xv, sv) = (f64s(&x), f64s(&src));
    let mut want = vec![0.0; xv.len()];
    for flat in 0..sv.len() {
        let o = unravel(flat, &[1, 3, 5, 2]);
        let mut best: Option<(usize, f64)> = None;
        for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
            let i = ravel(&[0, o[1] + dy, o[2] + dx, o[3]], &[1, 4, 6, 2]);
            if best.is_none_or(|(_, v)| xv[i] > v) {
                best = Some((i, xv[i]));
            }
        }
        want[best.unwrap().0] += sv[flat];
    }
    assert_close(&f64s(&got), &want, 1e-12, "select_and_scatter");
}

// ---------- replicas, randomness ----------

#[test]
fn all_reduce_sums_over_replicas_and_so_does_its_vjp() {
    use emotionet::graph::EmitOptions;
    use emotionet::pjrt::CompileOptions;
    let client = common::client();
    let ids = client.device_ids()[..2].to_vec();
    let mut g = Graph::new("all_reduce");
    let x = g.parameter("x", DType::F64, &[3]).unwrap();
    let r = g.parameter("r", DType::F64, &[3]).unwrap();
    let s = g.all_reduce_sum(x, &[vec![0, 1]]).unwrap();
    let wr = g.mul(s, r).unwrap();
    let loss = g.sum_all(wr).unwrap();
    let grad = g.grad(loss, &[x]).unwrap()[0];
    let program = g.to_program(&[s, grad], &EmitOptions { num_replicas: 2, ..Default::default() }).unwrap();
    let exe = client.compile(&program, &CompileOptions::replicated(&ids)).unwrap();
    let inputs = [([1.0, 2.0, 3.0], [1.0, 0.0, 2.0]), ([10.0, 20.0, 30.0], [0.5, 1.0, 0.0])];
    let bufs: Vec<Vec<_>> = inputs
        .iter()
        .zip(&ids)
        .map(|((xv, rv), &d)| {
            vec![client.upload(&HostTensor::from_f64(&[3], xv).unwrap(), d).unwrap(), client.upload(&HostTensor::from_f64(&[3], rv).unwrap(), d).unwrap()]
        })
        .collect();
    let args: Vec<Vec<_>> = bufs.iter().map(|b| b.iter().collect()).collect();
    let out = exe.execute_replicated(&args, &[]).unwrap();
    for replica in &out {
        assert_eq!(f64s(&replica[0].to_host().unwrap()), vec![11.0, 22.0, 33.0]);
        // d/dx_k of sum_r <sum_k x_k, r_r> = sum_r r_r, on every replica.
        assert_eq!(f64s(&replica[1].to_host().unwrap()), vec![1.5, 1.0, 2.0]);
    }
}

#[test]
fn dropout_masks_are_uniform_deterministic_and_independent_of_the_split() {
    use emotionet::graph::nn::DropoutKey;
    let build = |rows: i64| {
        let mut g = Graph::new("dropout");
        let x = g.parameter("x", DType::F32, &[rows, 256]).unwrap();
        let key = DropoutKey {
            seed: g.parameter("seed", DType::U32, &[]).unwrap(),
            step: g.parameter("step", DType::I32, &[]).unwrap(),
            example_offset: g.parameter("offset", DType::U32, &[]).unwrap(),
            salt: 7,
        };
        let y = g.dropout(x, 0.4, &key).unwrap();
        (g, y)
    };
    let ones = |rows: i64| HostTensor::from_f32(&[rows, 256], &vec![1.0; rows as usize * 256]).unwrap();
    let (g, y) = build(64);
    let mask = |seed: u32, step: i32| {
        run(&g, &[y], &[ones(64), HostTensor::scalar_u32(seed), HostTensor::scalar_i32(step), HostTensor::scalar_u32(0)]).remove(0).to_f32().unwrap()
    };
    let a = mask(1, 0);
    let kept = a.iter().filter(|v| **v != 0.0).count() as f64 / a.len() as f64;
    assert!((kept - 0.6).abs() < 0.02, "keep fraction {kept}");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.6).abs() < 1e-6), "kept values are scaled by 1/(1-rate)");
    assert_eq!(a, mask(1, 0), "deterministic");
    assert_ne!(a, mask(1, 1), "a new mask each step");
    assert_ne!(a, mask(2, 0), "a new mask per seed");
    // Rows 32..64 of the full batch equal a half batch run with offset 32.
    let (gh, yh) = build(32);
    let half = run(&gh, &[yh], &[ones(32), HostTensor::scalar_u32(1), HostTensor::scalar_i32(0), HostTensor::scalar_u32(32)]).remove(0).to_f32().unwrap();
    assert_eq!(half, a[32 * 256..].to_vec());
    // Adjacent bits are not correlated: neighbours agree about half the time.
    let (g2, _) = build(1);
    let _ = g2;
    let same = a.windows(2).filter(|w| (w[0] == 0.0) == (w[1] == 0.0)).count() as f64 / (a.len() - 1) as f64;
    assert!((same - (0.6 * 0.6 + 0.4 * 0.4)).abs() < 0.03, "neighbour agreement {same}");
}

// ---------- errors ----------

#[test]
fn shape_errors_name_the_op_and_the_shapes() {
    let mut g = Graph::new("errors");
    let a = g.parameter("a", DType::F32, &[2, 3]).unwrap();
    let b = g.parameter("b", DType::F32, &[3, 2]).unwrap();
    let err = g.add(a, b).unwrap_err();
    assert!(matches!(err, GraphError::Shape { op: "add", .. }), "{err}");
    assert!(err.to_string().contains("f32[2, 3], f32[3, 2]"), "{err}");
    let err = g.matmul(a, a).unwrap_err();
    assert!(err.to_string().contains("dot_general") && err.to_string().contains("size 3") && err.to_string().contains("size 2"), "{err}");
    let x = g.parameter("x", DType::F32, &[1, 8, 8, 3]).unwrap();
    let w = g.parameter("w", DType::F32, &[3, 3, 2, 4]).unwrap();
    let err = g.conv2d_same(x, w, 1).unwrap_err();
    assert!(err.to_string().contains("input has 3 features, the kernel expects 2"), "{err}");
    let big = g.parameter("k", DType::F32, &[9, 9, 3, 1]).unwrap();
    let err = g.conv(x, big, ConvSpec::nhwc([1, 1], [(0, 0), (0, 0)])).unwrap_err();
    assert!(err.to_string().contains("smaller than the dilated kernel"), "{err}");
    let err = g.max_pool(x, WindowSpec { window: vec![1, 2, 2], strides: vec![1, 2, 2], padding: vec![(0, 0); 3] }).unwrap_err();
    assert!(err.to_string().contains("one entry per dimension"), "{err}");
    let err = g.reshape(a, &[4, 2]).unwrap_err();
    assert!(err.to_string().contains("element counts"), "{err}");
    let err = g.transpose(a, &[0, 0]).unwrap_err();
    assert!(err.to_string().contains("repeated"), "{err}");
    let err = g.log(g.parameters()[0]).and_then(|_| {
        let i = g.parameter("i", DType::I32, &[2]).unwrap();
        g.log(i)
    });
    assert!(matches!(err, Err(GraphError::DType { op: "log", .. })));

    let mut other = Graph::new("other");
    let foreign = other.parameter("f", DType::F32, &[2, 3]).unwrap();
    assert!(matches!(g.add(a, foreign), Err(GraphError::ForeignTensor { .. })));

    let s = g.sum(a, &[0]).unwrap();
    assert!(matches!(g.grad(s, &[a]), Err(GraphError::NonScalarLoss { .. })));

    // select_and_scatter has no derivative rule: an error, not a panic.
    let src = g.parameter("src", DType::F32, &[1, 4, 4, 3]).unwrap();
    let sas = g.select_and_scatter(x, src, WindowSpec::nhwc(2, 2)).unwrap();
    let total = g.sum_all(sas).unwrap();
    let err = g.grad(total, &[src]).unwrap_err();
    assert_eq!(err, GraphError::BackwardNotSupported { op: "select_and_scatter" });
}

#[test]
fn gradients_of_unconnected_parameters_are_zeros() {
    let mut g = Graph::new("unconnected");
    let a = g.parameter("a", DType::F64, &[2]).unwrap();
    let b = g.parameter("b", DType::F64, &[3]).unwrap();
    let sq = g.mul(a, a).unwrap();
    let loss = g.sum_all(sq).unwrap();
    let grads = g.grad(loss, &[a, b]).unwrap();
    let out = run(&g, &grads, &[HostTensor::from_f64(&[2], &[1.0, -2.0]).unwrap(), HostTensor::from_f64(&[3], &[5.0; 3]).unwrap()]);
    assert_eq!(f64s(&out[0]), vec![2.0, -4.0]);
    assert_eq!(f64s(&out[1]), vec![0.0; 3]);
}

/// Images travel as u8 and the programs convert them (issue 20): the
/// convert from u8 emits `ui8`, runs exactly, and no gradient flows back
/// through it (the derivative of a step function), while the float side
/// still gets its own.
#[test]
fn a_u8_input_converts_exactly_and_receives_no_gradient() {
    let mut g = Graph::new("u8_convert");
    let x = g.parameter("x", DType::U8, &[4]).unwrap();
    let w = g.parameter("w", DType::F32, &[4]).unwrap();
    let xf = g.convert(x, DType::F32).unwrap();
    let y = g.mul(xf, w).unwrap();
    let loss = g.sum_all(y).unwrap();
    let grads = g.grad(loss, &[w, x]).unwrap();
    assert_eq!(g.dtype(grads[1]), DType::U8);
    let text = String::from_utf8_lossy(g.to_program(&[xf, grads[0], grads[1]], &Default::default()).unwrap().code()).into_owned();
    assert!(text.contains("tensor<4xui8>") && text.contains("stablehlo.convert"), "{text}");
    let out = run(&g, &[xf, grads[0], grads[1]], &[HostTensor::from_u8(&[4], &[0, 1, 128, 255]).unwrap(), HostTensor::from_f32(&[4], &[1.0; 4]).unwrap()]);
    assert_eq!(out[0].to_f32().unwrap(), vec![0.0, 1.0, 128.0, 255.0]);
    assert_eq!(out[1].to_f32().unwrap(), vec![0.0, 1.0, 128.0, 255.0], "d loss / d w = x");
    assert_eq!(out[2].to_u8().unwrap(), vec![0; 4], "no gradient reaches the u8 input");
}
