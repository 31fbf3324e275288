//! [`VersionSet`]: one key's DVVSet, the coordinator's write and the replicas' merge.

use std::cmp::Ordering;

use smallvec::SmallVec;

use super::codec::{COUNTER_MAX, COUNT_MAX, VALUE_BYTES_MAX};
use super::{Context, NodeId, VersionError, Versioned};

/// The node id of every last-write-wins version (module doc, "Last write wins"). Real
/// node ids are odd, so it never names a node.
pub const LWW_NODE: NodeId = 0;

/// A set's entries. One is held inline: most keys have one writer (or one
/// last-write-wins clock), and a set that needs no allocation of its own lives in the
/// memtable's hash bucket, so a lookup or a replacement touches one cache line fewer
/// per level (perf/RESULTS.md).
pub(super) type Entries = SmallVec<[Entry; 1]>;

/// One entry's values, one inline for the same reason (siblings are the exception).
pub(super) type Values = SmallVec<[Versioned; 1]>;

/// One node's part of a key's clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    /// The node that minted these dots.
    pub(super) node: NodeId,
    /// Events of `node` this set has seen: dots `(node, 1..=counter)`. At least 1.
    pub(super) counter: u64,
    /// Values of the newest `values.len()` of those events, newest first: `values[k]`
    /// is dot `(node, counter - k)`. `values.len() <= counter`.
    pub(super) values: Values,
}

impl Entry {
    /// Dots `(node, 1..=floor)` are known and superseded; the rest are in `values`.
    fn floor(&self) -> u64 {
        self.counter - self.values.len() as u64
    }
}

/// The versions of one key: a dotted version vector set (see the module doc).
///
/// `PartialEq` is structural (same entries, same values, same order); for causality
/// use [`VersionSet::compare`], for "same knowledge" [`VersionSet::equal`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VersionSet {
    /// Sorted by node id, no duplicates, every entry valid (see [`Entry`]).
    pub(super) entries: Entries,
    /// Values with a context but no dot; empty in every set `coordinate` returns.
    /// Sorted and without duplicates, so that equal sets compare equal.
    pub(super) anonymous: Vec<Versioned>,
}

/// How two sets' causal histories (their version vectors) relate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Causality {
    /// Both have seen exactly the same events.
    Equal,
    /// `self` has seen a strict subset of what `other` has: `other` supersedes it.
    Before,
    /// `self` has seen a strict superset: it supersedes `other`.
    After,
    /// Each has seen an event the other has not.
    Concurrent,
}

impl VersionSet {
    /// The set of a key nobody has written: no events, no values.
    pub fn empty() -> VersionSet {
        VersionSet::default()
    }

