//! The cluster ring: every member's tokens, and for every key its preference list, the
//! N distinct physical nodes (and on each the owning shard) that store it.
//!
//! A [`Ring`] is an immutable snapshot built from a member table; the control plane
//! builds a new one when membership changes and hands it to every shard, which only
//! reads it. Building it computes the preference list of every vnode range once, so a
//! lookup is one binary search.
//!
//! **Placement** (DESIGN.md §2): walk clockwise from the key's token over the vnodes;
//! every physical node met for the first time is a candidate, in walk order. From the
//! candidates, replicas are picked in three passes, each in walk order, until N are
//! picked:
//!
//! 1. nodes in a DC no replica is in yet;
//! 2. nodes on a (DC, rack) no replica is on yet;
//! 3. any node not picked yet.
//!
//! So replicas spread over distinct DCs, then distinct racks, while the topology allows,
//! and a cluster without `--dc`/`--rack` (one DC, one rack) gets the first N distinct
//! nodes clockwise. The first replica is always the first node clockwise: the key's
//! primary. The preference list keeps the pick order.
//!
//! **Owning shard**: on a replica node, the shard that owns the key is the shard of that
//! node's first token at or after the key's token, wrapping: the vnode the clockwise
//! walk met. That is the node's own shard map ([`super::ShardMap`] over its tokens),
//! the one it routes with locally, so a replica never needs the whole ring to find the
//! shard.

use std::collections::BTreeSet;

use super::{Token, TokenMap};

/// A node's id: a random u64 made on first start (`crate::storage::node_meta`).
pub type NodeId = u64;

/// One member of the cluster as the ring needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub node_id: NodeId,
    pub dc: String,
    pub rack: String,
    /// The node's tokens, each with the shard of that node that owns it.
    pub tokens: Vec<(Token, u16)>,
}

/// One replica of a key: the node and the shard on it that owns the key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Replica {
    pub node_id: NodeId,
    pub shard: u16,
}

/// An immutable ring snapshot.
#[derive(Clone, Debug)]
pub struct Ring {
    /// Sorted by node id.
    members: Vec<Member>,
    /// Every token → index into `members`.
    vnodes: TokenMap<u32>,
    replication_factor: usize,
    /// `lists[i]`: the preference list of keys owned by vnode `i` (tokens in
    /// `(token[i-1], token[i]]`), `min(replication_factor, members)` replicas.
    lists: Vec<Vec<Replica>>,
    /// Each member's own token → shard map (index as `members`).
    shard_maps: Vec<TokenMap<u16>>,
}

