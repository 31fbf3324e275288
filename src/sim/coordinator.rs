//! The coordinator on a simulated node: the decisions of `server::coordinator`, made by
//! the same decide-only functions, with messages and timers for the awaits.
//!
//! Write: [`plan_write`] over this node's detector view (Up = not Down) says
//! coordinate, forward, or Unavailable. Coordinating: the new set is made by
//! [`VersionSet::coordinate`] on this node's own stored set (a stand-in coordinating
//! stores it too, as the server's engine does, and keeps a hint for the replica it
//! stands in for); once durable it counts in the [`WriteQuorum`], and only then go the
//! REPLICA_WRITEs and HINT_WRITEs to the other targets (the server sends after
//! `write_over_with` returned, i.e. after the fdatasync). The client is answered when
//! the quorum decides; once every target answered or timed out, [`owed_hints`] names
//! the replicas this node keeps a hint for. Forwarding tries the targets in order,
//! the next one when one does not answer in time.
//!
//! Read: REPLICA_READ to every preferred replica (the local one read directly), the
//! [`ReadQuorum`] answers at R with the merge, and once all answered or timed out the
//! stale ones get the merge (read repair).

use std::collections::BTreeSet;

use bytes::Bytes;

use super::node::{decode, Done, Node};
use super::wire::{Addr, Answer, Ctx, Msg, Put, Timer};
use crate::protocol::Consistency;
use crate::replication::needed;
use crate::replication::placement::{owed_hints, plan_write, QuorumMode, Target, WritePlan};
use crate::replication::quorum::{Progress, ReadQuorum, WriteQuorum};
use crate::ring::cluster::{NodeId, Replica};
use crate::ring::token;
use crate::version::{Context, Supersedes, VersionSet, Versioned};

/// Where an answer goes.
#[derive(Clone, Copy, Debug)]
pub(super) enum Reply {
    Client {
        client: u32,
        req: u64,
    },
    /// The node that forwarded the write to this one.
    Forwarder {
        node: NodeId,
        fwd: u64,
    },
}

/// A write this node coordinates.
pub(super) struct WriteOp {
    reply: Reply,
    key: Bytes,
    preferred: Vec<Replica>,
    targets: Vec<Target>,
    quorum: WriteQuorum,
    /// Targets that answered (or were timed out).
    heard: BTreeSet<NodeId>,
    acked: BTreeSet<NodeId>,
    /// The set made, encoded as the replicas get it.
    set: Bytes,
    /// What the client is told it wrote.
    context: Context,
    answered: bool,
}

/// A read this node coordinates.
pub(super) struct ReadOp {
    reply: Reply,
    key: Bytes,
    replicas: Vec<NodeId>,
    quorum: ReadQuorum,
    heard: BTreeSet<NodeId>,
    answered: bool,
}

/// A write this node forwards to a target.
pub(super) struct ForwardOp {
    client: u32,
    req: u64,
    put: Put,
    to: Vec<Replica>,
    attempt: usize,
}

fn answer(ctx: &mut Ctx, reply: Reply, answer: Answer) {
    match reply {
        Reply::Client { client, req } => {
            ctx.send(Addr::Client(client), Msg::Answer { req, answer })
        }
        Reply::Forwarder { node, fwd } => ctx.send_node(node, Msg::ForwardAnswer { fwd, answer }),
    }
}

