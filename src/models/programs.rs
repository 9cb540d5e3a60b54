//! The models as XLA programs: one fused training step (forward, backward,
//! dropout, gradient averaging across replicas, optimizer update), an
//! evaluation step and a prediction program.
//!
//! Calling conventions (per replica; `P` = parameters in the order the
//! layers declare them, `Architecture::params`; `S` = optimizer state in
//! `Optimizer::state_names` order per param):
//!
//! - `train_step(P.., S.., images u8[b,H,W,1], labels i32[b], lr f32, step i32,
//!   seed u32, example_offset u32) -> (P'.., S'.., loss f32, correct f32)`;
//!   `P` and `S` alias `P'` and `S'` so donated buffers are updated in place;
//!   `loss` is the mean over the global batch, `correct` its count of right
//!   answers (both identical on every replica).
//! - `eval_step(P.., images, labels, weights f32[b]) -> (loss_sum f32,
//!   correct f32, logits f32[b,K])`, where `weights` masks the padding of a
//!   last, partial batch.
//! - `predict(P.., images) -> probabilities f32[b,K]`.
//!
//! Images arrive as grey levels (u8, a quarter of f32's bytes to make and
//! upload); the program's first ops (scope `input`) convert them to f32 and
//! normalize them as the spec's [`Normalization`] says, the same f32
//! arithmetic as `Normalization::table` on the host. No gradient flows to
//! the images (the convert from an integer type has none).

use crate::data::Normalization;
use crate::graph::nn::DropoutKey;
use crate::graph::optim::Optimizer;
use crate::graph::{BoundParams, CastParams, EmitOptions, Graph, GraphError, ParamSpec, Tensor};
use crate::program::Program;
use crate::tensor::DType;

use super::architecture::{Architecture, ConvChoice, CpuKernels, ModelKind};

/// The numeric type the network computes in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in f32.
    #[default]
    F32,
    /// Mixed precision: activations and the inputs of every matmul and
    /// convolution are bf16; master weights, optimizer state, the loss and
    /// its softmax, and the gradient reductions across replicas stay f32
    /// (the standard on TPU and GPU).
    Bf16,
}

