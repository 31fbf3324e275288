//! The k-way merge of sorted sources, and the rule for dropping deleted keys.
//!
//! [`MergeIter`] reads k sources (tables, a memtable), each yielding `(key, versions)`
//! with strictly increasing keys, and yields every key once with the DVVSet
//! [`VersionSet::sync`] of all its versions. A binary heap holds each source's next
//! key: O(log k) per key read. Since `sync` is commutative and associative, the order of
//! the sources does not matter, and neither does which table is newer.
//!
//! # Dropping tombstones: [`purgeable`]
//!
//! A deleted key is a version set whose values are all tombstones. It can be dropped
//! only when nothing can bring an older value back:
//!
//! - every value is a tombstone (a live sibling is data);
//! - the newest tombstone is older than `gc_grace` (time for hints, read repair and
//!   anti-entropy to carry the delete to every replica);
//! - `replicas_confirmed`: every replica is known to hold the tombstone, or a later
//!   version. On a single node this is always true. With replication it comes from
//!   anti-entropy: a Merkle exchange with every other replica of the key's range that
//!   completed after the tombstone was written and found no difference. Without it, a
//!   replica that missed the delete would hand the old value back (read repair or
//!   anti-entropy) and resurrect it.
//!
//! Two duties stay with the caller: (1) purge only when the compaction's inputs hold
//! every version of the key on this shard (all tables, or none of the others may hold
//! the key — key ranges or bloom filters), or an older value in a table left out comes
//! back; (2) dropping the set also drops its causal history. A later write coordinated
//! here takes its counter from the shard's clock, above every counter the shard gave
//! out (`VersionSet::coordinate`), so no replica still holding the tombstone's history
//! can take the new write for one it has seen; but other nodes' entries are gone from
//! this copy, so `replicas_confirmed` must still mean that every replica holds the
//! tombstone (or purged it), or their copies bring the deleted values back.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use bytes::Bytes;

use crate::version::VersionSet;

/// One source's next key, ordered by key then source index (for the min-heap).
struct Head {
    key: Bytes,
    versions: VersionSet,
    source: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Head {}

impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Head {
    fn cmp(&self, other: &Self) -> Ordering {
        (&self.key, self.source).cmp(&(&other.key, other.source))
    }
}

/// Merges k sorted sources: each key once, with the `sync` of all its versions.
pub struct MergeIter<I> {
    sources: Vec<I>,
    /// The next key of every source that is not exhausted; smallest on top.
    heap: BinaryHeap<Reverse<Head>>,
}

impl<I: Iterator<Item = (Bytes, VersionSet)>> MergeIter<I> {
    /// Panics later, in `next`, if a source's keys do not strictly increase.
    pub fn new(sources: Vec<I>) -> Self {
        let mut merge = MergeIter {
            heap: BinaryHeap::with_capacity(sources.len()),
            sources,
        };
        for source in 0..merge.sources.len() {
            merge.advance(source, None);
        }
        merge
    }

    /// Pushes the next item of `source`, checking it follows `previous`.
    fn advance(&mut self, source: usize, previous: Option<&Bytes>) {
        if let Some((key, versions)) = self.sources[source].next() {
            if let Some(previous) = previous {
                assert!(
                    key > *previous,
                    "merge source {source}: key {key:?} does not follow {previous:?}"
                );
            }
            self.heap.push(Reverse(Head {
                key,
                versions,
                source,
            }));
        }
    }
}

impl<I: Iterator<Item = (Bytes, VersionSet)>> Iterator for MergeIter<I> {
    type Item = (Bytes, VersionSet);

    fn next(&mut self) -> Option<Self::Item> {
        let Reverse(first) = self.heap.pop()?;
        let key = first.key;
        let mut versions = first.versions;
        self.advance(first.source, Some(&key));
        while self.heap.peek().is_some_and(|Reverse(h)| h.key == key) {
            let Reverse(same) = self.heap.pop().expect("peeked");
            versions = versions.sync(&same.versions);
            self.advance(same.source, Some(&key));
        }
        Some((key, versions))
    }
}

/// True when compaction may drop the key (module doc): every value is a tombstone,
/// the newest tombstone is more than `gc_grace_us` old at `now_us`, and every replica
/// is confirmed to hold the delete.
pub fn purgeable(
    versions: &VersionSet,
    now_us: u64,
    gc_grace_us: u64,
    replicas_confirmed: bool,
) -> bool {
    if !replicas_confirmed || !versions.is_tombstone_only() {
        return false;
    }
    let newest_us = versions
        .values()
        .map(|v| v.timestamp_us)
        .max()
        .expect("tombstone-only sets have values");
    now_us.saturating_sub(newest_us) > gc_grace_us
}

/// The merged stream without the keys [`purgeable`] allows to drop: what a compaction
/// writes to its output table when the caller's duties (module doc) are met.
pub fn without_purgeable<I: Iterator<Item = (Bytes, VersionSet)>>(
    merged: I,
    now_us: u64,
    gc_grace_us: u64,
    replicas_confirmed: bool,
) -> impl Iterator<Item = (Bytes, VersionSet)> {
    merged
        .filter(move |(_, versions)| !purgeable(versions, now_us, gc_grace_us, replicas_confirmed))
}

#[cfg(test)]
mod tests;
