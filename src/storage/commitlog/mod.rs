//! The per-shard commit log: O_DIRECT segment files, group commit, recovery.
//!
//! Owns one directory of segment files (`NNNNNNNNNNNNNNNNNNNN.log`) and nothing else; it
//! never looks at what a record means (the caller's `kind` byte and payload). The byte
//! layout is drawn in `docs/storage.md` ("Commit log") and in `record.rs`/`segment.rs`.
//!
//! Trade-offs:
//! - **Group commit.** One writer task per log. `append` only copies the record into a
//!   queue; the writer turns everything queued into one aligned write and one
//!   fdatasync and then wakes every waiter of that batch. Under load the cost of an
//!   fdatasync is shared by every write that arrived while the previous one ran; alone,
//!   a write pays one write and one fdatasync.
//! - **O_DIRECT, 4 KiB blocks.** No page cache, so a write error surfaces on the write
//!   (not at some later fsync) and memory stays bounded. The price is alignment: the
//!   partly filled last block is kept in memory and rewritten with the next batch, so the
//!   file is always whole records followed by zeros.
//! - **Sync modes** ([`SyncMode`]): `Batch` acknowledges after the fdatasync; `Periodic`
//!   acknowledges once queued and bounds the loss window to a period; `None` is for tests.
//! - **Fail-stop.** A failed write or fdatasync is never retried (the kernel may have
//!   dropped the dirty pages): the log answers [`LogError::Failed`] from then on.
//! - **Recovery** ([`recover`]) tolerates a torn tail in the newest segment only;
//!   damage anywhere else is [`LogError::Corruption`].
//!
//! Lifecycle: `recover` (replays and repairs), then `open` (starts a new segment after
//! the highest existing one and spawns the writer), then `append`/`durable`, then
//! `close`. The log never appends to a segment written by an earlier session.

mod disk;
mod error;
pub mod record;
mod recovery;
pub mod segment;
mod sim;
mod state;
mod writer;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests_files;
#[cfg(test)]
mod tests_sim;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::task::Poll;

use glommio::sync::Semaphore;
use glommio::{Task, TaskQueueHandle};

pub use disk::{DmaDisk, LogDisk, SegmentFile};
pub use error::LogError;
pub use record::OVERHEAD_BYTES as RECORD_OVERHEAD_BYTES;
pub use recovery::{discard_below, recover, RecoveryReport, TornTail};
pub use segment::{FORMAT_VERSION, MAGIC};
pub use sim::{SimDisk, SimFileHandle};

use state::{Core, RollRequest, RollSlot, Shared};

/// 64 MiB segments: few files, and recycling one frees a useful amount of disk.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// 2 MiB per record: a 1 MiB value with its key, version vector and some headroom.
pub const RECORD_BYTES_MAX_DEFAULT: u32 = 2 << 20;
/// 16 MiB queued per shard is ~10 ms of writes at disk speed.
pub const BUFFER_BYTES_MAX_DEFAULT: usize = 16 << 20;

/// When a record counts as durable, i.e. when [`CommitLog::durable`] resolves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// After the fdatasync of the record's batch (survives power loss).
    Batch,
    /// At once; the writer fdatasyncs at most `period_ms` after a write, so a crash loses
    /// at most about a period of acknowledged writes.
    Periodic { period_ms: u64 },
    /// At once, and no fdatasync for records (tests and benchmarks only). Segment headers
    /// and rolls are still synced, so that recovery can tell a torn tail from corruption.
    None,
}

/// How one shard's commit log is set up.
#[derive(Clone, Debug)]
pub struct CommitLogConfig {
    /// This shard's log directory; created if missing. Holds nothing but segments.
    pub dir: PathBuf,
    /// Size of each segment file. A multiple of 4096 with room for the 4 KiB header block
    /// and one record of `record_bytes_max`.
    pub segment_bytes: u64,
    pub sync: SyncMode,
    /// Largest encoded record, its 9-byte header included. Checked by `append` and, before
    /// anything is allocated, by recovery.
    pub record_bytes_max: u32,
    /// Queued bytes past which `append` waits (back-pressure); at least `record_bytes_max`.
    /// The writer holds at most one more batch of this size while it writes.
    pub buffer_bytes_max: usize,
    /// The first segment `open` creates has at least this id: the owner's tables cover
    /// every segment below it (the manifest's log floor), so none may be created there
    /// again even if no segment is left on disk.
    pub first_segment_id_min: u64,
}

