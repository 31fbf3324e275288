//! The durable hint log: the "do" half of hinted handoff (DESIGN.md §6), one per shard.
//!
//! Holds the bytes of the hints a shard keeps for replicas that were Down;
//! [`HintBook`](crate::replication::hints::HintBook) decides which hints to keep, when
//! they expire and in which order they replay. This module decides nothing about hints:
//! it owns one directory (`DATA/shard-K/hints/`) of segment files
//! `hints-<id:020>.log` and nothing else. The byte layout is drawn in
//! `docs/storage.md` ("Hint log"); records use the commit log's codec
//! (`commitlog::record`), seeded per segment.
//!
//! Trade-offs:
//! - **Page cache, not O_DIRECT.** Hints exist only while a replica is Down and are
//!   read back soon after (replay), so buffered glommio files keep this simple: no
//!   alignment, no tail block rewrite, files as long as their data.
//! - **Group commit without a writer task.** `append` places the record in a queue and
//!   waits. The first append that finds nobody flushing spawns a flush task, which
//!   writes everything queued (one write per segment touched) and fdatasyncs once;
//!   appends that arrive meanwhile queue for its next round. The flush is a task of its
//!   own so that a caller dropping its `append` future cannot leave the log half-flushed.
//! - **Release is in memory only.** After a restart every hint in a surviving segment is
//!   live again; replaying a hint twice is harmless (the target merges version sets).
//!   Space comes back by whole segments: one whose hints are all released is deleted, in
//!   the background, once nothing appends to it.
//! - **Tolerant recovery.** A hint is an optimisation (anti-entropy repairs what is
//!   lost), so a bad record ends its segment's valid data and is counted, where the
//!   commit log would refuse to start. A segment that yields no hint is removed.
//! - **Fail-stop appends.** A failed write, fdatasync or segment creation is never
//!   retried (the kernel may have dropped the dirty pages): every later `append` fails
//!   with the same error. Reads and releases go on working.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io;
use std::mem::size_of;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use bytes::Bytes;
use glommio::io::{BufferedFile, OpenOptions};

use super::commitlog::record::{self, Decoded};
use super::commitlog::segment::{self, record_seed};
use super::direct::os_error;
use crate::ring::cluster::NodeId;

/// Identifies a ringkv hint-log segment (not a commit-log one: the magic differs).
pub const MAGIC: [u8; 8] = *b"RKVHINT\x01";
/// Bumped on any change of the segment or record layout.
pub const FORMAT_VERSION: u32 = 1;
/// The id of the first segment of a fresh log.
pub const FIRST_SEGMENT_ID: u64 = 1;
/// The record `kind` of a hint (the only kind so far).
pub const KIND_HINT: u8 = 1;
/// Record kind of a hint whose acknowledgement counted toward a write's W (a stand-in's,
/// under sloppy quorum): it may be the write's only copy besides the coordinator's, so
/// the hint window never drops it.
pub const KIND_COUNTED_HINT: u8 = 2;

/// Bytes of a segment header (the commit log's layout: magic, version, reserved,
/// segment id, CRC32C); records follow it directly.
pub const HEADER_BYTES: usize = segment::HEADER_USED_BYTES;
/// Offset of the first record in a segment.
pub const DATA_OFFSET: u64 = HEADER_BYTES as u64;

const TARGET_OFFSET: usize = 0;
const WRITTEN_AT_OFFSET: usize = TARGET_OFFSET + size_of::<u64>();
const KEY_LEN_OFFSET: usize = WRITTEN_AT_OFFSET + size_of::<u64>();
const KEY_OFFSET: usize = KEY_LEN_OFFSET + size_of::<u16>();
/// Payload bytes besides the key and the versions: the fixed fields and `versions_len`.
pub const PAYLOAD_FIXED_BYTES: usize = KEY_OFFSET + size_of::<u32>();

/// Longest key: `key_len` is a u16, as everywhere in ringkv (`--key-bytes-max` ≤ 65535).
pub const KEY_BYTES_MAX: usize = u16::MAX as usize;
/// Longest version set: 64 MiB, the largest value `--value-bytes-max` allows. A set of
/// 8 siblings at the default 1 MiB limit is ~8 MiB; a larger set is refused by `append`
/// (the caller counts it like a full hint book: anti-entropy repairs that replica).
pub const VERSIONS_BYTES_MAX: usize = 64 << 20;
/// Largest record, header included: what recovery checks a `len` against.
pub const RECORD_BYTES_MAX: u32 =
    (record::OVERHEAD_BYTES + PAYLOAD_FIXED_BYTES + KEY_BYTES_MAX + VERSIONS_BYTES_MAX) as u32;
/// Smallest `segment_bytes_max` `open` accepts: a header and a few small hints.
pub const SEGMENT_BYTES_MIN: u64 = 4096;
/// An active segment whose hints are all released is rolled (so that it can be
/// deleted) once it holds more than this; below it, the few bytes are not worth a
/// new file and a directory fsync.
pub const ROLL_RELEASED_BYTES_MIN: u64 = 64 << 10;
/// Recovery reads segments in pieces of this size (or one record, if larger).
const SCAN_CHUNK_BYTES: usize = 1 << 20;

const FILE_PREFIX: &str = "hints-";
const FILE_SUFFIX: &str = ".log";
const ID_DIGITS: usize = 20;

/// One hint: a version set (encoded, opaque here) for `key`, meant for node `target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hint {
    pub target: NodeId,
    /// When the hint was taken (µs); the hint book's window counts from it.
    pub written_at_us: u64,
    /// 1..=[`KEY_BYTES_MAX`] bytes.
    pub key: Bytes,
    /// At most [`VERSIONS_BYTES_MAX`] bytes.
    pub versions: Bytes,
    /// Its acknowledgement counted toward a write's W (record kind
    /// [`KIND_COUNTED_HINT`]; else [`KIND_HINT`]).
    pub counted: bool,
}

/// Where a hint is stored. Only meaningful to the log (and session) that issued it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    /// The segment's id; ordering by it, then by offset, is the order of the appends.
    segment: u64,
    /// Where the record starts in the segment file.
    offset: u64,
    /// The encoded record's size, so that `read` needs one read.
    bytes: u32,
}

impl Location {
    pub fn segment(self) -> u64 {
        self.segment
    }

    pub fn offset(self) -> u64 {
        self.offset
    }

    /// Bytes the hint takes on disk, record header included (what a hint book can count).
    pub fn bytes(self) -> u32 {
        self.bytes
    }
}

/// What `open` found on disk.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every valid hint, oldest first (segment, then offset), all live.
    pub hints: Vec<(Location, Hint)>,
    /// Segments whose valid data ended early: a torn tail, a record with a bad length,
    /// CRC or payload, a bad header, a file that could not be read. One per segment (the
    /// scan stops at the first), each also reported on stderr with file and offset.
    pub bad_records: u64,
}

/// Counters of one log since `open`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HintLogStats {
    /// Hints that `append` queued.
    pub appends: u64,
    /// Flush rounds: each writes what was queued and syncs once per segment touched.
    pub batches: u64,
    /// Successful fdatasyncs of segment files (directory syncs not counted).
    pub fdatasyncs: u64,
    pub segments_created: u64,
    pub segments_removed: u64,
}

