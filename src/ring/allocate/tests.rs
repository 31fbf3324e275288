use super::*;
use crate::ring::cluster::{Member, Ring};
use crate::ring::even_shard_tokens;
use rand::{Rng, SeedableRng};

/// Tokens per node in these tests: the server's default, 2 shards × 16 vnodes.
const SHARDS: u16 = 2;
const VNODES_PER_SHARD: u16 = 16;
const TOKENS: usize = SHARDS as usize * VNODES_PER_SHARD as usize;

fn member(node_id: NodeId, tokens: Vec<(Token, u16)>) -> Member {
    Member {
        node_id,
        dc: "dc1".into(),
        rack: "rack1".into(),
        tokens,
    }
}

/// A cluster of `nodes` nodes that joined one after the other: the first with even
/// tokens, every later one with `join`'s tokens for the ring so far.
fn grow(
    nodes: usize,
    mut join: impl FnMut(&[(Token, NodeId)], NodeId) -> Vec<Token>,
) -> Vec<Member> {
    let mut members = vec![member(
        1,
        even_shard_tokens(SHARDS, VNODES_PER_SHARD, 0x1234_5678_9abc),
    )];
    for n in 1..nodes {
        let node_id = 1 + 2 * n as u64;
        let existing: Vec<(Token, NodeId)> = members
            .iter()
            .flat_map(|m| m.tokens.iter().map(move |&(t, _)| (t, m.node_id)))
            .collect();
        let tokens = join(&existing, node_id);
        assert_eq!(tokens.len(), TOKENS);
        members.push(member(node_id, deal_to_shards(&tokens, SHARDS)));
    }
    members
}

/// The largest `|share - ideal| / ideal` over the nodes: `(primary, effective at rf 3)`.
fn imbalance(members: Vec<Member>) -> (f64, f64) {
    let nodes = members.len() as f64;
    let ring = Ring::new(members, 3).unwrap();
    let worst = |shares: Vec<(NodeId, f64)>, ideal: f64| {
        shares
            .iter()
            .map(|(_, s)| (s - ideal).abs() / ideal)
            .fold(0.0, f64::max)
    };
    (
        worst(ring.primary_ownership(), 1.0 / nodes),
        worst(ring.effective_ownership(), 3f64.min(nodes) / nodes),
    )
}

fn random_join(seed: u64) -> impl FnMut(&[(Token, NodeId)], NodeId) -> Vec<Token> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    move |_, _| (0..TOKENS).map(|_| rng.gen()).collect()
}

#[test]
fn balanced_allocation_stays_near_the_ideal_share_for_3_to_20_nodes() {
    let mut report = Vec::new();
    for nodes in 3..=20 {
        let balanced = imbalance(grow(nodes, |ring, id| balanced_tokens(ring, id, TOKENS, 3)));
        // Random tokens: the worst of a few seeds is what an operator may get.
        let random = (0..5)
            .map(|seed| imbalance(grow(nodes, random_join(seed))))
            .fold((0.0, 0.0), |a: (f64, f64), b| (a.0.max(b.0), a.1.max(b.1)));
        report.push(format!(
            "{nodes:2} nodes: balanced primary {:5.1}% effective {:5.1}% | random primary {:5.1}% effective {:5.1}%",
            balanced.0 * 100.0,
            balanced.1 * 100.0,
            random.0 * 100.0,
            random.1 * 100.0
        ));
        let within = if nodes < 5 {
            EFFECTIVE_WITHIN_SMALL
        } else {
            EFFECTIVE_WITHIN
        };
        let all = report.join("\n");
        assert!(balanced.1 <= within, "{nodes} nodes, effective:\n{all}");
        assert!(
            balanced.1 <= random.1,
            "{nodes} nodes, no better than random:\n{all}"
        );
        assert!(balanced.0 < random.0, "{nodes} nodes, primary:\n{all}");
    }
    eprintln!("{}", report.join("\n"));
}

/// The stated bounds (docs/cluster.md): with the balanced allocator every node's
/// effective ownership (at N = 3) is within 12 % of the ideal `3 / nodes` from 5 to 20
/// nodes, and within 25 % at 3 and 4. Random tokens measured 21–42 % here.
const EFFECTIVE_WITHIN: f64 = 0.12;
const EFFECTIVE_WITHIN_SMALL: f64 = 0.25;

#[test]
fn a_joining_node_takes_about_its_share_from_the_most_loaded() {
    let members = grow(3, |ring, id| balanced_tokens(ring, id, TOKENS, 3));
    let ring = Ring::new(members, 3).unwrap();
    for (node, share) in ring.primary_ownership() {
        assert!((share - 1.0 / 3.0).abs() < 0.02, "node {node}: {share}");
    }
}

#[test]
fn tokens_are_new_distinct_and_deterministic() {
    let existing: Vec<(Token, NodeId)> = even_shard_tokens(2, 16, 99)
        .into_iter()
        .map(|(t, _)| (t, 1))
        .collect();
    let a = balanced_tokens(&existing, 3, 32, 3);
    assert_eq!(a, balanced_tokens(&existing, 3, 32, 3));
    let mut all: Vec<Token> = existing
        .iter()
        .map(|&(t, _)| t)
        .chain(a.iter().copied())
        .collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 64);
}

#[test]
fn a_single_vnode_ring_is_split_in_half_at_most() {
    let tokens = balanced_tokens(&[(1000, 1)], 3, 1, 3);
    assert_eq!(tokens, vec![1000u64.wrapping_add(1 << 63)]);
}

#[test]
fn shards_are_dealt_round_robin() {
    assert_eq!(
        deal_to_shards(&[5, 9, 2, 7], 3),
        vec![(5, 0), (9, 1), (2, 2), (7, 0)]
    );
}
