//! The order of a training epoch: which sample fills each row of each batch.
//!
//! An epoch's order is a pure function of (seed, epoch number, split,
//! settings), so the input pipeline's saved state needs nothing but the
//! epoch and the offset in it to continue exactly (see `pipeline`).
//!
//! - **Plain** (one source, weight 1, no share): a seeded permutation of
//!   the split; with `balance_classes`, every class is first cycled up to
//!   the largest class's count.
//! - **Mixed**: the sources without a `share` form one pool. Each source
//!   puts its images into the pool `weight` times (2 = twice, 0.5 = a
//!   seeded half, a different half each epoch); the pool is class-balanced
//!   if asked, then shuffled. A source with a `share` instead supplies that
//!   fraction of every batch, cycling through its own images (balanced by
//!   class if asked) in a fresh seeded order each time round. Batch `k` of
//!   an epoch gets `floor(S (k+1) B) - floor(S k B)` shared rows (S the sum
//!   of shares, B the batch), handed one by one to the source furthest
//!   behind its share, so every source gets its share exactly in the long
//!   run and every batch is full. The epoch ends when the pool cannot fill
//!   the next batch (the tail is dropped); with no pool (shares add up to
//!   1) it lasts until the source needing most batches has shown every image.
//! - A source without training images for the task (the LFW subset, which
//!   has no expression labels, in the emotion task) is left out, and the
//!   remaining shares are scaled up if nothing else could fill the batch;
//!   when a single plain source is left, its epochs are the plain order.

use std::collections::BTreeMap;

use super::config::SourceMix;
use super::error::{DataError, Result};
use crate::rng::Rng;

/// Keys separating the streams of one seed.
const PERMUTATION_STREAM: u64 = 0x5045_524D;
const BALANCE_STREAM: u64 = 0x4241_4C41;
const WEIGHT_STREAM: u64 = 0x5745_4947;
const SHARE_STREAM: u64 = 0x5348_4152;

/// The order of epoch `epoch`: a Fisher-Yates shuffle keyed by (seed, epoch).
pub fn epoch_permutation(seed: u64, epoch: u64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::keyed(seed, &[PERMUTATION_STREAM, epoch]).shuffle(&mut order);
    order
}

/// The sample order of epoch `epoch` of a single, unweighted source: a
/// plain permutation, or with `balance` every class cycled up to the
/// largest class's count first.
pub fn epoch_order(labels: &[i32], seed: u64, epoch: u64, balance: bool) -> Vec<usize> {
    if !balance {
        return epoch_permutation(seed, epoch, labels.len());
    }
    let mut order = balanced(&(0..labels.len()).collect::<Vec<_>>(), labels, seed, &[BALANCE_STREAM, epoch]);
    Rng::keyed(seed, &[PERMUTATION_STREAM, epoch]).shuffle(&mut order);
    order
}

/// `members` (sample indices, repeats allowed) with every class cycled up
/// to the largest class's count, each class in its own seeded order; keys
/// are followed by the label.
fn balanced(members: &[usize], labels: &[i32], seed: u64, keys: &[u64]) -> Vec<usize> {
    let mut classes: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for &i in members {
        classes.entry(labels[i]).or_default().push(i);
    }
    let largest = classes.values().map(Vec::len).max().unwrap_or(0);
    let mut order = Vec::with_capacity(largest * classes.len());
    for (label, mut members) in classes {
        let mut k = keys.to_vec();
        k.push(label as u64);
        Rng::keyed(seed, &k).shuffle(&mut members);
        order.extend((0..largest).map(|j| members[j % members.len()]));
    }
    order
}

/// One source with training images in this split.
#[derive(Clone, Debug, PartialEq)]
struct Part {
    /// Index into the configured mix (keys the part's random streams).
    index: usize,
    name: String,
    members: Vec<usize>,
    weight: f64,
    share: Option<f64>,
}

/// How every epoch of one split is drawn (see the module docs).
#[derive(Clone, Debug, PartialEq)]
pub struct EpochPlan {
    labels: Vec<i32>,
    seed: u64,
    batch_size: usize,
    balance: bool,
    /// Empty for the plain order.
    parts: Vec<Part>,
    /// Batches per epoch.
    batches: usize,
}