/// What went wrong in the hint log. `Clone`: one failure goes to every waiter.
#[derive(Clone, Debug, thiserror::Error)]
pub enum HintLogError {
    /// Start-up could not create or list the directory, or a `read` failed. Nothing
    /// durable was lost by it.
    #[error("hint log: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: Arc<io::Error>,
    },
    /// A write, fdatasync or segment creation failed. The log takes no more hints
    /// (nothing is retried, STYLE rule 6); reads and releases still work.
    #[error("hint log failed on {op} {}: {source}; it takes no more hints", path.display())]
    Failed {
        op: &'static str,
        path: PathBuf,
        source: Arc<io::Error>,
    },
    /// `append` got a hint over the format's limits.
    #[error(
        "hint of a {key_bytes}-byte key and {versions_bytes} bytes of versions is over the \
         hint log's limits ({KEY_BYTES_MAX}-byte key, {VERSIONS_BYTES_MAX} bytes of versions)"
    )]
    TooLarge {
        key_bytes: usize,
        versions_bytes: usize,
    },
    /// `read` of a hint whose segment is gone: every hint in it was released (or the
    /// location is from another session).
    #[error("hint log: no hint at byte {} of {}: the segment is gone", at.offset, path.display())]
    Gone { path: PathBuf, at: Location },
    /// The bytes at a location are not the hint written there.
    #[error("hint log corrupt: {} at byte {offset}: {reason}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
}

