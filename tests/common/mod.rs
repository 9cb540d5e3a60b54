//! Shared test support: one CPU client per test binary, running a graph,
//! a small deterministic RNG, and the finite-difference VJP check.
#![allow(dead_code)]

use std::sync::OnceLock;

use emotionet::graph::{EmitOptions, Graph, Tensor};
use emotionet::pjrt::{self, Backend, Client, ClientOptions, CompileOptions};
use emotionet::tensor::{DType, HostTensor};

pub fn client() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT.get_or_init(|| pjrt::connect(Backend::Cpu, None, &ClientOptions::new()).expect("CPU plugin (make setup)"))
}

/// Compiles `outputs` of `g` for device 0 and runs it on `inputs`.
pub fn run(g: &Graph, outputs: &[Tensor], inputs: &[HostTensor]) -> Vec<HostTensor> {
    let program = g.to_program(outputs, &EmitOptions::default()).expect("emit");
    let exe = client()
        .compile(&program, &CompileOptions::single_device(0))
        .unwrap_or_else(|e| panic!("compile failed: {e}\n{}", String::from_utf8_lossy(program.code())));
    let buffers: Vec<_> = inputs.iter().map(|t| client().upload(t, 0).expect("upload")).collect();
    let refs: Vec<_> = buffers.iter().collect();
    exe.execute(&refs, &[]).expect("execute").iter().map(|b| b.to_host().expect("download")).collect()
}

/// xorshift64*: small, deterministic, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [-1, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
    pub fn vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.uniform()).collect()
    }
    pub fn tensor(&mut self, dims: &[i64]) -> HostTensor {
        let n = dims.iter().product::<i64>() as usize;
        HostTensor::from_f64(dims, &self.vec(n)).unwrap()
    }
}

pub fn count(dims: &[i64]) -> usize {
    dims.iter().product::<i64>() as usize
}

pub fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!((a - b).abs() <= tol * (1.0 + b.abs()), "{what}: element {i}: got {a}, want {b} (tol {tol})");
    }
}

/// Checks the VJP of `f` at `inputs` (f64) against central finite
/// differences along a random direction, one input at a time: for
/// `L(x) = sum(f(x) * r)` with random `r`, `<grad_i L, v>` must equal
/// `(L(x + h v) - L(x - h v)) / 2h`. Returns the analytic gradients.
pub fn check_vjp(name: &str, inputs: &[HostTensor], seed: u64, f: impl Fn(&mut Graph, &[Tensor]) -> Tensor) -> Vec<Vec<f64>> {
    let mut rng = Rng::new(seed);
    let mut g = Graph::new(format!("vjp_{name}"));
    let params: Vec<Tensor> = inputs.iter().enumerate().map(|(i, t)| g.parameter(&format!("x{i}"), t.dtype(), t.dims()).unwrap()).collect();
    let y = f(&mut g, &params);
    let y_dims = g.dims(y).to_vec();
    let r = g.parameter("r", DType::F64, &y_dims).unwrap();
    let weighted = g.mul(y, r).unwrap();
    let loss = g.sum_all(weighted).unwrap();
    let diff: Vec<Tensor> = params.iter().zip(inputs).filter(|(_, t)| t.dtype().is_float()).map(|(p, _)| *p).collect();
    let grads = g.grad(loss, &diff).unwrap();
    let mut outputs = vec![loss];
    outputs.extend(&grads);
    let program = g.to_program(&outputs, &EmitOptions::default()).unwrap();
    let exe =
        client().compile(&program, &CompileOptions::single_device(0)).unwrap_or_else(|e| panic!("{name}: {e}\n{}", String::from_utf8_lossy(program.code())));
    let r_value = rng.tensor(&y_dims);
    let eval = |xs: &[HostTensor]| -> Vec<Vec<f64>> {
        let mut all: Vec<HostTensor> = xs.to_vec();
        all.push(r_value.clone());
        let bufs: Vec<_> = all.iter().map(|t| client().upload(t, 0).unwrap()).collect();
        let refs: Vec<_> = bufs.iter().collect();
        exe.execute(&refs, &[]).unwrap().iter().map(|b| b.to_host().unwrap().to_f64().unwrap()).collect()
    };
    let base = eval(inputs);
    let analytic: Vec<Vec<f64>> = base[1..].to_vec();
    let h = 1e-6;
    let mut k = 0;
    for (i, x) in inputs.iter().enumerate() {
        if !x.dtype().is_float() {
            continue;
        }
        let xv = x.to_f64().unwrap();
        let v = rng.vec(xv.len());
        let shifted = |sign: f64| {
            let mut xs = inputs.to_vec();
            let moved: Vec<f64> = xv.iter().zip(&v).map(|(a, d)| a + sign * h * d).collect();
            xs[i] = HostTensor::from_f64(x.dims(), &moved).unwrap();
            eval(&xs)[0][0]
        };
        let fd = (shifted(1.0) - shifted(-1.0)) / (2.0 * h);
        let an: f64 = analytic[k].iter().zip(&v).map(|(a, b)| a * b).sum();
        let scale = 1.0 + fd.abs().max(an.abs());
        assert!((fd - an).abs() <= 1e-5 * scale, "{name}: input {i}: finite differences {fd}, VJP {an}");
        k += 1;
    }
    analytic
}