impl Precision {
    /// The type of activations and matmul / conv inputs.
    pub fn compute_dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
        }
    }

    pub fn is_f32(&self) -> bool {
        *self == Precision::F32
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to build: a model, its per-replica batch, how many replicas, and
/// the precision it computes in.
#[derive(Clone, Debug)]
pub struct ProgramSpec {
    pub kind: ModelKind,
    pub arch: Architecture,
    pub optimizer: Optimizer,
    /// Examples per replica per step.
    pub replica_batch: i64,
    /// Number of replicas (data-parallel devices).
    pub replicas: usize,
    pub precision: Precision,
    /// How the conv layers are computed.
    pub conv: ConvChoice,
    /// Which conv parts run as host kernels (CPU programs only; empty: all
    /// XLA ops, which keeps every program pure StableHLO).
    pub cpu_kernels: CpuKernels,
    /// How the program turns the u8 grey levels into the network's input
    /// (the experiment's `data.normalize`).
    pub normalize: Normalization,
}

/// A built program and the text it was emitted from.
#[derive(Clone, Debug)]
pub struct BuiltProgram {
    pub program: Program,
    pub text: String,
    /// Which outputs alias which inputs (for donation).
    pub aliases: Vec<(usize, usize)>,
}

impl ProgramSpec {
    pub fn global_batch(&self) -> i64 {
        self.replica_batch * self.replicas as i64
    }

    fn name(&self, what: &str) -> String {
        let n = self.arch.input_size;
        let mut name = format!("{}_{what}_{n}x{n}_b{}", self.kind, self.replica_batch);
        if self.replicas > 1 {
            name.push_str(&format!("_r{}", self.replicas));
        }
        if self.precision != Precision::F32 {
            name.push_str(&format!("_{}", self.precision));
        }
        name
    }

    /// The parameters as program inputs, in the order the layers declare
    /// them, with their specs.
    fn parameters(&self, g: &mut Graph) -> Result<(Vec<ParamSpec>, Vec<Tensor>), GraphError> {
        let specs = self.arch.params().map_err(|detail| GraphError::Attribute { op: "architecture", detail })?;
        let tensors = specs.iter().map(|p| g.parameter(&p.name, DType::F32, &p.dims)).collect::<Result<_, _>>()?;
        Ok((specs, tensors))
    }

    fn images(&self, g: &mut Graph) -> Result<Tensor, GraphError> {
        let n = self.arch.input_size;
        g.parameter("images", DType::U8, &[self.replica_batch, n, n, 1])
    }

    /// u8 grey levels to the network's f32 input: `(p - centre) * scale`
    /// (see [`Normalization::centre_scale`], which says why not a
    /// division), the same f32 arithmetic as `Normalization::table` on the
    /// host, bit for bit.
    pub fn normalized(&self, g: &mut Graph, images: Tensor) -> Result<Tensor, GraphError> {
        let (centre, scale) = self.normalize.centre_scale();
        g.scoped("input", |g| {
            let x = g.convert(images, DType::F32)?;
            let x = if centre == 0.0 { x } else { g.add_scalar(x, f64::from(-centre))? };
            g.mul_scalar(x, f64::from(scale))
        })
    }

    /// The network on float `images` (the programs pass the u8 batch
    /// through [`ProgramSpec::normalized`] first) with the parameters
    /// `params` (made from `specs`, e.g. by `parameters`), dropout when
    /// training. In bf16 the images and each parameter are converted on the
    /// way in and the logits back to f32 on the way out, so the loss,
    /// softmax and everything after are f32, and so are the gradients the
    /// parameters receive.
    pub fn forward(&self, g: &mut Graph, specs: &[ParamSpec], params: &[Tensor], images: Tensor, dropout: Option<&DropoutKey>) -> Result<Tensor, GraphError> {
        let mut bound = BoundParams::new(specs, params)?;
        let logits = match self.precision.compute_dtype() {
            DType::F32 => self.arch.forward_with_kernels(g, &mut bound, images, dropout, self.conv, &self.cpu_kernels)?,
            compute => {
                let images = g.scoped("input", |g| g.convert(images, compute))?;
                let mut cast = CastParams::new(&mut bound, compute);
                let logits = self.arch.forward_with_kernels(g, &mut cast, images, dropout, self.conv, &self.cpu_kernels)?;
                g.scoped("logits", |g| g.convert(logits, DType::F32))?
            }
        };
        bound.finish()?;
        Ok(logits)
    }

    fn all_replicas(&self) -> Vec<Vec<i64>> {
        vec![(0..self.replicas as i64).collect()]
    }

    /// Sum across replicas (identity for one replica).
    fn cross_replica_sum(&self, g: &mut Graph, x: Tensor) -> Result<Tensor, GraphError> {
        if self.replicas == 1 { Ok(x) } else { g.all_reduce_sum(x, &self.all_replicas()) }
    }

    pub fn train_step(&self) -> Result<BuiltProgram, GraphError> {
        let mut g = Graph::new(self.name("train_step"));
        let (specs, params) = self.parameters(&mut g)?;
        let mut state = Vec::new();
        for spec in &specs {
            for name in self.optimizer.state_names(&spec.name) {
                state.push(g.parameter(&name, DType::F32, &spec.dims)?);
            }
        }
        let images = self.images(&mut g)?;
        let images = self.normalized(&mut g, images)?;
        let labels = g.parameter("labels", DType::I32, &[self.replica_batch])?;
        let lr = g.parameter("lr", DType::F32, &[])?;
        let step = g.parameter("step", DType::I32, &[])?;
        let seed = g.parameter("seed", DType::U32, &[])?;
        let offset = g.parameter("example_offset", DType::U32, &[])?;
        let key = DropoutKey { seed, step, example_offset: offset, salt: 1 };

        let logits = self.forward(&mut g, &specs, &params, images, Some(&key))?;
        let ce = g.scoped("loss", |g| g.softmax_cross_entropy(logits, labels))?;
        let correct = g.scoped("metrics", |g| g.correct_count(logits, labels))?;
        let grads = g.grad(ce.mean, &params)?;

        // Replica r's gradient is of its local mean; the global mean's
        // gradient is the average over replicas.
        let (grads, loss, correct) = g.scoped("cross_replica", |g| -> Result<_, GraphError> {
            let scale = 1.0 / self.replicas as f64;
            let mut averaged = Vec::with_capacity(grads.len());
            for &gr in &grads {
                let s = self.cross_replica_sum(g, gr)?;
                averaged.push(if self.replicas == 1 { s } else { g.mul_scalar(s, scale)? });
            }
            let loss_sum = self.cross_replica_sum(g, ce.sum)?;
            let loss = g.mul_scalar(loss_sum, 1.0 / self.global_batch() as f64)?;
            let correct = self.cross_replica_sum(g, correct)?;
            Ok((averaged, loss, correct))
        })?;
        let (new_params, new_state) = g.scoped(&format!("opt.{}", self.optimizer.name()), |g| self.optimizer.update(g, &params, &grads, &state, lr, step))?;

        let mut outputs = new_params;
        outputs.extend(new_state);
        outputs.push(loss);
        outputs.push(correct);
        let donated = params.len() + state.len();
        let aliases: Vec<(usize, usize)> = (0..donated).map(|i| (i, i)).collect();
        self.finish(&g, &outputs, aliases)
    }

    pub fn eval_step(&self) -> Result<BuiltProgram, GraphError> {
        let mut g = Graph::new(self.name("eval_step"));
        let (specs, params) = self.parameters(&mut g)?;
        let images = self.images(&mut g)?;
        let images = self.normalized(&mut g, images)?;
        let labels = g.parameter("labels", DType::I32, &[self.replica_batch])?;
        let weights = g.parameter("weights", DType::F32, &[self.replica_batch])?;
        let logits = self.forward(&mut g, &specs, &params, images, None)?;
        let (loss_sum, correct) = g.scoped("metrics", |g| -> Result<_, GraphError> {
            let logp = g.log_softmax(logits)?;
            let target = g.one_hot(labels, self.arch.classes, DType::F32)?;
            let picked = g.mul(logp, target)?;
            let per_example = g.sum(picked, &[1])?;
            let weighted = g.mul(per_example, weights)?;
            let total = g.sum_all(weighted)?;
            let loss_sum = g.neg(total)?;
            let predicted = g.argmax(logits)?;
            let hit = g.compare(predicted, labels, crate::graph::Direction::Eq)?;
            let hit = g.convert(hit, DType::F32)?;
            let hit = g.mul(hit, weights)?;
            Ok((loss_sum, g.sum_all(hit)?))
        })?;
        self.finish(&g, &[loss_sum, correct, logits], vec![])
    }

    pub fn predict(&self) -> Result<BuiltProgram, GraphError> {
        let mut g = Graph::new(self.name("predict"));
        let (specs, params) = self.parameters(&mut g)?;
        let images = self.images(&mut g)?;
        let images = self.normalized(&mut g, images)?;
        let logits = self.forward(&mut g, &specs, &params, images, None)?;
        let probs = g.scoped("softmax", |g| g.softmax(logits))?;
        self.finish(&g, &[probs], vec![])
    }

    fn finish(&self, g: &Graph, outputs: &[Tensor], aliases: Vec<(usize, usize)>) -> Result<BuiltProgram, GraphError> {
        let options = EmitOptions { num_replicas: self.replicas, aliases: aliases.clone() };
        let program = g.to_program(outputs, &options)?;
        let text = String::from_utf8_lossy(program.code()).into_owned();
        Ok(BuiltProgram { program, text, aliases })
    }
}