impl Node {
    /// A PUT from a client, or forwarded by a node that is not a target.
    pub(super) fn on_put(&mut self, ctx: &mut Ctx, put: Put, reply: Reply) {
        let preferred = ctx.ring.replicas_of_key(&put.key).to_vec();
        let w = needed(put.consistency, Consistency::Default, preferred.len());
        if w > preferred.len() {
            let why = format!("{w} replicas asked for, the key has {}", preferred.len());
            return answer(ctx, reply, Answer::Refused(why));
        }
        let mode = ctx.config.quorum;
        let fallbacks =
            if mode == QuorumMode::Sloppy && !preferred.iter().all(|r| self.is_up(r.node_id)) {
                ctx.ring.fallbacks(token(&put.key))
            } else {
                Vec::new()
            };
        let plan = plan_write(self.id, &preferred, &fallbacks, |n| self.is_up(n), mode, w);
        let targets = match plan {
            WritePlan::Coordinate { targets } => targets,
            WritePlan::Forward { to } => {
                let Reply::Client { client, req } = reply else {
                    // The forwarder's view had this node as a target; its own does not.
                    let why = "forwarded to a node that is not a target in its own view";
                    return answer(ctx, reply, Answer::Refused(why.into()));
                };
                return self.forward(ctx, client, req, put, to);
            }
            WritePlan::Unavailable { reachable, needed } => {
                let why = format!("{needed} acknowledgements needed, {reachable} targets Up");
                return answer(ctx, reply, Answer::Refused(why));
            }
        };
        self.coordinate(ctx, put, reply, preferred, targets, w);
    }

    /// This node is a target: make the set, store it (and the hint, standing in), and
    /// count it once durable.
    fn coordinate(
        &mut self,
        ctx: &mut Ctx,
        put: Put,
        reply: Reply,
        preferred: Vec<Replica>,
        targets: Vec<Target>,
        w: usize,
    ) {
        let stands_in_for = targets
            .iter()
            .find(|t| t.replica.node_id == self.id)
            .and_then(|t| t.hint_for);
        let (stored, _) = self.disk.building_on(&put.key);
        let stored = match stands_in_for {
            Some(_) if ctx.config.bugs.stand_in_builds_on_empty => VersionSet::empty(),
            _ => stored,
        };
        let seen = match Supersedes::decode(&put.context) {
            Ok(Supersedes::Seen(context)) => context,
            Ok(Supersedes::Stored) => stored.context(),
            Err(e) => return answer(ctx, reply, Answer::Refused(format!("bad context: {e}"))),
        };
        let fresh = ctx.now_us.max(self.clock + 1);
        let versioned = Versioned {
            timestamp_us: ctx.now_us,
            value: Some(put.value.clone()),
        };
        let set = VersionSet::coordinate(&stored, &seen, versioned, self.id, fresh);
        self.clock = fresh.max(set.counter_of(self.id));
        if let Err(e) = set.check_limits() {
            return answer(ctx, reply, Answer::Refused(e.to_string()));
        }
        let encoded = Bytes::from(set.encode());
        let context = set.context();
        let mut last = self.write_local(ctx, put.key.clone(), set, true);
        if let Some(owner) = stands_in_for {
            ctx.stats.stand_in_coordinations += 1;
            match self.keep_hint(ctx, owner, put.key.clone(), encoded.clone(), true) {
                Ok(seq) => last = seq.unwrap_or(last),
                Err(why) => return answer(ctx, reply, Answer::Refused(why)),
            }
        }
        let ids: Vec<NodeId> = targets.iter().map(|t| t.replica.node_id).collect();
        let op = ctx.id();
        self.writes.insert(
            op,
            WriteOp {
                reply,
                key: put.key,
                preferred,
                targets,
                quorum: WriteQuorum::new(&ids, w),
                heard: BTreeSet::new(),
                acked: BTreeSet::new(),
                set: encoded,
                context,
                answered: false,
            },
        );
        self.after(ctx, Some(last), Done::Local(op));
    }

    /// The local write is durable: it counts, and the other targets get theirs.
    pub(super) fn local_written(&mut self, ctx: &mut Ctx, op: u64) {
        let me = self.id;
        let Some(w) = self.writes.get_mut(&op) else {
            return;
        };
        w.quorum.record(me, Ok(()));
        w.heard.insert(me);
        w.acked.insert(me);
        for t in w.targets.iter().filter(|t| t.replica.node_id != me) {
            let (key, set) = (w.key.clone(), w.set.clone());
            let msg = match t.hint_for {
                None => Msg::ReplicaWrite { op, key, set },
                Some(target) => Msg::HintWrite {
                    op,
                    target,
                    key,
                    set,
                },
            };
            ctx.send_node(t.replica.node_id, msg);
        }
        ctx.timer_in(ctx.config.replica_timeout_us, Timer::WriteTimeout(op));
        self.write_progress(ctx, op);
    }

