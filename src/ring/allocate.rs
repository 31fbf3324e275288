//! Token allocation for a node joining a ring: split the ranges whose split balances the
//! ring best, rather than land at random.
//!
//! With random tokens a node's share of the ring is a sum of a few random gaps: with 32
//! tokens per node the most loaded of 20 nodes stores about a quarter more than its
//! share, and a few nodes a third (the tests measure it). [`balanced_tokens`] gives the
//! joining node its tokens one at a time. Each new token takes the start of an existing
//! range, `1 / (nodes + 1) / count` of the ring (or all of the range but its last
//! token, if smaller). Of the largest ranges, it splits the one after which every node's
//! *effective* ownership (the share of the ring it is a replica for, at the replication
//! factor) is closest to the ideal `rf / (nodes + 1)` and every node's primary
//! ownership closest to `1 / (nodes + 1)`, by the sum of squared relative differences. So the joining node takes load from the nodes that store the most, not
//! merely from the primaries of the largest ranges: inserting a node in front of a
//! range moves that range's *last* replica off, which is another node.
//!
//! Effective ownership here walks the ring for distinct nodes and ignores racks and
//! DCs; with racks, placement ([`super::cluster`]) may pick other replicas and the
//! balance is looser.
//!
//! Plain data and pure functions (decide, then do): the control plane calls it with the
//! ring it knows and stores the answer in the node's metadata.

use std::collections::BTreeMap;

use super::cluster::NodeId;
use super::Token;

/// Ranges tried per new token: the largest ones. Bounds the work per join to
/// `count × CANDIDATES` ownership computations of the whole ring.
const CANDIDATES: usize = 48;

/// `count` new tokens for node `new_node` joining a ring whose vnodes are `existing`
/// (`(token, node)`, any order, not empty, tokens distinct), in the order they were
/// chosen, for a cluster storing `replication_factor` replicas of each key.
/// Deterministic: the same ring gives the same tokens.
pub fn balanced_tokens(
    existing: &[(Token, NodeId)],
    new_node: NodeId,
    count: usize,
    replication_factor: usize,
) -> Vec<Token> {
    assert!(
        !existing.is_empty(),
        "the first node's tokens are even_shard_tokens"
    );
    let mut nodes: Vec<NodeId> = existing.iter().map(|&(_, n)| n).collect();
    nodes.sort_unstable();
    nodes.dedup();
    assert!(
        nodes.binary_search(&new_node).is_err(),
        "node {new_node:016x} is already on the ring"
    );
    nodes.push(new_node);
    let index_of: BTreeMap<NodeId, u32> = nodes
        .iter()
        .enumerate()
        .map(|(i, &n)| (n, i as u32))
        .collect();
    let new_index = index_of[&new_node];
    let mut ring: Vec<(Token, u32)> = existing.iter().map(|&(t, n)| (t, index_of[&n])).collect();
    ring.sort_unstable_by_key(|&(t, _)| t);
    assert!(
        ring.windows(2).all(|w| w[0].0 != w[1].0),
        "duplicate token in the ring"
    );

    let members = nodes.len();
    let rf = replication_factor.clamp(1, members);
    let ideal = rf as f64 / members as f64;
    let ideal_primary = 1.0 / members as f64;
    let per_token = ((1u128 << 64) / members as u128 / count.max(1) as u128).max(1);
    let mut chosen = Vec::with_capacity(count);
    let mut scratch = Scratch::new(members);
    for _ in 0..count {
        let mut candidates: Vec<(u128, Token)> = ranges(&ring)
            .filter(|&(size, _, _)| size >= 2)
            .map(|(size, start, _)| (size, start))
            .collect();
        // Largest first; ties by start, for determinism.
        candidates.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        candidates.truncate(CANDIDATES);
        let mut best: Option<(f64, Token)> = None;
        let takes = |size: u128| {
            [
                per_token.min(size - 1),
                (size / 2).max(1),
                (size / 4).max(1),
            ]
        };
        for (token, _) in candidates.iter().flat_map(|&(size, start)| {
            takes(size).map(|take| (start.wrapping_add(take as u64), size))
        }) {
            let at = ring.partition_point(|&(t, _)| t < token);
            let mut trial = ring.clone();
            trial.insert(at, (token, new_index));
            scratch.measure(&trial, rf);
            let score: f64 = scratch
                .effective
                .iter()
                .map(|&owned| ((owned - ideal) / ideal).powi(2))
                .chain(
                    (scratch.primary.iter())
                        .map(|&owned| ((owned - ideal_primary) / ideal_primary).powi(2)),
                )
                .sum();
            if best.map_or(true, |(s, _)| score < s) {
                best = Some((score, token));
            }
        }
        let Some((_, token)) = best else {
            break; // every range is one token wide
        };
        let at = ring.partition_point(|&(t, _)| t < token);
        ring.insert(at, (token, new_index));
        chosen.push(token);
    }
    chosen
}

/// Deals tokens to a node's shards round robin: the i-th token to shard `i % shards`.
pub fn deal_to_shards(tokens: &[Token], shards: u16) -> Vec<(Token, u16)> {
    assert!(shards > 0);
    tokens
        .iter()
        .enumerate()
        .map(|(i, &t)| (t, (i % shards as usize) as u16))
        .collect()
}

/// Every range of a sorted ring as `(size, start, owner)`: the vnode at token `t` owns
/// `(previous token, t]`, so `size = t - previous` (wrapping; a single vnode owns all
/// 2^64) and a token placed at `start + k`, `0 < k < size`, takes `k` of it.
fn ranges<T: Copy>(ring: &[(Token, T)]) -> impl Iterator<Item = (u128, Token, T)> + '_ {
    let last = ring.last().expect("ring not empty").0;
    let single = ring.len() == 1;
    let mut previous = last;
    ring.iter().map(move |&(token, owner)| {
        let size = if single {
            1u128 << 64
        } else {
            u128::from(token.wrapping_sub(previous))
        };
        let start = previous;
        previous = token;
        (size, start, owner)
    })
}

/// Ownership of a trial ring, in buffers reused across trials.
struct Scratch {
    /// Per node: share of the ring it is a replica for.
    effective: Vec<f64>,
    /// Per node: share of the ring it is the primary for.
    primary: Vec<f64>,
    seen: Vec<u32>,
    stamp: u32,
}

impl Scratch {
    fn new(members: usize) -> Self {
        Scratch {
            effective: vec![0.0; members],
            primary: vec![0.0; members],
            seen: vec![0; members],
            stamp: 0,
        }
    }

    /// Every range counts for the first `rf` distinct nodes clockwise from it (racks
    /// ignored), the first of them its primary.
    fn measure(&mut self, ring: &[(Token, u32)], rf: usize) {
        self.effective.iter_mut().for_each(|o| *o = 0.0);
        self.primary.iter_mut().for_each(|o| *o = 0.0);
        let space = (1u128 << 64) as f64;
        for (i, (size, _, _)) in ranges(ring).enumerate() {
            self.stamp += 1;
            let share = size as f64 / space;
            let mut found = 0;
            for step in 0..ring.len() {
                let node = ring[(i + step) % ring.len()].1 as usize;
                if self.seen[node] != self.stamp {
                    self.seen[node] = self.stamp;
                    if found == 0 {
                        self.primary[node] += share;
                    }
                    self.effective[node] += share;
                    found += 1;
                    if found == rf {
                        break;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
