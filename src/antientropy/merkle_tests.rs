//! The tree: token → node mapping, contributions, incremental updates against a
//! rebuild from scratch, order independence, dirty leaves and their rebuild.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;

use super::merkle::*;
use crate::ring::token;
use crate::version::{Context, VersionSet, Versioned};

/// A last-write-wins set of `value` (`None`: a tombstone) at `clock`.
pub(super) fn lww(clock: u64, value: Option<&[u8]>) -> VersionSet {
    VersionSet::last_write(
        clock,
        Versioned {
            timestamp_us: clock,
            value: value.map(Bytes::copy_from_slice),
        },
    )
}

fn full(depth: u8) -> Shape {
    Shape::new(TokenRange::new(0, 0), depth)
}

/// A token inside `range`, from any u64.
fn token_in(range: TokenRange, raw: u64) -> u64 {
    let offset = (raw as u128 % range.token_count()) as u64;
    range.start.wrapping_add(1).wrapping_add(offset)
}

/// The tree storage would rebuild from `model`: what every incremental path must equal.
fn rebuilt(shape: Shape, model: &BTreeMap<Bytes, VersionSet>) -> MerkleTree {
    MerkleTree::build(
        shape,
        model.iter().map(|(k, v)| (token(k), contribution(k, v))),
    )
}

fn assert_same_tree(a: &MerkleTree, b: &MerkleTree) -> Result<(), TestCaseError> {
    prop_assert_eq!(a.root(), b.root());
    for leaf in 0..a.shape().leaf_count() {
        prop_assert_eq!(a.leaf(leaf), b.leaf(leaf), "leaf {}", leaf);
    }
    prop_assert_eq!(a.snapshot(1), b.snapshot(1));
    Ok(())
}

#[test]
fn ranges_hold_what_they_say() {
    let whole = TokenRange::new(7, 7);
    assert_eq!(whole.token_count(), 1 << 64);
    assert!(whole.contains(7) && whole.contains(0) && whole.contains(u64::MAX));
    // Wrapping: (u64::MAX - 1, 2] holds u64::MAX, 0, 1, 2.
    let wrapping = TokenRange::new(u64::MAX - 1, 2);
    assert_eq!(wrapping.token_count(), 4);
    assert!(wrapping.contains(u64::MAX) && wrapping.contains(0) && wrapping.contains(2));
    assert!(!wrapping.contains(u64::MAX - 1) && !wrapping.contains(3));
    let shape = Shape::new(wrapping, 2);
    let leaves: Vec<_> = [u64::MAX, 0, 1, 2]
        .map(|t| shape.leaf_of(t).unwrap())
        .into();
    assert_eq!(leaves, [0, 1, 2, 3]);
    assert_eq!(shape.leaf_of(3), None);
    // More leaves than tokens: some leaves are empty.
    let tiny = Shape::new(TokenRange::new(10, 12), 3);
    assert_eq!((tiny.leaf_of(11), tiny.leaf_of(12)), (Some(0), Some(4)));
    assert_eq!(tiny.node_range(3, 1), None);
    assert_eq!(tiny.node_range(3, 4), Some(TokenRange::new(11, 12)));
    assert_eq!(full(4).node_range(0, 0), Some(TokenRange::new(0, 0)));
}

#[test]
fn contribution_is_pinned_and_is_the_record_payload_hash() {
    let set = lww(1_764_547_200_000_000, Some(b"hi"));
    let c = contribution(b"key", &set);
    // Pinned: a change moves every root, and replicas of two builds would resync
    // everything. Change TREE_FORMAT with it.
    assert_eq!(c, 0xcd1f_a37a_9b34_894a, "{c:#018x}");
    let mut payload = vec![3, 0];
    payload.extend_from_slice(b"key");
    payload.extend_from_slice(&set.encode());
    assert_eq!(contribution_of_payload(&payload), c);
    // Key, value and clock all count; so does a tombstone.
    assert_ne!(contribution(b"kez", &set), c);
    assert_ne!(
        contribution(b"key", &lww(1_764_547_200_000_000, Some(b"ho"))),
        c
    );
    assert_ne!(
        contribution(b"key", &lww(1_764_547_200_000_001, Some(b"hi"))),
        c
    );
    assert_ne!(contribution(b"key", &lww(1_764_547_200_000_000, None)), c);
}