impl HintLogError {
    fn io(op: &'static str, path: &Path, source: io::Error) -> Self {
        HintLogError::Io {
            op,
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }

    fn failed(op: &'static str, path: &Path, source: io::Error) -> Self {
        HintLogError::Failed {
            op,
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }
}

/// One shard's hint log. Used through `Rc` by the shard's tasks; `!Send`.
pub struct HintLog {
    inner: Rc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// A segment is rolled before a record that would take it past this (a record
    /// larger than a whole segment gets a segment of its own).
    segment_bytes_max: u64,
    state: RefCell<State>,
}

/// One segment file, in memory.
struct Segment {
    /// Open read+write; `None` until the flush creates the file (or if recovery could
    /// not open it).
    file: Option<Rc<BufferedFile>>,
    /// End of the data written or queued: where the next record would go.
    end: u64,
    /// Offsets of the hints not released yet, queued ones included (so a segment with
    /// an append in flight never counts as released).
    live: BTreeSet<u64>,
}

/// Records queued for one segment, contiguous, starting at `offset`.
struct Run {
    segment: u64,
    offset: u64,
    buf: Vec<u8>,
    /// The ticket of the last record in `buf`.
    last_ticket: u64,
}

#[derive(Default)]
struct State {
    /// Every segment on disk but those being removed, by id.
    segments: BTreeMap<u64, Segment>,
    /// The segment appends go to; `None` until the first append (recovered segments
    /// are never appended to) and after a roll.
    active: Option<u64>,
    next_segment_id: u64,
    /// Records waiting for the flush task, in append order.
    queue: Vec<Run>,
    next_ticket: u64,
    /// Every ticket up to this one is durable.
    durable_through: u64,
    /// A flush task is running.
    flushing: bool,
    /// Segments all of whose hints are released, oldest first, removed by the removal
    /// task; each stays here (and in `disk_bytes`) until its file is gone.
    doomed: VecDeque<(u64, Segment)>,
    /// A removal task is running.
    removing: bool,
    /// The failure that stopped appends.
    failed: Option<HintLogError>,
    /// Tasks waiting for a flush, a removal or a failure.
    waiters: Vec<Waker>,
    stats: HintLogStats,
}

impl State {
    fn changed(&mut self) {
        self.waiters.drain(..).for_each(Waker::wake);
    }

    /// Moves segment `id` to the removal queue if nothing appends to it and every hint
    /// in it is released.
    fn doom_if_released(&mut self, id: u64) {
        if self.active == Some(id) || !self.segments.get(&id).is_some_and(|s| s.live.is_empty()) {
            return;
        }
        let seg = self.segments.remove(&id).expect("checked");
        self.doomed.push_back((id, seg));
    }

    /// Later appends go to a new segment.
    fn seal_active(&mut self) {
        if let Some(id) = self.active.take() {
            self.doom_if_released(id);
        }
    }

    /// Picks the segment and offset of a record of `record_bytes`, rolling first if it
    /// would take a non-empty active segment past `segment_bytes_max`.
    fn reserve(&mut self, record_bytes: u64, segment_bytes_max: u64) -> (u64, u64) {
        if let Some(id) = self.active {
            let end = self.segments[&id].end;
            if end > DATA_OFFSET && end + record_bytes > segment_bytes_max {
                self.seal_active();
            }
        }
        let id = match self.active {
            Some(id) => id,
            None => {
                let id = self.next_segment_id;
                self.next_segment_id = id.saturating_add(1);
                let seg = Segment {
                    file: None,
                    end: DATA_OFFSET,
                    live: BTreeSet::new(),
                };
                self.segments.insert(id, seg);
                self.active = Some(id);
                id
            }
        };
        let seg = self
            .segments
            .get_mut(&id)
            .expect("active segment is listed");
        let offset = seg.end;
        seg.end += record_bytes;
        seg.live.insert(offset);
        (id, offset)
    }

    /// Encodes `hint` at `offset` of `segment` (just reserved) into the queue.
    fn enqueue(&mut self, segment: u64, offset: u64, hint: &Hint) -> u64 {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let contiguous = self.queue.last().is_some_and(|run| {
            run.segment == segment && run.offset + run.buf.len() as u64 == offset
        });
        if !contiguous {
            self.queue.push(Run {
                segment,
                offset,
                buf: Vec::new(),
                last_ticket: ticket,
            });
        }
        let run = self.queue.last_mut().expect("pushed");
        let start = run.buf.len();
        record::encode_unsealed_with(&mut run.buf, hint.kind(), hint.payload_bytes(), |out| {
            hint.encode_payload(out)
        });
        record::seal(&mut run.buf[start..], record_seed(segment));
        run.last_ticket = ticket;
        self.stats.appends += 1;
        ticket
    }
}

impl HintLog {
    /// Opens (creating if missing) the directory and reads every segment back. Returns
    /// the log and every hint found, oldest first, with its location. A torn tail or a
    /// bad record ends that segment's valid data (the file is cut there) and is counted
    /// in [`Recovered::bad_records`]; segments left without hints are removed in the
    /// background. Fails only if the directory cannot be created or listed.
    pub async fn open(
        dir: PathBuf,
        segment_bytes_max: u64,
    ) -> Result<(HintLog, Recovered), HintLogError> {
        assert!(
            segment_bytes_max >= SEGMENT_BYTES_MIN,
            "segment_bytes_max {segment_bytes_max} is below {SEGMENT_BYTES_MIN}"
        );
        // glommio 0.9 opens directories with `openat(-1, path)`, which fails (EBADF) on
        // a relative path: every path this log uses is absolute. (The default data dir,
        // `./ringkv-data`, is relative.)
        let dir = std::path::absolute(&dir).map_err(|e| HintLogError::io("resolve", &dir, e))?;
        // Blocking std::fs, acceptable because this runs once at start-up, before serving.
        std::fs::create_dir_all(&dir).map_err(|e| HintLogError::io("create directory", &dir, e))?;
        let ids = list_ids(&dir).map_err(|e| HintLogError::io("list directory", &dir, e))?;
        let mut recovered = Recovered::default();
        let mut state = State {
            // Saturating: a stray file named with id u64::MAX makes creation fail, not start-up.
            next_segment_id: ids
                .last()
                .map_or(FIRST_SEGMENT_ID, |last| last.saturating_add(1)),
            next_ticket: 1,
            ..State::default()
        };
        for id in ids {
            let scan = recover_segment(&segment_path(&dir, id), id).await;
            recovered.bad_records += u64::from(scan.bad);
            let live = scan.hints.iter().map(|(at, _)| at.offset).collect();
            recovered.hints.extend(scan.hints);
            let seg = Segment {
                file: scan.file.map(Rc::new),
                end: scan.end,
                live,
            };
            state.segments.insert(id, seg);
            state.doom_if_released(id);
        }
        let log = HintLog {
            inner: Rc::new(Inner {
                dir,
                segment_bytes_max,
                state: RefCell::new(state),
            }),
        };
        log.start_removals();
        Ok((log, recovered))
    }

    /// Appends a hint; returns once it is durable (fdatasync, and the directory fsync
    /// of a new segment). Appends from several tasks share one fdatasync.
    pub async fn append(&self, hint: &Hint) -> Result<Location, HintLogError> {
        assert!(!hint.key.is_empty(), "a hint's key is never empty");
        if hint.key.len() > KEY_BYTES_MAX || hint.versions.len() > VERSIONS_BYTES_MAX {
            return Err(HintLogError::TooLarge {
                key_bytes: hint.key.len(),
                versions_bytes: hint.versions.len(),
            });
        }
        let record_bytes = record::record_bytes(hint.payload_bytes());
        let (ticket, at, start_flush) = {
            let mut st = self.inner.state.borrow_mut();
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            let (segment, offset) = st.reserve(record_bytes as u64, self.inner.segment_bytes_max);
            let ticket = st.enqueue(segment, offset, hint);
            let start_flush = !std::mem::replace(&mut st.flushing, true);
            let bytes = u32::try_from(record_bytes).expect("checked against the limits");
            let at = Location {
                segment,
                offset,
                bytes,
            };
            (ticket, at, start_flush)
        };
        // Outside the borrow: glommio runs a spawned task at once, up to its first await.
        if start_flush {
            glommio::spawn_local(flush(self.inner.clone())).detach();
        }
        // A roll may have left the previous segment fully released.
        self.start_removals();
        self.durable(ticket).await?;
        Ok(at)
    }

    /// Reads a hint back (for replay), CRC-checked.
    pub async fn read(&self, at: Location) -> Result<Hint, HintLogError> {
        assert!(
            at.bytes <= RECORD_BYTES_MAX,
            "{at:?} was not issued by a hint log"
        );
        let path = segment_path(&self.inner.dir, at.segment);
        let file = self
            .inner
            .state
            .borrow()
            .segments
            .get(&at.segment)
            .and_then(|s| s.file.clone());
        let Some(file) = file else {
            return Err(HintLogError::Gone { path, at });
        };
        let bytes = read_exact_at(&file, at.offset, at.bytes as usize)
            .await
            .map_err(|e| HintLogError::io("read", &path, e))?;
        let corrupt = |reason: String| HintLogError::Corrupt {
            path: path.clone(),
            offset: at.offset,
            reason,
        };
        match record::decode(&bytes, record_seed(at.segment), RECORD_BYTES_MAX) {
            Ok(Decoded::Record {
                kind: kind @ (KIND_HINT | KIND_COUNTED_HINT),
                payload,
                bytes,
            }) if bytes == at.bytes as usize => decode_payload(payload, kind).map_err(corrupt),
            Ok(_) => Err(corrupt(format!("no {}-byte hint record there", at.bytes))),
            Err(defect) => Err(corrupt(defect.to_string())),
        }
    }

    /// The hint at `at` is delivered or dropped. A segment all of whose hints are
    /// released is deleted (in the background) once nothing appends to it; the active
    /// segment is rolled for that when it holds more than [`ROLL_RELEASED_BYTES_MIN`].
    /// Releasing a hint twice is a no-op.
    pub fn release(&self, at: Location) {
        {
            let mut st = self.inner.state.borrow_mut();
            let Some(seg) = st.segments.get_mut(&at.segment) else {
                return;
            };
            if !seg.live.remove(&at.offset) || !seg.live.is_empty() {
                return;
            }
            let end = seg.end;
            if st.active == Some(at.segment) {
                if end > ROLL_RELEASED_BYTES_MIN {
                    st.seal_active();
                }
            } else {
                st.doom_if_released(at.segment);
            }
        }
        self.start_removals();
    }

    /// Bytes of segments on disk (appends in flight included, removals in flight too).
    pub fn disk_bytes(&self) -> u64 {
        let st = self.inner.state.borrow();
        let listed: u64 = st.segments.values().map(|s| s.end).sum();
        let doomed: u64 = st.doomed.iter().map(|(_, s)| s.end).sum();
        listed + doomed
    }

    pub fn stats(&self) -> HintLogStats {
        self.inner.state.borrow().stats
    }

    /// The failure that stopped appends, if any.
    pub fn failure(&self) -> Option<HintLogError> {
        self.inner.state.borrow().failed.clone()
    }

    /// Resolves once no flush and no segment removal is in flight (tests, shutdown).
    pub async fn settle(&self) {
        std::future::poll_fn(|cx| {
            let mut st = self.inner.state.borrow_mut();
            if !st.flushing && !st.removing {
                return Poll::Ready(());
            }
            st.waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    async fn durable(&self, ticket: u64) -> Result<(), HintLogError> {
        std::future::poll_fn(|cx| {
            let mut st = self.inner.state.borrow_mut();
            if st.durable_through >= ticket {
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &st.failed {
                return Poll::Ready(Err(e.clone()));
            }
            st.waiters.push(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Spawns the removal task if segments wait for it and none runs.
    fn start_removals(&self) {
        let start = {
            let mut st = self.inner.state.borrow_mut();
            let start = !st.removing && !st.doomed.is_empty();
            st.removing |= start;
            start
        };
        // Outside the borrow: glommio runs a spawned task at once, up to its first await.
        if start {
            glommio::spawn_local(remove_doomed(self.inner.clone())).detach();
        }
    }
}

/// The flush task: writes and syncs what is queued, round after round, until the
/// queue is empty or the log failed.
async fn flush(inner: Rc<Inner>) {
    loop {
        let runs = {
            let mut st = inner.state.borrow_mut();
            if st.failed.is_some() || st.queue.is_empty() {
                st.flushing = false;
                st.changed();
                return;
            }
            std::mem::take(&mut st.queue)
        };
        let through = runs.last().expect("queue was not empty").last_ticket;
        let result = write_runs(&inner, runs).await;
        let mut st = inner.state.borrow_mut();
        match result {
            Ok(()) => {
                st.durable_through = through;
                st.stats.batches += 1;
            }
            Err(e) => st.failed = Some(e),
        }
        st.changed();
    }
}

/// One flush round: creates the segments that need it, writes each run, then one
/// fdatasync per file and a directory fsync if a segment was created.
async fn write_runs(inner: &Inner, runs: Vec<Run>) -> Result<(), HintLogError> {
    let mut touched: Vec<(u64, Rc<BufferedFile>)> = Vec::new();
    let mut created = false;
    for run in runs {
        let path = segment_path(&inner.dir, run.segment);
        let listed = inner.state.borrow().segments[&run.segment].file.clone();
        let file = match listed {
            Some(file) => file,
            None => {
                created = true;
                create_segment(inner, run.segment, &path).await?
            }
        };
        write_all_at(&file, run.buf, run.offset)
            .await
            .map_err(|e| HintLogError::failed("write", &path, e))?;
        if !touched.iter().any(|(id, _)| *id == run.segment) {
            touched.push((run.segment, file));
        }
    }
    for (id, file) in touched {
        file.fdatasync().await.map_err(|e| {
            HintLogError::failed("fdatasync", &segment_path(&inner.dir, id), os_error(e))
        })?;
        inner.state.borrow_mut().stats.fdatasyncs += 1;
    }
    if created {
        sync_dir(&inner.dir)
            .await
            .map_err(|e| HintLogError::failed("sync directory", &inner.dir, e))?;
    }
    Ok(())
}

/// Creates segment `id`'s file with its header (made durable by the round's fdatasync).
async fn create_segment(
    inner: &Inner,
    id: u64,
    path: &Path,
) -> Result<Rc<BufferedFile>, HintLogError> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .buffered_open(path)
        .await
        .map_err(|e| HintLogError::failed("create", path, os_error(e)))?;
    write_all_at(&file, encode_header(id).to_vec(), 0)
        .await
        .map_err(|e| HintLogError::failed("write header", path, e))?;
    let file = Rc::new(file);
    let mut st = inner.state.borrow_mut();
    st.stats.segments_created += 1;
    let seg = st
        .segments
        .get_mut(&id)
        .expect("a segment with queued records is listed");
    seg.file = Some(file.clone());
    Ok(file)
}

/// The removal task: deletes the doomed segments oldest first, fsyncing the directory
/// after each. A failure is reported and the segment forgotten: the next start finds
/// it again and its hints replay once more, which is harmless.
async fn remove_doomed(inner: Rc<Inner>) {
    loop {
        let next = {
            let mut st = inner.state.borrow_mut();
            match st.doomed.front_mut() {
                Some((id, seg)) => (*id, seg.file.take()),
                None => {
                    st.removing = false;
                    st.changed();
                    return;
                }
            }
        };
        let (id, file) = next;
        let path = segment_path(&inner.dir, id);
        let removed = remove_file(&path, file).await;
        let synced = match removed {
            Ok(()) => sync_dir(&inner.dir)
                .await
                .map_err(|e| ("sync directory", e)),
            Err(e) => Err(("remove", e)),
        };
        if let Err((op, e)) = &synced {
            eprintln!("ringkv: hint log: {op} {}: {e}", path.display());
        }
        {
            let mut st = inner.state.borrow_mut();
            st.doomed.pop_front();
            st.stats.segments_removed += u64::from(synced.is_ok());
        }
        glommio::yield_if_needed().await;
    }
}

/// Removes the file's name (a missing file is already removed), then closes it if no
/// read holds it.
async fn remove_file(path: &Path, file: Option<Rc<BufferedFile>>) -> io::Result<()> {
    let removed = match glommio::io::remove(path).await.map_err(os_error) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    };
    if let Some(file) = file.and_then(|f| Rc::try_unwrap(f).ok()) {
        // The name is gone either way; a failed close loses nothing.
        let _ = file.close().await;
    }
    removed
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let d = glommio::io::Directory::open(dir).await.map_err(os_error)?;
    let synced = d.sync().await.map_err(os_error);
    let closed = d.close().await.map_err(os_error);
    synced.and(closed)
}

/// Writes all of `buf` at `pos` or fails. A buffered write to a regular file comes back
/// short only when the disk (or the file size limit) is full; that is a failure like
/// any other, so there is no retry of the rest.
async fn write_all_at(file: &BufferedFile, buf: Vec<u8>, pos: u64) -> io::Result<()> {
    let len = buf.len();
    let written = file.write_at(buf, pos).await.map_err(os_error)?;
    if written != len {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {written} of {len} bytes at {pos}"),
        ));
    }
    Ok(())
}

/// Reads exactly `len` bytes at `pos`; fewer bytes in the file is `UnexpectedEof`.
async fn read_exact_at(file: &BufferedFile, pos: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let at = pos + out.len() as u64;
        let got = file.read_at(at, len - out.len()).await.map_err(os_error)?;
        if got.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{len} bytes at {pos}: the file ends at {at}"),
            ));
        }
        out.extend_from_slice(&got);
    }
    Ok(out)
}

// ---- Recovery ----------------------------------------------------------------------

/// One segment as recovery left it.
struct SegmentScan {
    /// `None` if the file could not be opened.
    file: Option<BufferedFile>,
    /// Bytes of the file after the cut (or its size, if the cut failed).
    end: u64,
    hints: Vec<(Location, Hint)>,
    /// The scan stopped at a defect.
    bad: bool,
}

/// Reads segment `id` at `path` back: the header, then records up to the end of the
/// valid data, where the file is cut (best effort) if anything follows.
async fn recover_segment(path: &Path, id: u64) -> SegmentScan {
    let report = |offset: u64, why: &dyn std::fmt::Display| {
        eprintln!(
            "ringkv: hint log {} at byte {offset}: {why}; the rest of the segment is dropped",
            path.display()
        );
    };
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .buffered_open(path)
        .await
        .map_err(os_error);
    let file = match opened {
        Ok(file) => file,
        Err(e) => {
            report(0, &format!("open: {e}"));
            let end = std::fs::metadata(path).map_or(0, |m| m.len());
            return SegmentScan {
                file: None,
                end,
                hints: Vec::new(),
                bad: true,
            };
        }
    };
    let file_bytes = match file.file_size().await.map_err(os_error) {
        Ok(n) => n,
        Err(e) => {
            report(0, &format!("stat: {e}"));
            return SegmentScan {
                file: Some(file),
                end: 0,
                hints: Vec::new(),
                bad: true,
            };
        }
    };
    let mut scan = Scanner {
        file: &file,
        file_bytes,
        window: Vec::new(),
        window_start: 0,
    };
    let (hints, valid_end, defect) = scan.segment(id).await;
    if let Some((offset, why)) = &defect {
        report(*offset, why);
    }
    let mut end = file_bytes;
    if valid_end < file_bytes && !hints.is_empty() {
        // Cut the tail so that the next start does not count it again. Best effort: the
        // valid end is known here either way, and nothing appends to this segment.
        let cut = async {
            file.truncate(valid_end).await?;
            file.fdatasync().await
        };
        match cut.await.map_err(os_error) {
            Ok(()) => end = valid_end,
            Err(e) => report(valid_end, &format!("truncate: {e}")),
        }
    }
    SegmentScan {
        file: Some(file),
        end,
        hints,
        bad: defect.is_some(),
    }
}

/// Reads one segment file front to back, a chunk at a time.
struct Scanner<'a> {
    file: &'a BufferedFile,
    file_bytes: u64,
    /// The bytes of the file from `window_start`.
    window: Vec<u8>,
    window_start: u64,
}

impl Scanner<'_> {
    /// The hints of segment `id`, the end of its valid data, and what ended it if that
    /// was not a clean end: `(offset, reason)`.
    async fn segment(&mut self, id: u64) -> (Vec<(Location, Hint)>, u64, Option<(u64, String)>) {
        let mut hints = Vec::new();
        if self.file_bytes < DATA_OFFSET {
            // A creation cut short by a crash: no hint was acknowledged from it.
            return match self.all_zero(0).await {
                Ok(true) => (hints, 0, None),
                Ok(false) => (hints, 0, Some((0, "header cut short".to_string()))),
                Err(e) => (hints, 0, Some((0, format!("read: {e}")))),
            };
        }
        match self.bytes(0, HEADER_BYTES).await {
            Ok(header) => {
                if let Err(why) = check_header(header, id) {
                    return (hints, 0, Some((0, why)));
                }
            }
            Err(e) => return (hints, 0, Some((0, format!("read: {e}")))),
        }
        let seed = record_seed(id);
        let mut pos = DATA_OFFSET;
        loop {
            glommio::yield_if_needed().await;
            match self.record(pos, seed).await {
                Ok(Some((hint, bytes))) => {
                    let at = Location {
                        segment: id,
                        offset: pos,
                        bytes: bytes as u32,
                    };
                    hints.push((at, hint));
                    pos += bytes as u64;
                }
                Ok(None) => return (hints, pos, None),
                Err(why) => return (hints, pos, Some((pos, why))),
            }
        }
    }

