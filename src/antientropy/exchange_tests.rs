//! The comparison: it finds exactly the leaves that differ, at any pair of depths and
//! any message limits; it refuses what it must; the key diff; and what it costs on the
//! wire for 100k keys as the divergence grows.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proptest::prelude::*;

use super::exchange::*;
use super::merkle::*;
use super::merkle_tests::lww;
use super::{encode, Limits, TREE_FORMAT};
use crate::ring::token;

fn full(depth: u8) -> Shape {
    Shape::new(TokenRange::new(0, 0), depth)
}

fn tiny_limits(pairs_max: u32, leaves_max: u32) -> Limits {
    Limits {
        pairs_max,
        leaves_max,
        ..Limits::default()
    }
}

#[test]
fn equal_roots_cost_one_round_trip() {
    let keys: Vec<(u64, u64)> = (0..1000u64)
        .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15), i))
        .collect();
    let a = MerkleTree::build(full(14), keys.iter().copied());
    let b = MerkleTree::build(full(10), keys.iter().rev().copied());
    let cost = comparison_cost(a.snapshot(1), b.snapshot(2), Limits::default());
    assert_eq!((cost.round_trips, cost.messages), (1, 2));
    assert!(cost.differing_leaves.is_empty());
    assert_eq!(cost.leaf_level, 10);
    assert!(cost.bytes < 100, "{} bytes", cost.bytes);
}

#[test]
fn the_responder_refuses_another_range_or_format() {
    let (_, open) = Session::open(MerkleTree::new(full(4)).snapshot(1), Limits::default());
    let elsewhere = MerkleTree::new(Shape::new(TokenRange::new(1, 9), 4)).snapshot(2);
    let refused = Session::accept(elsewhere, &open, Limits::default()).unwrap_err();
    assert_eq!(refused.reason, RefuseReason::UnknownRange);
    let other_format = Open {
        tree_format: TREE_FORMAT + 1,
        ..open
    };
    let same = MerkleTree::new(full(4)).snapshot(2);
    let refused = Session::accept(same, &other_format, Limits::default()).unwrap_err();
    assert_eq!(refused.reason, RefuseReason::TreeFormat);
}

#[test]
fn a_peer_out_of_turn_or_order_is_an_error() {
    let a = MerkleTree::build(full(6), [(1, 1)]);
    let b = MerkleTree::build(full(6), [(1, 2)]);
    let (_, open) = Session::open(a.snapshot(1), Limits::default());
    let (mut responder, accept) = Session::accept(b.snapshot(2), &open, Limits::default()).unwrap();
    assert_eq!(accept.answer.pairs.len(), 1);
    let pair = |index| Pair {
        index,
        left: 0,
        right: 0,
    };
    // The responder compares even levels: parents of level 0 are its own turn.
    let wrong_turn = Descend {
        level: 0,
        pairs: vec![pair(0)],
    };
    assert_eq!(
        responder.on_descend(&wrong_turn),
        Err(ExchangeError::WrongTurn { level: 0 })
    );
    let beyond = Descend {
        level: 1,
        pairs: vec![pair(2)],
    };
    assert!(matches!(
        responder.on_descend(&beyond),
        Err(ExchangeError::IndexOutOfRange { .. })
    ));
    let first = Descend {
        level: 1,
        pairs: vec![pair(1)],
    };
    responder.on_descend(&first).unwrap();
    let again = Descend {
        level: 1,
        pairs: vec![pair(0)],
    };
    assert!(matches!(
        responder.on_descend(&again),
        Err(ExchangeError::OutOfOrder { .. })
    ));
    let too_deep = Descend {
        level: 7,
        pairs: vec![pair(0)],
    };
    assert!(matches!(
        responder.on_descend(&too_deep),
        Err(ExchangeError::LevelOutOfRange { .. })
    ));
}

#[test]
fn a_dirty_leaf_is_always_compared() {
    // Leaf i of a whole-ring tree of depth 4 holds tokens (i·2^60, (i+1)·2^60].
    let keys = [((1u64 << 60) + 1, 5u64), ((3 << 60) + 1, 6)];
    let a = MerkleTree::build(full(4), keys);
    let mut b = MerkleTree::build(full(4), keys);
    b.mark_dirty((3 << 60) + 1);
    let cost = comparison_cost(a.snapshot(1), b.snapshot(2), Limits::default());
    assert_eq!(cost.differing_leaves, [3]);
}

