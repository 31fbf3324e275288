//! One shard's storage engine: memtable in front, commit log behind.
//!
//! Write path ([`Engine::write`]): hold the key (see [`super::keylock`]), read the stored
//! version set (pending writes first, then the memtable), let the version layer make the
//! new set ([`VersionSet::coordinate`]), append it to the commit log, and — under
//! `batch` sync — wait for the group commit's fdatasync before the new set becomes
//! visible to reads and the write is acknowledged. The key is released as soon as the
//! record is queued, so the next write to the same key can join the same group commit:
//! it reads the *pending* set, which is why pending sets are kept apart from the
//! memtable. A read therefore never returns a version that a crash could take back.
//!
//! Record kinds in the commit log:
//! - `1` PUT: `key_len u16 | key | version set` (the full merged set, see
//!   [`crate::version`]): replaying records in any order ends in the same state.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ahash::AHashMap;
use bytes::{Buf, Bytes};

use super::commitlog::{CommitLog, CommitLogConfig, Ticket};
use super::keylock::KeyLocks;
use super::memtable::Memtable;
use super::StorageError;
use crate::config::SyncPolicy;
use crate::version::{Context, NodeId, VersionSet, Versioned};

/// Commit-log record kind of a key's new version set.
pub const RECORD_PUT: u8 = 1;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// This shard's directory (its commit log lives in `dir/commitlog`).
    pub dir: PathBuf,
    pub node_id: NodeId,
    pub sync: SyncPolicy,
    pub segment_bytes: u64,
    pub buffer_bytes_max: usize,
    /// Largest commit-log record: a key, a value and their versions.
    pub record_bytes_max: u32,
    /// Most siblings a key may hold (see [`crate::config::ServerConfig::siblings_max`]).
    pub siblings_max: usize,
}

/// A version set appended to the log whose fdatasync has not completed yet.
struct Pending {
    versions: VersionSet,
    ticket: Ticket,
}

pub struct Engine {
    node_id: NodeId,
    memtable: RefCell<Memtable>,
    /// Batch sync only: the newest set of each key that is queued but not yet durable.
    pending: RefCell<AHashMap<Bytes, Pending>>,
    locks: Rc<KeyLocks>,
    log: CommitLog,
    siblings_max: usize,
    record_bytes_max: u32,
    /// Whether a write waits for fdatasync before it becomes visible and is acknowledged.
    wait_durable: bool,
}

/// What a write returns: the key's version set after it.
pub type WriteOutcome = VersionSet;

impl Engine {
    /// Replays the shard's commit log into a new memtable, then opens the log for writing.
    /// Must run on the shard's executor; the log's writer task goes into `queue`.
    pub async fn open(
        config: EngineConfig,
        queue: glommio::TaskQueueHandle,
    ) -> Result<Engine, StorageError> {
        // Absolute: glommio's directory handles misbehave with relative paths.
        let dir = std::path::absolute(&config.dir).map_err(|source| StorageError::Io {
            op: "resolve path",
            path: config.dir.clone(),
            source,
        })?;
        prime_direct_reads(&dir).await?;
        let log_dir = dir.join("commitlog");
        std::fs::create_dir_all(&log_dir).map_err(|source| StorageError::Io {
            op: "create dir",
            path: log_dir.clone(),
            source,
        })?;
        let mut memtable = Memtable::default();
        let report = CommitLog::recover(&log_dir, config.record_bytes_max, |kind, payload| {
            apply_record(&mut memtable, kind, payload)
        })?;
        if let Some(torn) = &report.torn_tail {
            eprintln!(
                "ringkv: {}: torn tail cut at byte {} ({} bytes dropped: {}); writes there \
                 were never acknowledged",
                torn.path.display(),
                torn.offset,
                torn.bytes_dropped,
                torn.reason
            );
        }
        if let Some(path) = &report.removed_segment {
            eprintln!(
                "ringkv: {}: removed a segment whose creation a crash interrupted (no data)",
                path.display()
            );
        }
        let log = CommitLog::open(
            CommitLogConfig {
                dir: log_dir,
                segment_bytes: config.segment_bytes,
                sync: config.sync,
                record_bytes_max: config.record_bytes_max,
                buffer_bytes_max: config.buffer_bytes_max,
            },
            queue,
        )
        .await?;
        Ok(Engine {
            node_id: config.node_id,
            memtable: RefCell::new(memtable),
            pending: RefCell::new(AHashMap::new()),
            locks: Rc::new(KeyLocks::default()),
            log,
            siblings_max: config.siblings_max,
            record_bytes_max: config.record_bytes_max,
            wait_durable: config.sync == SyncPolicy::Batch,
        })
    }

    /// Calls `f` with the key's durable version set, if any.
    pub fn read<R>(&self, key: &[u8], f: impl FnOnce(Option<&VersionSet>) -> R) -> R {
        f(self.memtable.borrow().get(key))
    }

