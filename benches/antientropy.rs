//! Anti-entropy's cost for 100k keys with 0.1 %, 1 % and 10 % of them divergent: the
//! bytes two replicas exchange (the tree comparison, then both sides' key lists of the
//! differing leaves in the server's LIST pages, before any version set moves), printed
//! as a table, and the time of the comparison itself. Run with
//! `cargo bench --bench antientropy`.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

use ringkv::antientropy::{
    comparison_cost, KeyDigest, Limits, MerkleTree, Shape, TokenRange, DEPTH_DEFAULT,
};
use ringkv::server::antientropy::wire::{encode_reply, Reply};

const KEYS: u64 = 100_000;

/// `(key, token, contribution)` of every key of one replica.
type Keys = Vec<(Bytes, u64, u64)>;

/// `(key, token, contribution)` of the data set; replica B differs in every
/// `1/divergent_in` key (another version of it).
fn replicas(divergent_every: u64) -> (Keys, Keys) {
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 0..KEYS {
        let key = Bytes::from(format!("user{i:012}"));
        let token = ringkv::ring::token(&key);
        let c = xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
        a.push((key.clone(), token, c));
        let theirs = if divergent_every > 0 && i % divergent_every == 0 {
            c ^ 1
        } else {
            c
        };
        b.push((key, token, theirs));
    }
    (a, b)
}

fn tree(keys: &[(Bytes, u64, u64)]) -> MerkleTree {
    let shape = Shape::new(TokenRange::new(0, 0), DEPTH_DEFAULT);
    MerkleTree::build(shape, keys.iter().map(|&(_, t, c)| (t, c)))
}

/// Bytes of the LIST pages listing the keys of `leaves` (one page: the size is what
/// counts), as the server encodes them.
fn listing_bytes(keys: &[(Bytes, u64, u64)], shape: Shape, level: u8, leaves: &[u32]) -> u64 {
    let mut listed: Vec<KeyDigest> = keys
        .iter()
        .filter(|(_, t, _)| {
            shape
                .node_of(*t, level)
                .is_some_and(|n| leaves.binary_search(&n).is_ok())
        })
        .map(|(k, _, c)| KeyDigest {
            key: k.clone(),
            contribution: *c,
        })
        .collect();
    listed.sort();
    encode_reply(&Reply::Keys {
        more: false,
        keys: listed,
    })
    .len() as u64
}

fn bytes_table() {
    println!("anti-entropy bytes for {KEYS} keys, depth {DEPTH_DEFAULT}:");
    println!("divergent  compare B  lists B  total B  round trips  bytes/divergent key");
    let naive = listing_bytes(&replicas(0).0, tree(&[]).shape().to_owned(), 0, &[0]);
    for (label, every) in [("0", 0), ("0.1 %", 1000), ("1 %", 100), ("10 %", 10)] {
        let (a, b) = replicas(every);
        let (ta, tb) = (tree(&a), tree(&b));
        let cost = comparison_cost(ta.snapshot(1), tb.snapshot(2), Limits::default());
        let shape = *ta.shape();
        let lists = if cost.differing_leaves.is_empty() {
            0
        } else {
            listing_bytes(&a, shape, cost.leaf_level, &cost.differing_leaves)
                + listing_bytes(&b, shape, cost.leaf_level, &cost.differing_leaves)
        };
        let total = cost.bytes + lists;
        let divergent = KEYS.checked_div(every).unwrap_or(0);
        let per_key = if divergent == 0 {
            "-".to_string()
        } else {
            format!("{:.0}", total as f64 / divergent as f64)
        };
        println!(
            "{label:>9}  {:>9}  {lists:>7}  {total:>7}  {:>11}  {per_key:>19}",
            cost.bytes, cost.round_trips
        );
    }
    println!("(listing every key's digest from one side instead: {naive} bytes)");
}

fn compare(c: &mut Criterion) {
    bytes_table();
    let mut group = c.benchmark_group("antientropy");
    for (label, every) in [("0.1%", 1000), ("1%", 100), ("10%", 10)] {
        let (a, b) = replicas(every);
        let (ta, tb) = (tree(&a), tree(&b));
        group.bench_function(format!("compare 100k keys, {label} divergent"), |bench| {
            bench.iter(|| {
                black_box(comparison_cost(
                    ta.snapshot(1),
                    tb.snapshot(2),
                    Limits::default(),
                ))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, compare);
criterion_main!(benches);