impl Ring {
    /// Builds a snapshot. Fails on an empty member table, a member without tokens, a node
    /// listed twice or a token held by two vnodes: a member table with any of these is
    /// broken, and no placement over it would be right.
    pub fn new(mut members: Vec<Member>, replication_factor: usize) -> Result<Ring, String> {
        if members.is_empty() {
            return Err("a ring needs at least one member".into());
        }
        if replication_factor == 0 {
            return Err("replication factor must be at least 1".into());
        }
        members.sort_by_key(|m| m.node_id);
        if let Some(w) = members.windows(2).find(|w| w[0].node_id == w[1].node_id) {
            return Err(format!("node {:016x} is listed twice", w[0].node_id));
        }
        let mut vnodes = Vec::new();
        for (index, member) in members.iter().enumerate() {
            if member.tokens.is_empty() {
                return Err(format!("node {:016x} has no tokens", member.node_id));
            }
            vnodes.extend(member.tokens.iter().map(|&(t, _)| (t, index as u32)));
        }
        vnodes.sort_unstable_by_key(|&(t, _)| t);
        if let Some(w) = vnodes.windows(2).find(|w| w[0].0 == w[1].0) {
            let (a, b) = (
                members[w[0].1 as usize].node_id,
                members[w[1].1 as usize].node_id,
            );
            return Err(format!(
                "token {:#018x} is held by nodes {a:016x} and {b:016x}",
                w[0].0
            ));
        }
        let vnodes = TokenMap::new(vnodes);
        let shard_maps: Vec<TokenMap<u16>> = members
            .iter()
            .map(|m| TokenMap::new(m.tokens.clone()))
            .collect();
        let lists = (0..vnodes.len())
            .map(|i| place(&members, &vnodes, &shard_maps, i, replication_factor))
            .collect();
        Ok(Ring {
            members,
            vnodes,
            replication_factor,
            lists,
            shard_maps,
        })
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn member(&self, node_id: NodeId) -> Option<&Member> {
        self.members
            .binary_search_by_key(&node_id, |m| m.node_id)
            .ok()
            .map(|i| &self.members[i])
    }

    pub fn replication_factor(&self) -> usize {
        self.replication_factor
    }

    /// The replicas of keys with this token, primary first; fewer than the replication
    /// factor only when the cluster has fewer nodes.
    pub fn preference_list(&self, token: Token) -> &[Replica] {
        &self.lists[self.vnodes.owner_index(token)]
    }

    /// How many vnode ranges the ring has (one per token).
    pub fn range_count(&self) -> usize {
        self.lists.len()
    }

    /// Vnode range `index`: tokens `(start, end]` (the previous vnode's token and its
    /// own; `start == end` for a ring of one vnode) and its preference list.
    pub fn range(&self, index: usize) -> (Token, Token, &[Replica]) {
        let vnodes = self.vnodes.vnodes();
        let end = vnodes[index].0;
        let start = vnodes[(index + vnodes.len() - 1) % vnodes.len()].0;
        (start, end, &self.lists[index])
    }

    /// The index of the vnode range holding `token`.
    pub fn range_index(&self, token: Token) -> usize {
        self.vnodes.owner_index(token)
    }

    /// The replicas of `key`.
    pub fn replicas_of_key(&self, key: &[u8]) -> &[Replica] {
        self.preference_list(super::token(key))
    }

    /// The nodes past the preference list of keys with this token, in clockwise walk
    /// order, each with its shard that owns the token: where a sloppy quorum sends a
    /// write whose preferred replicas are Down (with a hint naming the one it stands
    /// in for). Empty when every member is already a replica. Walks the ring (not kept
    /// per vnode: only writes that meet a Down replica ask).
    pub fn fallbacks(&self, token: Token) -> Vec<Replica> {
        let start = self.vnodes.owner_index(token);
        let range_token = self.vnodes.vnodes()[start].0;
        let preferred = &self.lists[start];
        walk_distinct(&self.vnodes, self.members.len(), start)
            .into_iter()
            .map(|index| (index, self.members[index].node_id))
            .filter(|&(_, node_id)| preferred.iter().all(|r| r.node_id != node_id))
            .map(|(index, node_id)| Replica {
                node_id,
                shard: *self.shard_maps[index].owner(range_token),
            })
            .collect()
    }

    /// Share of the token space each node is a replica for (its effective ownership,
    /// summing to `min(replication_factor, members)` over the nodes), by node id.
    pub fn effective_ownership(&self) -> Vec<(NodeId, f64)> {
        let mut owned = vec![0u128; self.members.len()];
        for (i, (size, _)) in self.vnodes.range_sizes().enumerate() {
            for replica in &self.lists[i] {
                owned[self.index_of(replica.node_id)] += size;
            }
        }
        self.shares(owned)
    }

    /// Share of the token space each node is the primary for (summing to 1), by node id.
    pub fn primary_ownership(&self) -> Vec<(NodeId, f64)> {
        let mut owned = vec![0u128; self.members.len()];
        for (size, &index) in self.vnodes.range_sizes() {
            owned[index as usize] += size;
        }
        self.shares(owned)
    }

    fn shares(&self, owned: Vec<u128>) -> Vec<(NodeId, f64)> {
        let space = (1u128 << 64) as f64;
        self.members
            .iter()
            .zip(owned)
            .map(|(m, o)| (m.node_id, o as f64 / space))
            .collect()
    }

    fn index_of(&self, node_id: NodeId) -> usize {
        self.members
            .binary_search_by_key(&node_id, |m| m.node_id)
            .expect("a replica is a member")
    }
}

/// The passes of placement (module doc).
#[derive(Clone, Copy)]
enum Pass {
    NewDc,
    NewRack,
    Any,
}

/// Every member (index into the member list) in the order a clockwise walk from vnode
/// `start` first meets it.
fn walk_distinct(vnodes: &TokenMap<u32>, member_count: usize, start: usize) -> Vec<usize> {
    let all = vnodes.vnodes();
    let mut seen = vec![false; member_count];
    let mut order = Vec::with_capacity(member_count);
    for step in 0..all.len() {
        let index = all[(start + step) % all.len()].1 as usize;
        if !std::mem::replace(&mut seen[index], true) {
            order.push(index);
            if order.len() == member_count {
                break;
            }
        }
    }
    order
}

/// The preference list of vnode `start`'s range (module doc, "Placement").
fn place(
    members: &[Member],
    vnodes: &TokenMap<u32>,
    shard_maps: &[TokenMap<u16>],
    start: usize,
    n: usize,
) -> Vec<Replica> {
    let range_token = vnodes.vnodes()[start].0;
    let candidates = walk_distinct(vnodes, members.len(), start);
    let n = n.min(members.len());
    let mut picked: Vec<usize> = Vec::with_capacity(n);
    let mut dcs: BTreeSet<&str> = BTreeSet::new();
    let mut racks: BTreeSet<(&str, &str)> = BTreeSet::new();
    for pass in [Pass::NewDc, Pass::NewRack, Pass::Any] {
        for &index in &candidates {
            if picked.len() == n {
                break;
            }
            let member = &members[index];
            let (dc, rack) = (member.dc.as_str(), member.rack.as_str());
            let wanted = match pass {
                Pass::NewDc => !dcs.contains(dc),
                Pass::NewRack => !racks.contains(&(dc, rack)),
                Pass::Any => true,
            };
            if wanted && !picked.contains(&index) {
                picked.push(index);
                dcs.insert(dc);
                racks.insert((dc, rack));
            }
        }
    }
    picked
        .into_iter()
        .map(|index| Replica {
            node_id: members[index].node_id,
            shard: *shard_maps[index].owner(range_token),
        })
        .collect()
}

#[cfg(test)]
mod tests;