impl CommitLogConfig {
    /// The defaults above, in `dir`, with batch sync.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        CommitLogConfig {
            dir: dir.into(),
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            sync: SyncMode::Batch,
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
            buffer_bytes_max: BUFFER_BYTES_MAX_DEFAULT,
            first_segment_id_min: 0,
        }
    }

    /// Rejects a configuration the log cannot honour.
    pub fn validate(&self) -> Result<(), LogError> {
        let fail = |reason: String| Err(LogError::InvalidConfig(reason));
        let block = segment::BLOCK_BYTES;
        if self.segment_bytes % block != 0 || self.segment_bytes < 2 * block {
            return fail(format!(
                "segment_bytes {} must be a multiple of {block} and at least {}",
                self.segment_bytes,
                2 * block
            ));
        }
        if (self.record_bytes_max as usize) < record::OVERHEAD_BYTES {
            return fail(format!(
                "record_bytes_max {} is below the {}-byte record header",
                self.record_bytes_max,
                record::OVERHEAD_BYTES
            ));
        }
        if u64::from(self.record_bytes_max) > self.segment_bytes - segment::DATA_OFFSET {
            return fail(format!(
                "record_bytes_max {} does not fit a segment of {} bytes after its header",
                self.record_bytes_max, self.segment_bytes
            ));
        }
        if self.buffer_bytes_max < self.record_bytes_max as usize {
            return fail(format!(
                "buffer_bytes_max {} is below record_bytes_max {}",
                self.buffer_bytes_max, self.record_bytes_max
            ));
        }
        if self.sync == (SyncMode::Periodic { period_ms: 0 }) {
            return fail("sync period_ms must be positive".to_string());
        }
        Ok(())
    }
}

/// A record's place in the log: its sequence number in this session (the first append
/// after `open` gets 1). Only meaningful to the log that issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

impl Ticket {
    pub fn seq(self) -> u64 {
        self.0
    }
}

/// Counters of one log since `open`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Records accepted by `append`.
    pub records: u64,
    /// Batch writes (one `write_at` each).
    pub batches: u64,
    /// Record bytes written (without block padding and tail rewrites).
    pub bytes_written: u64,
    /// Successful fdatasyncs of record data (segment headers not counted).
    pub fdatasyncs: u64,
    /// Segments created after the one `open` created.
    pub segments_created: u64,
}

/// One shard's commit log. A cheap handle: clones share the log. `!Send`: it belongs to
/// the shard's executor.
pub struct CommitLog<D: LogDisk = DmaDisk> {
    inner: Rc<Inner<D>>,
}

struct Inner<D: LogDisk> {
    core: Rc<Core<D>>,
    /// The writer task, taken by the first `close`.
    writer: RefCell<Option<Task<()>>>,
}

impl<D: LogDisk> Clone for CommitLog<D> {
    fn clone(&self) -> Self {
        CommitLog {
            inner: self.inner.clone(),
        }
    }
}

impl<D: LogDisk> Drop for Inner<D> {
    /// Dropping the last handle without `close` closes in the background: the writer
    /// still writes what was queued, but nobody learns whether that worked.
    fn drop(&mut self) {
        if let Some(task) = self.writer.get_mut().take() {
            // No borrow can be live here (none is held across an await), unless we are
            // unwinding from a panic inside one; then the writer is simply cancelled.
            if let Ok(mut st) = self.core.state.try_borrow_mut() {
                st.closing = true;
                st.wake_writer();
                task.detach();
            }
        }
    }
}

impl CommitLog<DmaDisk> {
    /// Replays `dir` into `apply`; see [`recover`].
    pub fn recover<E: std::fmt::Display>(
        dir: &Path,
        record_bytes_max: u32,
        apply: impl FnMut(u8, &[u8]) -> Result<(), E>,
    ) -> Result<RecoveryReport, LogError> {
        recover(dir, record_bytes_max, apply)
    }

    /// Opens the log on real files; see [`CommitLog::open_on`].
    pub async fn open(config: CommitLogConfig, queue: TaskQueueHandle) -> Result<Self, LogError> {
        Self::open_on(DmaDisk, config, queue).await
    }
}