    pub(super) fn on_replica_ack(
        &mut self,
        ctx: &mut Ctx,
        from: NodeId,
        op: u64,
        result: Result<(), String>,
    ) {
        let Some(w) = self.writes.get_mut(&op) else {
            return; // read repair's, or a write already finished
        };
        if !w.heard.insert(from) {
            return;
        }
        if result.is_ok() {
            w.acked.insert(from);
        }
        w.quorum.record(from, result);
        self.write_progress(ctx, op);
    }

    pub(super) fn on_write_timeout(&mut self, ctx: &mut Ctx, op: u64) {
        let Some(w) = self.writes.get_mut(&op) else {
            return;
        };
        for t in &w.targets {
            if w.heard.insert(t.replica.node_id) {
                w.quorum.record(t.replica.node_id, Err("timed out".into()));
            }
        }
        self.write_progress(ctx, op);
    }

    /// Answers once the quorum decides; finishes once every target was heard from.
    fn write_progress(&mut self, ctx: &mut Ctx, op: u64) {
        let Some(w) = self.writes.get_mut(&op) else {
            return;
        };
        if !w.answered {
            let decided = match w.quorum.progress() {
                Progress::Waiting => None,
                Progress::Succeeded => Some(Answer::Written(w.context.clone())),
                Progress::Failed => Some(Answer::Refused(w.quorum.unavailable().to_string())),
            };
            if let Some(a) = decided {
                w.answered = true;
                answer(ctx, w.reply, a);
            }
        }
        if !w.quorum.all_answered() {
            return;
        }
        let w = self.writes.remove(&op).expect("looked up");
        for owner in owed_hints(&w.preferred, &w.targets, |n| w.acked.contains(&n)) {
            // Best effort: the client has its answer; anti-entropy covers a refusal.
            let _ = self.keep_hint(ctx, owner, w.key.clone(), w.set.clone(), false);
            ctx.stats.owed_hints += 1;
        }
    }

    fn forward(&mut self, ctx: &mut Ctx, client: u32, req: u64, put: Put, to: Vec<Replica>) {
        ctx.stats.forwards += 1;
        let fwd = ctx.id();
        let first = to[0].node_id;
        ctx.send_node(
            first,
            Msg::Forward {
                fwd,
                put: put.clone(),
            },
        );
        ctx.timer_in(
            ctx.config.forward_timeout_us,
            Timer::ForwardTimeout { fwd, attempt: 0 },
        );
        self.forwards.insert(
            fwd,
            ForwardOp {
                client,
                req,
                put,
                to,
                attempt: 0,
            },
        );
    }

    pub(super) fn on_forward_answer(&mut self, ctx: &mut Ctx, fwd: u64, a: Answer) {
        if let Some(f) = self.forwards.remove(&fwd) {
            let reply = Reply::Client {
                client: f.client,
                req: f.req,
            };
            answer(ctx, reply, a);
        }
    }

    /// The target tried did not answer in time: the next one, or Unavailable.
    pub(super) fn on_forward_timeout(&mut self, ctx: &mut Ctx, fwd: u64, attempt: usize) {
        let Some(f) = self.forwards.get_mut(&fwd) else {
            return;
        };
        if f.attempt != attempt {
            return;
        }
        f.attempt += 1;
        if let Some(next) = f.to.get(f.attempt) {
            let (to, put) = (next.node_id, f.put.clone());
            ctx.send_node(to, Msg::Forward { fwd, put });
            let timer = Timer::ForwardTimeout {
                fwd,
                attempt: f.attempt,
            };
            ctx.timer_in(ctx.config.forward_timeout_us, timer);
        } else {
            let f = self.forwards.remove(&fwd).expect("looked up");
            let reply = Reply::Client {
                client: f.client,
                req: f.req,
            };
            let why = "no target of the write answered".to_string();
            answer(ctx, reply, Answer::Refused(why));
        }
    }