    /// The hint at `pos` and its record size; `None` at a clean end of the data (the end
    /// of the file, or a zero `len` with only zeros after it).
    async fn record(&mut self, pos: u64, seed: u32) -> Result<Option<(Hint, usize)>, String> {
        let available = self.file_bytes - pos;
        if available == 0 {
            return Ok(None);
        }
        let read = |e: io::Error| format!("read: {e}");
        if available < record::PREFIX_BYTES as u64 {
            if self.all_zero(pos).await.map_err(read)? {
                return Ok(None);
            }
            return Err(format!("{available} bytes left, short of a record header"));
        }
        let (len, _) =
            record::read_prefix(self.bytes(pos, record::PREFIX_BYTES).await.map_err(read)?);
        // Checked against the limit and the file's size before anything is read for it.
        let Some(bytes) =
            record::check_len(len, RECORD_BYTES_MAX, available).map_err(|d| d.to_string())?
        else {
            if self.all_zero(pos).await.map_err(read)? {
                return Ok(None);
            }
            return Err(record::Defect::DataAfterEnd { offset: pos }.to_string());
        };
        let buf = self.bytes(pos, bytes).await.map_err(read)?;
        match record::decode(buf, seed, RECORD_BYTES_MAX).map_err(|d| d.to_string())? {
            Decoded::Record {
                kind: kind @ (KIND_HINT | KIND_COUNTED_HINT),
                payload,
                bytes: n,
            } => {
                debug_assert_eq!(n, bytes);
                Ok(Some((decode_payload(payload, kind)?, bytes)))
            }
            Decoded::Record { kind, .. } => Err(format!("record kind {kind} is not a hint")),
            Decoded::End => Err("no record where check_len saw one".to_string()),
        }
    }

