//! Parameter initialization from a seed.

use crate::graph::{Init, ParamSpec};
use crate::rng::{Rng, hash_str};
use crate::tensor::HostTensor;

/// Initial values for `specs`. Each parameter draws from its own stream
/// keyed by (seed, name), so adding a layer does not change the others.
pub fn init_params(specs: &[ParamSpec], seed: u64) -> Vec<HostTensor> {
    specs
        .iter()
        .map(|spec| {
            let n = spec.element_count() as usize;
            let values: Vec<f32> = match spec.init {
                Init::Zeros => vec![0.0; n],
                Init::HeNormal { fan_in } => {
                    let std = (2.0 / fan_in as f64).sqrt();
                    let mut rng = Rng::keyed(seed, &[hash_str(&spec.name)]);
                    (0..n).map(|_| (rng.normal() as f64 * std) as f32).collect()
                }
            };
            HostTensor::from_f32(&spec.dims, &values).expect("sizes come from the spec")
        })
        .collect()
}
