//! The simulator's settings: the cluster, its timing and limits, the network, the
//! broken variants; and what a run counts.

use crate::replication::hints::HintLimits;
use crate::replication::placement::QuorumMode;

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

/// Deliberately broken variants: each breaks a promise the checks must catch.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bugs {
    /// Writes count (the coordinator's own and the replicas') and are visible as soon
    /// as they are appended, before their fdatasync: the engine's `periodic` mode
    /// passed off as `batch`.
    pub ack_before_sync: bool,
    /// Every hint is acknowledged (a stand-in's, a stand-in coordinator's own, a
    /// coordinator's owed one) and never kept.
    pub drops_hints: bool,
    /// A stand-in coordinates on an empty set instead of its own stored one, as if a
    /// node that is not a replica had nothing to build on (its dot then claims to
    /// supersede the node's earlier dots of the key).
    pub stand_in_builds_on_empty: bool,
    /// A stand-in's hint, which counted toward W, expires with the hint window like a
    /// coordinator's (which counts toward nothing).
    pub counted_hints_expire: bool,
}

/// The simulated cluster's shape, timing and limits.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Nodes, with ids 1, 3, 5, … (real node ids are odd).
    pub nodes: usize,
    /// Tokens per node, drawn from the seed (one shard each).
    pub tokens_per_node: usize,
    /// N.
    pub replication_factor: usize,
    pub gossip_interval_us: u64,
    /// The network outside of storms.
    pub net: NetConfig,
    /// How long one fdatasync takes (µs, uniform); syncs complete in append order.
    pub fsync_us: (u64, u64),
    /// A coordinator stops waiting for a replica after this long.
    pub replica_timeout_us: u64,
    /// A forwarding node tries the next target after this long.
    pub forward_timeout_us: u64,
    pub quorum: QuorumMode,
    /// Every node's hint book.
    pub hints: HintLimits,
    /// How often a node expires and replays hints.
    pub replay_interval_us: u64,
    /// Bytes of one replay batch.
    pub replay_batch_bytes: u64,
    /// A replay batch unanswered for this long is sent again.
    pub replay_timeout_us: u64,
    pub bugs: Bugs,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 5,
            tokens_per_node: 4,
            replication_factor: 3,
            gossip_interval_us: 1_000_000,
            net: NetConfig::default(),
            fsync_us: (500, 8_000),
            replica_timeout_us: 500_000,
            forward_timeout_us: 1_200_000,
            quorum: QuorumMode::Sloppy,
            // The window is far longer than any outage a scenario makes: hints never
            // expire unless a test shortens it.
            hints: HintLimits {
                bytes_max: 4 << 20,
                window_us: 600_000_000,
            },
            replay_interval_us: 200_000,
            replay_batch_bytes: 16 << 10,
            replay_timeout_us: 1_000_000,
            bugs: Bugs::default(),
        }
    }
}

/// What happened over a run, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Nodes killed (a power loss counts each node; the final restart of every node
    /// counts too).
    pub crashes: u64,
    /// Unsynced disk records the crashes took.
    pub records_lost: u64,
    /// Detector transitions to Down, all observers.
    pub downs: u64,
    /// Writes sent on by a node that was not a target.
    pub forwards: u64,
    /// Writes coordinated by a stand-in (no preferred replica).
    pub stand_in_coordinations: u64,
    /// Hints taken into a book and the hint log.
    pub hints_kept: u64,
    /// Hints coordinators kept after the fact (`owed_hints`).
    pub owed_hints: u64,
    /// Hints the target acknowledged (and that left the book).
    pub hints_replayed: u64,
    /// Hints dropped past the window.
    pub hints_expired: u64,
    /// Hints refused: the book full, or the target Down longer than the window.
    pub hints_refused: u64,
    /// Stale replicas read repair wrote to.
    pub read_repairs: u64,
    /// Messages put on the network (the dropped ones not counted).
    pub messages: u64,
}
