//! State shared by a log's handles and its writer task, and its transitions.
//!
//! One `Rc<Core>` per log; the mutable part sits in one `RefCell` that is never held
//! across an await. The writer moves the watermarks (`written`, `synced`) and wakes the
//! waiters they cover; handles queue records and wait.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::task::Waker;

use glommio::sync::Semaphore;

use super::disk::LogDisk;
use super::error::LogError;
use super::{LogStats, SyncMode};

/// Everything the handle and the writer share.
pub(super) struct Core<D: LogDisk> {
    pub disk: D,
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub record_bytes_max: u32,
    pub sync: SyncMode,
    pub state: RefCell<Shared>,
    /// Units are queued bytes; `append` acquires, the writer signals once it has copied
    /// records out of the queue. Bounds the queue to `buffer_bytes_max`.
    pub space: Semaphore,
}

/// Mutable state shared by the handle and the writer.
#[derive(Default)]
pub(super) struct Shared {
    /// Records waiting for the writer, encoded with a zero CRC (sealed at write time).
    pub queue: Vec<u8>,
    /// Encoded size of each queued record, oldest first.
    pub queue_lens: VecDeque<usize>,
    /// Ticket of the next append; the first is 1. The queue holds `written + 1 ..next_ticket`.
    pub next_ticket: u64,
    /// Every ticket up to this one is written to its segment.
    pub written: u64,
    /// Every ticket up to this one is covered by a successful fdatasync.
    pub synced: u64,
    /// Set once by the writer on a fatal error; every later call returns it.
    pub failed: Option<LogError>,
    /// `close` was called (or every handle dropped): accept nothing, drain, stop.
    pub closing: bool,
    /// The writer task has exited.
    pub stopped: bool,
    /// The writer, when it waits for work.
    pub writer_waker: Option<Waker>,
    /// Tasks in `durable` (batch mode): `(ticket, waker)`.
    pub durable_waiters: Vec<(u64, Waker)>,
    /// Tasks in `close` that did not own the writer task.
    pub stop_waiters: Vec<Waker>,
    /// Pending `roll` calls, oldest first.
    pub rolls: VecDeque<RollRequest>,
    /// The segment the writer appends to.
    pub active_segment: u64,
    /// Segment ids on disk, this session's and earlier ones.
    pub segments: BTreeSet<u64>,
    pub stats: LogStats,
}

/// A `roll` call: every ticket below `boundary` must land in a segment below the answer.
pub(super) struct RollRequest {
    pub boundary: u64,
    pub slot: Rc<RollSlot>,
}

/// Where the writer leaves the answer to one `roll` call.
#[derive(Default)]
pub(super) struct RollSlot {
    pub id: Cell<Option<u64>>,
    pub waker: Cell<Option<Waker>>,
}

impl Shared {
    /// `Ok` while the log takes new work.
    pub fn check_accepting(&self) -> Result<(), LogError> {
        match &self.failed {
            Some(e) => Err(e.clone()),
            None if self.closing => Err(LogError::Closed),
            None => Ok(()),
        }
    }

    pub fn wake_writer(&mut self) {
        if let Some(w) = self.writer_waker.take() {
            w.wake();
        }
    }

    pub fn has_work(&self) -> bool {
        !self.queue_lens.is_empty() || self.closing || !self.rolls.is_empty()
    }
}

/// A fatal I/O error with its context.
#[derive(Debug)]
pub(super) struct Fault {
    pub op: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

impl Fault {
    pub fn new(op: &'static str, path: &Path, source: io::Error) -> Self {
        Fault {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn into_failed(self) -> LogError {
        LogError::Failed {
            op: self.op,
            path: self.path,
            source: Arc::new(self.source),
        }
    }

    pub fn into_io(self) -> LogError {
        LogError::io(self.op, self.path, self.source)
    }
}

impl<D: LogDisk> Core<D> {
    /// Raises the durable watermark to `through` and wakes the waiters it covers.
    pub fn publish_synced(&self, through: u64) {
        let mut woken = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            debug_assert!(through >= st.synced);
            st.synced = through;
            st.stats.fdatasyncs += 1;
            st.durable_waiters.retain(|(ticket, waker)| {
                if *ticket <= through {
                    woken.push(waker.clone());
                    false
                } else {
                    true
                }
            });
        }
        woken.into_iter().for_each(Waker::wake);
    }

    /// Answers every roll request whose boundary is reached with `segment_id`.
    pub fn answer_rolls(&self, segment_id: u64) {
        let mut st = self.state.borrow_mut();
        let next = st.written + 1;
        while st.rolls.front().is_some_and(|r| r.boundary <= next) {
            let request = st.rolls.pop_front().expect("front exists");
            request.slot.id.set(Some(segment_id));
            if let Some(w) = request.slot.waker.take() {
                w.wake();
            }
        }
    }

    /// Enters the failed state: records the error and wakes everybody with it.
    pub fn fail(&self, fault: Fault) {
        let mut woken = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            st.failed = Some(fault.into_failed());
            st.queue.clear();
            st.queue_lens.clear();
            woken.extend(st.durable_waiters.drain(..).map(|(_, w)| w));
            for request in st.rolls.drain(..) {
                woken.extend(request.slot.waker.take());
            }
        }
        self.space.close();
        woken.into_iter().for_each(Waker::wake);
    }

    /// The writer has exited: wake `close` callers and anybody still waiting.
    pub fn stop(&self) {
        let mut woken = Vec::new();
        {
            let mut st = self.state.borrow_mut();
            st.stopped = true;
            woken.append(&mut st.stop_waiters);
            woken.extend(st.durable_waiters.drain(..).map(|(_, w)| w));
            for request in st.rolls.drain(..) {
                woken.extend(request.slot.waker.take());
            }
        }
        self.space.close();
        woken.into_iter().for_each(Waker::wake);
    }
}
