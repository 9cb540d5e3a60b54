//! The crate's own pseudo-random numbers: SplitMix64 to seed and to
//! derive keyed streams, xoshiro256** for the streams themselves.
//!
//! We do not use the `rand` crate here on purpose: shuffles, splits,
//! augmentations and the synthetic set must produce the same values for a
//! seed forever, and a crate upgrade may change its algorithms. Both
//! algorithms are public-domain reference designs (Vigna, Blackman).

use serde::{Deserialize, Serialize};

/// One SplitMix64 step: advances `state` and returns a well-mixed value.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Mixes a seed with a sequence of keys into one 64-bit value; used to give
/// every (seed, epoch), (seed, image index) or (seed, identity) its own
/// independent stream without any shared mutable state.
pub fn mix(seed: u64, keys: &[u64]) -> u64 {
    let mut s = seed ^ 0x6A09_E667_F3BC_C908;
    let mut out = splitmix64(&mut s);
    for &k in keys {
        s ^= k.wrapping_mul(0xD6E8_FEB8_6659_FD93);
        out ^= splitmix64(&mut s);
        out = out.rotate_left(23);
    }
    let mut fin = out;
    splitmix64(&mut fin)
}

/// FNV-1a of a string, so that string keys (identities, paths) can feed [`mix`].
pub fn hash_str(text: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}

/// xoshiro256**: small, fast, and its whole state is four words that we can
/// save in a checkpoint and restore exactly.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// Seeds the four state words from SplitMix64, as the authors recommend
    /// (an all-zero state is impossible this way).
    pub fn new(seed: u64) -> Self {
        let mut sm = seed;
        let s = [splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm), splitmix64(&mut sm)];
        Rng { s }
    }

    /// A stream keyed by `seed` and `keys` (see [`mix`]).
    pub fn keyed(seed: u64, keys: &[u64]) -> Self {
        Rng::new(mix(seed, keys))
    }

    /// Rebuilds a generator from a saved state; an all-zero state (which
    /// xoshiro can never reach) is replaced by a fresh seed-0 state.
    pub fn from_state(s: [u64; 4]) -> Self {
        if s == [0; 4] { Rng::new(0) } else { Rng { s } }
    }

    pub fn state(&self) -> [u64; 4] {
        self.s
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1) with 53 bits of precision.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, 1) as f32.
    pub fn unit(&mut self) -> f32 {
        self.next_f64() as f32
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in [0, n); n must be > 0. Uses Lemire's
    /// multiply-shift with rejection so there is no modulo bias.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let threshold = n.wrapping_neg() % n;
        loop {
            let x = self.next_u64();
            let m = u128::from(x) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// Uniform index in [0, n).
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    /// True with probability p.
    pub fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    /// Standard normal (Box-Muller; one value per call keeps the state simple).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.next_f64().max(1e-300);
        let u2 = self.next_f64();
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.index(i + 1);
            items.swap(i, j);
        }
    }

    /// One element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_matches_its_reference_stream() {
        // Reference: xoshiro256** with state {1, 2, 3, 4} gives 11520, 0,
        // 1509978240, 1215971899390074240 (Vigna's test vectors).
        let mut r = Rng { s: [1, 2, 3, 4] };
        assert_eq!([r.next_u64(), r.next_u64(), r.next_u64(), r.next_u64()], [11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn splitmix_matches_its_reference_value() {
        // SplitMix64 seeded with 1234567: first output 6457827717110365317.
        let mut s = 1234567u64;
        assert_eq!(splitmix64(&mut s), 6457827717110365317);
    }

    #[test]
    fn below_is_in_range_and_state_round_trips() {
        let mut r = Rng::new(7);
        for n in 1..50u64 {
            assert!(r.below(n) < n);
        }
        let saved = r.state();
        let a: Vec<u64> = (0..5).map(|_| r.next_u64()).collect();
        let mut back = Rng::from_state(saved);
        let b: Vec<u64> = (0..5).map(|_| back.next_u64()).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn keyed_streams_differ_by_key() {
        assert_ne!(Rng::keyed(1, &[0]).next_u64(), Rng::keyed(1, &[1]).next_u64());
        assert_eq!(Rng::keyed(1, &[5, 6]).next_u64(), Rng::keyed(1, &[5, 6]).next_u64());
    }
}