    /// No events seen and no values (a key never written, or never received).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.anonymous.is_empty()
    }

    /// The coordinator's write (`dvvset:update(dvvset:new(Context, Value), Stored, Node)`).
    ///
    /// Stored versions the `context` covers are superseded and dropped; the ones it does
    /// not cover stay as siblings; `value` gets the next dot of `node`. An empty context
    /// covers nothing: the write is concurrent with everything stored.
    ///
    /// The dot's counter is `counter + 1` while `node`'s entry still holds values (they
    /// are a contiguous run of dots), and `max(counter + 1, fresh)` when it holds none
    /// or `node` has no entry. `fresh` comes from a clock of the coordinating shard that
    /// stays above every counter it ever minted (the engine's; 0 in models that never
    /// prune). That is what makes [`VersionSet::prune`] safe: a node whose entry was
    /// pruned, even from its own copy, never mints a dot it minted before
    /// (`prune.rs`).
    ///
    /// `stored` must be `node`'s own replica of the key (module doc: dots are unique).
    pub fn coordinate(
        stored: &VersionSet,
        context: &Context,
        value: Versioned,
        node: NodeId,
        fresh: u64,
    ) -> VersionSet {
        // The context as a set that has seen its events and holds none of their values:
        // syncing it into `stored` drops exactly the covered values.
        let seen = VersionSet {
            entries: context
                .pairs()
                .iter()
                .map(|&(node, counter)| Entry {
                    node,
                    counter,
                    values: Values::new(),
                })
                .collect(),
            anonymous: Vec::new(),
        };
        let mut next = seen.sync(stored);
        next.record_event(node, value, fresh);
        next.debug_assert_invariants();
        next
    }

    /// A last-write-wins set: `value` alone, as the dot `(LWW_NODE, clock)`. Syncing
    /// two such sets keeps the one with the larger clock (module doc); `clock` must be
    /// unique among the key's writes, which the engine's per-shard clock makes it.
    pub fn last_write(clock: u64, value: Versioned) -> VersionSet {
        assert!(
            (1..=COUNTER_MAX).contains(&clock),
            "clock {clock} outside 1..={COUNTER_MAX}"
        );
        VersionSet {
            entries: smallvec::smallvec![Entry {
                node: LWW_NODE,
                counter: clock,
                values: smallvec::smallvec![value],
            }],
            anonymous: Vec::new(),
        }
    }

    /// Gives a [`last_write`](Self::last_write) set another clock (the engine stamps
    /// it when the write's record is queued). Panics on any other set.
    pub fn set_last_write_clock(&mut self, clock: u64) {
        assert!(
            (1..=COUNTER_MAX).contains(&clock),
            "clock {clock} outside 1..={COUNTER_MAX}"
        );
        match &mut self.entries[..] {
            [entry] if entry.node == LWW_NODE && entry.values.len() == 1 => entry.counter = clock,
            _ => panic!("not a last-write-wins set: {self:?}"),
        }
    }

    /// The largest last-write-wins clock this set has seen (0 if none): what a shard's
    /// clock must stay above.
    pub fn last_write_clock(&self) -> u64 {
        self.counter_of(LWW_NODE)
    }

    /// Gives `value` the next dot of `node` (see [`VersionSet::coordinate`] for `fresh`).
    fn record_event(&mut self, node: NodeId, value: Versioned, fresh: u64) {
        match self.entries.binary_search_by_key(&node, |e| e.node) {
            Ok(i) => {
                let entry = &mut self.entries[i];
                // Counters are at most `COUNTER_MAX` (decoders check it) plus the writes
                // made since: far from overflow.
                let next = entry.counter.checked_add(1).expect("counter overflow");
                // A jump is only allowed over an empty run: the values held are the
                // dots just below the counter, and moving it would rename them.
                entry.counter = if entry.values.is_empty() {
                    next.max(fresh)
                } else {
                    next
                };
                entry.values.insert(0, value);
            }
            Err(i) => self.entries.insert(
                i,
                Entry {
                    node,
                    counter: fresh.max(1),
                    values: smallvec::smallvec![value],
                },
            ),
        }
    }

    /// Events of `node` this set has seen (0: none, or its entry was pruned).
    pub fn counter_of(&self, node: NodeId) -> u64 {
        self.entries
            .binary_search_by_key(&node, |e| e.node)
            .map_or(0, |i| self.entries[i].counter)
    }

    /// Merges two replicas' sets of the same key (`dvvset:sync/2`): the result has seen
    /// every event either has seen, and holds every value that neither side knows to be
    /// superseded. Dominated versions are dropped, concurrent ones kept as siblings.
    ///
    /// Per node the merge is a join: `counter = max`, `floor = max`, and the values are
    /// the dots in `(floor, counter]`, taken from the side with the larger counter (it
    /// holds all of them, its own floor being at most the joined one). So, given unique
    /// dots (a dot names one value), for all sets `a`, `b`, `c`:
    ///
    /// - commutative: `a.sync(b) == b.sync(a)`
    /// - associative: `a.sync(b).sync(c) == a.sync(b.sync(c))`
    /// - idempotent: `a.sync(a) == a`
    /// - identity: `a.sync(empty) == a`
    /// - inflationary: `a.sync(b)` descends both `a` and `b`
    ///
    /// (`max` is a semilattice; a pair of them too.) Anonymous values follow dvvset: the
    /// side whose clock is strictly newer wins, otherwise the sorted union is kept. The
    /// laws are property-tested on histories of coordinated writes (`proptests.rs`).
    pub fn sync(&self, other: &VersionSet) -> VersionSet {
        let anonymous = match self.compare(other) {
            Causality::Before => other.anonymous.clone(),
            Causality::After => self.anonymous.clone(),
            Causality::Equal | Causality::Concurrent => {
                union_sorted(&self.anonymous, &other.anonymous)
            }
        };
        let merged = VersionSet {
            entries: merge_entries(&self.entries, &other.entries),
            anonymous,
        };
        merged.debug_assert_invariants();
        merged
    }

    /// True when `self` has seen every event `other` has seen (version vectors: `>=`).
    pub fn descends(&self, other: &VersionSet) -> bool {
        vv_descends(&self.entries, &other.entries)
    }

    /// True when `self` has seen strictly more than `other` (dvvset `less(other, self)`).
    pub fn dominates(&self, other: &VersionSet) -> bool {
        self.compare(other) == Causality::After
    }

    /// How the two sets' version vectors relate.
    pub fn compare(&self, other: &VersionSet) -> Causality {
        match (self.descends(other), other.descends(self)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (false, false) => Causality::Concurrent,
        }
    }

    /// dvvset `equal/2`: the same events seen and the same number of values kept per
    /// node — with unique dots, the same versions. Anonymous values are not compared.
    /// What read repair asks: does this replica hold what the merged answer holds?
    pub fn equal(&self, other: &VersionSet) -> bool {
        self.entries.len() == other.entries.len()
            && self.entries.iter().zip(&other.entries).all(|(a, b)| {
                a.node == b.node && a.counter == b.counter && a.values.len() == b.values.len()
            })
    }

    /// The version vector of everything this set has seen: what a read hands the client.
    pub fn context(&self) -> Context {
        Context::from_sorted(self.entries.iter().map(|e| (e.node, e.counter)).collect())
    }

    /// Every sibling, tombstones included: anonymous values first, then by node id,
    /// newest first within a node.
    pub fn values(&self) -> impl Iterator<Item = &Versioned> + '_ {
        self.anonymous
            .iter()
            .chain(self.entries.iter().flat_map(|e| e.values.iter()))
    }

    /// The siblings that are not tombstones: what a read returns as values.
    pub fn live_values(&self) -> impl Iterator<Item = &Versioned> + '_ {
        self.values().filter(|v| !v.is_tombstone())
    }

    /// Number of siblings, tombstones included.
    pub fn value_count(&self) -> usize {
        self.anonymous.len() + self.entries.iter().map(|e| e.values.len()).sum::<usize>()
    }

    /// True when there are siblings and all of them are tombstones (the key reads as
    /// deleted and is a candidate for purging). False for the empty set.
    pub fn is_tombstone_only(&self) -> bool {
        self.value_count() > 0 && self.values().all(Versioned::is_tombstone)
    }

    /// Whether the set fits the encoding: at most [`COUNT_MAX`] entries, values per
    /// entry and anonymous values, and values of at most [`VALUE_BYTES_MAX`] bytes.
    /// [`VersionSet::encode_into`] panics on a set that does not; a coordinator checks
    /// the set it made (blind writes pile up siblings) and refuses the write instead.
    pub fn check_limits(&self) -> Result<(), VersionError> {
        let too_large = |what, count: usize, max: usize| {
            if count > max {
                Err(VersionError::TooLarge { what, count, max })
            } else {
                Ok(())
            }
        };
        too_large("entry count", self.entries.len(), COUNT_MAX)?;
        too_large("anonymous value count", self.anonymous.len(), COUNT_MAX)?;
        for entry in &self.entries {
            too_large("value count of one node", entry.values.len(), COUNT_MAX)?;
        }
        let longest = self
            .values()
            .filter_map(|v| v.value.as_ref())
            .map(|b| b.len())
            .max();
        too_large("value length", longest.unwrap_or(0), VALUE_BYTES_MAX)
    }

    /// The structural invariants, checked after every decode and (in debug builds)
    /// after every write and merge. A broken one is a bug here, not bad input: the
    /// decoder rejects such input before building a set.
    pub(super) fn assert_invariants(&self) {
        for pair in self.entries.windows(2) {
            assert!(
                pair[0].node < pair[1].node,
                "entries out of order: {pair:?}"
            );
        }
        for e in &self.entries {
            assert!(e.counter >= 1, "entry of node {} with counter 0", e.node);
            assert!(
                e.values.len() as u64 <= e.counter,
                "node {}: {} values for counter {}",
                e.node,
                e.values.len(),
                e.counter
            );
        }
        for pair in self.anonymous.windows(2) {
            assert!(pair[0] < pair[1], "anonymous values not canonical");
        }
    }

    fn debug_assert_invariants(&self) {
        if cfg!(debug_assertions) {
            self.assert_invariants();
        }
    }
}

