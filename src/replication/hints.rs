//! Hinted handoff, the decide half (DESIGN.md §6): which hints a shard keeps for nodes
//! that were Down when a sloppy-quorum write stood in for them, which it drops, and
//! which it replays next.
//!
//! A hint is keyed by the target's node id (not its address: a node that comes back on
//! another address still gets its hints). The book is bounded twice:
//!
//! - **bytes:** a hint that would take the book past its byte budget is refused (the
//!   write then counts one acknowledgement fewer; anti-entropy repairs the replica);
//! - **window:** hints older than `max_hint_window` are dropped and counted, and a
//!   target Down for longer than that gets no new ones: after so long, Merkle-tree
//!   anti-entropy is the cheaper repair (as in Cassandra's `max_hint_window`). Only
//!   hints that counted toward nothing (a coordinator's, for a replica that missed a
//!   write W other replicas hold) are dropped so: a *counted* hint, a stand-in's under
//!   sloppy quorum, may be one of only W copies of an acknowledged write (a minority
//!   partition's writes exist nowhere else), so it stays until delivered.
//!
//! Replay takes a target's hints oldest first, a bounded number of bytes per batch (the
//! caller paces the batches); a hint leaves the book only when the target acknowledged
//! it. The durable hint log that holds the hints' bytes is `crate::storage::hint_log`; the
//! server's `handoff` module runs both.

use std::collections::{BTreeMap, VecDeque};

use crate::ring::cluster::NodeId;

/// A hint's handle in the book.
pub type HintId = u64;

/// The book's limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HintLimits {
    /// Most bytes of hints kept, all targets together.
    pub bytes_max: u64,
    /// Oldest a hint may get (µs) before it is dropped.
    pub window_us: u64,
}

/// Why a hint was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// The book is at its byte budget.
    Full,
    /// The target has been Down for longer than the window.
    PastWindow,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    id: HintId,
    bytes: u64,
    written_at_us: u64,
    counted: bool,
}

/// One shard's hints, per target, oldest first.
#[derive(Debug)]
pub struct HintBook {
    limits: HintLimits,
    targets: BTreeMap<NodeId, VecDeque<Entry>>,
    bytes: u64,
    next_id: HintId,
    /// Hints dropped past the window, since start (anti-entropy covers them).
    pub dropped: u64,
    /// Hints refused because the book was full, since start.
    pub refused_full: u64,
}

impl HintBook {
    pub fn new(limits: HintLimits) -> HintBook {
        HintBook {
            limits,
            targets: BTreeMap::new(),
            bytes: 0,
            next_id: 1,
            dropped: 0,
            refused_full: 0,
        }
    }

    /// Takes a hint of `bytes` for `target`, written at `now_us`. `down_since_us` is
    /// when the failure detector first held the target Down (`None`: not Down, say a
    /// replica that merely timed out). `counted`: its acknowledgement counts toward a
    /// write's W (never dropped by the window).
    pub fn offer(
        &mut self,
        target: NodeId,
        bytes: u64,
        now_us: u64,
        down_since_us: Option<u64>,
        counted: bool,
    ) -> Result<HintId, Refused> {
        if down_since_us.is_some_and(|since| now_us.saturating_sub(since) > self.limits.window_us) {
            return Err(Refused::PastWindow);
        }
        if self.bytes + bytes > self.limits.bytes_max {
            self.refused_full += 1;
            return Err(Refused::Full);
        }
        let id = self.next_id;
        self.next_id += 1;
        self.bytes += bytes;
        self.targets.entry(target).or_default().push_back(Entry {
            id,
            bytes,
            written_at_us: now_us,
            counted,
        });
        Ok(id)
    }

    /// Drops every uncounted hint older than the window at `now_us`; returns them (the
    /// hint log deletes their records).
    pub fn expire(&mut self, now_us: u64) -> Vec<HintId> {
        let window = self.limits.window_us;
        let mut gone = Vec::new();
        for queue in self.targets.values_mut() {
            // Oldest first: the scan stops at the first hint inside the window.
            let old = queue
                .iter()
                .take_while(|e| now_us.saturating_sub(e.written_at_us) > window)
                .count();
            if old == 0 {
                continue;
            }
            let mut kept = VecDeque::with_capacity(queue.len());
            for (i, e) in queue.drain(..).enumerate() {
                if i < old && !e.counted {
                    self.bytes -= e.bytes;
                    gone.push(e.id);
                } else {
                    kept.push_back(e);
                }
            }
            *queue = kept;
        }
        self.targets.retain(|_, q| !q.is_empty());
        self.dropped += gone.len() as u64;
        gone
    }

