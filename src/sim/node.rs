//! One simulated node: the real gossip and failure detector, a simulated disk, the
//! real hint book over a durable hint log, the replica side of writes and reads, and
//! hint replay. The coordinator's half is in `coordinator.rs`.
//!
//! Everything a crash takes is in this struct and rebuilt by [`Node::start`]: the
//! membership state, the hint book (taken back from the durable hint log, as the
//! server's `Handoff::open` does), the coordinations in flight, the replays. What
//! survives is the [`Disk`], minus its unsynced records.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::coordinator::{ForwardOp, ReadOp, Reply, WriteOp};
use super::disk::{Disk, HintRecord};
use super::wire::{Addr, Ctx, Msg, Timer};
use super::{Event, SimConfig};
use crate::membership::detector::{Detector, DetectorConfig, Status, Transition};
use crate::membership::gossip::{Digest, Gossip};
use crate::replication::hints::{HintBook, HintId, Refused};
use crate::ring::cluster::NodeId;
use crate::version::VersionSet;

/// Bytes a hint costs in the book beyond its key and set (the hint log's record header
/// and fixed fields, about what the server's `hint_log` spends).
const HINT_FIXED_BYTES: u64 = 40;

/// What waits for a record's fdatasync.
#[derive(Clone, Copy, Debug)]
pub(super) enum Done {
    /// The coordinator's own write (and, standing in, its hint) is durable: it counts.
    Local(u64),
    /// Acknowledge a replica write or a hint write to its coordinator.
    Ack { to: NodeId, op: u64 },
}

pub(super) struct Node {
    pub id: NodeId,
    /// Bumped by every restart: timers of an older incarnation never fire.
    pub incarnation: u64,
    /// False while crashed.
    pub up: bool,
    /// Stopped (SIGSTOP): nothing is processed, everything waits for the resume.
    pub paused: bool,
    pub gossip: Gossip,
    pub detector: Detector,
    /// When this node's detector last held each peer Down (for the hint window).
    pub down_since: BTreeMap<NodeId, u64>,
    pub disk: Disk,
    pub book: HintBook,
    /// Where each hint of the book is in the hint log.
    pub hint_seqs: BTreeMap<HintId, u64>,
    /// The fresh clock of `VersionSet::coordinate`: above every counter minted here.
    pub clock: u64,
    pub writes: BTreeMap<u64, WriteOp>,
    pub reads: BTreeMap<u64, ReadOp>,
    pub forwards: BTreeMap<u64, ForwardOp>,
    /// Replayed hints awaiting their target's ack: op → (target, hint).
    pub replays: BTreeMap<u64, (NodeId, HintId)>,
    /// When the batch in flight to each target was sent.
    pub replaying: BTreeMap<NodeId, u64>,
    /// What each unsynced record's fdatasync will complete.
    pub waiting: BTreeMap<u64, Vec<Done>>,
}

/// Bytes a hint takes in the book.
fn hint_bytes(key: &[u8], set: &[u8]) -> u64 {
    HINT_FIXED_BYTES + key.len() as u64 + set.len() as u64
}

impl Node {
    /// A node starting (or restarting, `incarnation` > 0) with `generation`, knowing
    /// every id in `ids`, over what its disk kept.
    pub fn start(
        id: NodeId,
        incarnation: u64,
        generation: u64,
        ids: &[NodeId],
        config: &SimConfig,
        mut disk: Disk,
    ) -> Node {
        let mut gossip = Gossip::new(id, generation);
        ids.iter().for_each(|&other| gossip.learn(other));
        let detector = Detector::new(DetectorConfig {
            first_interval_us: config.gossip_interval_us,
            ..DetectorConfig::default()
        });
        disk.visible_before_sync = config.bugs.ack_before_sync;
        // The book is taken back from the log, each hint with its own age; those the
        // budget refuses are dropped from the log.
        let mut book = HintBook::new(config.hints);
        let mut hint_seqs = BTreeMap::new();
        let mut refused = Vec::new();
        for (seq, h) in disk.hints() {
            match book.offer(
                h.target,
                hint_bytes(&h.key, &h.set),
                h.written_at_us,
                None,
                h.counted,
            ) {
                Ok(hint) => {
                    hint_seqs.insert(hint, seq);
                }
                Err(_) => refused.push(seq),
            }
        }
        refused.into_iter().for_each(|seq| disk.delete_hint(seq));
        // The engine's clock restarts above every counter of this node it stores.
        let clock = disk
            .durable()
            .values()
            .map(|set| set.counter_of(id))
            .max()
            .unwrap_or(0);
        Node {
            id,
            incarnation,
            up: true,
            paused: false,
            gossip,
            detector,
            down_since: BTreeMap::new(),
            disk,
            book,
            hint_seqs,
            clock,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            forwards: BTreeMap::new(),
            replays: BTreeMap::new(),
            replaying: BTreeMap::new(),
            waiting: BTreeMap::new(),
        }
    }

