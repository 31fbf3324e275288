//! Who is in the cluster: the member table, the ring snapshot built from it, gossip
//! and the failure detector.
//!
//! A node started with `--seeds` fetches the table from a seed, picks its tokens
//! against the ring it describes ([`crate::ring::allocate`]), and from then on gossips
//! every `--membership-interval-ms` with up to 3 random members and any seed it does
//! not know as a member, push-pull ([`Exchange`]): its member table, every heartbeat it
//! knows ([`gossip`]) and every node's load. Tables merge by union; for a node listed
//! on both sides, the entry with the larger `generation` (the node's start time) wins,
//! so a restarted node's new address replaces the old one. Heartbeats feed the
//! phi-accrual failure [`detector`]; what it decides reaches every shard as a
//! [`Health`].
//!
//! The exchange travels in MEMBERS frames as postcard (docs/protocol.md), decoded with
//! every count checked against the frame's length and every member checked (tokens,
//! shards) before it is believed.

pub mod detector;
pub mod gossip;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ring::cluster::{Member, NodeId, Ring};
use crate::ring::Token;
use crate::storage::node_tokens::TOKENS_MAX;

/// Most members a table may hold.
pub const MEMBERS_MAX: usize = 4096;

/// One node as the cluster knows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub node_id: NodeId,
    /// When this incarnation of the node started (µs since the epoch): a newer entry
    /// for the same node replaces an older one.
    pub generation: u64,
    pub host: String,
    /// Client port; shard `k` listens on `port + 1 + k`.
    pub port: u16,
    pub shards: u16,
    pub dc: String,
    pub rack: String,
    /// The `--replication-factor` the node runs with: every node of a cluster must
    /// place keys the same way, so a node started with another is refused.
    pub replication_factor: u8,
    /// The node's `--conflicts` mode (`dvv` or `lww`): sets of the two kinds must not
    /// meet in one key, so a node started with the other is refused too.
    pub conflicts: String,
    /// `(token, shard)`, ascending by token.
    pub tokens: Vec<(Token, u16)>,
}

impl MemberInfo {
    /// The port of the node's shard `shard`.
    pub fn shard_port(&self, shard: u16) -> u16 {
        self.port.wrapping_add(1).wrapping_add(shard)
    }

    fn check(&self) -> Result<(), String> {
        let who = format!("member {:016x}", self.node_id);
        if self.shards == 0 || self.tokens.is_empty() || self.tokens.len() > TOKENS_MAX {
            return Err(format!(
                "{who}: {} shards, {} tokens",
                self.shards,
                self.tokens.len()
            ));
        }
        if u32::from(self.port) + 1 + u32::from(self.shards) > u32::from(u16::MAX) {
            return Err(format!(
                "{who}: port {} with {} shards runs past 65535",
                self.port, self.shards
            ));
        }
        for (i, &(token, shard)) in self.tokens.iter().enumerate() {
            if shard >= self.shards {
                return Err(format!(
                    "{who}: token {token:#x} names shard {shard} of {}",
                    self.shards
                ));
            }
            if i > 0 && self.tokens[i - 1].0 >= token {
                return Err(format!("{who}: tokens are not ascending at {token:#x}"));
            }
        }
        Ok(())
    }
}

/// Every member this node knows, by node id, and the nodes replaced by others.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberTable {
    members: BTreeMap<NodeId, MemberInfo>,
    /// Node → the node that took over its tokens (`ringkv server --replace`). A replaced
    /// node never becomes a member again: its entry in any table is dropped on merge.
    replaced: BTreeMap<NodeId, NodeId>,
}

impl MemberTable {
    pub fn new(members: impl IntoIterator<Item = MemberInfo>) -> Self {
        let mut table = MemberTable::default();
        for member in members {
            table.insert(member);
        }
        table
    }

    /// Adds or replaces (if newer) one member; whether the table changed. A node that
    /// was replaced is not taken back.
    pub fn insert(&mut self, member: MemberInfo) -> bool {
        if self.replaced.contains_key(&member.node_id) {
            return false;
        }
        match self.members.get(&member.node_id) {
            Some(known) if known.generation >= member.generation => false,
            _ => {
                self.members.insert(member.node_id, member);
                true
            }
        }
    }

    /// `new` takes over `old`'s tokens: `old` leaves the table for good.
    pub fn replace(&mut self, old: NodeId, new: MemberInfo) {
        self.members.remove(&old);
        self.replaced.insert(old, new.node_id);
        self.insert(new);
    }