    /// A GET: every preferred replica is asked, R must answer.
    pub(super) fn on_get(
        &mut self,
        ctx: &mut Ctx,
        reply: Reply,
        key: Bytes,
        consistency: Consistency,
    ) {
        let replicas: Vec<NodeId> = ctx
            .ring
            .replicas_of_key(&key)
            .iter()
            .map(|r| r.node_id)
            .collect();
        let r = needed(consistency, Consistency::Default, replicas.len());
        if r > replicas.len() {
            let why = format!("{r} replicas asked for, the key has {}", replicas.len());
            return answer(ctx, reply, Answer::Refused(why));
        }
        let op = ctx.id();
        let mut read = ReadOp {
            reply,
            key: key.clone(),
            quorum: ReadQuorum::new(&replicas, r),
            replicas: replicas.clone(),
            heard: BTreeSet::new(),
            answered: false,
        };
        for &node in &replicas {
            if node == self.id {
                let local = self.disk.read(&key).cloned().unwrap_or_default();
                read.quorum.record(node, Ok(local));
                read.heard.insert(node);
            } else {
                let key = key.clone();
                ctx.send_node(node, Msg::ReplicaRead { op, key });
            }
        }
        self.reads.insert(op, read);
        ctx.timer_in(ctx.config.replica_timeout_us, Timer::ReadTimeout(op));
        self.read_progress(ctx, op);
    }

    pub(super) fn on_read_answer(
        &mut self,
        ctx: &mut Ctx,
        from: NodeId,
        op: u64,
        set: Option<Bytes>,
    ) {
        let Some(read) = self.reads.get_mut(&op) else {
            return;
        };
        if read.heard.insert(from) {
            let set = set.as_ref().map(decode).unwrap_or_default();
            read.quorum.record(from, Ok(set));
        }
        self.read_progress(ctx, op);
    }

    pub(super) fn on_read_timeout(&mut self, ctx: &mut Ctx, op: u64) {
        let Some(read) = self.reads.get_mut(&op) else {
            return;
        };
        for &node in &read.replicas {
            if read.heard.insert(node) {
                read.quorum.record(node, Err("timed out".into()));
            }
        }
        self.read_progress(ctx, op);
    }

    fn read_progress(&mut self, ctx: &mut Ctx, op: u64) {
        let Some(read) = self.reads.get_mut(&op) else {
            return;
        };
        if !read.answered {
            let decided = match read.quorum.progress() {
                Progress::Waiting => None,
                Progress::Succeeded => {
                    let merged = read.quorum.merged();
                    Some(Answer::Read((!merged.is_empty()).then_some(merged)))
                }
                Progress::Failed => Some(Answer::Refused(read.quorum.unavailable().to_string())),
            };
            if let Some(a) = decided {
                read.answered = true;
                answer(ctx, read.reply, a);
            }
        }
        if read.quorum.all_answered() {
            let read = self.reads.remove(&op).expect("looked up");
            self.repair(ctx, &read);
        }
    }

    /// Read repair: the merge goes to every replica that answered with less.
    fn repair(&mut self, ctx: &mut Ctx, read: &ReadOp) {
        let merged = read.quorum.merged();
        if merged.is_empty() {
            return;
        }
        let stale = read.quorum.stale(&merged);
        if stale.is_empty() {
            return;
        }
        let encoded = Bytes::from(merged.encode());
        for node in stale {
            ctx.stats.read_repairs += 1;
            if node == self.id {
                self.merge_local(ctx, read.key.clone(), &merged);
            } else {
                let op = ctx.id(); // nobody waits for the ack
                let (key, set) = (read.key.clone(), encoded.clone());
                ctx.send_node(node, Msg::ReplicaWrite { op, key, set });
            }
        }
    }
}
