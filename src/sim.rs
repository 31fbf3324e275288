//! The deterministic simulator (issue 6): nodes of the real decide-then-do logic over a
//! simulated network and clock, single-threaded and seeded, so that any failing seed
//! replays exactly.
//!
//! What runs is the code the server runs: [`Gossip`] and the failure [`Detector`]
//! (the coordinator and hints join as they are built). What is simulated is only what
//! moves bytes and time: messages are delivered at a time the seeded RNG picks (a delay,
//! so messages reorder), or dropped; the world can partition the nodes, heal, crash a
//! node (it stops sending, receiving and ticking) and restart it (a new generation).
//!
//! Every status change any node's detector makes is appended to the [`Sim::trace`], with
//! the time and the observing node: tests assert on it, and two runs of one seed give
//! the same trace.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::membership::detector::{Detector, DetectorConfig, Status, Transition};
use crate::membership::gossip::{Digest, Gossip};
use crate::ring::cluster::NodeId;

/// The network's misbehaviour.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Chance that a message is lost.
    pub drop: f64,
    /// Delivery delay, uniform in this range (µs): messages overtake each other.
    pub delay_us: (u64, u64),
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            drop: 0.02,
            delay_us: (100, 20_000),
        }
    }
}

/// A message between two simulated nodes.
#[derive(Clone, Debug)]
enum Message {
    /// A gossip digest; `reply` asks for the receiver's own digest back (push-pull).
    Gossip { digest: Digest, reply: bool },
}

#[derive(Debug)]
struct InFlight {
    at_us: u64,
    seq: u64,
    from: NodeId,
    to: NodeId,
    message: Message,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_us, self.seq).cmp(&(other.at_us, other.seq))
    }
}

struct Node {
    gossip: Gossip,
    detector: Detector,
    up: bool,
}

impl Node {
    /// A node starting (or restarting) with `generation`, knowing every id in `ids`.
    fn start(id: NodeId, generation: u64, ids: &[NodeId], interval_us: u64) -> Node {
        let mut gossip = Gossip::new(id, generation);
        ids.iter().for_each(|&other| gossip.learn(other));
        let config = DetectorConfig {
            first_interval_us: interval_us,
            ..DetectorConfig::default()
        };
        Node {
            gossip,
            detector: Detector::new(config),
            up: true,
        }
    }
}

/// One recorded status change: at `at_us`, `observer`'s detector moved `node`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub at_us: u64,
    pub observer: NodeId,
    pub node: NodeId,
    pub from: Status,
    pub to: Status,
}

/// A simulated cluster.
pub struct Sim {
    rng: StdRng,
    now_us: u64,
    seq: u64,
    net: NetConfig,
    interval_us: u64,
    nodes: BTreeMap<NodeId, Node>,
    in_flight: BinaryHeap<Reverse<InFlight>>,
    /// Each node's side of a partition (absent: no partition).
    sides: BTreeMap<NodeId, u8>,
    next_round_us: BTreeMap<NodeId, u64>,
    pub trace: Vec<Event>,
}