    /// Up or Suspect in this node's eyes (what quorum and handoff act on is Down).
    pub fn is_up(&self, node: NodeId) -> bool {
        self.detector.status(node) != Some(Status::Down)
    }

    pub fn on_message(&mut self, ctx: &mut Ctx, from: Addr, msg: Msg) {
        match (from, msg) {
            (Addr::Node(peer), Msg::Gossip { digest, reply }) => {
                self.on_gossip(ctx, peer, &digest, reply)
            }
            (Addr::Client(client), Msg::Put { req, put }) => {
                self.on_put(ctx, put, Reply::Client { client, req })
            }
            (
                Addr::Client(client),
                Msg::Get {
                    req,
                    key,
                    consistency,
                },
            ) => self.on_get(ctx, Reply::Client { client, req }, key, consistency),
            (Addr::Node(node), Msg::Forward { fwd, put }) => {
                self.on_put(ctx, put, Reply::Forwarder { node, fwd })
            }
            (Addr::Node(_), Msg::ForwardAnswer { fwd, answer }) => {
                self.on_forward_answer(ctx, fwd, answer)
            }
            (Addr::Node(peer), Msg::ReplicaWrite { op, key, set }) => {
                self.on_replica_write(ctx, peer, op, key, &set)
            }
            (
                Addr::Node(peer),
                Msg::HintWrite {
                    op,
                    target,
                    key,
                    set,
                },
            ) => self.on_hint_write(ctx, peer, op, target, key, set),
            (Addr::Node(peer), Msg::WriteAck { op, result }) => {
                self.on_write_ack(ctx, peer, op, result)
            }
            (Addr::Node(peer), Msg::ReplicaRead { op, key }) => {
                let set = self.disk.read(&key).map(|s| Bytes::from(s.encode()));
                ctx.send_node(peer, Msg::ReadAnswer { op, set });
            }
            (Addr::Node(peer), Msg::ReadAnswer { op, set }) => {
                self.on_read_answer(ctx, peer, op, set)
            }
            (from, msg) => panic!("node {} cannot take {msg:?} from {from:?}", self.id),
        }
    }

    pub fn on_timer(&mut self, ctx: &mut Ctx, timer: Timer) {
        match timer {
            Timer::Round => self.round(ctx),
            Timer::Replay => {
                self.replay(ctx);
                ctx.timer_in(ctx.config.replay_interval_us, Timer::Replay);
            }
            Timer::Synced => {
                for seq in self.disk.synced(ctx.now_us) {
                    for done in self.waiting.remove(&seq).unwrap_or_default() {
                        self.complete(ctx, done);
                    }
                }
            }
            Timer::WriteTimeout(op) => self.on_write_timeout(ctx, op),
            Timer::ReadTimeout(op) => self.on_read_timeout(ctx, op),
            Timer::ForwardTimeout { fwd, attempt } => self.on_forward_timeout(ctx, fwd, attempt),
        }
    }

    // ---- membership ----

    /// One gossip round: beat, tick the detector, push to up to 3 peers.
    fn round(&mut self, ctx: &mut Ctx) {
        self.gossip.beat();
        let changes = self.detector.tick(ctx.now_us);
        let digest = self.gossip.digest();
        let peers = self.gossip.pick_peers(ctx.rng);
        self.record(ctx, changes);
        for peer in peers {
            let digest = digest.clone();
            ctx.send_node(
                peer,
                Msg::Gossip {
                    digest,
                    reply: true,
                },
            );
        }
        ctx.timer_in(ctx.config.gossip_interval_us, Timer::Round);
    }

