use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::sample::Index;

use super::*;
use crate::version::{NodeId, Versioned};

const NODES: usize = 3;
const NODE_IDS: [NodeId; NODES] = [11, 22, 33];

fn write(stored: &VersionSet, node: usize, ts: u64, tombstone: bool) -> VersionSet {
    let value = Versioned {
        timestamp_us: ts,
        value: (!tombstone).then(|| Bytes::from(ts.to_string())),
    };
    // With the stored context: supersedes what this replica holds.
    VersionSet::coordinate(stored, &stored.context(), value, NODE_IDS[node], 0)
}

fn k(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

#[test]
fn sources_merge_per_key_in_key_order() {
    let a1 = write(&VersionSet::empty(), 0, 1, false);
    let b1 = write(&VersionSet::empty(), 1, 2, false);
    let a2 = write(&a1, 0, 3, true);
    let one = vec![(k("a"), a1.clone()), (k("c"), b1.clone())];
    let two = vec![(k("a"), a2.clone()), (k("b"), a1.clone())];
    let three: Vec<(Bytes, VersionSet)> = vec![];
    let three_too = vec![(k("a"), b1.clone())];
    let merged: Vec<_> = MergeIter::new(vec![
        one.into_iter(),
        two.into_iter(),
        three.into_iter(),
        three_too.into_iter(),
    ])
    .collect();
    let expected = vec![
        (k("a"), a1.sync(&a2).sync(&b1)),
        (k("b"), a1.clone()),
        (k("c"), b1),
    ];
    assert_eq!(merged, expected);
    // a2 supersedes a1: key "a" holds a2's tombstone and b1's value as siblings.
    assert_eq!(merged[0].1.value_count(), 2);
}

#[test]
#[should_panic(expected = "does not follow")]
fn unsorted_source_panics() {
    let v = VersionSet::empty();
    let source = vec![(k("b"), v.clone()), (k("a"), v)];
    let _ = MergeIter::new(vec![source.into_iter()]).count();
}

#[test]
fn purge_needs_all_tombstones_grace_and_confirmation() {
    let live = write(&VersionSet::empty(), 0, 100, false);
    let deleted = write(&live, 0, 200, true);
    let sibling = write(&VersionSet::empty(), 1, 50, false).sync(&deleted);
    let grace = 1000;
    assert!(purgeable(&deleted, 1201, grace, true));
    assert!(
        !purgeable(&deleted, 1200, grace, true),
        "exactly gc_grace old"
    );
    assert!(
        !purgeable(&deleted, 1201, grace, false),
        "replicas not confirmed"
    );
    assert!(
        !purgeable(&deleted, 100, grace, true),
        "clock behind the tombstone"
    );
    assert!(!purgeable(&live, u64::MAX, grace, true), "a live value");
    assert!(
        !purgeable(&sibling, u64::MAX, grace, true),
        "a live sibling"
    );
    assert!(
        !purgeable(&VersionSet::empty(), u64::MAX, 0, true),
        "empty set"
    );
    // The newest tombstone counts, not the oldest.
    let two = write(&VersionSet::empty(), 1, 900, true).sync(&deleted);
    assert!(two.is_tombstone_only());
    assert!(!purgeable(&two, 1201, grace, true));
    assert!(purgeable(&two, 1901, grace, true));
}

#[derive(Clone, Debug)]
enum Op {
    Write { node: usize, tombstone: bool },
    Sync { into: usize, from: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..NODES, proptest::bool::weighted(0.4))
            .prop_map(|(node, tombstone)| Op::Write { node, tombstone }),
        2 => (0..NODES, 0..NODES).prop_map(|(into, from)| Op::Sync { into, from }),
    ]
}

/// Every state the replicas of one key went through in one history: dots are unique
/// across all of them, as in a real cluster. Timestamps are `1..`, in write order.
fn snapshots(ops: &[Op]) -> Vec<VersionSet> {
    let mut replicas = vec![VersionSet::empty(); NODES];
    let mut seen = Vec::new();
    for (ts, op) in ops.iter().enumerate() {
        match *op {
            Op::Write { node, tombstone } => {
                replicas[node] = write(&replicas[node], node, ts as u64 + 1, tombstone);
                seen.push(replicas[node].clone());
            }
            Op::Sync { into, from } => {
                replicas[into] = replicas[into].sync(&replicas[from]);
                seen.push(replicas[into].clone());
            }
        }
    }
    seen
}

/// Per key a history; per source and key, which snapshot (if any) the source holds.
type Case = (Vec<Vec<Op>>, Vec<Vec<Option<Index>>>);

fn case() -> impl Strategy<Value = Case> {
    (1usize..12, 0usize..6).prop_flat_map(|(keys, sources)| {
        (
            proptest::collection::vec(proptest::collection::vec(op(), 1..10), keys),
            proptest::collection::vec(
                proptest::collection::vec(proptest::option::of(any::<Index>()), keys),
                sources,
            ),
        )
    })
}

proptest! {
    #[test]
    fn merge_equals_sync_per_key_and_drops_only_purgeable(
        (histories, holdings) in case(),
        now_us in 0u64..24,
        gc_grace_us in 0u64..12,
        replicas_confirmed in any::<bool>(),
    ) {
        let per_key: Vec<Vec<VersionSet>> = histories.iter().map(|h| snapshots(h)).collect();
        let key = |i: usize| Bytes::from(format!("key{i:02}"));
        let mut model: BTreeMap<Bytes, VersionSet> = BTreeMap::new();
        let mut sources = Vec::new();
        for holding in &holdings {
            let mut source = Vec::new();
            for (i, pick) in holding.iter().enumerate() {
                if let Some(pick) = pick {
                    let v = pick.get(&per_key[i]).clone();
                    let entry = model.entry(key(i)).or_default();
                    *entry = entry.sync(&v);
                    source.push((key(i), v));
                }
            }
            sources.push(source.into_iter());
        }
        let merged: Vec<_> = MergeIter::new(sources.clone()).collect();
        let expected: Vec<_> = model.clone().into_iter().collect();
        prop_assert_eq!(&merged, &expected);

        let kept: Vec<_> =
            without_purgeable(merged.into_iter(), now_us, gc_grace_us, replicas_confirmed)
                .collect();
        let mut kept_iter = kept.iter().peekable();
        for (key, versions) in &model {
            if kept_iter.peek().is_some_and(|(k, _)| k == key) {
                let (_, v) = kept_iter.next().unwrap();
                prop_assert_eq!(v, versions);
                prop_assert!(!purgeable(versions, now_us, gc_grace_us, replicas_confirmed));
            } else {
                prop_assert!(purgeable(versions, now_us, gc_grace_us, replicas_confirmed));
                prop_assert!(replicas_confirmed && versions.is_tombstone_only());
            }
        }
        prop_assert!(kept_iter.next().is_none());

        // Source order does not matter (sync is commutative).
        let mut reversed = sources;
        reversed.reverse();
        let merged_reversed: Vec<_> = MergeIter::new(reversed).collect();
        prop_assert_eq!(merged_reversed, expected);
    }
}