impl Sim {
    /// `count` nodes (ids 1, 3, 5, …) that all know each other, gossiping every
    /// `interval_us`.
    pub fn new(seed: u64, count: usize, interval_us: u64, net: NetConfig) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let ids: Vec<NodeId> = (0..count as u64).map(|i| 2 * i + 1).collect();
        let mut nodes = BTreeMap::new();
        let mut next_round_us = BTreeMap::new();
        for &id in &ids {
            nodes.insert(id, Node::start(id, 1, &ids, interval_us));
            // Rounds start at a random offset, as real nodes' do.
            next_round_us.insert(id, rng.gen_range(0..interval_us));
        }
        Sim {
            rng,
            now_us: 0,
            seq: 0,
            net,
            interval_us,
            nodes,
            in_flight: BinaryHeap::new(),
            sides: BTreeMap::new(),
            next_round_us,
            trace: Vec::new(),
        }
    }

    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// What `observer`'s detector says of `node` (`None`: never heard of it).
    pub fn status(&self, observer: NodeId, node: NodeId) -> Option<Status> {
        self.nodes[&observer].detector.status(node)
    }

    /// Stops a node: it sends, receives and ticks nothing until restarted.
    pub fn crash(&mut self, node: NodeId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.up = false;
        }
    }

    /// Restarts a crashed node with a new generation (its detector starts afresh).
    pub fn restart(&mut self, node: NodeId) {
        let ids = self.node_ids();
        if let Some(n) = self.nodes.get_mut(&node) {
            *n = Node::start(node, self.now_us + 1, &ids, self.interval_us);
        }
    }

    /// Cuts the network between `side` and everyone else.
    pub fn partition(&mut self, side: &[NodeId]) {
        self.sides = self
            .nodes
            .keys()
            .map(|&n| (n, u8::from(side.contains(&n))))
            .collect();
    }

    pub fn heal(&mut self) {
        self.sides.clear();
    }

    fn reachable(&self, from: NodeId, to: NodeId) -> bool {
        self.sides.get(&from) == self.sides.get(&to)
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message) {
        if !self.reachable(from, to) || self.rng.gen_bool(self.net.drop) {
            return;
        }
        let (lo, hi) = self.net.delay_us;
        let at_us = self.now_us + self.rng.gen_range(lo..=hi.max(lo));
        self.seq += 1;
        self.in_flight.push(Reverse(InFlight {
            at_us,
            seq: self.seq,
            from,
            to,
            message,
        }));
    }

    fn record(&mut self, observer: NodeId, changes: Vec<Transition>) {
        for t in changes {
            self.trace.push(Event {
                at_us: self.now_us,
                observer,
                node: t.node,
                from: t.from,
                to: t.to,
            });
        }
    }

    /// Runs the world until `until_us`.
    pub fn run_until(&mut self, until_us: u64) {
        loop {
            let next_message = self.in_flight.peek().map(|m| m.0.at_us);
            let (&round_node, &round_at) = self
                .next_round_us
                .iter()
                .min_by_key(|(n, at)| (**at, **n))
                .expect("a simulation has nodes");
            let next = next_message.map_or(round_at, |m| m.min(round_at));
            if next > until_us {
                self.now_us = until_us;
                return;
            }
            self.now_us = next;
            if next_message == Some(next) && next <= round_at {
                let Reverse(m) = self.in_flight.pop().expect("peeked");
                self.deliver(m);
            } else {
                self.next_round_us
                    .insert(round_node, round_at + self.interval_us);
                self.round(round_node);
            }
        }
    }

    /// One gossip round of `node`: beat, tick the detector, push to up to 3 peers.
    fn round(&mut self, node: NodeId) {
        let now = self.now_us;
        let Some(n) = self.nodes.get_mut(&node) else {
            return;
        };
        if !n.up {
            return;
        }
        n.gossip.beat();
        let changes = n.detector.tick(now);
        let digest = n.gossip.digest();
        let peers = n.gossip.pick_peers(&mut self.rng);
        self.record(node, changes);
        for peer in peers {
            self.send(
                node,
                peer,
                Message::Gossip {
                    digest: digest.clone(),
                    reply: true,
                },
            );
        }
    }

    fn deliver(&mut self, m: InFlight) {
        let now = self.now_us;
        let Some(n) = self.nodes.get_mut(&m.to) else {
            return;
        };
        if !n.up {
            return;
        }
        let Message::Gossip { digest, reply } = m.message;
        let changes = n.gossip.receive(m.from, &digest, now, &mut n.detector);
        let answer = reply.then(|| n.gossip.digest());
        self.record(m.to, changes);
        if let Some(digest) = answer {
            self.send(
                m.to,
                m.from,
                Message::Gossip {
                    digest,
                    reply: false,
                },
            );
        }
    }

    /// Nodes `observer` currently holds Down.
    pub fn down_as_seen_by(&self, observer: NodeId) -> BTreeSet<NodeId> {
        self.node_ids()
            .into_iter()
            .filter(|&n| self.status(observer, n) == Some(Status::Down))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;
    const SEEDS: u64 = 20;

    fn sim(seed: u64) -> Sim {
        Sim::new(seed, 5, SECOND, NetConfig::default())
    }

    #[test]
    fn a_healthy_cluster_marks_nobody_down() {
        for seed in 0..SEEDS {
            let mut s = sim(seed);
            s.run_until(120 * SECOND);
            let downs: Vec<&Event> = s.trace.iter().filter(|e| e.to == Status::Down).collect();
            assert!(downs.is_empty(), "seed {seed}: {downs:?}");
            for a in s.node_ids() {
                for b in s.node_ids().into_iter().filter(|&b| b != a) {
                    assert_eq!(
                        s.status(a, b),
                        Some(Status::Up),
                        "seed {seed}: {a} sees {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_crashed_node_is_down_everywhere_within_seconds_and_up_after_restart() {
        for seed in 0..SEEDS {
            let mut s = sim(seed);
            s.run_until(30 * SECOND);
            s.crash(9);
            s.run_until(30 * SECOND + 8 * SECOND);
            for observer in [1, 3, 5, 7] {
                assert_eq!(
                    s.down_as_seen_by(observer),
                    BTreeSet::from([9]),
                    "seed {seed}"
                );
            }
            let detected = s
                .trace
                .iter()
                .filter(|e| e.node == 9 && e.to == Status::Down)
                .map(|e| e.at_us - 30 * SECOND)
                .max()
                .unwrap();
            assert!(detected <= 8 * SECOND, "seed {seed}: {detected}");
            s.restart(9);
            s.run_until(50 * SECOND);
            for observer in [1, 3, 5, 7] {
                assert!(s.down_as_seen_by(observer).is_empty(), "seed {seed}");
            }
        }
    }

    #[test]
    fn a_partition_splits_the_views_and_healing_rejoins_them() {
        for seed in 0..SEEDS {
            let mut s = sim(seed);
            s.run_until(30 * SECOND);
            s.partition(&[1, 3]);
            s.run_until(45 * SECOND);
            // Each side holds the other Down (each side's own gossip confirms).
            assert_eq!(
                s.down_as_seen_by(1),
                BTreeSet::from([5, 7, 9]),
                "seed {seed}"
            );
            assert_eq!(s.down_as_seen_by(5), BTreeSet::from([1, 3]), "seed {seed}");
            s.heal();
            s.run_until(60 * SECOND);
            for observer in s.node_ids() {
                assert!(s.down_as_seen_by(observer).is_empty(), "seed {seed}");
            }
        }
    }

    #[test]
    fn a_node_cut_off_alone_cannot_confirm_its_suspicions() {
        // Node 1 alone on its side: it suspects everyone but nobody can confirm for it.
        let mut s = sim(3);
        s.run_until(30 * SECOND);
        s.partition(&[1]);
        s.run_until(45 * SECOND);
        assert!(s.down_as_seen_by(1).is_empty());
        assert!(s
            .node_ids()
            .iter()
            .filter(|&&n| n != 1)
            .all(|&n| s.status(1, n) == Some(Status::Suspect)));
        // The others, four of them, confirm each other's suspicion of node 1.
        assert_eq!(s.down_as_seen_by(3), BTreeSet::from([1]));
    }

    #[test]
    fn a_seed_replays_exactly() {
        let run = |seed| {
            let mut s = Sim::new(
                seed,
                5,
                SECOND,
                NetConfig {
                    drop: 0.2,
                    delay_us: (100, 900_000),
                },
            );
            s.run_until(20 * SECOND);
            s.crash(5);
            s.run_until(40 * SECOND);
            s.partition(&[1, 9]);
            s.run_until(60 * SECOND);
            s.heal();
            s.restart(5);
            s.run_until(90 * SECOND);
            s.trace
        };
        let first = run(42);
        assert!(!first.is_empty());
        assert_eq!(first, run(42));
        assert_ne!(first, run(43));
    }
}
