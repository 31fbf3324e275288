//! Histories of client operations, and the checks run over them (issue 6): the
//! deterministic simulator and the real-process fault tests record every operation
//! they make, and ask afterwards whether the store kept its promises.
//!
//! Every operation is recorded when invoked and again when it completes: `Ok` (the
//! store acknowledged it), `Fail` (a definite error), or `Timeout` (unknown: it may or
//! may not have taken effect). Every write carries a value no other write uses, so a
//! value read names the write that made it; a write's acknowledgement carries the
//! context of the set it made (which covers the write's own dot).
//!
//! Checks:
//!
//! - **Lost writes** ([`History::lost_writes`]): an acknowledged write is lost if the
//!   final read of its key at R = N neither returns its value nor returns a context that
//!   covers the write's (then a later write saw it and superseded it, or a delete did).
//!   Failed and timed-out writes may be lost: nothing was promised.
//! - **Lost writes, by value** ([`History::lost_writes_by_value`]): stricter. The final
//!   read must return the write's value, or the value of a write whose client had seen
//!   the write (what it sent as its context covers the write's acknowledged context).
//!   The final context alone is not taken as proof: if a dot is ever minted twice (a
//!   node that lost an unsynced write and minted its counter again), the final context
//!   covers a write whose value no replica holds, and only this check sees it. Needs
//!   writes recorded with what they had seen ([`History::invoke_write_seen`]).
//! - **Stale reads** ([`History::stale_reads`], for strict quorum with R + W > N and no
//!   failures): a read that began after a write of its key was acknowledged must see
//!   that write, by value or by a context covering it.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::version::Context;

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still running (the history was cut before it completed): counts as a timeout.
    Pending,
    Ok,
    Fail(String),
    Timeout,
}

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    Write {
        value: Bytes,
        /// The context of the set the write made (from its acknowledgement).
        context: Option<Context>,
    },
    Read {
        values: Vec<Bytes>,
        context: Option<Context>,
    },
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub client: u32,
    pub key: Bytes,
    pub kind: Kind,
    pub invoked_us: u64,
    pub completed_us: Option<u64>,
    pub outcome: Outcome,
}

/// The index of an operation in its history.
pub type OpId = usize;

/// A recorded history.
#[derive(Clone, Debug, Default)]
pub struct History {
    ops: Vec<Op>,
    /// What each write's client had seen (the context it sent), for writes recorded by
    /// [`History::invoke_write_seen`].
    seen: BTreeMap<OpId, Context>,
}

/// `a` covers every event `b` has seen (version vectors: `a >= b`).
fn covers(a: &Context, b: &Context) -> bool {
    b.pairs()
        .iter()
        .all(|&(node, counter)| a.counter(node) >= counter)
}

impl History {
    pub fn new() -> History {
        History::default()
    }

    /// Records a write of `value` (unique to this write) invoked at `now_us`.
    pub fn invoke_write(&mut self, client: u32, key: Bytes, value: Bytes, now_us: u64) -> OpId {
        self.push(
            client,
            key,
            Kind::Write {
                value,
                context: None,
            },
            now_us,
        )
    }

    /// Records a write of `value` (unique to this write) sent with the context `seen`
    /// (what the client had read of the key; empty for none), invoked at `now_us`.
    pub fn invoke_write_seen(
        &mut self,
        client: u32,
        key: Bytes,
        value: Bytes,
        seen: Context,
        now_us: u64,
    ) -> OpId {
        let id = self.invoke_write(client, key, value, now_us);
        self.seen.insert(id, seen);
        id
    }

    /// Records a read invoked at `now_us`.
    pub fn invoke_read(&mut self, client: u32, key: Bytes, now_us: u64) -> OpId {
        self.push(
            client,
            key,
            Kind::Read {
                values: Vec::new(),
                context: None,
            },
            now_us,
        )
    }

    fn push(&mut self, client: u32, key: Bytes, kind: Kind, now_us: u64) -> OpId {
        self.ops.push(Op {
            client,
            key,
            kind,
            invoked_us: now_us,
            completed_us: None,
            outcome: Outcome::Pending,
        });
        self.ops.len() - 1
    }

    /// A write was acknowledged with the context of the set it made.
    pub fn write_ok(&mut self, id: OpId, context: Context, now_us: u64) {
        if let Kind::Write { context: c, .. } = &mut self.ops[id].kind {
            *c = Some(context);
        }
        self.complete(id, Outcome::Ok, now_us);
    }

