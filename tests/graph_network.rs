//! Compositions: a small CNN differentiated end to end, the optimizers
//! against hand-written updates, and the StableHLO writer's output against a
//! checked-in golden file.

mod common;

use common::{Rng, assert_close, check_vjp, run};
use emotionet::graph::nn::ConvFormulation;
use emotionet::graph::optim::Optimizer;
use emotionet::graph::{BoundParams, EmitOptions, Graph, ParamSpec, Tensor};
use emotionet::tensor::{DType, HostTensor};

#[test]
fn two_conv_blocks_dense_and_cross_entropy_match_finite_differences() {
    let mut rng = Rng::new(77);
    let shapes: [&[i64]; 7] = [&[2, 8, 8, 1], &[3, 3, 1, 2], &[2], &[3, 3, 2, 3], &[3], &[4, 12], &[4]];
    let mut inputs: Vec<HostTensor> = shapes.iter().map(|d| rng.tensor(d)).collect();
    inputs.push(HostTensor::from_i32(&[2], &[3, 1]).unwrap());
    // The layers ask for their parameters by name; here they are bound to
    // the f64 inputs of the check.
    let names = ["block1.conv.weight", "block1.conv.bias", "block2.conv.weight", "block2.conv.bias", "logits.weight", "logits.bias"];
    let specs: Vec<ParamSpec> =
        names.iter().zip(&shapes[1..]).map(|(n, d)| ParamSpec { name: n.to_string(), dims: d.to_vec(), init: emotionet::graph::Init::Zeros }).collect();
    let grads = check_vjp("cnn", &inputs, 78, |g, p| {
        let mut params = BoundParams::new(&specs, &p[1..7]).unwrap();
        let h = g.scoped("block1", |g| g.conv_block(&mut params, p[0], 2, 3, 2, ConvFormulation::Convolution)).unwrap();
        let h = g.scoped("block2", |g| g.conv_block(&mut params, h, 3, 3, 2, ConvFormulation::Patches)).unwrap();
        let h = g.flatten(h).unwrap();
        let logits = g.scoped("logits", |g| g.linear(&mut params, h, 4)).unwrap();
        params.finish().unwrap();
        g.softmax_cross_entropy(logits, p[7]).unwrap().mean
    });
    // Every parameter (and the input) gets a non-trivial gradient.
    for (i, gr) in grads.iter().enumerate() {
        assert!(gr.iter().any(|v| v.abs() > 1e-9), "gradient {i} is all zeros");
    }
}

#[test]
fn tiled_max_pool_matches_reduce_window_and_its_gradient_checks() {
    let mut rng = Rng::new(31);
    // 7x9 is not a multiple of the tile: the last row and column are dropped.
    let x = rng.tensor(&[2, 7, 9, 3]);
    let mut g = Graph::new("pools");
    let p = g.parameter("x", DType::F64, &[2, 7, 9, 3]).unwrap();
    let tiled = g.max_pool_tiled(p, 2).unwrap();
    let window = g.max_pool(p, emotionet::graph::WindowSpec::nhwc(2, 2)).unwrap();
    let out = run(&g, &[tiled, window], std::slice::from_ref(&x));
    assert_eq!(out[0].dims(), &[2, 3, 4, 3]);
    assert_eq!(out[0].to_f64().unwrap(), out[1].to_f64().unwrap());
    check_vjp("max_pool_tiled", &[x], 32, |g, p| g.max_pool_tiled(p[0], 2).unwrap());

    // Ties share the cotangent: a tile of four equal values gives each 1/4.
    let tied = HostTensor::from_f64(&[1, 2, 2, 1], &[3.0, 3.0, 3.0, 3.0]).unwrap();
    let mut g = Graph::new("tiled ties");
    let p = g.parameter("x", DType::F64, &[1, 2, 2, 1]).unwrap();
    let y = g.max_pool_tiled(p, 2).unwrap();
    let loss = g.sum_all(y).unwrap();
    let grad = g.grad(loss, &[p]).unwrap();
    assert_eq!(run(&g, &grad, &[tied])[0].to_f64().unwrap(), vec![0.25; 4]);
}

