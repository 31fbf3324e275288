//! Who is in the cluster: the member table, and the ring snapshot built from it.
//!
//! Static membership for now (gossip comes later and takes this table over; its
//! heartbeat exchange is [`gossip`], the failure detector it feeds is [`detector`],
//! both decide-only and run by the simulator, `crate::sim`, not yet by the server): a node started with `--seeds` fetches the table from a seed, picks its
//! tokens against the ring it describes ([`crate::ring::allocate`]), and from then on
//! every node exchanges tables with its seeds and the members it knows, push-pull,
//! every `--membership-interval-ms`. Tables merge by union; for a node listed on both
//! sides, the entry with the larger `generation` (the node's start time) wins, so a
//! restarted node's new address replaces the old one.
//!
//! The table travels in MEMBERS frames as postcard (docs/protocol.md), decoded with
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

/// Every member this node knows, by node id.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct MemberTable {
    members: BTreeMap<NodeId, MemberInfo>,
}

impl MemberTable {
    pub fn new(members: impl IntoIterator<Item = MemberInfo>) -> Self {
        let mut table = MemberTable::default();
        for member in members {
            table.insert(member);
        }
        table
    }

    /// Adds or replaces (if newer) one member; whether the table changed.
    pub fn insert(&mut self, member: MemberInfo) -> bool {
        match self.members.get(&member.node_id) {
            Some(known) if known.generation >= member.generation => false,
            _ => {
                self.members.insert(member.node_id, member);
                true
            }
        }
    }

    /// Takes in what `other` knows; whether the table changed.
    pub fn merge(&mut self, other: &MemberTable) -> bool {
        let mut changed = false;
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
        if table.members.len() > MEMBERS_MAX {
            return Err(format!(
                "{} members, limit {MEMBERS_MAX}",
                table.members.len()
            ));
        }
        for (id, member) in &table.members {
            if *id != member.node_id {
                return Err(format!(
                    "member {:016x} is filed under {id:016x}",
                    member.node_id
                ));
            }
            member.check()?;
        }
        Ok(table)
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