    /// A read returned these values (tombstones left out) and context.
    pub fn read_ok(&mut self, id: OpId, values: Vec<Bytes>, context: Context, now_us: u64) {
        if let Kind::Read {
            values: v,
            context: c,
        } = &mut self.ops[id].kind
        {
            *v = values;
            *c = Some(context);
        }
        self.complete(id, Outcome::Ok, now_us);
    }

    /// An operation failed (`Outcome::Fail`) or timed out (`Outcome::Timeout`).
    pub fn complete(&mut self, id: OpId, outcome: Outcome, now_us: u64) {
        let op = &mut self.ops[id];
        op.outcome = outcome;
        op.completed_us = Some(now_us);
    }

    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Acknowledged writes: what the store promised to keep.
    pub fn acknowledged_writes(&self) -> impl Iterator<Item = (OpId, &Op)> {
        self.ops
            .iter()
            .enumerate()
            .filter(|(_, op)| op.outcome == Outcome::Ok && matches!(op.kind, Kind::Write { .. }))
    }

    /// Acknowledged writes that the final state has neither kept nor superseded.
    /// `final_reads` maps each key to what a read at R = N returned after the run (a
    /// key missing from it read as nothing: no values, empty context).
    pub fn lost_writes(&self, final_reads: &BTreeMap<Bytes, (Vec<Bytes>, Context)>) -> Vec<OpId> {
        let nothing = (Vec::new(), Context::empty());
        self.acknowledged_writes()
            .filter(|(_, op)| {
                let (values, context) = final_reads.get(&op.key).unwrap_or(&nothing);
                !sees(op, values, context)
            })
            .map(|(id, _)| id)
            .collect()
    }

    /// Acknowledged writes whose value the final state neither holds nor superseded
    /// by a write that had seen it (module doc). A write recorded without what it had
    /// seen supersedes nothing here. The answer holds every write [`History::lost_writes`]
    /// names, and those that only the final context vouched for.
    pub fn lost_writes_by_value(
        &self,
        final_reads: &BTreeMap<Bytes, (Vec<Bytes>, Context)>,
    ) -> Vec<OpId> {
        let none = Vec::new();
        // Per key, what the writes whose value survived had seen.
        let mut survivors_seen: BTreeMap<&Bytes, Vec<&Context>> = BTreeMap::new();
        for (id, op) in self.ops.iter().enumerate() {
            let Kind::Write { value, .. } = &op.kind else {
                continue;
            };
            let finals = final_reads.get(&op.key).map_or(&none, |(values, _)| values);
            if let (true, Some(seen)) = (finals.contains(value), self.seen.get(&id)) {
                survivors_seen.entry(&op.key).or_default().push(seen);
            }
        }
        self.acknowledged_writes()
            .filter(|(_, op)| {
                let Kind::Write { value, context } = &op.kind else {
                    return false;
                };
                let finals = final_reads.get(&op.key).map_or(&none, |(values, _)| values);
                if finals.contains(value) {
                    return false;
                }
                let Some(written) = context.as_ref().filter(|c| !c.is_empty()) else {
                    return true;
                };
                !survivors_seen
                    .get(&op.key)
                    .into_iter()
                    .flatten()
                    .any(|seen| covers(seen, written))
            })
            .map(|(id, _)| id)
            .collect()
    }

    /// Reads that missed a write acknowledged before they began: `(read, write)`
    /// pairs. Meaningful for strict quorum with R + W > N and no failures.
    pub fn stale_reads(&self) -> Vec<(OpId, OpId)> {
        let mut writes_by_key: BTreeMap<&Bytes, Vec<(OpId, &Op)>> = BTreeMap::new();
        for (id, op) in self.acknowledged_writes() {
            writes_by_key.entry(&op.key).or_default().push((id, op));
        }
        let mut stale = Vec::new();
        for (read_id, read) in self.ops.iter().enumerate() {
            let (Outcome::Ok, Kind::Read { values, context }) = (&read.outcome, &read.kind) else {
                continue;
            };
            let context = context.clone().unwrap_or_else(Context::empty);
            for &(write_id, write) in writes_by_key.get(&read.key).into_iter().flatten() {
                let before = write
                    .completed_us
                    .is_some_and(|done| done < read.invoked_us);
                if before && !sees(write, values, &context) {
                    stale.push((read_id, write_id));
                }
            }
        }
        stale
    }
}

