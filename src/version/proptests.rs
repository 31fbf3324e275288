//! Property tests over random histories: merge laws, the reference model of which
//! values must survive, and both codecs (round trip, truncation, arbitrary bytes).

use std::collections::BTreeSet;

use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// Replicas of the key in a history (each is one node coordinating with its own set).
const NODES: usize = 4;

#[derive(Clone, Debug)]
enum Op {
    /// A client write coordinated by replica `node`, with the context of an earlier
    /// snapshot (`None`: a client without context).
    Write {
        node: usize,
        context: Option<Index>,
        tombstone: bool,
    },
    /// Replica `into` receives replica `from`'s set (replication, repair, anti-entropy).
    Sync { into: usize, from: usize },
    /// A read at the replicas in `mask`: their merged set becomes a snapshot, so that
    /// later writes can carry its context.
    Read { mask: u8 },
    /// Replica `at` prunes its set as if the key's replicas were the nodes in `mask`
    /// (a ring change), dropping every valueless entry of the others at once, whatever
    /// its age: the age test keeps precision, not writes.
    Prune { at: usize, mask: u8 },
}

/// What the reference model knows of one write.
struct WriteRecord {
    /// Identifies the write's value in any set: every write gets its own timestamp.
    timestamp_us: u64,
    dot: (NodeId, u64),
    /// The context the client sent: the write supersedes every dot it covers.
    context: Context,
}

struct History {
    replicas: Vec<VersionSet>,
    /// Each node's shard clock, as the engine keeps it: above every counter it minted.
    clocks: Vec<u64>,
    /// Every set seen along the way: replica states after each op, and reads.
    snapshots: Vec<VersionSet>,
    writes: Vec<WriteRecord>,
}

/// An op; `Prune` with weight `prune_weight` (0: histories without pruning).
fn op(prune_weight: u32) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..NODES, proptest::option::weighted(0.7, any::<Index>()), proptest::bool::weighted(0.2))
            .prop_map(|(node, context, tombstone)| Op::Write { node, context, tombstone }),
        3 => (0..NODES, 0..NODES).prop_map(|(into, from)| Op::Sync { into, from }),
        2 => (1u8..(1 << NODES)).prop_map(|mask| Op::Read { mask }),
        prune_weight => (0..NODES, 0u8..(1 << NODES)).prop_map(|(at, mask)| Op::Prune { at, mask }),
    ]
}