/// One replica's `(token, contribution)` of every key.
type TokenSums = Vec<(u64, u64)>;

/// One replica's `(key, contribution)` of every key.
type KeySums = Vec<(Bytes, u64)>;

/// How one side's copy of a key differs from the other's.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// Another version on B.
    Version,
    /// A has it, B does not.
    MissingOnB,
    /// B has it, A does not.
    MissingOnA,
}

fn arb_change() -> impl Strategy<Value = Change> {
    prop_oneof![
        Just(Change::Version),
        Just(Change::MissingOnB),
        Just(Change::MissingOnA)
    ]
}

/// Contributions are hashes: generated ones go through one, so that the shrinker
/// cannot make a key contribute 0 (absent and present alike) or two changes whose
/// deltas cancel (`c ^ k - c` is `+k` for one `c` and `-k` for another), which real
/// contributions do with probability 2^-64.
fn hashed(c: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64(&c.to_le_bytes())
}

/// Two replicas of `keys` (token → contribution) that differ in `changes`.
fn diverge(
    keys: &BTreeMap<u64, u64>,
    changes: &[(usize, Change)],
) -> (TokenSums, TokenSums, BTreeSet<u64>) {
    let mut a: BTreeMap<u64, u64> = keys.clone();
    let mut b = a.clone();
    let mut changed = BTreeSet::new();
    let tokens: Vec<u64> = keys.keys().copied().collect();
    for &(pick, change) in changes {
        let t = tokens[pick % tokens.len()];
        if !changed.insert(t) {
            continue;
        }
        match change {
            Change::Version => {
                let c = b.get_mut(&t).unwrap();
                *c = hashed(*c ^ 1);
            }
            Change::MissingOnB => drop(b.remove(&t)),
            Change::MissingOnA => drop(a.remove(&t)),
        }
    }
    (a.into_iter().collect(), b.into_iter().collect(), changed)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Trees that differ in k keys differ in exactly the leaves of those keys (at the
    /// smaller depth), whatever the depths and however small the messages.
    #[test]
    fn finds_exactly_the_leaves_of_the_changed_keys(
        keys in proptest::collection::btree_map(any::<u64>(), any::<u64>(), 1..300),
        changes in proptest::collection::vec((any::<usize>(), arb_change()), 0..20),
        depth_a in 0..9u8,
        depth_b in 0..9u8,
        pairs_max in 1..5u32,
        leaves_max in 1..4u32,
        start in any::<u64>(),
        span in 1..u64::MAX,
    ) {
        // Fit the tokens into a range (wrapping or not).
        let range = TokenRange::new(start, start.wrapping_add(span));
        let keys: BTreeMap<u64, u64> = keys
            .into_iter()
            .map(|(t, c)| (range.start.wrapping_add(1).wrapping_add(t % span), hashed(c)))
            .collect();
        let (a, b, changed) = diverge(&keys, &changes);
        let leaf_level = depth_a.min(depth_b);
        let shape = Shape::new(range, leaf_level);
        let expected: Vec<u32> = changed
            .iter()
            .map(|&t| shape.leaf_of(t).unwrap())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let tree_a = MerkleTree::build(Shape::new(range, depth_a), a);
        let tree_b = MerkleTree::build(Shape::new(range, depth_b), b);
        let cost = comparison_cost(tree_a.snapshot(1), tree_b.snapshot(2), tiny_limits(pairs_max, leaves_max));
        prop_assert_eq!(cost.leaf_level, leaf_level);
        prop_assert_eq!(cost.differing_leaves, expected);
    }

    /// The diff sends what the other side lacks or holds otherwise, and fetches the
    /// reverse; nothing for equal entries.
    #[test]
    fn key_diff_matches_a_model(
        local in proptest::collection::btree_map(0..40u8, 0..3u64, 0..30),
        remote in proptest::collection::btree_map(0..40u8, 0..3u64, 0..30),
    ) {
        let list = |m: &BTreeMap<u8, u64>| -> Vec<KeyDigest> {
            m.iter().map(|(&k, &c)| KeyDigest { key: Bytes::from(vec![k]), contribution: c }).collect()
        };
        let diff = diff_keys(&list(&local), &list(&remote));
        let send: Vec<Bytes> = local.iter().filter(|(k, c)| remote.get(k) != Some(c)).map(|(&k, _)| Bytes::from(vec![k])).collect();
        let fetch: Vec<Bytes> = remote.iter().filter(|(k, c)| local.get(k) != Some(c)).map(|(&k, _)| Bytes::from(vec![k])).collect();
        prop_assert_eq!(diff.send, send);
        prop_assert_eq!(diff.fetch, fetch);
    }
}

/// 100k keys of ~10 bytes in one tree (the whole ring), with a value each.
fn data_set(keys: u32) -> Vec<(Bytes, u64)> {
    (0..keys)
        .map(|i| {
            let key = Bytes::from(format!("user{i:06}"));
            let set = lww(i as u64 + 1, Some(format!("value-{i}").as_bytes()));
            let c = contribution(&key, &set);
            (key, c)
        })
        .collect()
}

/// Replica B of `data`: every `stride`-th key diverges (a third missing on B, a third
/// missing on A, a third in another version).
fn replicas(data: &[(Bytes, u64)], divergent: usize) -> (KeySums, KeySums) {
    let stride = data.len() / divergent.max(1);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for (i, (key, c)) in data.iter().enumerate() {
        let diverges = divergent > 0 && i % stride == 0 && i / stride < divergent;
        match (diverges, (i / stride.max(1)) % 3) {
            (false, _) => {
                a.push((key.clone(), *c));
                b.push((key.clone(), *c));
            }
            (true, 0) => a.push((key.clone(), *c)),
            (true, 1) => b.push((key.clone(), *c)),
            (true, _) => {
                a.push((key.clone(), *c));
                b.push((key.clone(), !*c));
            }
        }
    }
    (a, b)
}

/// Bytes of A's LeafKeys for every differing leaf, chunked as a driver would.
fn leaf_keys_bytes(shape: Shape, a: &[(Bytes, u64)], leaves: &[u32], limits: &Limits) -> u64 {
    let wanted: BTreeSet<u32> = leaves.iter().copied().collect();
    let mut by_leaf: BTreeMap<u32, Vec<KeyDigest>> = BTreeMap::new();
    for (key, c) in a {
        let leaf = shape.leaf_of(token(key)).unwrap();
        if wanted.contains(&leaf) {
            by_leaf.entry(leaf).or_default().push(KeyDigest {
                key: key.clone(),
                contribution: *c,
            });
        }
    }
    let mut bytes = 0;
    for &leaf in leaves {
        let mut keys = by_leaf.remove(&leaf).unwrap_or_default();
        keys.sort();
        let chunks: Vec<&[KeyDigest]> = if keys.is_empty() {
            vec![&[]]
        } else {
            keys.chunks(limits.keys_max as usize).collect()
        };
        let last = chunks.len() - 1;
        for (i, chunk) in chunks.into_iter().enumerate() {
            let message = Message::LeafKeys(LeafKeys {
                level: shape.depth,
                index: leaf,
                last: i == last,
                keys: chunk.to_vec(),
            });
            let mut buf = Vec::new();
            encode(&message, &mut buf);
            bytes += buf.len() as u64 + FRAME_HEADER_BYTES;
        }
    }
    bytes
}

/// One comparison of two replicas of `data` with `divergent` keys apart, at `depth`:
/// (round trips, descent bytes, leaf-key bytes).
fn measure(data: &[(Bytes, u64)], depth: u8, divergent: usize) -> (u32, u64, u64) {
    let limits = Limits::default();
    let shape = full(depth);
    let (a, b) = replicas(data, divergent);
    let tree =
        |side: &[(Bytes, u64)]| MerkleTree::build(shape, side.iter().map(|(k, c)| (token(k), *c)));
    let cost = comparison_cost(tree(&a).snapshot(1), tree(&b).snapshot(2), limits);
    let leaf_bytes = leaf_keys_bytes(shape, &a, &cost.differing_leaves, &limits);
    (cost.round_trips, cost.bytes, leaf_bytes)
}

/// The benchmark, as a test: bytes exchanged for 100k keys with 0.1 %, 1 % and
/// 10 % of them divergent, at several depths. Run with `--nocapture` for the table.
#[test]
fn bytes_grow_with_the_difference_not_the_data() {
    let data = data_set(100_000);
    // Sending every key's digest instead: what the tree saves.
    let naive: u64 = data.iter().map(|(k, _)| 2 + k.len() as u64 + 8).sum();
    println!("100k keys; naive full list of (key, contribution): {naive} bytes");
    println!(
        "depth  divergent  round trips  tree bytes  leaf-key bytes    total  per divergent key"
    );
    let mut totals = BTreeMap::new();
    for depth in [10u8, 12, 14, 16] {
        for divergent in [0usize, 100, 1_000, 10_000] {
            let (round_trips, tree_bytes, leaf_bytes) = measure(&data, depth, divergent);
            let total = tree_bytes + leaf_bytes;
            let per_key = total.checked_div(divergent as u64).unwrap_or(0);
            println!(
                "{depth:>5}  {divergent:>9}  {round_trips:>11}  {tree_bytes:>10}  {leaf_bytes:>14}  {total:>7}  {per_key:>17}"
            );
            totals.insert((depth, divergent), total);
        }
    }
    for depth in [10u8, 12, 14, 16] {
        let t = |d| totals[&(depth, d)];
        assert!(t(0) < 100, "equal trees: one small round trip");
        assert!(
            t(100) < t(1_000) && t(1_000) < t(10_000),
            "depth {depth}: grows with the difference"
        );
        assert!(
            t(100) * 5 < naive,
            "depth {depth}: 0.1 % costs far less than the full list"
        );
    }
    assert!(totals[&(super::DEPTH_DEFAULT, 100)] * 50 < naive);
    // At the default depth the cost per divergent key stays within a small factor
    // from 0.1 % to 10 %: it follows the difference, not the 100k keys.
    let per_key = |d: usize| totals[&(super::DEPTH_DEFAULT, d)] / d as u64;
    assert!(
        per_key(100) < 1_000 && per_key(10_000) < 1_000,
        "{} {}",
        per_key(100),
        per_key(10_000)
    );
}

/// The default depth's reason (`mod.rs`): a shard of 1M keys has ~21k per range tree,
/// and there depth 14 costs within 10 % of the best depth per divergent key.
#[test]
fn the_default_depth_fits_a_range_of_a_million_key_shard() {
    let data = data_set(21_000);
    let mut per_key = BTreeMap::new();
    for depth in 12..=16u8 {
        for divergent in [21usize, 210] {
            let (_, tree_bytes, leaf_bytes) = measure(&data, depth, divergent);
            let cost = (tree_bytes + leaf_bytes) / divergent as u64;
            println!("21k keys, depth {depth}, {divergent} divergent: {cost} bytes per key");
            per_key.insert((depth, divergent), cost);
        }
    }
    for divergent in [21usize, 210] {
        let best = (12..=16u8).map(|d| per_key[&(d, divergent)]).min().unwrap();
        let default = per_key[&(super::DEPTH_DEFAULT, divergent)];
        assert!(
            default * 10 <= best * 11,
            "{default} against the best {best}"
        );
    }
}

/// With the same 100 divergent keys, 4× the data moves the tree's descent bytes little
/// (the leaf lists grow with keys per leaf, which the depth is chosen for).
#[test]
fn the_descent_does_not_grow_with_the_data() {
    let shape = full(super::DEPTH_DEFAULT);
    let mut descent = Vec::new();
    for keys in [100_000u32, 400_000] {
        let data = data_set(keys);
        let (a, b) = replicas(&data, 100);
        let tree = |side: &[(Bytes, u64)]| {
            MerkleTree::build(shape, side.iter().map(|(k, c)| (token(k), *c)))
        };
        let cost = comparison_cost(
            tree(&a).snapshot(1),
            tree(&b).snapshot(2),
            Limits::default(),
        );
        println!("{keys} keys, 100 divergent: {} descent bytes", cost.bytes);
        descent.push(cost.bytes);
    }
    assert!(descent[1] * 10 < descent[0] * 11, "{descent:?}");
}