#[test]
fn a_write_during_a_rebuild_voids_it() {
    let shape = full(2);
    let mut tree = MerkleTree::new(shape);
    let t = (1u64 << 62) + 1; // the first token of leaf 1: leaves are (i·2^62, (i+1)·2^62]
    tree.mark_dirty(t);
    assert_eq!(tree.dirty_leaves().collect::<Vec<_>>(), [1]);
    let ticket = tree.begin_rebuild(1);
    tree.update(t + 1, None, Some(5)); // lands while the scan runs
    assert!(!tree.finish_rebuild(ticket, [(t, 9)]));
    assert!(tree.is_dirty(1));
    let ticket = tree.begin_rebuild(1);
    assert!(tree.finish_rebuild(ticket, [(t, 9), (t + 1, 5)]));
    assert_eq!((tree.dirty_count(), tree.leaf(1), tree.root()), (0, 14, 14));
}

#[test]
fn a_dirty_leaf_is_poisoned_in_snapshots_only() {
    let shape = full(3);
    let mut tree = MerkleTree::build(shape, [(5, 100), (u64::MAX, 7)]);
    let clean = tree.snapshot(1);
    assert_eq!(clean.root(), 107);
    assert_eq!(clean.node(1, 0), 100);
    tree.mark_dirty(5);
    let dirty = tree.snapshot(1);
    assert_ne!(dirty.node(3, 0), 100);
    assert_eq!(dirty.node(3, 7), 7);
    assert_ne!(
        tree.snapshot(2).node(3, 0),
        dirty.node(3, 0),
        "salt changes the poison"
    );
    assert_eq!(tree.leaf(0), 100, "the stored sum is left alone");
}

/// One step of a key's life, as the engine sees it.
#[derive(Clone, Debug)]
enum Op {
    /// A coordinated write (`None`: a delete); with or without the stored context.
    Write {
        key: u8,
        value: Option<u8>,
        seen: bool,
        node: u8,
    },
    /// Compaction purged the key (a tombstone past grace).
    Purge { key: u8 },
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..12u8, proptest::option::of(any::<u8>()), any::<bool>(), 0..3u8)
            .prop_map(|(key, value, seen, node)| Op::Write { key, value, seen, node }),
        1 => (0..12u8).prop_map(|key| Op::Purge { key }),
    ]
}