impl EpochPlan {
    /// Plans the epochs of a split whose sample `i` has `labels[i]` and
    /// came from the source named `sources[i]`. A sample whose source is not
    /// in `mix` counts as weight 1 of an unnamed source.
    pub fn new(labels: &[i32], sources: &[&str], mix: &[SourceMix], seed: u64, batch_size: usize, balance: bool) -> Result<EpochPlan> {
        let mut plan = EpochPlan { labels: labels.to_vec(), seed, batch_size, balance, parts: Vec::new(), batches: 0 };
        let trivial = mix.iter().all(|m| m.weight == 1.0 && m.share.is_none());
        if !trivial {
            let mut parts: Vec<Part> =
                mix.iter().enumerate().map(|(index, m)| Part { index, name: m.name.clone(), members: Vec::new(), weight: m.weight, share: m.share }).collect();
            let mut unnamed = Part { index: mix.len(), name: String::new(), members: Vec::new(), weight: 1.0, share: None };
            for i in 0..labels.len() {
                let name = sources.get(i).copied().unwrap_or("");
                match parts.iter_mut().find(|p| p.name == name) {
                    Some(p) => p.members.push(i),
                    None => unnamed.members.push(i),
                }
            }
            parts.push(unnamed);
            parts.retain(|p| !p.members.is_empty());
            // What is left may be one plain stream after all (the emotion
            // task of a mix whose real source has no expressions): then
            // the batches are exactly those of that source alone.
            if parts.iter().all(|p| p.weight == 1.0 && p.share.is_none()) {
                parts.clear();
            }
            // Without a pool, the shares of the sources present must fill the batch.
            if parts.iter().all(|p| p.share.is_some()) {
                let total: f64 = parts.iter().filter_map(|p| p.share).sum();
                for p in &mut parts {
                    p.share = p.share.map(|s| s / total);
                }
            }
            plan.parts = parts;
        }
        plan.batches = plan.order(0).len() / batch_size;
        if plan.batches == 0 {
            return Err(DataError::config(
                "source.mixed",
                plan.fingerprint(),
                format!("a mix that fills at least one batch of {batch_size}: the sources without a share have too few training images for their part of it"),
            ));
        }
        Ok(plan)
    }

    /// Batches in every epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.batches
    }

    /// Samples in every epoch (`batches_per_epoch * batch_size`).
    pub fn epoch_len(&self) -> usize {
        self.batches * self.batch_size
    }

    /// Names the mix, for checking that a saved pipeline state belongs to
    /// it: empty for the plain order, else `name:w<weight>` or
    /// `name:s<share>` per source, in order.
    pub fn fingerprint(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p.share {
                Some(s) => format!("{}:s{s}", p.name),
                None => format!("{}:w{}", p.name, p.weight),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The order of epoch `epoch`: at least `epoch_len()` sample indices,
    /// batch after batch (a plain order's tail is longer and is dropped).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        if self.parts.is_empty() {
            return epoch_order(&self.labels, self.seed, epoch, self.balance);
        }
        let seed = self.seed;
        let mut pool = Vec::new();
        for p in self.parts.iter().filter(|p| p.share.is_none()) {
            let copies = p.weight.floor() as usize;
            for _ in 0..copies {
                pool.extend_from_slice(&p.members);
            }
            let extra = ((p.weight - copies as f64) * p.members.len() as f64).round() as usize;
            if extra > 0 {
                let mut some = p.members.clone();
                Rng::keyed(seed, &[WEIGHT_STREAM, epoch, p.index as u64]).shuffle(&mut some);
                pool.extend_from_slice(&some[..extra.min(some.len())]);
            }
        }
        if self.balance {
            pool = balanced(&pool, &self.labels, seed, &[BALANCE_STREAM, epoch]);
        }
        Rng::keyed(seed, &[PERMUTATION_STREAM, epoch]).shuffle(&mut pool);

        let shared: Vec<&Part> = self.parts.iter().filter(|p| p.share.is_some()).collect();
        if shared.is_empty() {
            return pool;
        }
        let b = self.batch_size as f64;
        let total_share: f64 = shared.iter().filter_map(|p| p.share).sum();
        let mut streams: Vec<ShareStream> = shared.iter().map(|p| ShareStream::new(p, &self.labels, self.balance, seed, epoch)).collect();
        // Batches when nothing but shared sources fill them: long enough
        // for each to show all of its (balanced) images once.
        let shared_only_batches =
            streams.iter().zip(&shared).map(|(s, p)| (s.members.len() as f64 / (p.share.unwrap_or(1.0) * b)).ceil() as usize).max().unwrap_or(0).max(1);
        // Shares that fill whole batches leave the pool (if any) unused.
        let pool_used = !pool.is_empty() && total_share < 1.0 - 1e-9;
        let mut given = vec![0usize; shared.len()];
        let mut order = Vec::new();
        let mut pool_at = 0;
        for k in 0.. {
            let rows = ((total_share * (k + 1) as f64 * b).floor() - (total_share * k as f64 * b).floor()) as usize;
            let rows = if pool_used { rows.min(self.batch_size) } else { self.batch_size };
            let from_pool = self.batch_size - rows;
            if !pool_used && k >= shared_only_batches {
                break;
            }
            if from_pool > 0 && pool_at + from_pool > pool.len() {
                break;
            }
            for _ in 0..rows {
                // The source furthest behind its share of the rows so far (first of equals).
                let target = |j: usize| shared[j].share.unwrap_or(0.0) * (k + 1) as f64 * b - given[j] as f64;
                let j = (0..shared.len()).fold(0, |best, j| if target(j) > target(best) { j } else { best });
                order.push(streams[j].next());
                given[j] += 1;
            }
            order.extend_from_slice(&pool[pool_at..pool_at + from_pool]);
            pool_at += from_pool;
        }
        order
    }
}

/// A shared source's images, cycled in a fresh seeded order each time round.
struct ShareStream {
    members: Vec<usize>,
    keys: [u64; 3],
    seed: u64,
    round: u64,
    order: Vec<usize>,
    at: usize,
}