    fn on_gossip(&mut self, ctx: &mut Ctx, from: NodeId, digest: &Digest, reply: bool) {
        let changes = self
            .gossip
            .receive(from, digest, ctx.now_us, &mut self.detector);
        self.record(ctx, changes);
        if reply {
            let digest = self.gossip.digest();
            ctx.send_node(
                from,
                Msg::Gossip {
                    digest,
                    reply: false,
                },
            );
        }
    }

    fn record(&mut self, ctx: &mut Ctx, changes: Vec<Transition>) {
        for t in changes {
            if t.to == Status::Down {
                self.down_since.insert(t.node, ctx.now_us);
                ctx.stats.downs += 1;
            } else if t.from == Status::Down {
                self.down_since.remove(&t.node);
            }
            ctx.trace.push(Event {
                at_us: ctx.now_us,
                observer: self.id,
                node: t.node,
                from: t.from,
                to: t.to,
            });
        }
    }

    // ---- the disk ----

    /// Appends the key's new set (`own`: a write this node coordinated); the record's
    /// fdatasync is timed.
    pub fn write_local(&mut self, ctx: &mut Ctx, key: Bytes, set: VersionSet, own: bool) -> u64 {
        let sync_us = ctx.sync_us();
        let (seq, at_us) = self.disk.write(key, set, own, ctx.now_us, sync_us);
        ctx.timer_in(at_us - ctx.now_us, Timer::Synced);
        seq
    }

    /// Merges a replica's (or a coordinator's) set into the key's, as the engine's
    /// `merge` does: read-merge-write; nothing new, nothing written. Returns the record
    /// to wait for, if any.
    pub fn merge_local(&mut self, ctx: &mut Ctx, key: Bytes, incoming: &VersionSet) -> Option<u64> {
        let (stored, pending) = self.disk.building_on(&key);
        let merged = stored.sync(incoming);
        if merged == stored {
            return pending;
        }
        Some(self.write_local(ctx, key, merged, false))
    }

    /// Runs `done` once record `seq` is durable (at once if there is none to wait for,
    /// or in the broken variant that acknowledges before the fdatasync).
    pub fn after(&mut self, ctx: &mut Ctx, seq: Option<u64>, done: Done) {
        match seq {
            Some(seq) if !ctx.config.bugs.ack_before_sync => {
                self.waiting.entry(seq).or_default().push(done)
            }
            _ => self.complete(ctx, done),
        }
    }

    fn complete(&mut self, ctx: &mut Ctx, done: Done) {
        match done {
            Done::Local(op) => self.local_written(ctx, op),
            Done::Ack { to, op } => ctx.send_node(to, Msg::WriteAck { op, result: Ok(()) }),
        }
    }

    // ---- the replica side ----

    fn on_replica_write(&mut self, ctx: &mut Ctx, from: NodeId, op: u64, key: Bytes, set: &Bytes) {
        let incoming = decode(set);
        let seq = self.merge_local(ctx, key, &incoming);
        self.after(ctx, seq, Done::Ack { to: from, op });
    }

    /// A stand-in keeps the set as a hint for `target`, and acknowledges once durable.
    fn on_hint_write(
        &mut self,
        ctx: &mut Ctx,
        from: NodeId,
        op: u64,
        target: NodeId,
        key: Bytes,
        set: Bytes,
    ) {
        match self.keep_hint(ctx, target, key, set, true) {
            Ok(seq) => self.after(ctx, seq, Done::Ack { to: from, op }),
            Err(why) => ctx.send_node(
                from,
                Msg::WriteAck {
                    op,
                    result: Err(why),
                },
            ),
        }
    }

    fn on_write_ack(&mut self, ctx: &mut Ctx, from: NodeId, op: u64, result: Result<(), String>) {
        match self.replays.remove(&op) {
            Some((target, hint)) => self.on_replay_ack(ctx, target, hint, result),
            None => self.on_replica_ack(ctx, from, op, result),
        }
    }

