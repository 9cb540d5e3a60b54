//! The train/eval split, by identity: every image of a person (LFW folder,
//! KDEF subject) or scene lands on the same side, so the eval accuracy
//! measures generalisation to new people, not memorised faces.
//!
//! The split is made per source and dataset (so every source of a mixed
//! set holds out its own `eval_fraction`), and an identity's side depends
//! only on the seed, its dataset's identities and their image counts, never
//! on the task or on the other sources: the synthetic part of a mix splits
//! exactly as the synthetic set alone does. So the face, emotion and hierarchy preps with one `split_seed` agree
//! on every shared identity, and the hierarchy's eval set holds nobody that
//! either model trained on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::sample::{DatasetTag, Sample};
use crate::rng::{hash_str, mix};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Eval,
}

impl Split {
    pub const fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Eval => "eval",
        }
    }
}

/// Assigns every sample to a split. Within a source's dataset, identities
/// are taken in a seeded pseudo-random order and go to eval while that
/// brings the eval image count closer to `eval_fraction` of its images.
pub fn split_by_identity(samples: &[Sample], eval_fraction: f64, seed: u64) -> Vec<Split> {
    let mut per_dataset: BTreeMap<(u16, DatasetTag), BTreeMap<&str, usize>> = BTreeMap::new();
    for s in samples {
        *per_dataset.entry((s.origin, s.dataset)).or_default().entry(s.identity.as_str()).or_default() += 1;
    }
    let mut eval_ids: BTreeMap<(u16, DatasetTag, &str), ()> = BTreeMap::new();
    for (&(origin, dataset), counts) in &per_dataset {
        let total: usize = counts.values().sum();
        let target = eval_fraction * total as f64;
        let mut order: Vec<(&str, usize)> = counts.iter().map(|(k, v)| (*k, *v)).collect();
        order.sort_by_key(|(id, _)| (mix(seed, &[u64::from(dataset.index()), hash_str(id)]), *id));
        let mut eval_count = 0usize;
        for (id, n) in order {
            let now = (target - eval_count as f64).abs();
            let with = (target - (eval_count + n) as f64).abs();
            if with < now {
                eval_count += n;
                eval_ids.insert((origin, dataset, id), ());
            }
        }
    }
    samples.iter().map(|s| if eval_ids.contains_key(&(s.origin, s.dataset, s.identity.as_str())) { Split::Eval } else { Split::Train }).collect()
}

/// Keeps at most `max` samples per dataset of each source: a seeded
/// pseudo-random pick of images, in their original order. Returns how many
/// were dropped.
pub fn cap_per_dataset(samples: &mut Vec<Sample>, max: usize, seed: u64) -> usize {
    let mut per_dataset: BTreeMap<(u16, DatasetTag), Vec<(u64, usize)>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        let key = mix(seed ^ 0xC0FF_EE00, &[u64::from(s.dataset.index()), hash_str(&s.source.to_string())]);
        per_dataset.entry((s.origin, s.dataset)).or_default().push((key, i));
    }
    let mut keep = vec![true; samples.len()];
    let mut dropped = 0;
    for (_, mut items) in per_dataset {
        if items.len() <= max {
            continue;
        }
        items.sort_unstable();
        for &(_, i) in &items[max..] {
            keep[i] = false;
            dropped += 1;
        }
    }
    let mut i = 0;
    samples.retain(|_| {
        let k = keep[i];
        i += 1;
        k
    });
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::sample::{FileStamp, SampleSource};

    fn sample(dataset: DatasetTag, identity: &str, n: usize) -> Sample {
        Sample {
            source: SampleSource::File { path: format!("{identity}_{n}.jpg").into() },
            face: true,
            expression: None,
            identity: identity.into(),
            dataset,
            kdef: None,
            stamp: FileStamp::default(),
            origin: 0,
        }
    }

    #[test]
    fn no_identity_straddles_the_split_and_the_fraction_is_close() {
        let mut samples = Vec::new();
        for p in 0..60 {
            for n in 0..(1 + p % 5) {
                samples.push(sample(DatasetTag::Lfw, &format!("person{p}"), n));
            }
        }
        let splits = split_by_identity(&samples, 0.3, 9);
        let mut side: BTreeMap<&str, Split> = BTreeMap::new();
        for (s, sp) in samples.iter().zip(&splits) {
            assert_eq!(*side.entry(s.identity.as_str()).or_insert(*sp), *sp, "{} straddles", s.identity);
        }
        let eval = splits.iter().filter(|s| **s == Split::Eval).count() as f64 / samples.len() as f64;
        assert!((eval - 0.3).abs() < 0.03, "eval share {eval}");
        assert_ne!(split_by_identity(&samples, 0.3, 10), splits, "the seed matters");
        assert_eq!(split_by_identity(&samples, 0.3, 9), splits, "and is deterministic");
    }

    #[test]
    fn an_identity_keeps_its_side_when_other_datasets_come_and_go() {
        let kdef: Vec<Sample> = (0..20).flat_map(|p| (0..7).map(move |n| sample(DatasetTag::Kdef, &format!("F{p:02}"), n))).collect();
        let alone = split_by_identity(&kdef, 0.3, 1);
        let mut mixed = kdef.clone();
        mixed.extend((0..50).map(|i| sample(DatasetTag::Sun397, &format!("sun_{i}"), 0)));
        let together = split_by_identity(&mixed, 0.3, 1);
        assert_eq!(&together[..kdef.len()], &alone[..]);
    }

    #[test]
    fn each_source_holds_out_its_own_share_and_keeps_its_split_in_a_mix() {
        let synth: Vec<Sample> = (0..40).map(|p| sample(DatasetTag::Lfw, &format!("p{p}"), 0)).collect();
        let alone = split_by_identity(&synth, 0.3, 5);
        // A second source with the same dataset and the same identity names.
        let mut mixed = synth.clone();
        mixed.extend((0..10).map(|p| Sample { origin: 1, ..sample(DatasetTag::Lfw, &format!("p{p}"), 0) }));
        let together = split_by_identity(&mixed, 0.3, 5);
        assert_eq!(&together[..40], &alone[..], "the first source splits as it does alone");
        let eval_second = together[40..].iter().filter(|s| **s == Split::Eval).count();
        assert_eq!(eval_second, 3, "the second source holds out 30% of its own 10 images");
    }

    #[test]
    fn caps_each_dataset() {
        let mut samples: Vec<Sample> = (0..30).map(|i| sample(DatasetTag::Sun397, &format!("s{i}"), 0)).collect();
        samples.extend((0..5).map(|i| sample(DatasetTag::Lfw, &format!("p{i}"), 0)));
        assert_eq!(cap_per_dataset(&mut samples, 10, 3), 20);
        assert_eq!(samples.iter().filter(|s| s.dataset == DatasetTag::Sun397).count(), 10);
        assert_eq!(samples.iter().filter(|s| s.dataset == DatasetTag::Lfw).count(), 5);
    }
}
