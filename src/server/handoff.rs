//! Hinted handoff, the "do" half: one shard's hints, kept in its durable hint log
//! ([`crate::storage::hint_log`]) under the decisions of its hint book
//! ([`crate::replication::hints`]), and the background task that replays them.
//!
//! A hint is taken in two cases (DESIGN.md §6): this shard stood in for a Down replica
//! under sloppy quorum (HINT_WRITE; its acknowledgement counts toward W, so it answers
//! only once the hint is durable), or it coordinated a write that a preferred replica
//! did not acknowledge and no stand-in took for it (a timeout, or a Down replica with
//! no stand-in: kept after the client has its answer, counting toward nothing).
//!
//! Replay: every [`REPLAY_TICK`], hints past the window are dropped (counted;
//! anti-entropy covers them), then each target the failure detector holds Up gets its
//! oldest hints, up to the tick's share of `--hint-replay-bytes-per-sec`, as
//! REPLICA_WRITEs to its shard that owns the key. A hint leaves the log only when the
//! target acknowledged it; a target that fails keeps the rest for the next tick.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use ahash::AHashMap;
use bytes::Bytes;

use crate::protocol::{Request, Status};
use crate::replication::hints::{HintBook, HintId, HintLimits, Refused};
use crate::ring::cluster::NodeId;
use crate::runtime::ShardMsg;
use crate::storage::hint_log::{Hint, HintLog, HintLogError, Location, PAYLOAD_FIXED_BYTES};
use crate::version::now_us;

use super::control::HintReport;
use super::Shard;

/// How often replay runs.
pub const REPLAY_TICK: Duration = Duration::from_millis(100);
/// Hints of one target sent at once (one batch's REPLICA_WRITEs are in flight together).
const BATCH_HINTS_MAX: usize = 64;

/// The settings of a shard's hints.
#[derive(Clone, Copy, Debug)]
pub struct HandoffConfig {
    pub limits: HintLimits,
    pub segment_bytes_max: u64,
    /// Replay's pace, per shard.
    pub replay_bytes_per_sec: u64,
}

/// One shard's hints.
pub struct Handoff {
    log: HintLog,
    book: RefCell<HintBook>,
    /// Where each hint of the book is stored.
    locations: RefCell<AHashMap<HintId, Location>>,
    config: HandoffConfig,
    /// Something changed since the last report to the control plane.
    changed: Cell<bool>,
    /// Hints not kept (refused or failed), since start: callers log the 1st, 2nd, 4th…
    not_kept: Cell<u64>,
}

impl Handoff {
    /// Opens the shard's hint log in `dir` and takes every hint it still holds back
    /// into the book (those past the window, or over the budget, are dropped).
    pub async fn open(dir: std::path::PathBuf, config: HandoffConfig) -> Result<Handoff, String> {
        let (log, recovered) = HintLog::open(dir.clone(), config.segment_bytes_max)
            .await
            .map_err(|e| e.to_string())?;
        if recovered.bad_records > 0 {
            eprintln!(
                "ringkv: {}: {} hint segment(s) ended early (torn or damaged); \
                 anti-entropy repairs what their lost hints carried",
                dir.display(),
                recovered.bad_records
            );
        }
        let handoff = Handoff {
            log,
            book: RefCell::new(HintBook::new(config.limits)),
            locations: RefCell::default(),
            config,
            changed: Cell::new(true),
            not_kept: Cell::new(0),
        };
        for (at, hint) in recovered.hints {
            let offered = handoff.book.borrow_mut().offer(
                hint.target,
                u64::from(at.bytes()),
                hint.written_at_us,
                None,
                hint.counted,
            );
            match offered {
                Ok(id) => {
                    handoff.locations.borrow_mut().insert(id, at);
                }
                Err(_) => handoff.log.release(at),
            }
        }
        Ok(handoff)
    }

    /// Keeps `versions` of `key` for `target`; returns once the hint is durable.
    /// `down_since_us`: since when the detector holds the target Down (the window
    /// refuses hints for a target Down longer than it). `counted`: the hint's
    /// acknowledgement counts toward a write's W (a stand-in's): the window never drops
    /// it, since it may be one of the write's only copies.
    pub async fn keep(
        &self,
        target: NodeId,
        key: Bytes,
        versions: Bytes,
        down_since_us: Option<u64>,
        counted: bool,
    ) -> Result<(), String> {
        let kept = self
            .try_keep(target, key, versions, down_since_us, counted)
            .await;
        if kept.is_err() {
            self.not_kept.set(self.not_kept.get() + 1);
        }
        kept
    }

