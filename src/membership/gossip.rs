//! Heartbeat gossip (DESIGN.md §6), the decide half: each node bumps its own heartbeat
//! every round and exchanges what it knows of everyone's with up to [`FANOUT`] random
//! peers, push-pull. What arrives feeds the failure detector ([`super::detector`]): a
//! newer heartbeat than known is a heartbeat; one no newer, from a third node, tells
//! that node has not heard anything fresher either (a confirmation of a suspicion).
//!
//! No I/O here: the control plane (and the simulator, `crate::sim`) carries the
//! digests as messages and calls [`Gossip::receive`] with each.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::Rng;

use super::detector::{Detector, Heartbeat, Transition};
use crate::ring::cluster::NodeId;

/// Peers a node gossips with per round.
pub const FANOUT: usize = 3;

/// What one node sends: every heartbeat it knows, its own included.
pub type Digest = Vec<(NodeId, Heartbeat)>;

/// One node's heartbeat table.
#[derive(Clone, Debug)]
pub struct Gossip {
    me: NodeId,
    known: BTreeMap<NodeId, Heartbeat>,
}

impl Gossip {
    /// A node starting with `generation` (its start time: a restart bumps it).
    pub fn new(me: NodeId, generation: u64) -> Gossip {
        let own = Heartbeat {
            generation,
            counter: 0,
        };
        Gossip {
            me,
            known: BTreeMap::from([(me, own)]),
        }
    }

    pub fn me(&self) -> NodeId {
        self.me
    }

    /// Bumps this node's heartbeat: call once per gossip round, before sending.
    pub fn beat(&mut self) {
        if let Some(own) = self.known.get_mut(&self.me) {
            own.counter += 1;
        }
    }

    /// Every heartbeat known, to send.
    pub fn digest(&self) -> Digest {
        self.known.iter().map(|(&n, &h)| (n, h)).collect()
    }

    /// Makes a seed (or any address learnt elsewhere) known, with no heartbeat yet.
    pub fn learn(&mut self, node: NodeId) {
        self.known.entry(node).or_default();
    }

    /// Up to [`FANOUT`] peers to gossip with this round, at random among the known.
    pub fn pick_peers(&self, rng: &mut impl Rng) -> Vec<NodeId> {
        let mut peers: Vec<NodeId> = self
            .known
            .keys()
            .copied()
            .filter(|&n| n != self.me)
            .collect();
        peers.shuffle(rng);
        peers.truncate(FANOUT);
        peers
    }

    /// Takes a digest from `from` at `now_us`: newer heartbeats are kept and fed to the
    /// detector as heartbeats, the others as what `from` has (not) heard. Returns the
    /// status changes that caused.
    pub fn receive(
        &mut self,
        from: NodeId,
        digest: &[(NodeId, Heartbeat)],
        now_us: u64,
        detector: &mut Detector,
    ) -> Vec<Transition> {
        let mut changes = Vec::new();
        for &(node, heartbeat) in digest {
            if node == self.me {
                continue; // nobody knows our heartbeat better than we do
            }
            let known = self.known.entry(node).or_default();
            if heartbeat > *known {
                *known = heartbeat;
                changes.extend(detector.heartbeat(node, heartbeat, now_us));
            } else if heartbeat.counter > 0 {
                changes.extend(detector.gossip_from(from, node, heartbeat, now_us));
            }
        }
        changes
    }

    /// The newest heartbeat known of `node`.
    pub fn heartbeat_of(&self, node: NodeId) -> Option<Heartbeat> {
        self.known.get(&node).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::membership::detector::{DetectorConfig, Status};
    use rand::SeedableRng;

    #[test]
    fn newer_heartbeats_travel_and_stale_ones_do_not_overwrite() {
        let mut a = Gossip::new(1, 100);
        let mut b = Gossip::new(3, 200);
        let mut detector = Detector::new(DetectorConfig::default());
        a.beat();
        a.beat();
        let changes = b.receive(1, &a.digest(), 0, &mut detector);
        assert!(changes.is_empty(), "a new peer starts Up: {changes:?}");
        assert_eq!(b.heartbeat_of(1).map(|h| h.counter), Some(2));
        // An older digest (reordered on the way) changes nothing.
        let old = vec![(
            1,
            Heartbeat {
                generation: 100,
                counter: 1,
            },
        )];
        b.receive(5, &old, 10, &mut detector);
        assert_eq!(b.heartbeat_of(1).map(|h| h.counter), Some(2));
        // Nobody can tell b about b.
        let forged = vec![(
            3,
            Heartbeat {
                generation: 999,
                counter: 9,
            },
        )];
        b.receive(1, &forged, 10, &mut detector);
        assert_eq!(b.heartbeat_of(3).map(|h| h.generation), Some(200));
    }

    #[test]
    fn a_third_nodes_stale_view_confirms_a_suspicion() {
        let mut me = Gossip::new(1, 1);
        let mut detector = Detector::new(DetectorConfig::default());
        let beat = |counter| Heartbeat {
            generation: 1,
            counter,
        };
        for i in 1..=10u64 {
            me.receive(3, &[(3, beat(i))], i * 1_000_000, &mut detector);
        }
        detector.tick(20_000_000);
        assert_eq!(detector.status(3), Some(Status::Suspect));
        // Node 5 gossips node 3's heartbeat as 10: it has heard nothing newer either.
        let changes = me.receive(5, &[(3, beat(10)), (5, beat(1))], 21_000_000, &mut detector);
        assert!(
            changes.iter().any(|t| t.node == 3 && t.to == Status::Down),
            "{changes:?}"
        );
    }

    #[test]
    fn peers_are_picked_among_the_known_never_self() {
        let mut g = Gossip::new(1, 1);
        for n in [3, 5, 7, 9, 11] {
            g.learn(n);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..20 {
            let peers = g.pick_peers(&mut rng);
            assert_eq!(peers.len(), FANOUT);
            assert!(!peers.contains(&1));
        }
    }
}