    // ---- hints ----

    /// Takes a hint for `target` into the book and the hint log (the server's
    /// `Handoff::keep`); the returned record is durable once its sync completes (`None`:
    /// the broken variant dropped it).
    pub fn keep_hint(
        &mut self,
        ctx: &mut Ctx,
        target: NodeId,
        key: Bytes,
        set: Bytes,
        counted: bool,
    ) -> Result<Option<u64>, String> {
        if ctx.config.bugs.drops_hints {
            return Ok(None);
        }
        let bytes = hint_bytes(&key, &set);
        let down_since = self.down_since.get(&target).copied();
        let counted = counted && !ctx.config.bugs.counted_hints_expire;
        let hint = match self
            .book
            .offer(target, bytes, ctx.now_us, down_since, counted)
        {
            Ok(hint) => hint,
            Err(Refused::Full) => {
                ctx.stats.hints_refused += 1;
                return Err(format!("hint book full; no hint for node {target}"));
            }
            Err(Refused::PastWindow) => {
                ctx.stats.hints_refused += 1;
                return Err(format!(
                    "node {target} Down for longer than the hint window"
                ));
            }
        };
        let record = HintRecord {
            target,
            key,
            set,
            written_at_us: ctx.now_us,
            counted,
        };
        let sync_us = ctx.sync_us();
        let (seq, at_us) = self.disk.write_hint(record, ctx.now_us, sync_us);
        ctx.timer_in(at_us - ctx.now_us, Timer::Synced);
        self.hint_seqs.insert(hint, seq);
        ctx.stats.hints_kept += 1;
        Ok(Some(seq))
    }

    /// Drops hints past the window, then sends each target the detector holds Up its
    /// next batch (one batch in flight per target; a batch unanswered for the replay
    /// timeout is sent again).
    fn replay(&mut self, ctx: &mut Ctx) {
        for hint in self.book.expire(ctx.now_us) {
            if let Some(seq) = self.hint_seqs.remove(&hint) {
                self.disk.delete_hint(seq);
                ctx.stats.hints_expired += 1;
            }
        }
        let targets: Vec<NodeId> = self.book.targets().collect();
        for target in targets {
            if self.detector.status(target) != Some(Status::Up) {
                continue;
            }
            let timeout = ctx.config.replay_timeout_us;
            if self
                .replaying
                .get(&target)
                .is_some_and(|&sent| ctx.now_us < sent + timeout)
            {
                continue;
            }
            self.replays.retain(|_, (t, _)| *t != target);
            let mut sent = false;
            for hint in self.book.next_batch(target, ctx.config.replay_batch_bytes) {
                let seq = self.hint_seqs[&hint];
                // A hint not yet synced is not in the log yet: it waits for the next tick.
                let Some(record) = self.disk.hint(seq) else {
                    break;
                };
                let (key, set) = (record.key.clone(), record.set.clone());
                let op = ctx.id();
                self.replays.insert(op, (target, hint));
                ctx.send_node(target, Msg::ReplicaWrite { op, key, set });
                sent = true;
            }
            if sent {
                self.replaying.insert(target, ctx.now_us);
            }
        }
    }

    fn on_replay_ack(
        &mut self,
        ctx: &mut Ctx,
        target: NodeId,
        hint: HintId,
        result: Result<(), String>,
    ) {
        if result.is_ok() && self.book.acked(target, hint) {
            if let Some(seq) = self.hint_seqs.remove(&hint) {
                self.disk.delete_hint(seq);
            }
            ctx.stats.hints_replayed += 1;
        }
        if !self.replays.values().any(|(t, _)| *t == target) {
            self.replaying.remove(&target);
        }
    }
}

/// A set off the wire or out of the hint log. Only this simulator made those bytes, so
/// a set that does not decode is a bug here or in the codec.
pub(super) fn decode(bytes: &Bytes) -> VersionSet {
    let (set, used) = VersionSet::decode(bytes).expect("a set the simulator encoded decodes");
    assert_eq!(used, bytes.len(), "trailing bytes after a version set");
    set
}