fn key_of(k: u8) -> Bytes {
    Bytes::from(format!("key-{k}"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// `dvv`: every write passes (old, new); the tree equals a rebuild after every step.
    #[test]
    fn dvv_updates_equal_a_rebuild(ops in proptest::collection::vec(arb_op(), 1..60), depth in 0..6u8) {
        let shape = full(depth);
        let mut tree = MerkleTree::new(shape);
        let mut model: BTreeMap<Bytes, VersionSet> = BTreeMap::new();
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Write { key, value, seen, node } => {
                    let key = key_of(key);
                    let stored = model.get(&key).cloned().unwrap_or_default();
                    let context = if seen { stored.context() } else { Context::empty() };
                    let versioned = Versioned {
                        timestamp_us: step as u64,
                        value: value.map(|v| Bytes::from(vec![v])),
                    };
                    let node = [1, 3, 5][node as usize];
                    let new = VersionSet::coordinate(&stored, &context, versioned, node, step as u64 + 1);
                    let old = model.get(&key).map(|s| contribution(&key, s));
                    tree.update(token(&key), old, Some(contribution(&key, &new)));
                    model.insert(key, new);
                }
                Op::Purge { key } => {
                    let key = key_of(key);
                    if let Some(old) = model.remove(&key) {
                        tree.update(token(&key), Some(contribution(&key, &old)), None);
                    }
                }
            }
            assert_same_tree(&tree, &rebuilt(shape, &model))?;
        }
    }

    /// `lww`: blind writes pass (old, new) when memory knows the old set, else mark the
    /// leaf dirty; after the dirty leaves are rebuilt from storage the tree equals a
    /// rebuild from scratch.
    #[test]
    fn lww_updates_and_dirty_rebuilds_equal_a_rebuild(
        ops in proptest::collection::vec((0..12u8, proptest::option::of(any::<u8>()), any::<bool>()), 1..60),
        depth in 0..6u8,
    ) {
        let shape = full(depth);
        let mut tree = MerkleTree::new(shape);
        let mut model: BTreeMap<Bytes, VersionSet> = BTreeMap::new();
        for (clock, (key, value, known)) in ops.into_iter().enumerate() {
            let key = key_of(key);
            let new = lww(clock as u64 + 1, value.map(|v| [v]).as_ref().map(|v| &v[..]));
            let old = model.get(&key).map(|s| contribution(&key, s));
            if known || old.is_none() {
                tree.update(token(&key), old, Some(contribution(&key, &new)));
            } else {
                tree.mark_dirty(token(&key));
            }
            model.insert(key, new);
        }
        let dirty: Vec<u32> = tree.dirty_leaves().collect();
        for leaf in dirty {
            let keys = model
                .iter()
                .filter(|(k, _)| shape.leaf_of(token(k)) == Some(leaf))
                .map(|(k, v)| (token(k), contribution(k, v)));
            tree.rebuild_leaf(leaf, keys);
        }
        prop_assert_eq!(tree.dirty_count(), 0);
        assert_same_tree(&tree, &rebuilt(shape, &model))?;
    }

    /// Equal data, equal trees, whatever order the keys came in.
    #[test]
    fn insertion_order_does_not_matter(
        entries in proptest::collection::btree_map(any::<u64>(), any::<u64>(), 0..200),
        seed in any::<u64>(),
        depth in 0..10u8,
    ) {
        let shape = full(depth);
        let forward: Vec<(u64, u64)> = entries.into_iter().collect();
        let mut shuffled = forward.clone();
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let a = MerkleTree::build(shape, forward);
        let b = MerkleTree::build(shape, shuffled);
        assert_same_tree(&a, &b)?;
    }

    /// Every token in the range is in exactly the node whose tokens contain it, at every
    /// level, and a node means the same tokens whatever the tree's depth.
    #[test]
    fn nodes_partition_the_range(
        start in any::<u64>(), end in any::<u64>(), raw in any::<u64>(), depth in 0..=DEPTH_MAX, other in 0..=DEPTH_MAX,
    ) {
        let range = TokenRange::new(start, end);
        let t = token_in(range, raw);
        prop_assert!(range.contains(t));
        let shape = Shape::new(range, depth);
        let deeper = Shape::new(range, other.max(depth));
        let leaf = shape.leaf_of(t).unwrap();
        for level in 0..=depth {
            let index = shape.node_of(t, level).unwrap();
            prop_assert_eq!(index, leaf >> (depth - level));
            prop_assert_eq!(deeper.node_of(t, level), Some(index));
            let span = shape.node_range(level, index).expect("holds t");
            prop_assert!(span.contains(t));
            // Its first and last tokens are its own; the ones just outside are not.
            prop_assert_eq!(shape.node_of(span.start.wrapping_add(1), level), Some(index));
            prop_assert_eq!(shape.node_of(span.end, level), Some(index));
            if span.token_count() < range.token_count() {
                prop_assert_ne!(shape.node_of(span.start, level), Some(index));
                prop_assert_ne!(shape.node_of(span.end.wrapping_add(1), level), Some(index));
            }
        }
    }

    /// Merging two replicas' sets in either order gives the same contribution: the
    /// encoding is canonical.
    #[test]
    fn equal_sets_make_equal_contributions(a in 1..1000u64, b in 1..1000u64, x in any::<u8>(), y in any::<u8>()) {
        let left = lww(a, Some(&[x]));
        let right = lww(b + 1000, Some(&[y]));
        let ab = left.sync(&right);
        let ba = right.sync(&left);
        prop_assert_eq!(contribution(b"k", &ab), contribution(b"k", &ba));
        prop_assert_eq!(contribution(b"k", &ab), contribution(b"k", &right));
    }
}
