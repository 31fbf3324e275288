//! Which record an operation touches: uniform, YCSB's scrambled zipfian, or latest.
//!
//! The zipfian generator is the algorithm of Gray et al., "Quickly Generating
//! Billion-Record Synthetic Databases" (SIGMOD 1994), as YCSB implements it
//! (`ZipfianGenerator`): one uniform draw `u`, two cut-offs for the two most popular
//! items, then `items × (η·u − η + 1)^α` for the rest. It needs ζ(n, θ) = Σ 1/i^θ over
//! all n items, an O(n) sum, so it is computed once and extended incrementally when the
//! item count grows (the latest distribution over a growing key space).
//!
//! - **zipfian** is YCSB's `ScrambledZipfianGenerator`: a zipfian draw over 10^10 items
//!   (with YCSB's precomputed ζ for θ = 0.99), hashed with YCSB's FNV-1a-64 and taken
//!   modulo the record count, so the popular records are spread over the key space
//!   instead of being the first ones (which would all sit on one node's token range).
//!   The hash picks an index only; keys on the wire are still `key-NNNNNNNNNN`.
//! - **latest** is YCSB's `SkewedLatestGenerator`: the newest record is the most
//!   popular, then the one inserted before it, and so on (zipfian distance back from
//!   the newest).
//! - **uniform**: every record equally likely.
//!
//! Everything here is plain, synchronous and seeded: it takes a uniform draw in [0, 1)
//! and returns an index, so the tests check the skew without a runtime.

/// YCSB's zipfian constant.
pub const ZIPFIAN_THETA: f64 = 0.99;

/// Items the scrambled zipfian draws over before hashing (YCSB's `ITEM_COUNT`).
const SCRAMBLED_ITEMS: u64 = 10_000_000_000;

/// ζ(10^10, 0.99), precomputed by YCSB (`ScrambledZipfianGenerator.ZETAN`).
const SCRAMBLED_ZETAN: f64 = 26.469_028_201_783_02;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    Uniform,
    Zipfian,
    Latest,
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
            Distribution::Latest => "latest",
        }
    }
}

/// Gray et al.'s zipfian generator over `0..items`: 0 is the most popular item.
#[derive(Clone, Debug)]
pub struct Zipfian {
    /// Items the constants below were computed for.
    items: u64,
    theta: f64,
    /// ζ(2, θ), for η.
    zeta2theta: f64,
    /// 1 / (1 − θ).
    alpha: f64,
    /// ζ(items, θ).
    zetan: f64,
    /// (1 − (2/n)^(1−θ)) / (1 − ζ(2, θ)/ζ(n, θ)).
    eta: f64,
}

impl Zipfian {
    /// Computes ζ(items, θ) by summing: O(items).
    pub fn new(items: u64, theta: f64) -> Zipfian {
        Zipfian::with_zetan(items, theta, zeta(0, items, theta, 0.0))
    }

    /// With ζ(items, θ) given (precomputed for a huge item count).
    pub fn with_zetan(items: u64, theta: f64, zetan: f64) -> Zipfian {
        assert!(items >= 1, "a zipfian over no items");
        assert!(theta > 0.0 && theta < 1.0, "theta {theta} outside (0, 1)");
        let zeta2theta = zeta(0, 2, theta, 0.0);
        let mut zipfian = Zipfian {
            items,
            theta,
            zeta2theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta: 0.0,
        };
        zipfian.eta = zipfian.eta_for(items);
        zipfian
    }

    fn eta_for(&self, items: u64) -> f64 {
        (1.0 - (2.0 / items as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2theta / self.zetan)
    }

    /// The item for the uniform draw `u` in [0, 1).
    pub fn next(&self, u: f64) -> u64 {
        debug_assert!((0.0..1.0).contains(&u));
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.items - 1);
        }
        let item = self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha);
        (item as u64).min(self.items - 1)
    }

    /// As [`Zipfian::next`] over `items` items, growing ζ incrementally first if the
    /// item count grew (YCSB does the same; it never shrinks in our use).
    pub fn next_within(&mut self, u: f64, items: u64) -> u64 {
        if items > self.items {
            self.zetan = zeta(self.items, items, self.theta, self.zetan);
            self.items = items;
            self.eta = self.eta_for(items);
        }
        self.next(u).min(items.saturating_sub(1))
    }
}

/// ζ(to, θ) from ζ(from, θ) = `sum`: adds 1/i^θ for i in from+1..=to.
fn zeta(from: u64, to: u64, theta: f64, sum: f64) -> f64 {
    (from..to).fold(sum, |s, i| s + 1.0 / ((i + 1) as f64).powf(theta))
}

/// YCSB's `Utils.fnvhash64`: FNV-1a over the 8 little-endian bytes of `value`, made
/// non-negative as a Java long.
pub fn fnv_hash64(mut value: u64) -> u64 {
    const OFFSET_BASIS: u64 = 0xCBF2_9CE4_8422_2325;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET_BASIS;
    for _ in 0..8 {
        hash ^= value & 0xFF;
        hash = hash.wrapping_mul(PRIME);
        value >>= 8;
    }
    (hash as i64).unsigned_abs()
}

/// Picks record indexes under one distribution; one per client thread.
#[derive(Clone, Debug)]
pub struct KeyChooser {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Uniform,
    /// The zipfian over [`SCRAMBLED_ITEMS`], hashed into the record count.
    Scrambled(Zipfian),
    /// Zipfian distance back from the newest record.
    Latest(Zipfian),
}