    /// Hints not kept since start, if the latest failure of [`Handoff::keep`] is worth
    /// a log line: the 1st, 2nd, 4th, 8th… (a full book refuses every write's hint; the
    /// log should not repeat it for each).
    pub fn failure_to_log(&self) -> Option<u64> {
        let count = self.not_kept.get();
        count.is_power_of_two().then_some(count)
    }

    async fn try_keep(
        &self,
        target: NodeId,
        key: Bytes,
        versions: Bytes,
        down_since_us: Option<u64>,
        counted: bool,
    ) -> Result<(), String> {
        let now = now_us();
        let hint = Hint {
            target,
            written_at_us: now,
            key,
            versions,
            counted,
        };
        let bytes = crate::storage::commitlog::record::record_bytes(
            PAYLOAD_FIXED_BYTES + hint.key.len() + hint.versions.len(),
        ) as u64;
        // Bound first: the book's borrow must end before the arms borrow it again.
        let offered = self
            .book
            .borrow_mut()
            .offer(target, bytes, now, down_since_us, counted);
        let id = match offered {
            Ok(id) => id,
            Err(Refused::Full) => {
                self.changed.set(true);
                return Err(format!(
                    "the hint book is full ({} bytes); anti-entropy will repair node {target:016x}",
                    self.book.borrow().bytes()
                ));
            }
            Err(Refused::PastWindow) => {
                return Err(format!(
                    "node {target:016x} has been Down for longer than the hint window"
                ))
            }
        };
        self.changed.set(true);
        match self.log.append(&hint).await {
            Ok(at) => {
                self.locations.borrow_mut().insert(id, at);
                Ok(())
            }
            Err(e) => {
                self.book.borrow_mut().acked(target, id);
                Err(format!("keeping a hint: {e}"))
            }
        }
    }

    /// Hints waiting, per target: `(target, hints, bytes)`; and the book's counters.
    pub fn report(&self) -> HintReport {
        let book = self.book.borrow();
        HintReport {
            pending: book
                .targets()
                .map(|t| (t, book.count_for(t) as u64, book.bytes_for(t)))
                .collect(),
            dropped: book.dropped,
            refused: book.refused_full,
        }
    }

    /// Hints waiting for `target`.
    pub fn pending_for(&self, target: NodeId) -> usize {
        self.book.borrow().count_for(target)
    }

    fn forget(&self, target: NodeId, id: HintId) {
        self.book.borrow_mut().acked(target, id);
        if let Some(at) = self.locations.borrow_mut().remove(&id) {
            self.log.release(at);
        }
        self.changed.set(true);
    }
}

/// Replays the shard's hints for as long as the shard runs.
pub async fn replay(shard: Rc<Shard>) {
    let handoff = &shard.handoff;
    let per_tick =
        (handoff.config.replay_bytes_per_sec as f64 * REPLAY_TICK.as_secs_f64()).max(1.0) as u64;
    loop {
        glommio::timer::sleep(REPLAY_TICK).await;
        let expired = handoff.book.borrow_mut().expire(now_us());
        for id in expired {
            if let Some(at) = handoff.locations.borrow_mut().remove(&id) {
                handoff.log.release(at);
            }
            handoff.changed.set(true);
        }
        let health = shard.health();
        let targets: Vec<NodeId> = handoff.book.borrow().targets().collect();
        let mut budget = per_tick;
        for target in targets.into_iter().filter(|&t| health.is_up(t)) {
            while budget > 0 {
                let (bytes, all_delivered) = replay_batch(&shard, target, budget).await;
                budget = budget.saturating_sub(bytes);
                if !all_delivered || bytes == 0 {
                    break;
                }
            }
        }
        if handoff.changed.replace(false) {
            report(&shard);
        }
    }
}

