//! The deterministic simulator (issue 6): five nodes running the real decide-then-do
//! logic over a simulated network, disk and clock, single-threaded and seeded, so that
//! any failing seed replays exactly.
//!
//! # What runs
//!
//! The code the server decides with, called as the server calls it:
//!
//! - membership: [`Gossip`](crate::membership::gossip::Gossip) rounds and the
//!   phi-accrual [`Detector`](crate::membership::detector::Detector) (Down only when
//!   a second source confirms);
//! - placement: the [`Ring`] (preference lists, fallbacks), and
//!   [`plan_write`](crate::replication::placement::plan_write) over the node's own
//!   detector view (Up = not Down): coordinate, forward, or Unavailable; sloppy or
//!   strict quorum; [`owed_hints`](crate::replication::placement::owed_hints) once a
//!   write's targets all answered or timed out;
//! - counting: [`needed`](crate::replication::needed),
//!   [`WriteQuorum`](crate::replication::quorum::WriteQuorum) and
//!   [`ReadQuorum`](crate::replication::quorum::ReadQuorum) (the read's merge, and the
//!   stale replicas read repair writes to);
//! - versions: [`VersionSet::coordinate`](crate::version::VersionSet::coordinate) on
//!   the coordinator's own stored set with its own dot and a fresh clock, `sync` for
//!   every merge, the set and context codecs on every message;
//! - hints: the [`HintBook`](crate::replication::hints::HintBook) (byte budget, window,
//!   replay batches, removal on the target's ack), over a durable hint log.
//!
//! `coordinator.rs` carries out those decisions in the order `server::coordinator`
//! does (the local write durable before it counts and before the replicas are sent
//! to; a stand-in coordinating stores the set and keeps its hint first); `node.rs` is
//! the replica side (merge, acknowledge once durable; keep a hint, acknowledge once
//! durable) and hint replay to targets the detector holds Up.
//!
//! # What is simulated
//!
//! Only what moves bytes and time, all drawn from the seed:
//!
//! - **network** ([`NetConfig`]): each message is delivered after a random delay (so
//!   messages reorder) or dropped; [`Sim::partition`] cuts some nodes off from the
//!   rest until [`Sim::heal`]; [`Sim::set_net`] makes storms. Clients reach every
//!   node; one that connects to a crashed node is refused at once.
//! - **disk** (`disk.rs`): a key → version set store and a hint log whose records are
//!   durable only once their simulated fdatasync completed ([`SimConfig::fsync_us`],
//!   in append order); reads see a record once the node observed its sync, as in the
//!   engine's `batch` mode.
//! - **processes**: [`Sim::crash`] (`kill -9` or power) keeps only the synced records
//!   and loses everything else — unsynced records, coordinations and forwards in flight,
//!   the hint book, membership state; [`Sim::restart`] rebuilds the node from its disk
//!   with a new gossip generation (the book from the hint log, the fresh clock above
//!   the counters it stores). [`Sim::crash_when_unsynced`] aims a crash at a moment it
//!   costs something. [`Sim::pause`] stops a node SIGSTOP-like (what reaches it and its
//!   timers wait) until [`Sim::resume`].
//! - **clients** (`client.rs`): a few closed loops of reads and of writes of unique
//!   values, each to a random node, a write carrying the context of the client's last
//!   read of the key; every operation is recorded in a [`History`]. Then every key
//!   is read at R = N.
//!
//! # Runs and checks
//!
//! [`run_scenario`] draws a fault schedule per seed ([`FaultMix`]: crashes, power loss
//! of several nodes at once, pauses, partitions of one or two nodes, message storms;
//! they overlap), then heals everything, restarts every node, lets the cluster settle
//! and reads every key at R = N; the [`Report`] holds
//! [`History::lost_writes`](crate::history::History::lost_writes) and the stricter
//! [`History::lost_writes_by_value`](crate::history::History::lost_writes_by_value)
//! (and [`History::stale_reads`](crate::history::History::stale_reads) for the strict
//! quorum scenario). The faults stay within what the design promises to survive: no
//! disk is lost, and the hint window outlasts every outage. [`Bugs`] switches on
//! deliberately broken variants, which the checks must catch.
//!
//! The tests run 200 seeds of the fault scenario in a plain `cargo test`;
//! `RINGKV_SIM_SEEDS=N` runs N, `RINGKV_SIM_SEED=S` replays seed S alone (a failing
//! seed's message says how). Every detector status change is appended to
//! [`Sim::trace`]: two runs of one seed give the same trace and the same history.
//!
//! Not simulated: anti-entropy, ring changes, clock skew, clock pruning, deletes,
//! several shards per node, last-write-wins, a lost disk.