impl ShareStream {
    fn new(part: &Part, labels: &[i32], balance: bool, seed: u64, epoch: u64) -> ShareStream {
        let keys = [SHARE_STREAM, epoch, part.index as u64];
        let members = if balance { balanced(&part.members, labels, seed, &[BALANCE_STREAM, epoch, part.index as u64]) } else { part.members.clone() };
        ShareStream { members, keys, seed, round: 0, order: Vec::new(), at: 0 }
    }

    fn next(&mut self) -> usize {
        if self.at == self.order.len() {
            self.order = self.members.clone();
            Rng::keyed(self.seed, &[self.keys[0], self.keys[1], self.keys[2], self.round]).shuffle(&mut self.order);
            self.round += 1;
            self.at = 0;
        }
        self.at += 1;
        self.order[self.at - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mix(entries: &[(&str, f64, Option<f64>)]) -> Vec<SourceMix> {
        entries.iter().map(|&(name, weight, share)| SourceMix { name: name.into(), weight, share }).collect()
    }

    #[test]
    fn permutations_are_permutations_and_differ_by_epoch() {
        let a = epoch_permutation(1, 0, 50);
        let b = epoch_permutation(1, 1, 50);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(a, b);
        assert_eq!(a, epoch_permutation(1, 0, 50));
    }

    #[test]
    fn a_share_fills_its_part_of_every_batch() {
        // 90 synthetic, 10 real; the real source is a quarter of each batch of 8.
        let labels: Vec<i32> = (0..100).map(|i| i % 2).collect();
        let sources: Vec<&str> = (0..100).map(|i| if i < 90 { "synthetic" } else { "real" }).collect();
        let plan = EpochPlan::new(&labels, &sources, &mix(&[("synthetic", 1.0, None), ("real", 1.0, Some(0.25))]), 3, 8, false).unwrap();
        // 90 pool images, 6 a batch: 15 batches.
        assert_eq!(plan.batches_per_epoch(), 15);
        let order = plan.order(0);
        for batch in order.chunks(8) {
            assert_eq!(batch.iter().filter(|&&i| i >= 90).count(), 2, "{batch:?}");
        }
        let mut pool: Vec<usize> = order.iter().copied().filter(|&i| i < 90).collect();
        pool.sort();
        assert_eq!(pool, (0..90).collect::<Vec<_>>(), "the pool is shown once");
        assert_ne!(plan.order(1), order);
        assert_eq!(plan.order(0), order, "a pure function of the epoch");
        assert_eq!(plan.fingerprint(), "synthetic:w1,real:s0.25");
    }

    #[test]
    fn uneven_shares_add_up_in_the_long_run() {
        let labels = vec![0; 60];
        let sources: Vec<&str> = (0..60).map(|i| ["a", "b", "c"][i % 3]).collect();
        let plan = EpochPlan::new(&labels, &sources, &mix(&[("a", 1.0, Some(0.1)), ("b", 1.0, Some(0.3)), ("c", 1.0, None)]), 1, 7, false).unwrap();
        let order = plan.order(0);
        let count = |r: usize| order.iter().filter(|&&i| i % 3 == r).count() as f64 / order.len() as f64;
        assert!((count(0) - 0.1).abs() < 0.03 && (count(1) - 0.3).abs() < 0.03, "{} {}", count(0), count(1));
    }

    #[test]
    fn weights_repeat_or_thin_a_source() {
        let labels = vec![0; 30];
        let sources: Vec<&str> = (0..30).map(|i| if i < 20 { "a" } else { "b" }).collect();
        let plan = EpochPlan::new(&labels, &sources, &mix(&[("a", 0.5, None), ("b", 2.0, None)]), 1, 5, false).unwrap();
        let order = plan.order(0);
        assert_eq!(order.len(), 10 + 20);
        assert_eq!(order.iter().filter(|&&i| i < 20).count(), 10);
        let halves: Vec<Vec<usize>> = (0..2)
            .map(|e| {
                let mut a: Vec<usize> = plan.order(e).into_iter().filter(|&i| i < 20).collect();
                a.sort();
                a
            })
            .collect();
        assert_ne!(halves[0], halves[1], "a different half each epoch");
    }

    #[test]
    fn a_source_missing_from_the_task_gives_its_share_back() {
        let labels = vec![0; 40];
        let sources = vec!["synthetic"; 40];
        let plan = EpochPlan::new(&labels, &sources, &mix(&[("synthetic", 1.0, None), ("lfw_subset", 1.0, Some(0.25))]), 1, 8, false).unwrap();
        assert_eq!(plan.batches_per_epoch(), 5);
        assert_eq!(plan.fingerprint(), "", "what is left is one plain source");
        assert_eq!(plan.order(3), epoch_order(&labels, 1, 3, false), "with the batches of that source alone");
        let only = EpochPlan::new(&labels, &sources, &mix(&[("synthetic", 1.0, Some(0.5)), ("lfw_subset", 1.0, Some(0.5))]), 1, 8, false).unwrap();
        assert_eq!(only.fingerprint(), "synthetic:s1");
        assert_eq!(only.batches_per_epoch(), 5);
    }
}