/// Joins two entry lists sorted by node (dvvset `sync2`).
fn merge_entries(a: &[Entry], b: &[Entry]) -> Entries {
    merge_sorted(a, b, |x, y| x.node.cmp(&y.node), merge_entry)
}

/// Walks two lists sorted by `order` (each without duplicates) into one: an element on
/// one side only is kept as it is, two equal elements become `join(a, b)`.
fn merge_sorted<T: Clone>(
    a: &[T],
    b: &[T],
    order: impl Fn(&T, &T) -> Ordering,
    join: impl Fn(&T, &T) -> T,
) -> SmallVec<[T; 1]> {
    let mut out = SmallVec::with_capacity(a.len().max(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match order(&a[i], &b[j]) {
            Ordering::Less => {
                out.push(a[i].clone());
                i += 1;
            }
            Ordering::Greater => {
                out.push(b[j].clone());
                j += 1;
            }
            Ordering::Equal => {
                out.push(join(&a[i], &b[j]));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend(a[i..].iter().cloned());
    out.extend(b[j..].iter().cloned());
    out
}

/// Joins two entries of one node (dvvset `merge/5`): `counter = max`, `floor = max`.
///
/// The side with the larger counter holds every dot above the joined floor, because
/// its own floor is at most that. On equal counters either side will do: with unique
/// dots their values are the same, one list a prefix of the other.
fn merge_entry(a: &Entry, b: &Entry) -> Entry {
    debug_assert_eq!(a.node, b.node);
    // Equal counters: with unique dots both sides hold the same values for the dots
    // kept, and either side gives the same result. Under last-write-wins two
    // coordinators can stamp two writes with one clock (their dots then collide);
    // taking the larger values, by `Versioned`'s order, keeps the merge commutative, so
    // replicas that saw the two in either order agree on the winner.
    let newer = match a.counter.cmp(&b.counter) {
        Ordering::Greater => a,
        Ordering::Less => b,
        Ordering::Equal if a.values >= b.values => a,
        Ordering::Equal => b,
    };
    let floor = a.floor().max(b.floor());
    let kept = (newer.counter - floor) as usize;
    Entry {
        node: newer.node,
        counter: newer.counter,
        values: newer.values[..kept].iter().cloned().collect(),
    }
}

/// Version vector `a >= b`: every counter of `b` is matched or passed in `a`.
fn vv_descends(a: &[Entry], b: &[Entry]) -> bool {
    let mut a = a.iter();
    'next_b: for eb in b {
        for ea in a.by_ref() {
            match ea.node.cmp(&eb.node) {
                Ordering::Less => continue,
                Ordering::Equal if ea.counter >= eb.counter => continue 'next_b,
                Ordering::Equal | Ordering::Greater => return false,
            }
        }
        return false;
    }
    true
}

/// Sorted union without duplicates of two sorted, duplicate-free lists.
fn union_sorted(a: &[Versioned], b: &[Versioned]) -> Vec<Versioned> {
    merge_sorted(a, b, Versioned::cmp, |x, _| x.clone()).into_vec()
}