mod client;
mod config;
mod coordinator;
mod disk;
mod node;
mod scenario;
mod wire;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

pub use client::{FinalReads, WorkloadConfig};
pub use config::{Bugs, NetConfig, SimConfig, Stats};
pub use scenario::{conclude, run as run_scenario, Fault, FaultMix, Report, Scenario};

use crate::history::History;
use crate::membership::detector::Status;
use crate::ring::cluster::{Member, NodeId, Ring};
use client::{ClientTimer, Workload};
use disk::Disk;
use node::Node;
use wire::{Addr, Ctx, Effect, Msg, Timer};

/// One recorded status change: at `at_us`, `observer`'s detector moved `node`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub at_us: u64,
    pub observer: NodeId,
    pub node: NodeId,
    pub from: Status,
    pub to: Status,
}

/// What happens at a moment of the run.
#[derive(Debug)]
enum Happening {
    Deliver {
        from: Addr,
        to: Addr,
        msg: Msg,
    },
    Node {
        node: NodeId,
        incarnation: u64,
        timer: Timer,
    },
    Client {
        client: u32,
        timer: ClientTimer,
    },
}

#[derive(Debug)]
struct Due {
    at_us: u64,
    /// Ties broken by scheduling order: the run is a total order.
    seq: u64,
    what: Happening,
}

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.at_us, self.seq) == (other.at_us, other.seq)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_us, self.seq).cmp(&(other.at_us, other.seq))
    }
}

/// A simulated cluster.
pub struct Sim {
    seed: u64,
    rng: StdRng,
    now_us: u64,
    seq: u64,
    /// Request, forward and replay ids, unique over the run.
    next_id: u64,
    config: SimConfig,
    /// The network as it is now (a storm changes it for a while).
    net: NetConfig,
    ring: Ring,
    nodes: BTreeMap<NodeId, Node>,
    queue: BinaryHeap<Reverse<Due>>,
    /// What a paused node will process when it resumes, in order.
    stalled: BTreeMap<NodeId, Vec<Happening>>,
    /// Each node's side of a partition (absent: no partition).
    sides: BTreeMap<NodeId, u8>,
    workload: Option<Workload>,
    /// Crashes waiting for their moment ([`Sim::crash_when_unsynced`]): the nodes, and
    /// the latest time.
    armed: Vec<(Vec<NodeId>, u64)>,
    pub trace: Vec<Event>,
    pub stats: Stats,
}

impl Sim {
    /// `count` nodes (ids 1, 3, 5, …) that all know each other, gossiping every
    /// `interval_us`; no clients.
    pub fn new(seed: u64, count: usize, interval_us: u64, net: NetConfig) -> Sim {
        let config = SimConfig {
            nodes: count,
            gossip_interval_us: interval_us,
            net,
            ..SimConfig::default()
        };
        Sim::with_config(seed, config)
    }