/// Distinct random node ids in random order.
fn node_ids() -> impl Strategy<Value = Vec<NodeId>> {
    proptest::collection::btree_set(any::<u64>(), NODES)
        .prop_map(|ids| ids.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

/// A history as the node ids and the ops (what a failing case prints and shrinks);
/// [`run`] plays it.
fn history() -> impl Strategy<Value = (Vec<NodeId>, Vec<Op>)> {
    (node_ids(), proptest::collection::vec(op(0), 1..48))
}

/// A history in which replicas also prune their sets.
fn pruned_history() -> impl Strategy<Value = (Vec<NodeId>, Vec<Op>)> {
    (node_ids(), proptest::collection::vec(op(2), 1..64))
}

fn run(ids: &[NodeId], ops: &[Op]) -> History {
    let mut h = History {
        replicas: vec![VersionSet::empty(); NODES],
        clocks: vec![0; NODES],
        snapshots: vec![VersionSet::empty()],
        writes: Vec::new(),
    };
    for op in ops {
        let snapshot = match *op {
            Op::Write {
                node,
                ref context,
                tombstone,
            } => {
                let context = context.map_or_else(Context::empty, |i| {
                    h.snapshots[i.index(h.snapshots.len())].context()
                });
                let timestamp_us = h.writes.len() as u64;
                let value = (!tombstone).then(|| Bytes::from(timestamp_us.to_le_bytes().to_vec()));
                let v = Versioned {
                    timestamp_us,
                    value,
                };
                // The engine's tick: wall clock (here 10 per op) or last + 1.
                let fresh = (10 * h.snapshots.len() as u64).max(h.clocks[node] + 1);
                let set = VersionSet::coordinate(&h.replicas[node], &context, v, ids[node], fresh);
                let dot = (ids[node], set.counter_of(ids[node]));
                h.clocks[node] = fresh.max(dot.1);
                h.writes.push(WriteRecord {
                    timestamp_us,
                    dot,
                    context,
                });
                h.replicas[node] = set.clone();
                set
            }
            Op::Sync { into, from } => {
                h.replicas[into] = h.replicas[into].sync(&h.replicas[from]);
                h.replicas[into].clone()
            }
            Op::Read { mask } => (0..NODES)
                .filter(|i| mask & (1 << i) != 0)
                .fold(VersionSet::empty(), |acc, i| acc.sync(&h.replicas[i])),
            Op::Prune { at, mask } => {
                let kept: Vec<NodeId> = (0..NODES)
                    .filter(|i| mask & (1 << i) != 0)
                    .map(|i| ids[i])
                    .collect();
                let rule = Pruning {
                    replicas: &kept,
                    before: u64::MAX,
                };
                h.replicas[at].prune(&rule);
                h.replicas[at].clone()
            }
        };
        h.snapshots.push(snapshot);
    }
    h
}

fn timestamps(set: &VersionSet) -> BTreeSet<u64> {
    set.values().map(|v| v.timestamp_us).collect()
}

/// Every strict prefix of `bytes` must fail to decode.
fn prefixes_fail(bytes: &[u8]) -> Result<(), TestCaseError> {
    for len in 0..bytes.len() {
        let prefix = Bytes::copy_from_slice(&bytes[..len]);
        prop_assert!(
            VersionSet::decode(&prefix).is_err(),
            "prefix of {len} decoded"
        );
    }
    Ok(())
}

/// A decode that succeeds must have read the canonical encoding of what it returns.
fn decode_is_canonical(bytes: &[u8]) -> Result<(), TestCaseError> {
    if let Ok((set, used)) = VersionSet::decode(&Bytes::copy_from_slice(bytes)) {
        prop_assert!(used <= bytes.len());
        prop_assert_eq!(set.encode(), &bytes[..used]);
    }
    if let Ok(context) = Context::decode(bytes) {
        if !bytes.is_empty() {
            prop_assert_eq!(context.encode(), bytes);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sync_laws_hold_on_histories(
        (ids, ops) in history(),
        picks in proptest::collection::vec((any::<Index>(), any::<Index>(), any::<Index>()), 24),
    ) {
        let h = run(&ids, &ops);
        let n = h.snapshots.len();
        for (i, j, k) in picks {
            let (a, b, c) = (&h.snapshots[i.index(n)], &h.snapshots[j.index(n)], &h.snapshots[k.index(n)]);
            let ab = a.sync(b);
            prop_assert_eq!(&ab, &b.sync(a), "commutative");
            prop_assert_eq!(ab.sync(c), a.sync(&b.sync(c)), "associative");
            prop_assert_eq!(&a.sync(a), a, "idempotent");
            prop_assert_eq!(&a.sync(&VersionSet::empty()), a, "identity");
            prop_assert_eq!(&VersionSet::empty().sync(a), a, "identity (left)");
            prop_assert!(ab.descends(a) && ab.descends(b), "descends both inputs");
            prop_assert_eq!(ab.context().pairs().len(), ab.entries.len());
        }
    }

    #[test]
    fn comparisons_agree((ids, ops) in history(), i in any::<Index>(), j in any::<Index>()) {
        let h = run(&ids, &ops);
        let n = h.snapshots.len();
        let (a, b) = (&h.snapshots[i.index(n)], &h.snapshots[j.index(n)]);
        let expected = match (a.descends(b), b.descends(a)) {
            (true, true) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (false, false) => Causality::Concurrent,
        };
        prop_assert_eq!(a.compare(b), expected);
        prop_assert_eq!(a.dominates(b), expected == Causality::After);
        // With unique dots, the same clock means the same values.
        if expected == Causality::Equal {
            prop_assert!(a.equal(b));
            prop_assert_eq!(timestamps(a), timestamps(b));
        }
    }

    #[test]
    fn values_never_outnumber_writes_and_dots_are_unique((ids, ops) in history()) {
        let h = run(&ids, &ops);
        for set in &h.snapshots {
            prop_assert!(set.values().count() <= h.writes.len());
            prop_assert_eq!(set.values().count(), set.value_count());
            prop_assert_eq!(set.live_values().count(), set.values().filter(|v| v.value.is_some()).count());
            prop_assert!(set.anonymous.is_empty());
        }
        let dots: BTreeSet<_> = h.writes.iter().map(|w| w.dot).collect();
        prop_assert_eq!(dots.len(), h.writes.len());
    }

    /// Reference model: after every replica has synced with every other, exactly the
    /// writes that no write's context covered survive.
    #[test]
    fn survivors_are_the_writes_no_context_covered((ids, ops) in history()) {
        let h = run(&ids, &ops);
        let all = h.replicas.iter().fold(VersionSet::empty(), |acc, r| acc.sync(r));
        let expected: BTreeSet<u64> = h
            .writes
            .iter()
            .filter(|w| {
                let (node, counter) = w.dot;
                !h.writes.iter().any(|later| later.context.counter(node) >= counter)
            })
            .map(|w| w.timestamp_us)
            .collect();
        prop_assert_eq!(timestamps(&all), expected);
        for r in &h.replicas {
            prop_assert!(all.descends(r));
        }
    }

    /// Pruning loses precision, never a write: after every replica has synced with
    /// every other, each write that no context covered is still there (superseded
    /// ones may be back as siblings), and no dot was minted twice.
    #[test]
    fn pruning_never_loses_a_write((ids, ops) in pruned_history()) {
        let h = run(&ids, &ops);
        let all = h.replicas.iter().fold(VersionSet::empty(), |acc, r| acc.sync(r));
        let survivors = timestamps(&all);
        for w in &h.writes {
            let (node, counter) = w.dot;
            let covered = h.writes.iter().any(|later| later.context.counter(node) >= counter);
            prop_assert!(covered || survivors.contains(&w.timestamp_us), "write {} lost", w.timestamp_us);
        }
        let dots: BTreeSet<_> = h.writes.iter().map(|w| w.dot).collect();
        prop_assert_eq!(dots.len(), h.writes.len(), "a dot was minted twice");
        for set in &h.snapshots {
            prop_assert_eq!(&VersionSet::decode(&Bytes::from(set.encode())).unwrap().0, set);
        }
    }

    #[test]
    fn version_set_round_trips_and_every_truncation_fails((ids, ops) in history()) {
        let h = run(&ids, &ops);
        for set in &h.snapshots {
            let bytes = set.encode();
            prop_assert_eq!(bytes.len(), set.encoded_len());
            let mut padded = bytes.clone();
            padded.extend_from_slice(b"tail");
            let (decoded, used) = VersionSet::decode(&Bytes::from(padded)).unwrap();
            prop_assert_eq!(&decoded, set);
            prop_assert_eq!(used, bytes.len());
            prefixes_fail(&bytes)?;
        }
    }

    #[test]
    fn context_round_trips_and_every_truncation_fails((ids, ops) in history()) {
        let h = run(&ids, &ops);
        for set in &h.snapshots {
            let context = set.context();
            let bytes = context.encode();
            prop_assert_eq!(bytes.len(), context.encoded_len());
            prop_assert_eq!(&Context::decode(&bytes).unwrap(), &context);
            for len in 1..bytes.len() {
                prop_assert!(Context::decode(&bytes[..len]).is_err(), "prefix of {} decoded", len);
            }
            let mut trailing = bytes.clone();
            trailing.push(0);
            prop_assert!(Context::decode(&trailing).is_err());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        decode_is_canonical(&bytes)?;
    }

    #[test]
    fn mutated_encodings_never_panic(
        (ids, ops) in history(),
        pick in any::<Index>(),
        flips in proptest::collection::vec((any::<Index>(), any::<u8>()), 1..4),
    ) {
        let h = run(&ids, &ops);
        let set = &h.snapshots[pick.index(h.snapshots.len())];
        for mut bytes in [set.encode(), set.context().encode()] {
            for (at, byte) in &flips {
                let i = at.index(bytes.len());
                bytes[i] = *byte;
            }
            decode_is_canonical(&bytes)?;
        }
    }
}

/// Last-write-wins sets of distinct clocks, each with its own value (the clock as bytes,
/// so that the survivor names its write), a tombstone now and then.
fn last_writes() -> impl Strategy<Value = Vec<(u64, bool)>> {
    proptest::collection::btree_map(1..=COUNTER_MAX, proptest::bool::weighted(0.2), 1..12)
        .prop_map(|m| m.into_iter().collect::<Vec<_>>())
        .prop_shuffle()
}

fn last_write_of(clock: u64, tombstone: bool) -> VersionSet {
    let value = (!tombstone).then(|| Bytes::copy_from_slice(&clock.to_le_bytes()));
    VersionSet::last_write(
        clock,
        Versioned {
            timestamp_us: clock,
            value,
        },
    )
}

proptest! {
    /// Whatever the order in which the sets meet (memtable, tables, compaction,
    /// replicas), sync leaves exactly the write with the largest clock.
    #[test]
    fn last_write_wins_is_sync_in_any_order(
        writes in last_writes(),
        split in any::<Index>(),
    ) {
        let sets: Vec<VersionSet> = writes.iter().map(|&(c, t)| last_write_of(c, t)).collect();
        let &(newest, tombstone) = writes.iter().max_by_key(|w| w.0).expect("at least one");
        let expected = last_write_of(newest, tombstone);
        let folded = sets.iter().fold(VersionSet::empty(), |acc, s| acc.sync(s));
        prop_assert_eq!(&folded, &expected);
        // Two halves merged apart, then together (tables compacted separately).
        let at = split.index(sets.len() + 1);
        let fold = |part: &[VersionSet]| part.iter().fold(VersionSet::empty(), |acc, s| s.sync(&acc));
        prop_assert_eq!(fold(&sets[..at]).sync(&fold(&sets[at..])), expected.clone());
        prop_assert_eq!(folded.value_count(), 1);
        prop_assert_eq!(folded.last_write_clock(), newest);
        let bytes = Bytes::from(folded.encode());
        let (decoded, used) = VersionSet::decode(&bytes).expect("decodes");
        prop_assert_eq!(used, bytes.len());
        prop_assert_eq!(decoded, expected);
    }
}