impl<D: LogDisk> CommitLog<D> {
    /// Opens the log for writing on `disk`: creates a new segment after the highest
    /// existing id and spawns the writer task into `queue` on the current executor.
    /// Run [`recover`] first: a torn tail left in the previous newest segment would be
    /// corruption once a newer segment exists.
    pub async fn open_on(
        disk: D,
        config: CommitLogConfig,
        queue: TaskQueueHandle,
    ) -> Result<Self, LogError> {
        config.validate()?;
        let dir = config.dir.clone();
        let existing = disk
            .open_dir(&dir)
            .map_err(|e| LogError::io("open directory", &dir, e))?;
        let id = existing
            .last()
            .map_or(segment::FIRST_SEGMENT_ID, |last| last + 1)
            .max(config.first_segment_id_min);
        let seg = match writer::create_segment(&disk, &dir, id, config.segment_bytes).await {
            Ok(seg) => seg,
            Err(fault) => {
                // Best effort: a half-created segment is harmless to recovery while it is
                // the newest, but the next open would put a newer one after it.
                let _ = disk.remove_segment(&fault.path).await;
                return Err(fault.into_io());
            }
        };
        let state = Shared {
            next_ticket: 1,
            active_segment: id,
            segments: existing.into_iter().chain([id]).collect(),
            ..Shared::default()
        };
        let core = Rc::new(Core {
            disk,
            dir,
            segment_bytes: config.segment_bytes,
            record_bytes_max: config.record_bytes_max,
            sync: config.sync,
            state: RefCell::new(state),
            space: Semaphore::new(config.buffer_bytes_max as u64),
        });
        let task = glommio::spawn_local_into(writer::run(core.clone(), seg), queue)
            .expect("the task queue belongs to the current executor");
        Ok(CommitLog {
            inner: Rc::new(Inner {
                core,
                writer: RefCell::new(Some(task)),
            }),
        })
    }

    /// Queues one record (`kind` is the caller's record type). Waits only while more
    /// than `buffer_bytes_max` bytes are queued. The record is not durable yet: see
    /// [`durable`](Self::durable).
    pub async fn append(&self, kind: u8, payload: &[u8]) -> Result<Ticket, LogError> {
        self.append_with(kind, payload.len(), |out| out.extend_from_slice(payload))
            .await
    }

