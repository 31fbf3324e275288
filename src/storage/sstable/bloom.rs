//! The table's bloom filter: a bit array probed `k` times per key by double hashing.
//!
//! ```text
//! filter block payload:
//! offset size field
//!      0    1 probes  u8, k in 1..=30
//!      1    m bits    the bit array; bit b is bit (b mod 8) of byte 1 + b/8 (LSB first)
//! ```
//! For a key, `h = xxh3_64(key)` (seed 0, stable across versions and platforms),
//! `h1 = h mod 2^32`, `h2 = h div 2^32`; probe `i` (0 ≤ i < k) is bit
//! `(h1 + i·h2) mod m` with `m = 8 × (payload bytes − 1)` (Kirsch–Mitzenmacher).
//! The builder sizes `m` to `max(64, keys × bits_per_key)` rounded up to a whole byte
//! and takes `k = round(bits_per_key × ln 2)`, which minimises false positives:
//! 10 bits per key give k = 7 and about 0.8 %.

use bytes::Bytes;
use xxhash_rust::xxh3::xxh3_64;

/// Most probes per key: past this a filter costs more to probe than it saves.
pub const PROBES_MAX: u8 = 30;
/// Smallest bit array, so that a filter of a tiny table is not all ones.
const BITS_MIN: u64 = 64;

/// Collects key hashes while a table is built.
pub struct BloomBuilder {
    hashes: Vec<u64>,
    bits_per_key: u32,
}

impl BloomBuilder {
    pub fn new(bits_per_key: u32) -> Self {
        assert!(bits_per_key >= 1, "a filter needs at least one bit per key");
        BloomBuilder {
            hashes: Vec::new(),
            bits_per_key,
        }
    }

    pub fn add_key(&mut self, key: &[u8]) {
        self.hashes.push(xxh3_64(key));
    }

    /// The filter block's payload.
    pub fn finish(&self) -> Vec<u8> {
        let k = probes_for(self.bits_per_key);
        let bits = (self.hashes.len() as u64 * u64::from(self.bits_per_key)).max(BITS_MIN);
        let bytes = bits.div_ceil(8);
        let m = bytes * 8;
        let mut out = vec![0u8; 1 + bytes as usize];
        out[0] = k;
        for &h in &self.hashes {
            for bit in probes(h, k, m) {
                out[1 + (bit / 8) as usize] |= 1 << (bit % 8);
            }
        }
        out
    }
}

/// `round(bits_per_key × ln 2)`, clamped to 1..=[`PROBES_MAX`].
pub fn probes_for(bits_per_key: u32) -> u8 {
    let k = (f64::from(bits_per_key) * std::f64::consts::LN_2).round();
    k.clamp(1.0, f64::from(PROBES_MAX)) as u8
}

/// The false-positive rate theory gives for `bits_per_key`: `(1 − e^(−k/b))^k`.
pub fn false_positive_rate(bits_per_key: u32) -> f64 {
    let k = f64::from(probes_for(bits_per_key));
    (1.0 - (-k / f64::from(bits_per_key)).exp()).powf(k)
}

fn probes(h: u64, k: u8, m: u64) -> impl Iterator<Item = u64> {
    let h1 = h & 0xffff_ffff;
    let h2 = h >> 32;
    // h1 + i·h2 < 2^32 + 30·2^32: no overflow in u64.
    (0..u64::from(k)).map(move |i| (h1 + i * h2) % m)
}

/// A decoded filter.
#[derive(Clone, Debug)]
pub struct Bloom {
    probes: u8,
    /// The payload; the bit array starts at byte 1.
    payload: Bytes,
}

impl Bloom {
    /// Checks and keeps a filter block's payload. Never panics.
    pub fn decode(payload: Bytes) -> Result<Self, String> {
        let Some(&probes) = payload.first() else {
            return Err("empty filter".to_string());
        };
        if probes == 0 || probes > PROBES_MAX {
            return Err(format!("filter with {probes} probes"));
        }
        if payload.len() < 2 {
            return Err("filter without bits".to_string());
        }
        Ok(Bloom { probes, payload })
    }

    /// False means `key` is certainly not in the table; true means it may be.
    pub fn may_contain(&self, key: &[u8]) -> bool {
        let m = (self.payload.len() as u64 - 1) * 8;
        probes(xxh3_64(key), self.probes, m)
            .all(|bit| self.payload[1 + (bit / 8) as usize] & (1 << (bit % 8)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u64) -> Vec<u8> {
        format!("key-{i:08}").into_bytes()
    }

    #[test]
    fn probes_follow_the_formula() {
        assert_eq!(probes_for(10), 7);
        assert_eq!(probes_for(1), 1);
        assert_eq!(probes_for(100), PROBES_MAX);
        assert!((false_positive_rate(10) - 0.0082).abs() < 0.0005);
    }

    #[test]
    fn no_false_negatives_and_false_positives_near_theory() {
        let n = 20_000u64;
        let mut b = BloomBuilder::new(10);
        (0..n).for_each(|i| b.add_key(&key(i)));
        let payload = b.finish();
        assert_eq!(payload.len(), 1 + (n * 10 / 8) as usize);
        let bloom = Bloom::decode(Bytes::from(payload)).unwrap();
        assert!((0..n).all(|i| bloom.may_contain(&key(i))));
        let trials = 200_000u64;
        let fp = (n..n + trials)
            .filter(|&i| bloom.may_contain(&key(i)))
            .count();
        let rate = fp as f64 / trials as f64;
        let theory = false_positive_rate(10);
        assert!(
            rate < 2.0 * theory && rate > theory / 2.0,
            "false positive rate {rate}, theory {theory}"
        );
    }

    #[test]
    fn empty_filter_contains_nothing_and_bad_payloads_are_refused() {
        let bloom = Bloom::decode(Bytes::from(BloomBuilder::new(10).finish())).unwrap();
        assert!(!bloom.may_contain(b"x"));
        assert!(Bloom::decode(Bytes::new()).is_err());
        assert!(Bloom::decode(Bytes::from_static(&[7])).is_err());
        assert!(Bloom::decode(Bytes::from_static(&[0, 1])).is_err());
        assert!(Bloom::decode(Bytes::from_static(&[31, 1])).is_err());
    }
}