    /// Coordinates a write of `value` (`None` = delete) superseding what `context`
    /// covers, as this node. Returns once the write is durable under the sync policy.
    pub async fn write(
        &self,
        key: &[u8],
        context: &Context,
        value: Option<&[u8]>,
        timestamp_us: u64,
    ) -> Result<WriteOutcome, StorageError> {
        // Own the bytes: the request buffer they came in must not be kept alive.
        let key = Bytes::copy_from_slice(key);
        let versioned = Versioned {
            timestamp_us,
            value: value.map(Bytes::copy_from_slice),
        };
        let guard = self.locks.lock(&key).await;
        let stored = self.current(&key);
        let versions = VersionSet::coordinate(&stored, context, versioned, self.node_id);
        self.check_storable(&key, &versions)?;
        let mut payload = Vec::with_capacity(2 + key.len() + versions.encoded_len());
        encode_put(&key, &versions, &mut payload);
        let ticket = self.log.append(RECORD_PUT, &payload).await?;
        if !self.wait_durable {
            self.memtable.borrow_mut().merge(key, versions.clone());
            return Ok(versions);
        }
        self.pending.borrow_mut().insert(
            key.clone(),
            Pending {
                versions: versions.clone(),
                ticket,
            },
        );
        drop(guard);
        let durable = self.log.durable(ticket).await;
        {
            let mut pending = self.pending.borrow_mut();
            if pending.get(&key).is_some_and(|p| p.ticket == ticket) {
                pending.remove(&key);
            }
        }
        durable?;
        self.memtable.borrow_mut().merge(key, versions.clone());
        Ok(versions)
    }

    /// Refuses a new set that could not be logged or that holds too many siblings.
    fn check_storable(&self, key: &[u8], versions: &VersionSet) -> Result<(), StorageError> {
        let count = versions.value_count();
        if count > self.siblings_max {
            return Err(StorageError::TooManySiblings {
                count,
                max: self.siblings_max,
            });
        }
        versions.check_limits()?;
        let record_bytes = 2 + key.len() + versions.encoded_len();
        if record_bytes > self.record_bytes_max as usize {
            return Err(StorageError::TooManySiblings {
                count,
                max: count.saturating_sub(1),
            });
        }
        Ok(())
    }

    /// The newest version set of `key` a write must build on: queued, else durable.
    fn current(&self, key: &Bytes) -> VersionSet {
        if let Some(p) = self.pending.borrow().get(key) {
            return p.versions.clone();
        }
        self.memtable
            .borrow()
            .get(key)
            .cloned()
            .unwrap_or_else(VersionSet::empty)
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Keys in the memtable (for tests and status).
    pub fn key_count(&self) -> usize {
        self.memtable.borrow().len()
    }

    pub fn memtable_bytes(&self) -> usize {
        self.memtable.borrow().approximate_bytes()
    }

    /// Makes everything queued durable and stops the log writer (clean shutdown).
    pub async fn close(&self) -> Result<(), StorageError> {
        Ok(self.log.close().await?)
    }
}

/// Name of the 4 KiB file each shard opens first (see [`prime_direct_reads`]).
const IOPOLL_PROBE_FILE: &str = "iopoll-probe";

/// Opens a non-empty file with O_DIRECT before anything else on this executor.
///
/// glommio 0.9 decides once per thread and device whether the device supports polled
/// I/O, by reading the first block of the first `DmaFile` opened there; if that file
/// is empty (a commit-log segment just created) the read returns nothing, counts as
/// success, and every later direct read on the thread fails with EOPNOTSUPP on a
/// device without poll queues. Reading a real 4 KiB block first gets the right answer.
async fn prime_direct_reads(dir: &Path) -> Result<(), StorageError> {
    let probe = dir.join(IOPOLL_PROBE_FILE);
    let io = |op: &'static str, source| StorageError::Io {
        op,
        path: probe.clone(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io("create dir", e))?;
    if std::fs::metadata(&probe).map(|m| m.len()).unwrap_or(0) < 4096 {
        std::fs::write(&probe, [0u8; 4096]).map_err(|e| io("write", e))?;
    }
    crate::storage::sstable::prime_iopoll_probe(&probe)
        .await
        .map_err(|e| io("open (O_DIRECT probe)", e))
}

/// `key_len u16 | key | version set`.
fn encode_put(key: &[u8], versions: &VersionSet, out: &mut Vec<u8>) {
    debug_assert!(key.len() <= u16::MAX as usize);
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    out.extend_from_slice(key);
    versions.encode_into(out);
}

/// Applies one replayed record to the memtable. The CRC already matched, so a record
/// that does not decode is a format bug or a foreign file: refuse to start.
fn apply_record(memtable: &mut Memtable, kind: u8, payload: &[u8]) -> Result<(), String> {
    if kind != RECORD_PUT {
        return Err(format!("unknown record kind {kind}"));
    }
    let mut buf = Bytes::copy_from_slice(payload);
    if buf.len() < 2 {
        return Err("PUT record shorter than its key length".into());
    }
    let key_len = buf.get_u16_le() as usize;
    if buf.len() < key_len {
        return Err(format!(
            "PUT record key length {key_len} overruns the record"
        ));
    }
    let key = buf.split_to(key_len);
    let (versions, used) =
        VersionSet::decode(&buf).map_err(|e| format!("PUT record version set: {e}"))?;
    if used != buf.len() {
        return Err(format!(
            "PUT record has {} trailing bytes",
            buf.len() - used
        ));
    }
    memtable.merge(key, versions);
    Ok(())
}

#[cfg(test)]
mod tests;