/// Sends one batch of `target`'s hints (at most `bytes_max` bytes); returns the bytes
/// delivered and whether every hint of the batch was.
async fn replay_batch(shard: &Rc<Shard>, target: NodeId, bytes_max: u64) -> (u64, bool) {
    let handoff = &shard.handoff;
    let mut batch = handoff.book.borrow().next_batch(target, bytes_max);
    batch.truncate(BATCH_HINTS_MAX);
    let sends = batch.into_iter().filter_map(|id| {
        let at = handoff.locations.borrow().get(&id).copied()?;
        let shard = shard.clone();
        Some(async move {
            let delivered = deliver(&shard, target, at).await;
            (id, at, delivered)
        })
    });
    let tasks: Vec<_> = sends.map(glommio::spawn_local).collect();
    let mut bytes = 0;
    let mut all_delivered = true;
    for task in tasks {
        let (id, at, delivered) = task.await;
        match delivered {
            Ok(()) => {
                bytes += u64::from(at.bytes());
                handoff.forget(target, id);
            }
            Err(Undeliverable::Later) => all_delivered = false,
            Err(Undeliverable::Never(why)) => {
                eprintln!(
                    "ringkv: shard {}: dropping a hint for {target:016x}: {why}",
                    shard.id
                );
                handoff.forget(target, id);
            }
        }
    }
    (bytes, all_delivered)
}

enum Undeliverable {
    /// Try again next tick.
    Later,
    /// The hint cannot be delivered (unreadable, or the target no longer replicates the
    /// key): dropped; anti-entropy covers it.
    Never(String),
}

async fn deliver(shard: &Shard, target: NodeId, at: Location) -> Result<(), Undeliverable> {
    let hint = match shard.handoff.log.read(at).await {
        Ok(hint) => hint,
        Err(e @ (HintLogError::Corrupt { .. } | HintLogError::Gone { .. })) => {
            return Err(Undeliverable::Never(e.to_string()))
        }
        Err(_) => return Err(Undeliverable::Later),
    };
    let snapshot = shard.snapshot();
    let Some(replica) = snapshot
        .ring
        .replicas_of_key(&hint.key)
        .iter()
        .find(|r| r.node_id == target)
        .copied()
    else {
        return Err(Undeliverable::Never(
            "the node no longer replicates the key".into(),
        ));
    };
    let request = Request::ReplicaWrite {
        key: hint.key,
        versions: hint.versions,
    };
    match super::coordinator::send(shard, &replica, &request).await {
        Ok(response) if response.status == Status::Ok => Ok(()),
        _ => Err(Undeliverable::Later),
    }
}

/// Tells the control plane (shard 0) what this shard's hints are; if its inbox is
/// full, the next tick tries again.
fn report(shard: &Shard) {
    let report = shard.handoff.report();
    let message = ShardMsg::Hints {
        shard: shard.id,
        report,
    };
    if shard.peers[0].try_send(message).is_err() {
        shard.handoff.changed.set(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{run, temp_dir};

    fn config(bytes_max: u64) -> HandoffConfig {
        HandoffConfig {
            limits: HintLimits {
                bytes_max,
                window_us: 3_600_000_000,
            },
            segment_bytes_max: 1 << 20,
            replay_bytes_per_sec: 1 << 20,
        }
    }

    #[test]
    fn hints_are_kept_durably_refused_past_the_budget_and_come_back_after_a_restart() {
        let dir = temp_dir();
        let path = dir.path().join("hints");
        let (first, second) = {
            let path = path.clone();
            run(move || async move {
                let handoff = Handoff::open(path.clone(), config(300)).await.unwrap();
                let set = Bytes::from_static(b"encoded set");
                handoff
                    .keep(7, Bytes::from_static(b"k1"), set.clone(), None, false)
                    .await
                    .unwrap();
                handoff
                    .keep(
                        9,
                        Bytes::from_static(b"k2"),
                        set.clone(),
                        Some(now_us()),
                        true,
                    )
                    .await
                    .unwrap();
                // Past the budget: refused with a message, and counted.
                let big = Bytes::from(vec![0u8; 400]);
                let refused = handoff
                    .keep(7, Bytes::from_static(b"k3"), big, None, false)
                    .await;
                assert!(refused.unwrap_err().contains("full"));
                let report = handoff.report();
                handoff.log.settle().await;
                drop(handoff);
                let again = Handoff::open(path, config(300)).await.unwrap();
                (report, again.report())
            })
        };
        assert_eq!(first.refused, 1);
        let pending = |r: &HintReport| -> Vec<(NodeId, u64)> {
            r.pending.iter().map(|&(t, n, _)| (t, n)).collect()
        };
        assert_eq!(pending(&first), [(7, 1), (9, 1)]);
        assert_eq!(
            pending(&second),
            pending(&first),
            "the log brought them back"
        );
    }
}