    /// [`append`](Self::append) of a payload of `payload_len` bytes that `encode`
    /// writes once the record's room in the queue is taken, in the same synchronous
    /// step as queueing it. So whatever `encode` decides (a last-write-wins clock, say)
    /// follows the order of the records in the log, even when appends wait for room and
    /// a smaller record overtakes a larger one. `encode` does not run if the append
    /// fails; it must write exactly `payload_len` bytes.
    pub async fn append_with(
        &self,
        kind: u8,
        payload_len: usize,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Ticket, LogError> {
        let core = &self.inner.core;
        let record_bytes = record::record_bytes(payload_len);
        if record_bytes as u64 > u64::from(core.record_bytes_max) {
            return Err(LogError::RecordTooLarge {
                record_bytes: record_bytes as u64,
                record_bytes_max: core.record_bytes_max,
            });
        }
        core.state.borrow().check_accepting()?;
        if core.space.acquire(record_bytes as u64).await.is_err() {
            // The writer closed the semaphore: the log failed or was closed.
            return Err(core
                .state
                .borrow()
                .check_accepting()
                .err()
                .unwrap_or(LogError::Closed));
        }
        let mut st = core.state.borrow_mut();
        if let Err(e) = st.check_accepting() {
            drop(st);
            core.space.signal(record_bytes as u64);
            return Err(e);
        }
        record::encode_unsealed_with(&mut st.queue, kind, payload_len, encode);
        st.queue_lens.push_back(record_bytes);
        let ticket = Ticket(st.next_ticket);
        st.next_ticket += 1;
        st.stats.records += 1;
        st.wake_writer();
        Ok(ticket)
    }

    /// Resolves once `ticket` is durable under the sync mode: in `Batch` mode after the
    /// fdatasync of its batch, otherwise at once. Fails with [`LogError::Failed`] if the
    /// log failed before the record was synced.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), LogError> {
        let core = &self.inner.core;
        assert!(
            ticket.0 >= 1 && ticket.0 < core.state.borrow().next_ticket,
            "ticket {ticket:?} was not issued by this log"
        );
        std::future::poll_fn(|cx| {
            let mut st = core.state.borrow_mut();
            if ticket.0 <= st.synced {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &st.failed {
                return Poll::Ready(Err(e.clone()));
            }
            if core.sync != SyncMode::Batch {
                return Poll::Ready(Ok(()));
            }
            if st.stopped {
                // Unreachable in batch mode (close syncs everything); kept as a guard.
                return Poll::Ready(Err(LogError::Closed));
            }
            st.durable_waiters.push((ticket.0, cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    /// Appends and waits until the record is durable: `append` then `durable`.
    pub async fn append_durable(&self, kind: u8, payload: &[u8]) -> Result<Ticket, LogError> {
        let ticket = self.append(kind, payload).await?;
        self.durable(ticket).await?;
        Ok(ticket)
    }

    /// Clean shutdown: stops taking records, writes everything queued, fdatasyncs
    /// (unless the mode is `None`), closes the file and stops the writer. Returns the
    /// log's failure if it failed. Calling it again waits for the same end.
    pub async fn close(&self) -> Result<(), LogError> {
        let core = &self.inner.core;
        {
            let mut st = core.state.borrow_mut();
            st.closing = true;
            st.wake_writer();
        }
        let task = self.inner.writer.borrow_mut().take();
        match task {
            Some(task) => task.await,
            None => {
                std::future::poll_fn(|cx| {
                    let mut st = core.state.borrow_mut();
                    if st.stopped {
                        Poll::Ready(())
                    } else {
                        st.stop_waiters.push(cx.waker().clone());
                        Poll::Pending
                    }
                })
                .await
            }
        }
        let st = core.state.borrow();
        match &st.failed {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Seals the active segment: every record appended before this call lands in a
    /// segment below the returned id, every later one in that segment or above. After
    /// the memtable that holds those records is flushed, `remove_segments_below(id)`
    /// recycles their segments. If the active segment is still empty it is the answer.
    ///
    /// The boundary is taken when `roll` is *called*, not when its future is first
    /// polled: a caller can swap its memtable and roll in one synchronous step, with no
    /// append in between, and wait for the segment id later.
    pub fn roll(&self) -> impl std::future::Future<Output = Result<u64, LogError>> + 'static {
        let core = self.inner.core.clone();
        let slot = Rc::new(RollSlot::default());
        let registered = {
            let mut st = core.state.borrow_mut();
            st.check_accepting().map(|()| {
                let boundary = st.next_ticket;
                st.rolls.push_back(RollRequest {
                    boundary,
                    slot: slot.clone(),
                });
                st.wake_writer();
            })
        };
        async move {
            registered?;
            std::future::poll_fn(|cx| {
                if let Some(id) = slot.id.get() {
                    return Poll::Ready(Ok(id));
                }
                let st = core.state.borrow();
                if let Some(e) = &st.failed {
                    return Poll::Ready(Err(e.clone()));
                }
                if st.stopped {
                    return Poll::Ready(Err(LogError::Closed));
                }
                slot.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            })
            .await
        }
    }

    /// Segment ids on disk, ascending (earlier sessions' and this one's).
    pub fn segment_ids(&self) -> Vec<u64> {
        self.inner
            .core
            .state
            .borrow()
            .segments
            .iter()
            .copied()
            .collect()
    }

    /// The segment the writer appends to.
    pub fn active_segment(&self) -> u64 {
        self.inner.core.state.borrow().active_segment
    }

    /// Deletes every segment with an id below `id` (never the active one), oldest
    /// first, syncing the directory after each so that a crash leaves no gap. Returns
    /// the ids removed. An error here does not fail the log.
    pub async fn remove_segments_below(&self, id: u64) -> Result<Vec<u64>, LogError> {
        let core = &self.inner.core;
        let victims: Vec<u64> = {
            let mut st = core.state.borrow_mut();
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            let bound = id.min(st.active_segment);
            let victims: Vec<u64> = st.segments.range(..bound).copied().collect();
            // Taken out first so that a concurrent call does not pick them too.
            victims.iter().for_each(|v| {
                st.segments.remove(v);
            });
            victims
        };
        for (i, &victim) in victims.iter().enumerate() {
            let path = segment::path(&core.dir, victim);
            let removed = match core.disk.remove_segment(&path).await {
                Ok(()) => core
                    .disk
                    .sync_dir(&core.dir)
                    .await
                    .map_err(|e| LogError::io("sync directory", &core.dir, e)),
                Err(e) => Err(LogError::io("remove", &path, e)),
            };
            if let Err(e) = removed {
                // The failed one may still exist; the rest were not touched.
                core.state.borrow_mut().segments.extend(&victims[i..]);
                return Err(e);
            }
        }
        Ok(victims)
    }

    /// Bytes queued for the writer now.
    pub fn queued_bytes(&self) -> usize {
        self.inner.core.state.borrow().queue.len()
    }

    pub fn stats(&self) -> LogStats {
        self.inner.core.state.borrow().stats
    }

    /// The log's failure, if it failed.
    pub fn failure(&self) -> Option<LogError> {
        self.inner.core.state.borrow().failed.clone()
    }
}