#[test]
fn cross_entropy_and_accuracy_values() {
    let logits = HostTensor::from_f32(&[3, 3], &[2.0, 1.0, 0.0, 0.0, 0.0, 5.0, 1.0, 1.0, 1.0]).unwrap();
    let labels = HostTensor::from_i32(&[3], &[0, 1, 0]).unwrap();
    let mut g = Graph::new("ce");
    let l = g.parameter("logits", DType::F32, &[3, 3]).unwrap();
    let y = g.parameter("labels", DType::I32, &[3]).unwrap();
    let ce = g.softmax_cross_entropy(l, y).unwrap();
    let correct = g.correct_count(l, y).unwrap();
    let argmax = g.argmax(l).unwrap();
    let probs = g.softmax(l).unwrap();
    let out = run(&g, &[ce.mean, ce.sum, correct, argmax, probs], &[logits.clone(), labels]);
    let lv = logits.to_f32().unwrap();
    let row_ce = |r: usize, label: usize| {
        let row = &lv[r * 3..r * 3 + 3];
        let lse = row.iter().map(|v| (*v as f64).exp()).sum::<f64>().ln();
        lse - row[label] as f64
    };
    let total = row_ce(0, 0) + row_ce(1, 1) + row_ce(2, 0);
    assert!((out[1].to_f32().unwrap()[0] as f64 - total).abs() < 1e-5);
    assert!((out[0].to_f32().unwrap()[0] as f64 - total / 3.0).abs() < 1e-5);
    // Row 2 is a three-way tie: argmax takes the first index, which is the label.
    assert_eq!(out[3].to_i32().unwrap(), vec![0, 2, 0]);
    assert_eq!(out[2].to_f32().unwrap(), vec![2.0]);
    let p = out[4].to_f32().unwrap();
    for r in 0..3 {
        assert!((p[r * 3..r * 3 + 3].iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}

/// Runs `steps` optimizer updates in the graph, feeding the same gradient.
fn run_optimizer(opt: &Optimizer, param: &[f64], grad: &[f64], lr: f64, steps: usize) -> Vec<f64> {
    let n = param.len() as i64;
    let mut g = Graph::new("optimizer");
    let p = g.parameter("w", DType::F64, &[n]).unwrap();
    let gr = g.parameter("grad", DType::F64, &[n]).unwrap();
    let state: Vec<Tensor> = opt.state_names("w").iter().map(|name| g.parameter(name, DType::F64, &[n]).unwrap()).collect();
    let lr_t = g.parameter("lr", DType::F32, &[]).unwrap();
    let step = g.parameter("step", DType::I32, &[]).unwrap();
    let (new_p, new_s) = opt.update(&mut g, &[p], &[gr], &state, lr_t, step).unwrap();
    let mut outputs = new_p.clone();
    outputs.extend(&new_s);
    let mut values = vec![HostTensor::from_f64(&[n], param).unwrap()];
    let mut state_values: Vec<HostTensor> = state.iter().map(|_| HostTensor::from_f64(&[n], &vec![0.0; param.len()]).unwrap()).collect();
    for s in 0..steps {
        let mut inputs = vec![values[0].clone(), HostTensor::from_f64(&[n], grad).unwrap()];
        inputs.extend(state_values.iter().cloned());
        inputs.push(HostTensor::scalar_f32(lr as f32));
        inputs.push(HostTensor::scalar_i32(s as i32));
        let out = run(&g, &outputs, &inputs);
        values = vec![out[0].clone()];
        state_values = out[1..].to_vec();
    }
    values[0].to_f64().unwrap()
}

#[test]
fn optimizers_match_their_textbook_updates() {
    let p0 = [1.0, -2.0, 0.5];
    let grad = [0.3, -0.1, 2.0];
    let lr = 0.1f32 as f64;
    let steps = 3;

    let sgd = run_optimizer(&Optimizer::Sgd, &p0, &grad, lr, steps);
    let want: Vec<f64> = p0.iter().zip(&grad).map(|(p, g)| p - steps as f64 * lr * g).collect();
    assert_close(&sgd, &want, 1e-12, "sgd");

    let mom = run_optimizer(&Optimizer::Momentum { momentum: 0.9, nesterov: false }, &p0, &grad, lr, steps);
    let want: Vec<f64> = p0
        .iter()
        .zip(&grad)
        .map(|(&p, &g)| {
            let (mut p, mut v) = (p, 0.0);
            for _ in 0..steps {
                v = 0.9 * v + g;
                p -= lr * v;
            }
            p
        })
        .collect();
    assert_close(&mom, &want, 1e-12, "momentum");

    let adam = run_optimizer(&Optimizer::Adam { beta1: 0.9, beta2: 0.999, epsilon: 1e-8 }, &p0, &grad, lr, steps);
    let want: Vec<f64> = p0
        .iter()
        .zip(&grad)
        .map(|(&p, &g)| {
            let (mut p, mut m, mut v) = (p, 0.0, 0.0);
            for t in 1..=steps {
                m = 0.9 * m + 0.1 * g;
                v = 0.999 * v + 0.001 * g * g;
                let lr_t = lr * (1.0 - 0.999f64.powi(t as i32)).sqrt() / (1.0 - 0.9f64.powi(t as i32));
                p -= lr_t * m / (v.sqrt() + 1e-8);
            }
            p
        })
        .collect();
    // The bias-correction factor is computed in f32, like the learning rate.
    assert_close(&adam, &want, 2e-6, "adam");
}

/// A small graph whose StableHLO text is checked in under hlo/golden/.
fn golden_graph() -> (Graph, Vec<Tensor>) {
    let mut g = Graph::new("tiny_mlp_train_step");
    let x = g.parameter("images", DType::F32, &[4, 6]).unwrap();
    let y = g.parameter("labels", DType::I32, &[4]).unwrap();
    let w1 = g.parameter("hidden.weight", DType::F32, &[5, 6]).unwrap();
    let b1 = g.parameter("hidden.bias", DType::F32, &[5]).unwrap();
    let w2 = g.parameter("logits.weight", DType::F32, &[3, 5]).unwrap();
    let b2 = g.parameter("logits.bias", DType::F32, &[3]).unwrap();
    let lr = g.parameter("lr", DType::F32, &[]).unwrap();
    let step = g.parameter("step", DType::I32, &[]).unwrap();
    let h = g.scoped("hidden", |g| g.dense(x, w1, b1).and_then(|h| g.relu(h))).unwrap();
    let logits = g.scoped("logits", |g| g.dense(h, w2, b2)).unwrap();
    let loss = g.scoped("loss", |g| g.softmax_cross_entropy(logits, y)).unwrap().mean;
    let params = [w1, b1, w2, b2];
    let grads = g.grad(loss, &params).unwrap();
    let (new_params, _) = g.scoped("sgd", |g| Optimizer::Sgd.update(g, &params, &grads, &[], lr, step)).unwrap();
    let mut outputs = new_params;
    outputs.push(loss);
    (g, outputs)
}

#[test]
fn stablehlo_text_matches_the_golden_file() {
    let (g, outputs) = golden_graph();
    let options = EmitOptions { num_replicas: 1, aliases: vec![(2, 0), (3, 1), (4, 2), (5, 3)] };
    let text = g.to_stablehlo(&outputs, &options).unwrap();
    let (g2, outputs2) = golden_graph();
    let again = g2.to_stablehlo(&outputs2, &options).unwrap();
    assert_eq!(text, again, "the same graph must give the same bytes");
    assert!(text.contains("loc(\"grad.hidden/"), "gradient ops are scoped under grad.");
    assert!(text.contains("{tf.aliasing_output = 0 : i32} loc(\"hidden.weight\")"));

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hlo/golden/tiny_mlp_train_step.mlir");
    if std::env::var_os("EMOTIONET_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &text).unwrap();
    }
    let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with EMOTIONET_BLESS=1 to create it)", path.display()));
    assert!(golden == text, "emitted text differs from {} (EMOTIONET_BLESS=1 rewrites it after a deliberate change)", path.display());

    // And the golden program really compiles and runs.
    let mut rng = Rng::new(5);
    let mut inputs = vec![
        HostTensor::from_f32(&[4, 6], &rng.vec(24).iter().map(|v| *v as f32).collect::<Vec<_>>()).unwrap(),
        HostTensor::from_i32(&[4], &[0, 1, 2, 1]).unwrap(),
    ];
    for dims in [&[5i64, 6][..], &[5], &[3, 5], &[3]] {
        let n: i64 = dims.iter().product();
        inputs.push(HostTensor::from_f32(dims, &rng.vec(n as usize).iter().map(|v| *v as f32 * 0.5).collect::<Vec<_>>()).unwrap());
    }
    inputs.push(HostTensor::scalar_f32(0.1));
    inputs.push(HostTensor::scalar_i32(0));
    let out = run(&g, &outputs, &inputs);
    assert_eq!(out.len(), 5);
    assert!(out[4].to_f32().unwrap()[0].is_finite());
}

/// The im2col formulation computes the same convolution as the conv op
/// (SAME padding, odd kernel, several input channels) and its gradients.
#[test]
fn patches_formulation_equals_the_convolution() {
    let mut rng = Rng::new(5);
    let (x, w) = (rng.tensor(&[2, 7, 6, 3]), rng.tensor(&[5, 5, 3, 4]));
    let mut g = Graph::new("patches");
    let px = g.parameter("x", DType::F64, &[2, 7, 6, 3]).unwrap();
    let pw = g.parameter("w", DType::F64, &[5, 5, 3, 4]).unwrap();
    let conv = g.conv2d_same(px, pw, 1).unwrap();
    let patches = g.conv2d_same_patches(px, pw).unwrap();
    let out = run(&g, &[conv, patches], &[x.clone(), w.clone()]);
    assert_close(&out[1].to_f64().unwrap(), &out[0].to_f64().unwrap(), 1e-12, "patches vs convolution");
    check_vjp("patches", &[x, w], 6, |g, p| {
        let y = g.conv2d_same_patches(p[0], p[1]).unwrap();
        let y = g.mul(y, y).unwrap();
        g.sum_all(y).unwrap()
    });
}