impl KeyChooser {
    /// A chooser for a key space that starts with `records` records. Latest sums ζ over
    /// them once (about 10 ns a record).
    pub fn new(distribution: Distribution, records: u64) -> KeyChooser {
        assert!(records >= 1);
        let kind = match distribution {
            Distribution::Uniform => Kind::Uniform,
            Distribution::Zipfian => Kind::Scrambled(Zipfian::with_zetan(
                SCRAMBLED_ITEMS,
                ZIPFIAN_THETA,
                SCRAMBLED_ZETAN,
            )),
            Distribution::Latest => Kind::Latest(Zipfian::new(records, ZIPFIAN_THETA)),
        };
        KeyChooser { kind }
    }

    /// A record index in `0..records` (the records that exist now, newest last) for the
    /// uniform draw `u` in [0, 1).
    pub fn choose(&mut self, u: f64, records: u64) -> u64 {
        assert!(records >= 1);
        match &mut self.kind {
            Kind::Uniform => ((u * records as f64) as u64).min(records - 1),
            Kind::Scrambled(zipfian) => fnv_hash64(zipfian.next(u)) % records,
            Kind::Latest(zipfian) => records - 1 - zipfian.next_within(u, records),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `draws` uniform draws from a fixed-seed generator.
    fn uniforms(draws: usize) -> impl Iterator<Item = f64> {
        let mut x = 42u64;
        (0..draws).map(move |_| {
            x = crate::loadgen::splitmix(x);
            (x >> 11) as f64 / (1u64 << 53) as f64
        })
    }

    /// Share of all draws that went to the most drawn `top` indexes.
    fn top_share(counts: &[u64], top: usize) -> f64 {
        let mut sorted = counts.to_vec();
        sorted.sort_unstable_by(|a, b| b.cmp(a));
        let total: u64 = sorted.iter().sum();
        sorted[..top].iter().sum::<u64>() as f64 / total as f64
    }

    fn counts(distribution: Distribution, records: u64, draws: usize) -> Vec<u64> {
        let mut chooser = KeyChooser::new(distribution, records);
        let mut counts = vec![0u64; records as usize];
        for u in uniforms(draws) {
            counts[chooser.choose(u, records) as usize] += 1;
        }
        counts
    }

    #[test]
    fn zipfian_gives_the_top_one_percent_of_keys_a_large_share() {
        // ζ(100, 0.99) / ζ(10^4, 0.99) ≈ 0.53 for the unscrambled generator.
        let zipfian = Zipfian::new(10_000, ZIPFIAN_THETA);
        let mut plain = vec![0u64; 10_000];
        for u in uniforms(200_000) {
            plain[zipfian.next(u) as usize] += 1;
        }
        let share = top_share(&plain, 100);
        assert!(
            (0.45..0.62).contains(&share),
            "plain zipfian top 1%: {share}"
        );
        assert!(
            plain[0] > plain[1] && plain[1] > plain[10],
            "item 0 most popular"
        );
        // Scrambled: the 10^10-item zipfian hashed into 10^4 records keeps a strong skew.
        let scrambled = top_share(&counts(Distribution::Zipfian, 10_000, 200_000), 100);
        assert!(scrambled > 0.15, "scrambled zipfian top 1%: {scrambled}");
        let uniform = top_share(&counts(Distribution::Uniform, 10_000, 200_000), 100);
        assert!(uniform < 0.03, "uniform top 1%: {uniform}");
    }

    #[test]
    fn scrambled_zipfian_spreads_the_popular_keys_over_the_key_space() {
        let counts = counts(Distribution::Zipfian, 10_000, 100_000);
        let mut ranked: Vec<usize> = (0..counts.len()).collect();
        ranked.sort_unstable_by(|a, b| counts[*b].cmp(&counts[*a]));
        // The 10 hottest records are not the first 10 indexes.
        assert!(
            ranked[..10].iter().any(|&i| i >= 1_000),
            "{:?}",
            &ranked[..10]
        );
    }

    #[test]
    fn latest_prefers_the_newest_records_and_follows_inserts() {
        let mut chooser = KeyChooser::new(Distribution::Latest, 1_000);
        let draws: Vec<f64> = uniforms(20_000).collect();
        let newest = draws
            .iter()
            .filter(|&&u| chooser.choose(u, 1_000) >= 990)
            .count();
        assert!(newest > 20_000 / 3, "newest 1% drew {newest}");
        // After inserts, the new records are the popular ones, and none is out of range.
        let picks: Vec<u64> = draws.iter().map(|&u| chooser.choose(u, 1_500)).collect();
        assert!(picks.iter().all(|&p| p < 1_500));
        assert!(picks.iter().filter(|&&p| p >= 1_490).count() > 20_000 / 3);
    }

    #[test]
    fn incremental_zeta_matches_the_full_sum() {
        let mut grown = Zipfian::new(1_000, ZIPFIAN_THETA);
        grown.next_within(0.5, 5_000);
        let full = Zipfian::new(5_000, ZIPFIAN_THETA);
        assert!((grown.zetan - full.zetan).abs() < 1e-9);
        assert!((grown.eta - full.eta).abs() < 1e-12);
    }

    #[test]
    fn fnv_hash_matches_ycsb() {
        // FNV-1a-64 of eight zero bytes is 0xA8C7F832281A39C5, negative as a Java long:
        // YCSB's Math.abs makes it 0x573807CDD7E5C63B.
        assert_eq!(fnv_hash64(0), 0x5738_07CD_D7E5_C63B);
        assert_eq!(fnv_hash64(12_345), 0x18E1_4E7A_1D12_33B4);
    }
}