    /// The next replay batch for `target`, oldest first: at least one hint (if any),
    /// then as many more as fit in `bytes_max`. They stay in the book until acked.
    pub fn next_batch(&self, target: NodeId, bytes_max: u64) -> Vec<HintId> {
        let mut batch = Vec::new();
        let mut total = 0;
        for e in self.targets.get(&target).into_iter().flatten() {
            if !batch.is_empty() && total + e.bytes > bytes_max {
                break;
            }
            total += e.bytes;
            batch.push(e.id);
        }
        batch
    }

    /// The target stored hint `id`: it leaves the book. False if it was not there
    /// (acked twice, or expired meanwhile).
    pub fn acked(&mut self, target: NodeId, id: HintId) -> bool {
        let Some(queue) = self.targets.get_mut(&target) else {
            return false;
        };
        let Some(at) = queue.iter().position(|e| e.id == id) else {
            return false;
        };
        let e = queue.remove(at).expect("found");
        self.bytes -= e.bytes;
        if queue.is_empty() {
            self.targets.remove(&target);
        }
        true
    }

    /// Targets with hints waiting.
    pub fn targets(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.targets.keys().copied()
    }

    /// Bytes of hints kept.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Bytes of the hints kept for `target`.
    pub fn bytes_for(&self, target: NodeId) -> u64 {
        self.targets
            .get(&target)
            .map_or(0, |queue| queue.iter().map(|e| e.bytes).sum())
    }

    /// Hints kept for `target`.
    pub fn count_for(&self, target: NodeId) -> usize {
        self.targets.get(&target).map_or(0, VecDeque::len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000_000;

    fn book() -> HintBook {
        HintBook::new(HintLimits {
            bytes_max: 1_000,
            window_us: 3 * HOUR,
        })
    }

    #[test]
    fn hints_replay_oldest_first_in_bounded_batches_and_leave_only_when_acked() {
        let mut b = book();
        let ids: Vec<HintId> = (0..5)
            .map(|i| b.offer(7, 100, i, Some(0), false).unwrap())
            .collect();
        assert_eq!(b.next_batch(7, 250), ids[..2]);
        // A batch always makes progress, even when one hint is above the byte bound.
        assert_eq!(b.next_batch(7, 10), ids[..1]);
        assert!(b.acked(7, ids[0]));
        assert!(!b.acked(7, ids[0]), "acked twice");
        assert_eq!(b.next_batch(7, 250), ids[1..3]);
        assert_eq!(b.bytes(), 400);
        assert!(b.next_batch(9, 250).is_empty());
        for &id in &ids[1..] {
            assert!(b.acked(7, id));
        }
        assert_eq!(b.bytes(), 0);
        assert_eq!(b.targets().count(), 0);
    }

    #[test]
    fn the_byte_budget_refuses_and_counts() {
        let mut b = book();
        for i in 0..10 {
            b.offer(3, 100, i, None, false).unwrap();
        }
        assert_eq!(b.offer(5, 1, 10, None, false), Err(Refused::Full));
        assert_eq!(b.refused_full, 1);
        // Room again once the target took some.
        let first = b.next_batch(3, 100)[0];
        b.acked(3, first);
        assert!(b.offer(5, 100, 11, None, false).is_ok());
    }

    #[test]
    fn hints_past_the_window_are_dropped_and_counted_and_no_new_ones_are_taken() {
        let mut b = book();
        let old = b.offer(3, 100, 0, Some(0), false).unwrap();
        let young = b.offer(3, 100, 2 * HOUR, Some(0), false).unwrap();
        assert_eq!(b.expire(3 * HOUR + 1), [old]);
        assert_eq!(b.dropped, 1);
        assert_eq!(b.next_batch(3, 1_000), [young]);
        // Down for longer than the window: no new hints for it.
        assert_eq!(
            b.offer(3, 100, 4 * HOUR, Some(0), false),
            Err(Refused::PastWindow)
        );
        // A target that is not Down (a timeout) is not judged by the window.
        assert!(b.offer(5, 100, 4 * HOUR, None, false).is_ok());
        // Expired hints are gone for good: acking one does nothing.
        assert!(!b.acked(3, old));
        assert_eq!(b.bytes(), 200);
        // A counted hint (a stand-in's) outlives the window until it is delivered.
        let counted = b.offer(9, 100, 4 * HOUR, None, true).unwrap();
        assert!(b.expire(9 * HOUR).iter().all(|&id| id != counted));
        assert_eq!(b.next_batch(9, 1_000), [counted]);
        assert!(b.acked(9, counted));
    }
}