    /// The nodes replaced by others: `(old, new)`.
    pub fn replaced(&self) -> impl Iterator<Item = (NodeId, NodeId)> + '_ {
        self.replaced.iter().map(|(&old, &new)| (old, new))
    }

    /// Takes in what `other` knows; whether the table changed.
    pub fn merge(&mut self, other: &MemberTable) -> bool {
        let mut changed = false;
        for (&old, &new) in &other.replaced {
            if self.replaced.insert(old, new).is_none() {
                changed = true;
            }
            changed |= self.members.remove(&old).is_some();
        }
        for member in other.members.values() {
            changed |= self.insert(member.clone());
        }
        changed
    }

    pub fn get(&self, node_id: NodeId) -> Option<&MemberInfo> {
        self.members.get(&node_id)
    }

    pub fn members(&self) -> impl Iterator<Item = &MemberInfo> + '_ {
        self.members.values()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The ring snapshot of this table.
    pub fn ring(&self, replication_factor: usize) -> Result<Ring, String> {
        Ring::new(
            self.members
                .values()
                .map(|m| Member {
                    node_id: m.node_id,
                    dc: m.dc.clone(),
                    rack: m.rack.clone(),
                    tokens: m.tokens.clone(),
                })
                .collect(),
            replication_factor,
        )
    }

    /// Every vnode of the table as `(token, node)`, for the token allocator.
    pub fn vnodes(&self) -> Vec<(Token, NodeId)> {
        self.members
            .values()
            .flat_map(|m| m.tokens.iter().map(move |&(t, _)| (t, m.node_id)))
            .collect()
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a member table always serializes")
    }

    /// Decodes and checks a table received from a peer. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<MemberTable, String> {
        let table: MemberTable = postcard::from_bytes(bytes)
            .map_err(|e| format!("member table does not decode: {e}"))?;
        table.check()?;
        Ok(table)
    }

    /// What a decoded table must hold to be believed.
    fn check(&self) -> Result<(), String> {
        if self.members.len() > MEMBERS_MAX || self.replaced.len() > MEMBERS_MAX {
            return Err(format!(
                "{} members and {} replaced, limit {MEMBERS_MAX}",
                self.members.len(),
                self.replaced.len()
            ));
        }
        if let Some(old) = self
            .replaced
            .keys()
            .find(|old| self.members.contains_key(old))
        {
            return Err(format!("node {old:016x} is both a member and replaced"));
        }
        for (id, member) in &self.members {
            if *id != member.node_id {
                return Err(format!(
                    "member {:016x} is filed under {id:016x}",
                    member.node_id
                ));
            }
            member.check()?;
        }
        Ok(())
    }
}

/// Most heartbeats or loads an exchange may carry.
pub const DIGEST_MAX: usize = MEMBERS_MAX;

/// One gossip message (a MEMBERS request or its answer): who sends it, its member
/// table, every heartbeat it knows, and every node's load as it last heard it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Exchange {
    pub from: NodeId,
    pub table: MemberTable,
    pub heartbeats: gossip::Digest,
    /// `(node, heartbeat when measured, bytes stored)`: the newer heartbeat wins.
    pub loads: Vec<(NodeId, detector::Heartbeat, u64)>,
}

impl Exchange {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("an exchange always serializes")
    }

    /// Decodes and checks an exchange received from a peer. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Exchange, String> {
        let exchange: Exchange =
            postcard::from_bytes(bytes).map_err(|e| format!("gossip does not decode: {e}"))?;
        if exchange.heartbeats.len() > DIGEST_MAX || exchange.loads.len() > DIGEST_MAX {
            return Err(format!(
                "{} heartbeats and {} loads, limit {DIGEST_MAX}",
                exchange.heartbeats.len(),
                exchange.loads.len()
            ));
        }
        exchange.table.check()?;
        Ok(exchange)
    }
}

/// What the failure detector holds of every peer, as the shards see it: published by
/// the control plane whenever a status changes. A node not listed is Up (nothing
/// against it yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Health {
    /// Peers that are not Up, with their status and since when (µs since the epoch).
    pub not_up: BTreeMap<NodeId, (detector::Status, u64)>,
}

impl Health {
    /// Whether writes and reads should count on `node`: Up or only Suspect (a suspicion
    /// the detector has not confirmed does not reroute traffic; a replica that then
    /// fails to answer in time gets a hint from its coordinator anyway).
    pub fn is_up(&self, node: NodeId) -> bool {
        !matches!(self.not_up.get(&node), Some((detector::Status::Down, _)))
    }

