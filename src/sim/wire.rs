//! What moves between the simulated parts: addresses, messages, timers, and the
//! context a node's handlers run in (they return effects; the world carries them out).

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::Rng;

use super::{Event, SimConfig, Stats};
use crate::membership::gossip::Digest;
use crate::protocol::Consistency;
use crate::ring::cluster::{NodeId, Ring};
use crate::version::{Context, VersionSet};

/// Who sends and receives messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Addr {
    Node(NodeId),
    Client(u32),
}

/// A client's PUT, as it travels (to a node, or forwarded between nodes).
#[derive(Clone, Debug)]
pub(super) struct Put {
    pub key: Bytes,
    pub value: Bytes,
    /// The opaque context bytes the client got from its last read (empty: none).
    pub context: Bytes,
    pub consistency: Consistency,
}

/// A coordinator's answer to a client (or to the node that forwarded the write).
#[derive(Clone, Debug)]
pub(super) enum Answer {
    Written(Context),
    Read(Option<VersionSet>),
    /// Unavailable, or refused: the message says why.
    Refused(String),
}

#[derive(Clone, Debug)]
pub(super) enum Msg {
    /// A gossip digest; `reply` asks for the receiver's own digest back (push-pull).
    Gossip {
        digest: Digest,
        reply: bool,
    },
    /// Client → any node.
    Put {
        req: u64,
        put: Put,
    },
    /// Client → any node.
    Get {
        req: u64,
        key: Bytes,
        consistency: Consistency,
    },
    /// Node → client.
    Answer {
        req: u64,
        answer: Answer,
    },
    /// A node that is not a target of the write → a target, which coordinates.
    Forward {
        fwd: u64,
        put: Put,
    },
    ForwardAnswer {
        fwd: u64,
        answer: Answer,
    },
    /// Store this set (merge it into the key's): a coordinator's write, read repair, or
    /// a hint replayed to its target.
    ReplicaWrite {
        op: u64,
        key: Bytes,
        set: Bytes,
    },
    /// Keep this set as a hint for `target` (a stand-in, sloppy quorum).
    HintWrite {
        op: u64,
        target: NodeId,
        key: Bytes,
        set: Bytes,
    },
    /// Acknowledges a ReplicaWrite or HintWrite once durable, or refuses it.
    WriteAck {
        op: u64,
        result: Result<(), String>,
    },
    ReplicaRead {
        op: u64,
        key: Bytes,
    },
    /// The replica's set, encoded (`None`: it holds nothing for the key).
    ReadAnswer {
        op: u64,
        set: Option<Bytes>,
    },
}

/// A node's timers. They fire only in the incarnation that set them.
#[derive(Clone, Copy, Debug)]
pub(super) enum Timer {
    /// Gossip round: beat, tick the detector, push.
    Round,
    /// Hint replay and expiry.
    Replay,
    /// An fdatasync completed (the disk says which records).
    Synced,
    WriteTimeout(u64),
    ReadTimeout(u64),
    ForwardTimeout {
        fwd: u64,
        attempt: usize,
    },
}

/// What a handler asks the world to do.
#[derive(Debug)]
pub(super) enum Effect {
    Send { to: Addr, msg: Msg },
    Timer { at_us: u64, timer: Timer },
}

/// What a node's handler may use: the clock, the seeded randomness, the ring, and a
/// place to put its effects.
pub(super) struct Ctx<'a> {
    pub now_us: u64,
    pub rng: &'a mut StdRng,
    pub next_id: &'a mut u64,
    pub ring: &'a Ring,
    pub config: &'a SimConfig,
    pub stats: &'a mut Stats,
    pub trace: &'a mut Vec<Event>,
    pub effects: Vec<Effect>,
}

impl Ctx<'_> {
    pub fn send(&mut self, to: Addr, msg: Msg) {
        self.effects.push(Effect::Send { to, msg });
    }

    pub fn send_node(&mut self, to: NodeId, msg: Msg) {
        self.send(Addr::Node(to), msg);
    }

    pub fn timer_in(&mut self, after_us: u64, timer: Timer) {
        let at_us = self.now_us + after_us;
        self.effects.push(Effect::Timer { at_us, timer });
    }

    /// A fresh id for a request, a forward or a replay (unique over the whole run, so
    /// that a late answer to a crashed incarnation never matches a new request).
    pub fn id(&mut self) -> u64 {
        *self.next_id += 1;
        *self.next_id
    }

    /// How long the next fdatasync takes.
    pub fn sync_us(&mut self) -> u64 {
        let (lo, hi) = self.config.fsync_us;
        self.rng.gen_range(lo..=hi.max(lo))
    }
}
