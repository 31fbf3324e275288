//! Size-tiered compaction (Cassandra's STCS): merge tables of similar size.
//!
//! Tables are sorted by size and put into buckets: a table joins the current bucket if
//! its size is within `[bucket_low, bucket_high]` times the bucket's average, or if it
//! and the bucket's average are both below `min_sstable_bytes` (small tables, fresh
//! flushes mostly, all share one bucket instead of splitting on noise). A bucket with at
//! least `min_threshold` tables is a candidate; at most `max_threshold` of its smallest
//! tables are taken. Among candidates the one with the most inputs wins, then the one
//! with the smallest average size: the most tables removed from the read path per byte
//! rewritten. Ties go to the bucket holding the smallest table id, so the choice is a
//! function of its input.
//!
//! Write amplification is about log(total / flush size) / log(min_threshold) rewrites
//! per byte; space amplification can reach 2× during a compaction of the largest tier.
//! The caller passes only tables that no running compaction already uses.

use super::Choice;
use crate::storage::manifest::TableMeta;

/// Tuning of size-tiered compaction (defaults as in Cassandra).
#[derive(Clone, Debug, PartialEq)]
pub struct SizeTieredOptions {
    /// A table joins a bucket if its size is at least this times the bucket's average.
    pub bucket_low: f64,
    /// ... and at most this times the bucket's average.
    pub bucket_high: f64,
    /// Tables below this size all go in one bucket (50 MiB).
    pub min_sstable_bytes: u64,
    /// Fewest tables worth one compaction (4). At least 2.
    pub min_threshold: usize,
    /// Most inputs of one compaction (32): bounds its duration and its temporary space.
    pub max_threshold: usize,
}

impl Default for SizeTieredOptions {
    fn default() -> Self {
        SizeTieredOptions {
            bucket_low: 0.5,
            bucket_high: 1.5,
            min_sstable_bytes: 50 << 20,
            min_threshold: 4,
            max_threshold: 32,
        }
    }
}

impl SizeTieredOptions {
    /// Panics on options that make no sense (a configuration bug, checked at start-up).
    pub fn assert_valid(&self) {
        assert!(
            self.bucket_low > 0.0 && self.bucket_low <= 1.0 && self.bucket_high >= 1.0,
            "need 0 < bucket_low <= 1 <= bucket_high: {self:?}"
        );
        assert!(self.min_threshold >= 2, "min_threshold < 2: {self:?}");
        assert!(
            self.max_threshold >= self.min_threshold,
            "max_threshold < min_threshold: {self:?}"
        );
    }
}

/// Tables of similar size, smallest first.
#[derive(Clone, Debug)]
struct Bucket<'a> {
    tables: Vec<&'a TableMeta>,
    /// Sum of the sizes of `tables` (u128: no overflow whatever the sizes).
    total_bytes: u128,
}

impl Bucket<'_> {
    fn average_bytes(&self) -> f64 {
        self.total_bytes as f64 / self.tables.len() as f64
    }

    fn accepts(&self, table: &TableMeta, options: &SizeTieredOptions) -> bool {
        let average = self.average_bytes();
        let size = table.size_bytes as f64;
        let similar = size >= average * options.bucket_low && size <= average * options.bucket_high;
        let both_small = table.size_bytes < options.min_sstable_bytes
            && average < options.min_sstable_bytes as f64;
        similar || both_small
    }
}

/// The tables grouped into buckets (module doc), each bucket smallest first; every
/// table in exactly one bucket. Public for tests and for operators' introspection.
pub fn buckets(tables: &[TableMeta], options: &SizeTieredOptions) -> Vec<Vec<u64>> {
    make_buckets(tables, options)
        .into_iter()
        .map(|b| b.tables.iter().map(|t| t.id).collect())
        .collect()
}

fn make_buckets<'a>(tables: &'a [TableMeta], options: &SizeTieredOptions) -> Vec<Bucket<'a>> {
    let mut sorted: Vec<&TableMeta> = tables.iter().collect();
    sorted.sort_by_key(|t| (t.size_bytes, t.id));
    let mut buckets: Vec<Bucket<'a>> = Vec::new();
    for table in sorted {
        // Sizes ascend, so only the last bucket can be close enough: its average is
        // the largest, and every earlier table was already too small for it.
        match buckets.last_mut() {
            Some(bucket) if bucket.accepts(table, options) => {
                bucket.tables.push(table);
                bucket.total_bytes += u128::from(table.size_bytes);
            }
            _ => buckets.push(Bucket {
                tables: vec![table],
                total_bytes: u128::from(table.size_bytes),
            }),
        }
    }
    buckets
}

/// The next compaction, or `None` when no bucket holds `min_threshold` tables.
/// `tables` must have unique ids (as a manifest does).
pub fn choose(tables: &[TableMeta], options: &SizeTieredOptions) -> Option<Choice> {
    options.assert_valid();
    let candidates = make_buckets(tables, options)
        .into_iter()
        .filter(|b| b.tables.len() >= options.min_threshold)
        .map(|mut b| {
            b.tables.truncate(options.max_threshold);
            b.total_bytes = b.tables.iter().map(|t| u128::from(t.size_bytes)).sum();
            b
        });
    let best = candidates.min_by(|a, b| {
        let smallest_id = |x: &Bucket| x.tables.iter().map(|t| t.id).min();
        b.tables
            .len()
            .cmp(&a.tables.len())
            .then(a.average_bytes().total_cmp(&b.average_bytes()))
            .then(smallest_id(a).cmp(&smallest_id(b)))
    })?;
    let choice = Choice {
        inputs: best.tables.iter().map(|t| t.id).collect(),
    };
    assert!(choice.inputs.len() >= options.min_threshold);
    assert!(choice.inputs.len() <= options.max_threshold);
    Some(choice)
}

#[cfg(test)]
mod tests;