    /// Since when `node` is Down, if it is.
    pub fn down_since_us(&self, node: NodeId) -> Option<u64> {
        match self.not_up.get(&node) {
            Some(&(detector::Status::Down, since)) => Some(since),
            _ => None,
        }
    }
}

/// One member as a node sees it, for `ringkv status` (CLUSTER_STATUS, postcard).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PeerView {
    pub node_id: NodeId,
    pub host: String,
    pub port: u16,
    pub dc: String,
    pub rack: String,
    pub tokens: u32,
    /// The observer itself is always Up.
    pub status: detector::Status,
    pub phi: f64,
    pub heartbeat: detector::Heartbeat,
    /// Bytes the node stores, as gossip last carried it.
    pub load_bytes: Option<u64>,
    /// Hints the observer holds for this node (all shards), and their bytes.
    pub hints: u64,
    pub hint_bytes: u64,
    /// When the observer last completed an anti-entropy sync with this node (µs since
    /// the epoch; 0: never), and the keys its syncs with it repaired since it started.
    pub last_sync_us: u64,
    pub keys_repaired: u64,
}

/// A node's whole view, for `ringkv status`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct ClusterView {
    pub observer: NodeId,
    pub replication_factor: u8,
    pub members: Vec<PeerView>,
    /// Hints dropped past the hint window, and refused for want of room, since start.
    pub hints_dropped: u64,
    pub hints_refused: u64,
}

impl ClusterView {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a cluster view always serializes")
    }

    pub fn decode(bytes: &[u8]) -> Result<ClusterView, String> {
        let view: ClusterView = postcard::from_bytes(bytes)
            .map_err(|e| format!("cluster view does not decode: {e}"))?;
        if view.members.len() > MEMBERS_MAX {
            return Err(format!(
                "{} members, limit {MEMBERS_MAX}",
                view.members.len()
            ));
        }
        Ok(view)
    }
}

/// What every shard routes with: the ring and the addresses of its nodes. Immutable;
/// the control plane publishes a new one (`Arc`) when the table changes.
#[derive(Debug)]
pub struct Snapshot {
    pub ring: Ring,
    pub members: MemberTable,
}

impl Snapshot {
    pub fn new(members: MemberTable, replication_factor: usize) -> Result<Snapshot, String> {
        Ok(Snapshot {
            ring: members.ring(replication_factor)?,
            members,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(node_id: NodeId, generation: u64, port: u16, tokens: &[(Token, u16)]) -> MemberInfo {
        MemberInfo {
            node_id,
            generation,
            host: "127.0.0.1".into(),
            port,
            shards: 2,
            dc: "dc1".into(),
            rack: "rack1".into(),
            replication_factor: 3,
            conflicts: "dvv".into(),
            tokens: tokens.to_vec(),
        }
    }

    #[test]
    fn tables_merge_by_union_and_the_newer_generation_wins() {
        let mut a = MemberTable::new([member(1, 10, 7000, &[(5, 0)])]);
        let b = MemberTable::new([
            member(3, 10, 7100, &[(9, 1)]),
            member(1, 11, 7200, &[(5, 0)]),
        ]);
        assert!(a.merge(&b));
        assert_eq!(a.len(), 2);
        assert_eq!(a.get(1).unwrap().port, 7200, "generation 11 replaced 10");
        assert!(!a.merge(&b), "merging again changes nothing");
        let old = MemberTable::new([member(1, 9, 7300, &[(5, 0)])]);
        assert!(!a.merge(&old), "an older generation is ignored");
        let ring = a.ring(3).unwrap();
        assert_eq!(ring.members().len(), 2);
        assert_eq!(a.get(3).unwrap().shard_port(1), 7102);
    }

    #[test]
    fn encoded_tables_round_trip_and_bad_ones_are_refused() {
        let table = MemberTable::new([member(1, 1, 7000, &[(5, 0), (9, 1)])]);
        assert_eq!(MemberTable::decode(&table.encode()).unwrap(), table);
        for bad in [
            member(1, 1, 7000, &[(5, 2)]),         // shard 2 of 2
            member(1, 1, 7000, &[(9, 0), (5, 1)]), // descending
            member(1, 1, 7000, &[]),               // no tokens
            member(1, 1, 65534, &[(5, 0)]),        // shard ports past 65535
        ] {
            let encoded = MemberTable::new([bad.clone()]).encode();
            assert!(MemberTable::decode(&encoded).is_err(), "{bad:?} accepted");
        }
        let encoded = table.encode();
        for len in 0..encoded.len() {
            let _ = MemberTable::decode(&encoded[..len]);
        }
        assert!(MemberTable::decode(&[0xff; 64]).is_err());
    }
}