    /// Whether every byte from `pos` to the end of the file is zero.
    async fn all_zero(&mut self, mut pos: u64) -> io::Result<bool> {
        while pos < self.file_bytes {
            let n = (self.file_bytes - pos).min(SCAN_CHUNK_BYTES as u64) as usize;
            if self.bytes(pos, n).await?.iter().any(|&b| b != 0) {
                return Ok(false);
            }
            pos += n as u64;
            glommio::yield_if_needed().await;
        }
        Ok(true)
    }

    /// Bytes `pos..pos + len` of the file (all inside it), read ahead a chunk at a time.
    async fn bytes(&mut self, pos: u64, len: usize) -> io::Result<&[u8]> {
        debug_assert!(pos + len as u64 <= self.file_bytes);
        let window_end = self.window_start + self.window.len() as u64;
        if pos < self.window_start || pos + len as u64 > window_end {
            let want = (len.max(SCAN_CHUNK_BYTES) as u64).min(self.file_bytes - pos) as usize;
            self.window = read_exact_at(self.file, pos, want).await?;
            self.window_start = pos;
        }
        let from = (pos - self.window_start) as usize;
        Ok(&self.window[from..from + len])
    }
}

// ---- Format ------------------------------------------------------------------------

impl Hint {
    /// The record kind this hint is stored as.
    fn kind(&self) -> u8 {
        if self.counted {
            KIND_COUNTED_HINT
        } else {
            KIND_HINT
        }
    }

    /// Encoded payload size.
    fn payload_bytes(&self) -> usize {
        PAYLOAD_FIXED_BYTES + self.key.len() + self.versions.len()
    }