/// Whether a read that returned `values` and `context` saw the acknowledged `write`.
fn sees(write: &Op, values: &[Bytes], context: &Context) -> bool {
    let Kind::Write {
        value,
        context: written,
    } = &write.kind
    else {
        return true;
    };
    values.contains(value)
        || written
            .as_ref()
            .is_some_and(|w| !w.is_empty() && covers(context, w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(pairs: &[(u64, u64)]) -> Context {
        Context::from_sorted(pairs.to_vec())
    }

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    #[test]
    fn a_kept_or_superseded_write_is_not_lost_and_a_vanished_one_is() {
        let mut h = History::new();
        let kept = h.invoke_write(1, b("k"), b("v1"), 0);
        h.write_ok(kept, ctx(&[(1, 1)]), 10);
        let superseded = h.invoke_write(1, b("j"), b("old"), 0);
        h.write_ok(superseded, ctx(&[(1, 2)]), 10);
        let vanished = h.invoke_write(2, b("k"), b("v2"), 20);
        h.write_ok(vanished, ctx(&[(3, 1)]), 30);
        let unacknowledged = h.invoke_write(2, b("k"), b("v3"), 40);
        h.complete(unacknowledged, Outcome::Timeout, 50);
        let finals = BTreeMap::from([
            // k still holds v1; v2's dot (3, 1) is nowhere.
            (b("k"), (vec![b("v1")], ctx(&[(1, 1)]))),
            // j holds a later value whose context covers "old".
            (b("j"), (vec![b("new")], ctx(&[(1, 3)]))),
        ]);
        assert_eq!(h.lost_writes(&finals), [vanished]);
    }

    #[test]
    fn a_key_missing_from_the_final_reads_loses_its_acknowledged_writes() {
        let mut h = History::new();
        let w = h.invoke_write(1, b("k"), b("v"), 0);
        h.write_ok(w, ctx(&[(1, 1)]), 1);
        assert_eq!(h.lost_writes(&BTreeMap::new()), [w]);
    }

    #[test]
    fn a_read_after_an_acknowledged_write_must_see_it() {
        let mut h = History::new();
        let w = h.invoke_write(1, b("k"), b("v"), 0);
        h.write_ok(w, ctx(&[(1, 1)]), 10);
        // Began before the ack: may miss it.
        let early = h.invoke_read(2, b("k"), 5);
        h.read_ok(early, vec![], Context::empty(), 12);
        // Began after: must see it, by value or by a covering context.
        let by_value = h.invoke_read(2, b("k"), 11);
        h.read_ok(by_value, vec![b("v")], ctx(&[(1, 1)]), 13);
        let by_context = h.invoke_read(2, b("k"), 11);
        h.read_ok(by_context, vec![b("later")], ctx(&[(1, 2)]), 13);
        let stale = h.invoke_read(3, b("k"), 11);
        h.read_ok(stale, vec![], Context::empty(), 14);
        let failed = h.invoke_read(3, b("k"), 11);
        h.complete(failed, Outcome::Fail("unavailable".into()), 14);
        assert_eq!(h.stale_reads(), [(stale, w)]);
    }

    #[test]
    fn by_value_a_write_is_kept_only_by_its_value_or_by_a_surviving_write_that_saw_it() {
        let mut h = History::new();
        // Superseded: a later write, whose value survived, was sent with a context
        // covering it.
        let old = h.invoke_write_seen(1, b("k"), b("old"), Context::empty(), 0);
        h.write_ok(old, ctx(&[(1, 1)]), 10);
        let new = h.invoke_write_seen(2, b("k"), b("new"), ctx(&[(1, 1)]), 20);
        h.write_ok(new, ctx(&[(1, 2)]), 30);
        // Its dot was minted twice: the final context covers it, its value is gone and
        // no surviving write had seen it.
        let reused = h.invoke_write_seen(1, b("j"), b("first"), Context::empty(), 0);
        h.write_ok(reused, ctx(&[(3, 1)]), 10);
        let again = h.invoke_write_seen(2, b("j"), b("second"), Context::empty(), 20);
        h.write_ok(again, ctx(&[(3, 1)]), 30);
        let finals = BTreeMap::from([
            (b("k"), (vec![b("new")], ctx(&[(1, 2)]))),
            (b("j"), (vec![b("second")], ctx(&[(3, 1)]))),
        ]);
        assert!(
            h.lost_writes(&finals).is_empty(),
            "the context vouches for both"
        );
        assert_eq!(h.lost_writes_by_value(&finals), [reused]);
    }
}