    /// A cluster of `config.nodes` nodes that all know each other, on a ring drawn
    /// from `seed`; no clients until [`Sim::start_workload`].
    pub fn with_config(seed: u64, config: SimConfig) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let ids: Vec<NodeId> = (0..config.nodes as u64).map(|i| 2 * i + 1).collect();
        let ring = random_ring(&mut rng, &ids, &config);
        let mut sim = Sim {
            seed,
            rng,
            now_us: 0,
            seq: 0,
            next_id: 0,
            net: config.net.clone(),
            ring,
            nodes: BTreeMap::new(),
            queue: BinaryHeap::new(),
            stalled: BTreeMap::new(),
            sides: BTreeMap::new(),
            workload: None,
            armed: Vec::new(),
            trace: Vec::new(),
            stats: Stats::default(),
            config,
        };
        for &id in &ids {
            let node = Node::start(id, 0, 1, &ids, &sim.config, Disk::default());
            sim.nodes.insert(id, node);
            sim.start_timers(id);
        }
        sim
    }

    /// A started node's first gossip round and replay, at random offsets (as real
    /// nodes' timers are).
    fn start_timers(&mut self, node: NodeId) {
        let incarnation = self.nodes[&node].incarnation;
        let round = self.rng.gen_range(0..self.config.gossip_interval_us);
        let replay = self.rng.gen_range(0..self.config.replay_interval_us);
        for (after, timer) in [(round, Timer::Round), (replay, Timer::Replay)] {
            let what = Happening::Node {
                node,
                incarnation,
                timer,
            };
            self.push(self.now_us + after, what);
        }
    }

    pub fn now_us(&self) -> u64 {
        self.now_us
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// What `observer`'s detector says of `node` (`None`: never heard of it).
    pub fn status(&self, observer: NodeId, node: NodeId) -> Option<Status> {
        self.nodes[&observer].detector.status(node)
    }

    /// Nodes `observer` currently holds Down.
    pub fn down_as_seen_by(&self, observer: NodeId) -> BTreeSet<NodeId> {
        self.node_ids()
            .into_iter()
            .filter(|&n| self.status(observer, n) == Some(Status::Down))
            .collect()
    }

    /// Kills a node (`kill -9`, or its power): it sends, receives and ticks nothing
    /// until restarted, and its disk keeps only what was synced.
    pub fn crash(&mut self, node: NodeId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            if n.up {
                n.up = false;
                n.paused = false;
                self.stats.records_lost += n.disk.crash(self.now_us);
                self.stats.crashes += 1;
            }
        }
        self.stalled.remove(&node);
    }

    /// Kills `nodes` together at the first moment, within `within_us`, at which one of
    /// them has a write it coordinated not yet synced (at the end of it otherwise): the
    /// crash that costs the most, found without waiting for luck.
    pub fn crash_when_unsynced(&mut self, nodes: &[NodeId], within_us: u64) {
        self.armed.push((nodes.to_vec(), self.now_us + within_us));
        self.fire_armed();
    }

    fn fire_armed(&mut self) {
        let now_us = self.now_us;
        let nodes = &self.nodes;
        let due = |(group, deadline): &(Vec<NodeId>, u64)| {
            now_us >= *deadline
                || group
                    .iter()
                    .any(|n| nodes[n].up && nodes[n].disk.has_unsynced_own(now_us))
        };
        let (fire, keep): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.armed).into_iter().partition(due);
        self.armed = keep;
        for (group, _) in fire {
            group.iter().for_each(|&n| self.crash(n));
        }
    }

    /// Starts a node again over what its disk kept, with a new generation (its
    /// detector starts afresh). A running node is killed first.
    pub fn restart(&mut self, node: NodeId) {
        for (group, _) in &mut self.armed {
            group.retain(|&n| n != node);
        }
        self.crash(node);
        let ids = self.node_ids();
        let Some(n) = self.nodes.get_mut(&node) else {
            return;
        };
        let disk = std::mem::take(&mut n.disk);
        let incarnation = n.incarnation + 1;
        *n = Node::start(node, incarnation, self.now_us + 1, &ids, &self.config, disk);
        self.start_timers(node);
    }

    /// Stops a node as SIGSTOP does: what reaches it waits, its timers wait.
    pub fn pause(&mut self, node: NodeId) {
        if let Some(n) = self.nodes.get_mut(&node) {
            n.paused = n.up;
        }
    }

    /// Resumes a paused node: everything that waited is processed now, in order.
    pub fn resume(&mut self, node: NodeId) {
        let Some(n) = self.nodes.get_mut(&node) else {
            return;
        };
        if !n.paused {
            return;
        }
        n.paused = false;
        for what in self.stalled.remove(&node).unwrap_or_default() {
            self.push(self.now_us, what);
        }
    }

    /// Cuts the network between `side` and everyone else (clients reach both sides).
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

    /// The network from now on.
    pub fn set_net(&mut self, net: NetConfig) {
        self.net = net;
    }

    fn reachable(&self, from: NodeId, to: NodeId) -> bool {
        self.sides.get(&from) == self.sides.get(&to)
    }

    fn push(&mut self, at_us: u64, what: Happening) {
        self.seq += 1;
        let seq = self.seq;
        self.queue.push(Reverse(Due { at_us, seq, what }));
    }

    fn send(&mut self, from: Addr, to: Addr, msg: Msg) {
        match (from, to) {
            (Addr::Node(a), Addr::Node(b)) if !self.reachable(a, b) => return,
            (Addr::Client(client), Addr::Node(n)) if !self.nodes[&n].up => {
                return self.refuse_connection(client, &msg)
            }
            _ => {}
        }
        if self.rng.gen_bool(self.net.drop) {
            return;
        }
        let (lo, hi) = self.net.delay_us;
        let at_us = self.now_us + self.rng.gen_range(lo..=hi.max(lo));
        self.stats.messages += 1;
        self.push(at_us, Happening::Deliver { from, to, msg });
    }

    /// A client that connects to a crashed node is refused at once (the node's kernel
    /// answers for the dead process), so it moves on instead of waiting out a timeout.
    fn refuse_connection(&mut self, client: u32, msg: &Msg) {
        let (Msg::Put { req, .. } | Msg::Get { req, .. }) = msg else {
            return;
        };
        let answer = wire::Answer::Refused("connection refused".into());
        let (lo, hi) = self.net.delay_us;
        let at_us = self.now_us + self.rng.gen_range(lo..=hi.max(lo));
        let what = Happening::Deliver {
            from: Addr::Client(client),
            to: Addr::Client(client),
            msg: Msg::Answer { req: *req, answer },
        };
        self.push(at_us, what);
    }

    /// Runs the world until `until_us`.
    pub fn run_until(&mut self, until_us: u64) {
        while self
            .queue
            .peek()
            .is_some_and(|Reverse(due)| due.at_us <= until_us)
        {
            let Reverse(due) = self.queue.pop().expect("peeked");
            self.now_us = due.at_us;
            self.dispatch(due.what);
            if !self.armed.is_empty() {
                self.fire_armed();
            }
        }
        self.now_us = self.now_us.max(until_us);
    }

    fn dispatch(&mut self, what: Happening) {
        let target = match &what {
            Happening::Deliver {
                to: Addr::Node(n), ..
            } => Some((*n, None)),
            Happening::Node {
                node, incarnation, ..
            } => Some((*node, Some(*incarnation))),
            _ => None,
        };
        if let Some((node, incarnation)) = target {
            let Some(n) = self.nodes.get(&node) else {
                return;
            };
            if !n.up || incarnation.is_some_and(|i| i != n.incarnation) {
                return;
            }
            if n.paused {
                self.stalled.entry(node).or_default().push(what);
                return;
            }
        }
        let now_us = self.now_us;
        match what {
            Happening::Deliver {
                from,
                to: Addr::Node(node),
                msg,
            } => self.with_node(node, |n, ctx| n.on_message(ctx, from, msg)),
            Happening::Deliver {
                to: Addr::Client(client),
                msg: Msg::Answer { req, answer },
                ..
            } => self.with_workload(|w, out| w.on_answer(client, req, answer, now_us, out)),
            Happening::Deliver { to, msg, .. } => panic!("{to:?} cannot take {msg:?}"),
            Happening::Node { node, timer, .. } => {
                self.with_node(node, |n, ctx| n.on_timer(ctx, timer))
            }
            Happening::Client { client, timer } => {
                self.with_workload(|w, out| w.on_timer(client, timer, now_us, out))
            }
        }
    }

    /// Runs a node's handler and carries out its effects.
    fn with_node(&mut self, node: NodeId, f: impl FnOnce(&mut Node, &mut Ctx)) {
        let Some(n) = self.nodes.get_mut(&node) else {
            return;
        };
        let mut ctx = Ctx {
            now_us: self.now_us,
            rng: &mut self.rng,
            next_id: &mut self.next_id,
            ring: &self.ring,
            config: &self.config,
            stats: &mut self.stats,
            trace: &mut self.trace,
            effects: Vec::new(),
        };
        f(n, &mut ctx);
        let effects = ctx.effects;
        let incarnation = n.incarnation;
        for effect in effects {
            match effect {
                Effect::Send { to, msg } => self.send(Addr::Node(node), to, msg),
                Effect::Timer { at_us, timer } => {
                    let what = Happening::Node {
                        node,
                        incarnation,
                        timer,
                    };
                    self.push(at_us, what);
                }
            }
        }
    }

    fn with_workload(&mut self, f: impl FnOnce(&mut Workload, &mut client::Out)) {
        let Some(w) = self.workload.as_mut() else {
            return;
        };
        let mut out = client::Out::default();
        f(w, &mut out);
        for (client, node, msg) in out.sends {
            self.send(Addr::Client(client), Addr::Node(node), msg);
        }
        for (at_us, client, timer) in out.timers {
            self.push(at_us, Happening::Client { client, timer });
        }
    }

    /// Starts the clients (their seed is derived from the run's).
    pub fn start_workload(&mut self, config: WorkloadConfig) {
        self.workload = Some(Workload::new(self.seed, config, self.node_ids()));
        let now_us = self.now_us;
        self.with_workload(|w, out| w.start(now_us, out));
    }

    /// The clients start nothing new; what is in flight finishes or times out.
    pub fn stop_workload(&mut self) {
        if let Some(w) = self.workload.as_mut() {
            w.stop();
        }
    }

    /// Reads every key at R = N, one after the other, each until it succeeds.
    pub fn start_final_reads(&mut self) {
        let now_us = self.now_us;
        self.with_workload(|w, out| w.start_final_reads(now_us, out));
    }

    /// The final reads, once all done (`Err`: one could not succeed).
    pub fn final_reads(&self) -> Option<Result<&FinalReads, String>> {
        self.workload.as_ref()?.final_reads()
    }

    /// The clients' history (empty without a workload).
    pub fn history(&self) -> History {
        self.workload
            .as_ref()
            .map(|w| w.history.clone())
            .unwrap_or_default()
    }

    /// Hints kept by all nodes, in their books.
    pub fn hints_outstanding(&self) -> usize {
        self.nodes.values().map(|n| n.hint_seqs.len()).sum()
    }
}

/// `tokens_per_node` random, distinct tokens per node; one shard each.
fn random_ring(rng: &mut StdRng, ids: &[NodeId], config: &SimConfig) -> Ring {
    let mut taken = BTreeSet::new();
    let members = ids
        .iter()
        .map(|&node_id| {
            let mut tokens = Vec::new();
            while tokens.len() < config.tokens_per_node.max(1) {
                let t: u64 = rng.gen();
                if taken.insert(t) {
                    tokens.push((t, 0));
                }
            }
            Member {
                node_id,
                dc: "dc1".into(),
                rack: "rack1".into(),
                tokens,
            }
        })
        .collect();
    Ring::new(members, config.replication_factor).expect("distinct nodes and tokens")
}
