//! The in-memory, ordered part of a shard's data: key → version set.
//!
//! Single-threaded (owned by its shard). Point reads and writes go through a hash map;
//! a separate ordered set of the keys lets a flush write a sorted table (and range
//! scans, anti-entropy later). The hash map is what every request touches: a B-tree
//! lookup compares the key with a dozen or more others, each behind its own pointer
//! (a cache miss apiece in a memtable of a few hundred thousand keys), and measured
//! 20 % of a shard's CPU under pipelined SETs; the ordered set only changes when a
//! key is new to the memtable. Inserting merges with what is there
//! (DVVSet sync), so applying the same state twice, or two states out of order, ends in
//! the same place — which is what makes commit-log replay and concurrent group-commit
//! completions safe.

use std::collections::BTreeSet;

use ahash::AHashMap;
use bytes::Bytes;

use crate::version::VersionSet;

/// Bytes a map entry costs beyond its key and encoded versions (hash slot, tree node
/// share, two `Bytes` headers, vectors). An estimate: flush thresholds need the right
/// order of magnitude, not the exact figure.
const ENTRY_OVERHEAD_BYTES: usize = 144;

/// A key's set, with its encoded length: replacing the set then needs no walk of the
/// old one (cold in cache) to keep `bytes` right.
struct Entry {
    versions: VersionSet,
    encoded_len: usize,
}

#[derive(Default)]
pub struct Memtable {
    map: AHashMap<Bytes, Entry>,
    /// The keys of `map`, in order (the same `Bytes`: a reference count, no copy).
    order: BTreeSet<Bytes>,
    /// Approximate memory held, for the flush threshold.
    bytes: usize,
}

impl Memtable {
    pub fn get(&self, key: &[u8]) -> Option<&VersionSet> {
        self.map.get(key).map(|entry| &entry.versions)
    }

    /// Merges `versions` into the key's stored set. `key` and the values in `versions`
    /// must own their memory (not slices of a network buffer): the memtable keeps them.
    pub fn merge(&mut self, key: Bytes, versions: VersionSet) {
        match self.map.get_mut(key.as_ref()) {
            // A set built on the stored one under the key's lock (a coordinated write)
            // has seen all of it: the merge is that set, so skip building it.
            Some(entry) if versions.dominates(&entry.versions) => {
                debug_assert!(entry.versions.sync(&versions) == versions);
                let encoded_len = versions.encoded_len();
                self.bytes = self.bytes - entry.encoded_len + encoded_len;
                *entry = Entry {
                    versions,
                    encoded_len,
                };
            }
            Some(entry) => {
                let versions = entry.versions.sync(&versions);
                let encoded_len = versions.encoded_len();
                self.bytes = self.bytes - entry.encoded_len + encoded_len;
                *entry = Entry {
                    versions,
                    encoded_len,
                };
            }
            None => {
                let encoded_len = versions.encoded_len();
                self.bytes += key.len() + encoded_len + ENTRY_OVERHEAD_BYTES;
                self.order.insert(key.clone());
                self.map.insert(
                    key,
                    Entry {
                        versions,
                        encoded_len,
                    },
                );
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn approximate_bytes(&self) -> usize {
        self.bytes
    }

    /// Entries in key order (for flushes and scans).
    pub fn iter(&self) -> impl Iterator<Item = (&Bytes, &VersionSet)> {
        self.order.iter().map(|key| (key, &self.map[key].versions))
    }

    /// Entries after `after` (all of them for `None`), in key order: lets a flush walk
    /// the table in steps without holding a borrow across its awaits.
    pub fn iter_after(&self, after: Option<&Bytes>) -> impl Iterator<Item = (&Bytes, &VersionSet)> {
        use std::ops::Bound::{Excluded, Unbounded};
        let start = after.map_or(Unbounded, Excluded);
        self.order
            .range::<Bytes, _>((start, Unbounded))
            .map(|key| (key, &self.map[key].versions))
    }
}