    /// `target u64 | written_at_us u64 | key_len u16 | key | versions_len u32 | versions`.
    fn encode_payload(&self, out: &mut Vec<u8>) {
        assert!(!self.key.is_empty() && self.key.len() <= KEY_BYTES_MAX);
        assert!(self.versions.len() <= VERSIONS_BYTES_MAX);
        out.extend_from_slice(&self.target.to_le_bytes());
        out.extend_from_slice(&self.written_at_us.to_le_bytes());
        out.extend_from_slice(&(self.key.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.key);
        out.extend_from_slice(&(self.versions.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.versions);
    }
}

/// Decodes a hint payload. Every length is checked against its bound and against the
/// bytes left before anything is copied; the error says which check failed.
fn decode_payload(p: &[u8], kind: u8) -> Result<Hint, String> {
    if p.len() < PAYLOAD_FIXED_BYTES {
        return Err(format!(
            "hint payload of {} bytes, short of {PAYLOAD_FIXED_BYTES}",
            p.len()
        ));
    }
    let u64_at = |at: usize| u64::from_le_bytes(p[at..at + 8].try_into().expect("8 bytes"));
    let key_len = u16::from_le_bytes(p[KEY_LEN_OFFSET..KEY_OFFSET].try_into().expect("2")) as usize;
    if key_len == 0 {
        return Err("hint with an empty key".to_string());
    }
    let versions_len_offset = KEY_OFFSET + key_len;
    if versions_len_offset + size_of::<u32>() > p.len() {
        return Err(format!(
            "key_len {key_len} runs past the {}-byte payload",
            p.len()
        ));
    }
    let versions_offset = versions_len_offset + size_of::<u32>();
    let versions_len = u32::from_le_bytes(
        p[versions_len_offset..versions_offset]
            .try_into()
            .expect("4 bytes"),
    ) as usize;
    if versions_len > VERSIONS_BYTES_MAX {
        return Err(format!(
            "versions_len {versions_len} exceeds {VERSIONS_BYTES_MAX}"
        ));
    }
    if versions_offset + versions_len != p.len() {
        return Err(format!(
            "versions_len {versions_len} does not end the {}-byte payload",
            p.len()
        ));
    }
    Ok(Hint {
        target: u64_at(TARGET_OFFSET),
        written_at_us: u64_at(WRITTEN_AT_OFFSET),
        key: Bytes::copy_from_slice(&p[KEY_OFFSET..versions_len_offset]),
        versions: Bytes::copy_from_slice(&p[versions_offset..]),
        counted: kind == KIND_COUNTED_HINT,
    })
}

/// The header of segment `segment_id`: the commit log's segment header layout with
/// this log's magic and version.
fn encode_header(segment_id: u64) -> [u8; HEADER_BYTES] {
    segment::encode_header_of(&MAGIC, FORMAT_VERSION, segment_id)
}

/// Checks the header of the file of segment `expected_id` (exactly [`HEADER_BYTES`]).
fn check_header(h: &[u8], expected_id: u64) -> Result<(), String> {
    assert_eq!(h.len(), HEADER_BYTES);
    segment::check_header_of(&MAGIC, FORMAT_VERSION, h, expected_id)
}

/// `hints-00000000000000000042.log` for id 42.
pub fn file_name(segment_id: u64) -> String {
    format!(
        "{FILE_PREFIX}{segment_id:0width$}{FILE_SUFFIX}",
        width = ID_DIGITS
    )
}

/// The id of a segment file name, or `None` for any other file.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(FILE_PREFIX)?.strip_suffix(FILE_SUFFIX)?;
    if digits.len() != ID_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn segment_path(dir: &Path, segment_id: u64) -> PathBuf {
    dir.join(file_name(segment_id))
}

/// Ids of the segment files in `dir`, ascending.
fn list_ids(dir: &Path) -> io::Result<Vec<u64>> {
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        if let Some(id) = entry?.file_name().to_str().and_then(parse_file_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use std::io::{Seek, SeekFrom, Write};

    use super::*;
    use crate::test_support::{run, temp_dir};

    /// Small segments: a header and a handful of hints each.
    const SEG: u64 = 4096;

    fn hint(i: u64, versions_len: usize) -> Hint {
        let versions: Vec<u8> = (0..versions_len)
            .map(|j| (i as usize * 31 + j * 7 + 1) as u8)
            .collect();
        Hint {
            target: 1001 + 2 * (i % 3),
            written_at_us: 1_700_000_000_000_000 + i,
            key: Bytes::from(format!("key-{i}")),
            versions: Bytes::from(versions),
            // Both kinds, so every test sees both come back.
            counted: i % 2 == 1,
        }
    }

    fn hints(n: u64, versions_len: impl Fn(u64) -> usize) -> Vec<Hint> {
        (0..n).map(|i| hint(i, versions_len(i))).collect()
    }

    /// Opens the log in `dir`, appends `hints` one after another, settles and closes.
    fn write(dir: &Path, segment_bytes_max: u64, hints: Vec<Hint>) -> Vec<Location> {
        let dir = dir.to_path_buf();
        run(move || async move {
            let (log, _) = HintLog::open(dir, segment_bytes_max).await.unwrap();
            let mut locations = Vec::new();
            for h in &hints {
                let at = log.append(h).await.unwrap();
                assert_eq!(log.read(at).await.unwrap(), *h, "read back in the session");
                locations.push(at);
            }
            log.settle().await;
            locations
        })
    }

    /// Opens the log in `dir`, lets the removals of hint-less segments finish, closes.
    fn reopen(dir: &Path, segment_bytes_max: u64) -> Recovered {
        let dir = dir.to_path_buf();
        run(move || async move {
            let (log, recovered) = HintLog::open(dir, segment_bytes_max).await.unwrap();
            log.settle().await;
            recovered
        })
    }

    fn listing(dir: &Path) -> Vec<u64> {
        list_ids(dir).unwrap()
    }

    fn file_bytes(dir: &Path, id: u64) -> u64 {
        std::fs::metadata(segment_path(dir, id)).unwrap().len()
    }

    fn overwrite(dir: &Path, id: u64, offset: u64, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(segment_path(dir, id))
            .unwrap();
        f.seek(SeekFrom::Start(offset)).unwrap();
        f.write_all(bytes).unwrap();
    }

    fn truncate(dir: &Path, id: u64, len: u64) {
        std::fs::OpenOptions::new()
            .write(true)
            .open(segment_path(dir, id))
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    fn pairs(locations: &[Location], hints: &[Hint]) -> Vec<(Location, Hint)> {
        locations
            .iter()
            .copied()
            .zip(hints.iter().cloned())
            .collect()
    }

    #[test]
    fn golden_header_and_record() {
        let expected_header: [u8; HEADER_BYTES] = [
            b'R', b'K', b'V', b'H', b'I', b'N', b'T', 1, // magic
            1, 0, 0, 0, // version 1
            0, 0, 0, 0, // reserved
            1, 0, 0, 0, 0, 0, 0, 0, // segment id 1
            0x92, 0x8f, 0x47, 0x21, // CRC32C of the 24 bytes above (Python, bit by bit)
        ];
        assert_eq!(
            encode_header(1),
            expected_header,
            "{:02x?}",
            encode_header(1)
        );
        assert_eq!(check_header(&expected_header, 1), Ok(()));
        assert!(check_header(&expected_header, 2)
            .unwrap_err()
            .contains("segment 1"));

        let h = Hint {
            target: 7,
            written_at_us: 9,
            key: Bytes::from_static(b"k"),
            versions: Bytes::from_static(b"vv"),
            counted: false,
        };
        let mut out = Vec::new();
        record::encode_unsealed_with(&mut out, KIND_HINT, h.payload_bytes(), |o| {
            h.encode_payload(o)
        });
        record::seal(&mut out, record_seed(1));
        let expected_record: [u8; 34] = [
            0x1a, 0, 0, 0, // len = 1 + 25
            0xc5, 0x3c, 0xb1, 0x23, // CRC32C(01 00.. 00 | 1a 00 00 00 | 01 | payload), Python
            KIND_HINT, // kind
            7, 0, 0, 0, 0, 0, 0, 0, // target 7
            9, 0, 0, 0, 0, 0, 0, 0, // written_at_us 9
            1, 0, b'k', // key_len 1, key
            2, 0, 0, 0, b'v', b'v', // versions_len 2, versions
        ];
        assert_eq!(out, expected_record, "{out:02x?}");
        match record::decode(&out, record_seed(1), RECORD_BYTES_MAX) {
            Ok(Decoded::Record { payload, kind, .. }) => {
                assert_eq!(decode_payload(payload, kind), Ok(h.clone()))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn file_names_sort_like_ids_and_parse_back() {
        assert_eq!(file_name(42), "hints-00000000000000000042.log");
        assert!(file_name(9) < file_name(10));
        assert_eq!(parse_file_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(
            parse_file_name("00000000000000000042.log"),
            None,
            "a commit-log name"
        );
        assert_eq!(parse_file_name("hints-42.log"), None);
        assert_eq!(parse_file_name("hints-00000000000000000042.log.tmp"), None);
    }

    /// A payload with the given fields, whatever the lengths claim.
    fn raw_payload(key_len: u16, key: &[u8], versions_len: u32, versions: &[u8]) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&5u64.to_le_bytes());
        p.extend_from_slice(&6u64.to_le_bytes());
        p.extend_from_slice(&key_len.to_le_bytes());
        p.extend_from_slice(key);
        p.extend_from_slice(&versions_len.to_le_bytes());
        p.extend_from_slice(versions);
        p
    }

    #[test]
    fn payload_lengths_over_their_bounds_are_refused_before_any_copy() {
        let ok = raw_payload(2, b"ab", 3, b"xyz");
        assert!(decode_payload(&ok, KIND_HINT).is_ok());
        let err = |p: &[u8]| decode_payload(p, KIND_HINT).unwrap_err();
        // A key_len past the payload, up to the u16 maximum.
        assert!(err(&raw_payload(u16::MAX, b"ab", 3, b"xyz")).contains("runs past"));
        // A versions_len over the bound is refused by the bound, not by the bytes left.
        assert!(err(&raw_payload(2, b"ab", u32::MAX, b"xyz")).contains("exceeds"));
        let just_over = (VERSIONS_BYTES_MAX + 1) as u32;
        assert!(err(&raw_payload(2, b"ab", just_over, b"xyz")).contains("exceeds"));
        // Within the bound but not what the record holds, either way.
        assert!(err(&raw_payload(2, b"ab", 4, b"xyz")).contains("does not end"));
        assert!(err(&raw_payload(2, b"ab", 2, b"xyz")).contains("does not end"));
        assert!(err(&raw_payload(0, b"", 3, b"xyz")).contains("empty key"));
        assert!(err(&ok[..PAYLOAD_FIXED_BYTES - 1]).contains("short"));
        for cut in 0..ok.len() {
            assert!(
                decode_payload(&ok[..cut], KIND_HINT).is_err(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn appended_hints_come_back_in_order_after_reopen() {
        let dir = temp_dir();
        let first = hints(300, |i| (i as usize * 97) % 700);
        let at = write(dir.path(), SEG, first.clone());
        assert!(
            at.windows(2).all(|w| w[0] < w[1]),
            "locations follow the appends"
        );
        let ids = listing(dir.path());
        assert!(ids.len() > 10, "{ids:?}");
        assert_eq!(ids, (1..=ids.len() as u64).collect::<Vec<_>>());
        for &id in &ids {
            assert!(
                file_bytes(dir.path(), id) <= SEG,
                "segment {id} past its size"
            );
        }

        let recovered = reopen(dir.path(), SEG);
        assert_eq!(recovered.bad_records, 0);
        assert_eq!(recovered.hints, pairs(&at, &first));

        // A second session starts a new segment after the old ones and reads the old.
        let second = hints(20, |_| 10);
        let at2 = write(dir.path(), SEG, second.clone());
        assert_eq!(at2[0].segment(), ids.len() as u64 + 1);
        let recovered = reopen(dir.path(), SEG);
        assert_eq!(recovered.bad_records, 0);
        let all: Vec<_> = [pairs(&at, &first), pairs(&at2, &second)].concat();
        assert_eq!(recovered.hints, all);

        let dir2 = dir.path().to_path_buf();
        let (read, disk, on_disk) = run(move || async move {
            let (log, recovered) = HintLog::open(dir2.clone(), SEG).await.unwrap();
            let mut read = Vec::new();
            for (at, _) in &recovered.hints {
                read.push(log.read(*at).await.unwrap());
            }
            let on_disk: u64 = list_ids(&dir2)
                .unwrap()
                .iter()
                .map(|&id| std::fs::metadata(segment_path(&dir2, id)).unwrap().len())
                .sum();
            (read, log.disk_bytes(), on_disk)
        });
        assert_eq!(read, [first, second].concat());
        assert_eq!(disk, on_disk);
    }

    #[test]
    fn a_relative_directory_works_like_an_absolute_one() {
        // The default data dir is relative; glommio's directory sync is not, by itself.
        let absolute = temp_dir();
        let here = std::env::current_dir().unwrap();
        let relative = absolute
            .path()
            .strip_prefix(&here)
            .expect("test dirs are under the crate's target dir")
            .to_path_buf();
        let at = write(&relative, SEG, hints(40, |_| 100));
        assert!(
            at.last().unwrap().segment() > 1,
            "new segments were created"
        );
        let recovered = reopen(&relative, SEG);
        assert_eq!(recovered.hints.len(), 40);
    }

    #[test]
    fn released_segments_are_deleted_and_released_hints_are_not_remembered() {
        let dir = temp_dir();
        let d = dir.path().to_path_buf();
        let all = hints(100, |_| 150);
        let (kept, before, after) = run(move || async move {
            let (log, _) = HintLog::open(d.clone(), SEG).await.unwrap();
            let mut at = Vec::new();
            for h in &all {
                at.push(log.append(h).await.unwrap());
            }
            let before = list_ids(&d).unwrap();
            assert!(before.len() >= 4, "{before:?}");
            // Every hint of segments 1 and 2 but the last of each: nothing goes yet.
            let lasts: Vec<Location> = [1, 2]
                .iter()
                .map(|&s| *at.iter().rfind(|a| a.segment() == s).unwrap())
                .collect();
            at.iter()
                .filter(|a| a.segment() <= 2 && !lasts.contains(a))
                .for_each(|&a| log.release(a));
            log.settle().await;
            assert_eq!(list_ids(&d).unwrap(), before);
            let disk = log.disk_bytes();
            lasts.iter().for_each(|&a| log.release(a));
            log.release(lasts[0]); // twice is a no-op
            log.settle().await;
            assert_eq!(list_ids(&d).unwrap(), before[2..]);
            assert!(log.disk_bytes() < disk);
            assert!(matches!(
                log.read(lasts[1]).await,
                Err(HintLogError::Gone { .. })
            ));
            // Release everything but the active segment's hints: only it is left.
            let active = at.last().unwrap().segment();
            at.iter()
                .filter(|a| a.segment() != active)
                .for_each(|&a| log.release(a));
            log.settle().await;
            assert_eq!(log.stats().segments_removed, before.len() as u64 - 1);
            let kept: Vec<Location> = at
                .iter()
                .copied()
                .filter(|a| a.segment() == active)
                .collect();
            (kept, before, list_ids(&d).unwrap())
        });
        assert_eq!(after, vec![*before.last().unwrap()]);
        // After a restart the hints of the surviving segment are live again.
        let recovered = reopen(dir.path(), SEG);
        let at: Vec<Location> = recovered.hints.iter().map(|(a, _)| *a).collect();
        assert_eq!(at, kept);
    }

    #[test]
    fn an_active_segment_fully_released_is_rolled_once_past_the_small_size() {
        let dir = temp_dir();
        let d = dir.path().to_path_buf();
        run(move || async move {
            let (log, _) = HintLog::open(d.clone(), 1 << 20).await.unwrap();
            // Small: all released, the segment stays active.
            let mut small = Vec::new();
            for i in 0..3 {
                small.push(log.append(&hint(i, 100)).await.unwrap());
            }
            small.iter().for_each(|&a| log.release(a));
            log.settle().await;
            assert_eq!(list_ids(&d).unwrap(), vec![1]);
            // Past ROLL_RELEASED_BYTES_MIN: all released, rolled and removed.
            let mut big = Vec::new();
            for i in 0..100 {
                big.push(log.append(&hint(i, 1000)).await.unwrap());
            }
            assert_eq!(list_ids(&d).unwrap(), vec![1]);
            assert!(log.disk_bytes() > ROLL_RELEASED_BYTES_MIN);
            big.iter().for_each(|&a| log.release(a));
            log.settle().await;
            assert_eq!(list_ids(&d).unwrap(), Vec::<u64>::new());
            assert_eq!(log.disk_bytes(), 0);
            let next = log.append(&hint(7, 10)).await.unwrap();
            assert_eq!(next.segment(), 2);
            assert_eq!(list_ids(&d).unwrap(), vec![2]);
        });
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_the_earlier_hints_survive() {
        let all = hints(10, |i| 50 + i as usize);
        // Cuts inside the last record: in its len, in its crc, in its payload, its last byte.
        for cut in [3u64, 7, 20, 0] {
            let dir = temp_dir();
            let at = write(dir.path(), 1 << 20, all.clone());
            let last = *at.last().unwrap();
            let cut_at = if cut == 0 {
                last.offset() + u64::from(last.bytes()) - 1
            } else {
                last.offset() + cut
            };
            truncate(dir.path(), 1, cut_at);
            let recovered = reopen(dir.path(), 1 << 20);
            assert_eq!(recovered.bad_records, 1, "cut at +{cut}");
            assert_eq!(recovered.hints, pairs(&at[..9], &all[..9]));
            assert_eq!(
                file_bytes(dir.path(), 1),
                last.offset(),
                "the tail is cut off"
            );
            let again = reopen(dir.path(), 1 << 20);
            assert_eq!(again.bad_records, 0);
            assert_eq!(again.hints, pairs(&at[..9], &all[..9]));
        }
    }

    #[test]
    fn a_flipped_byte_ends_its_segment_and_later_segments_survive() {
        let dir = temp_dir();
        let all = hints(60, |_| 150);
        let at = write(dir.path(), SEG, all.clone());
        assert!(listing(dir.path()).len() >= 3);
        let in_first = at.iter().filter(|a| a.segment() == 1).count();
        let victim = at[5];
        assert!(in_first > 6);
        let path = segment_path(dir.path(), 1);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[victim.offset() as usize + 30] ^= 0x10; // inside the payload
        std::fs::write(&path, bytes).unwrap();
        let recovered = reopen(dir.path(), SEG);
        assert_eq!(recovered.bad_records, 1);
        let expected: Vec<_> = pairs(&at, &all)
            .into_iter()
            .filter(|(a, _)| a.segment() > 1 || a.offset() < victim.offset())
            .collect();
        assert_eq!(recovered.hints, expected);
    }

    #[test]
    fn a_length_over_the_limit_is_refused_without_reading_it() {
        let dir = temp_dir();
        let all = hints(10, |_| 40);
        let at = write(dir.path(), 1 << 20, all.clone());
        // len = 0x7fff_ffff in a file of a few hundred bytes: TooLarge from the prefix.
        overwrite(dir.path(), 1, at[4].offset(), &0x7fff_ffffu32.to_le_bytes());
        let recovered = reopen(dir.path(), 1 << 20);
        assert_eq!(recovered.bad_records, 1);
        assert_eq!(recovered.hints, pairs(&at[..4], &all[..4]));
        assert!(matches!(
            record::check_len(0x7fff_ffff, RECORD_BYTES_MAX, 1 << 20),
            Err(record::Defect::TooLarge { .. })
        ));

        // A record with a valid CRC whose versions_len lies (u32::MAX) is refused too.
        let mut forged = Vec::new();
        let payload = raw_payload(1, b"k", u32::MAX, b"xyz");
        record::encode(&mut forged, record_seed(1), KIND_HINT, &payload);
        let end = file_bytes(dir.path(), 1);
        overwrite(dir.path(), 1, end, &forged);
        let mut good = Vec::new();
        record::encode(
            &mut good,
            record_seed(1),
            KIND_HINT,
            &raw_payload(1, b"k", 3, b"xyz"),
        );
        let before = reopen(dir.path(), 1 << 20);
        assert_eq!(before.hints.len(), 4);
        assert_eq!(before.bad_records, 1, "the forged record ends the segment");
        assert_eq!(file_bytes(dir.path(), 1), end);
        // The same bytes with an honest length are a hint: the forgery was the length.
        overwrite(dir.path(), 1, end, &good);
        assert_eq!(reopen(dir.path(), 1 << 20).hints.len(), 5);
    }

    #[test]
    fn a_record_copied_into_another_segment_does_not_validate() {
        let dir = temp_dir();
        let all = hints(30, |_| 200);
        let at = write(dir.path(), SEG, all.clone());
        let ids = listing(dir.path());
        let (src, dst) = (ids[0], *ids.last().unwrap());
        let rec = at[0];
        assert_eq!(rec.segment(), src);
        let bytes = std::fs::read(segment_path(dir.path(), src)).unwrap();
        let copied = &bytes[rec.offset() as usize..][..rec.bytes() as usize];
        let end = file_bytes(dir.path(), dst);
        overwrite(dir.path(), dst, end, copied);
        let recovered = reopen(dir.path(), SEG);
        assert_eq!(recovered.bad_records, 1);
        assert_eq!(
            recovered.hints,
            pairs(&at, &all),
            "every real hint, no copy"
        );
        assert_eq!(file_bytes(dir.path(), dst), end);
        // The bytes are a valid record of the segment they came from, only not of this one.
        assert!(record::decode(copied, record_seed(src), RECORD_BYTES_MAX).is_ok());
        assert!(matches!(
            record::decode(copied, record_seed(dst), RECORD_BYTES_MAX),
            Err(record::Defect::CrcMismatch { .. })
        ));
    }

    #[test]
    fn concurrent_appends_all_become_durable_and_share_fdatasyncs() {
        const TASKS: u64 = 64;
        let dir = temp_dir();
        let d = dir.path().to_path_buf();
        let (mut written, stats) = run(move || async move {
            let (log, _) = HintLog::open(d, 1 << 20).await.unwrap();
            let log = Rc::new(log);
            // One alone first: it creates the segment and pays one fdatasync.
            let first = log.append(&hint(TASKS, 10)).await.unwrap();
            assert_eq!(log.stats().fdatasyncs, 1);
            let tasks: Vec<_> = (0..TASKS)
                .map(|i| {
                    let log = log.clone();
                    glommio::spawn_local(async move {
                        let h = hint(i, 20 + i as usize);
                        (log.append(&h).await.unwrap(), h)
                    })
                })
                .collect();
            let mut written = vec![(first, hint(TASKS, 10))];
            for t in tasks {
                written.push(t.await);
            }
            (written, log.stats())
        });
        assert_eq!(stats.appends, TASKS + 1);
        // 64 appends queued while the first sync of the round ran share one or two.
        assert!(stats.fdatasyncs <= 3, "{stats:?}");
        assert_eq!(
            stats.fdatasyncs, stats.batches,
            "one segment: one sync per round"
        );
        written.sort_by_key(|(at, _)| *at);
        let recovered = reopen(dir.path(), 1 << 20);
        assert_eq!(recovered.bad_records, 0);
        assert_eq!(recovered.hints, written);
    }

    #[test]
    fn torn_creations_bad_headers_and_foreign_files_at_open() {
        let dir = temp_dir();
        let d = dir.path();
        std::fs::write(segment_path(d, 5), b"").unwrap(); // created, nothing written
        std::fs::write(segment_path(d, 6), [0u8; 10]).unwrap(); // zeros, short of a header
        let mut wrong = encode_header(8).to_vec(); // a header naming another segment
        wrong.extend_from_slice(&[1, 2, 3]);
        std::fs::write(segment_path(d, 7), wrong).unwrap();
        std::fs::write(d.join("notes.txt"), b"not a segment").unwrap();
        let path = d.to_path_buf();
        let (recovered, next) = run(move || async move {
            let (log, recovered) = HintLog::open(path.clone(), SEG).await.unwrap();
            log.settle().await;
            assert_eq!(
                list_ids(&path).unwrap(),
                Vec::<u64>::new(),
                "no hints: removed"
            );
            assert_eq!(log.disk_bytes(), 0);
            (recovered, log.append(&hint(1, 5)).await.unwrap())
        });
        assert!(recovered.hints.is_empty());
        assert_eq!(recovered.bad_records, 1, "only the bad header is damage");
        assert!(d.join("notes.txt").exists());
        // In this session ids go on after the removed ones. (A later session may use
        // them again once they are gone from disk: a new file holds no stale record.)
        assert_eq!(next.segment(), 8);
        assert_eq!(listing(d), vec![8]);
    }

    #[test]
    fn a_hint_over_the_limits_is_refused() {
        let dir = temp_dir();
        let d = dir.path().to_path_buf();
        run(move || async move {
            let (log, _) = HintLog::open(d, SEG).await.unwrap();
            let mut h = hint(1, 10);
            h.key = Bytes::from(vec![b'k'; KEY_BYTES_MAX + 1]);
            assert!(matches!(
                log.append(&h).await,
                Err(HintLogError::TooLarge { key_bytes, .. }) if key_bytes == KEY_BYTES_MAX + 1
            ));
            assert_eq!(log.stats().appends, 0);
            // A record bigger than a whole segment gets a segment of its own.
            h.key = Bytes::from(vec![b'k'; KEY_BYTES_MAX]);
            let at = log.append(&h).await.unwrap();
            assert_eq!(log.read(at).await.unwrap(), h);
            let next = log.append(&hint(2, 1)).await.unwrap();
            assert_eq!(next.segment(), at.segment() + 1);
        });
    }
}
