//! One shard's storage engine: a log-structured merge tree of version sets.
//!
//! ```text
//!  write ─▶ commit log (O_DIRECT, group commit) ─▶ active memtable
//!                                                    │ at memtable_bytes: sealed
//!                                                    ▼
//!  read ──▶ active ▶ sealed (newest first) ▶ tables  sealed memtables ──flush──▶ SSTable
//!                                              ▲                                  │
//!                                              └──── manifest lists the live ◀────┘
//!                                                    tables; compaction merges them
//! ```
//!
//! Write path ([`Engine::write`]), `dvv` mode: hold the key (see [`super::keylock`]),
//! read the stored version set (pending writes, the memtables, then the tables), let the
//! version layer make the new set ([`VersionSet::coordinate`]), append it to the commit
//! log, and — under `batch` sync — wait for the group commit's fdatasync before the new
//! set becomes visible to reads and the write is acknowledged. The key is released as
//! soon as the record is queued, so the next write to the same key can join the same
//! group commit: it reads the *pending* set, which is why pending sets are kept apart
//! from the memtable. A read therefore never returns a version that a crash could take
//! back.
//!
//! `lww` mode writes blind: no key lock, no read. The new set is the value alone under
//! the shard's clock ([`VersionSet::last_write`]), and the memtable's merge (`sync`)
//! keeps whichever of its versions has the larger clock. That is the whole saving: a
//! `dvv` write of a key that is only on disk costs a block read, an `lww` write never
//! does (perf/README.md measures both).
//!
//! The newest memtable holding a key has a set that descends from all older copies, so
//! reads stop there: in `dvv` mode because every write builds on everything stored for
//! its key, in `lww` mode because clocks are given in the log's record order and only
//! grow (the clock restarts above the manifest's clock floor and everything replayed),
//! so a newer memtable's version has the larger clock. Tables are merged instead (see
//! `tables.rs` for why).
//!
//! Flush (`jobs.rs`): when the active memtable reaches `memtable_bytes` it is sealed and
//! the log rolls to a new segment in the same synchronous step, so every record in the
//! older segments belongs to the sealed memtable or an older one. The flush writes the
//! sealed memtable to a table, stores a manifest that lists it with the new segment as
//! the log floor, and only then deletes the segments below the floor. Start-up replays
//! only the segments from the floor on. Compaction merges tables in a low-share task
//! queue and swaps them through the manifest the same way.
//!
//! Record kinds in the commit log:
//! - `1` PUT: `key_len u16 | key | version set` (the full merged set, see
//!   [`crate::version`]): replaying records in any order ends in the same state.

mod jobs;
mod memory;
mod signal;
mod tables;

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ahash::AHashMap;
use bytes::{Buf, Bytes};
use glommio::task::JoinHandle;
use glommio::TaskQueueHandle;

use super::commitlog::{self, CommitLog, CommitLogConfig, Ticket};
use super::compaction::SizeTieredOptions;
use super::keylock::{KeyGuard, KeyLocks};
use super::memtable::Memtable;
use super::sstable::{FullDisk, TableOptions};
use super::StorageError;
use crate::config::{ServerConfig, SyncPolicy};
use crate::version::{ConflictMode, Context, NodeId, Supersedes, VersionSet, Versioned, LWW_NODE};
use memory::Memory;
use signal::Signal;
use tables::Tables;

/// A key's set on its way into a table → how many clock entries it dropped
/// ([`Engine::set_clock_pruning`]).
pub type ClockPruning = Box<dyn Fn(&[u8], &mut VersionSet) -> usize>;

/// What happened to a key's stored set, for whoever keeps a digest of the shard (the
/// anti-entropy trees, [`Engine::set_change_hook`]).
#[derive(Debug)]
pub enum KeyChange<'a> {
    /// A write or a merge made `new` the key's set, as its record was queued.
    /// `contribution` is `antientropy::contribution` of it (hashed from the record's
    /// payload); `old` that of the set it replaced (`Some(None)`: the key was absent),
    /// or `None` when the write did not read it (a blind `lww` write).
    Written {
        old: Option<Option<u64>>,
        new: &'a VersionSet,
        contribution: u64,
    },
    /// A flush or compaction rewrote the key's stored set (dropped clock entries, or
    /// purged it): its contribution is no longer known.
    Rewritten,
}

/// Told of every [`KeyChange`] ([`Engine::set_change_hook`]).
pub type ChangeHook = Box<dyn Fn(&[u8], KeyChange<'_>)>;

/// Whether compaction may drop a deleted key whose tombstones are past `gc_grace`
/// ([`Engine::set_purge_rule`]): the proof that every replica holds the delete.
pub type PurgeRule = Box<dyn Fn(&[u8], &VersionSet) -> bool>;

/// Commit-log record kind of a key's new version set.
pub const RECORD_PUT: u8 = 1;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// This shard's directory: its manifest and tables, and its commit log in
    /// `dir/commitlog`.
    pub dir: PathBuf,
    pub node_id: NodeId,
    pub sync: SyncPolicy,
    /// Siblings (read-merge-write) or last-write-wins (blind writes).
    pub conflicts: ConflictMode,
    pub segment_bytes: u64,
    pub buffer_bytes_max: usize,
    /// Largest commit-log record: a key, a value and their versions.
    pub record_bytes_max: u32,
    /// Most siblings a key may hold (see [`crate::config::ServerConfig::siblings_max`]).
    pub siblings_max: usize,
    /// The active memtable is sealed and flushed once it holds this much.
    pub memtable_bytes: usize,
    /// Sealed memtables that may wait for their flush before writes wait too.
    pub sealed_memtables_max: usize,
    /// The block cache's budget.
    pub cache_bytes: usize,
    /// A deleted key's tombstones are kept at least this long (DESIGN.md §4).
    pub gc_grace_us: u64,
    pub table: TableOptions,
    pub compaction: SizeTieredOptions,
    /// Compaction reads at most this many bytes of input tables per second (0: no
    /// limit), so that its disk reads and writes leave room for requests' reads.
    pub compaction_bytes_per_sec: u64,
    /// Fault injection for tests: a table write that would end past this many bytes
    /// fails with ENOSPC, as on a full disk. `u64::MAX` otherwise.
    pub table_file_bytes_max: u64,
}

impl EngineConfig {
    /// The server's defaults for a shard in `dir`.
    pub fn new(dir: impl Into<PathBuf>, node_id: NodeId) -> EngineConfig {
        ServerConfig::default().engine(dir.into(), node_id)
    }
}

/// What makes a write's new set final when its record is queued.
enum Queued {
    /// `dvv`: the set is final; the key stays held until its record is queued.
    Held(KeyGuard),
    /// `lww`: the set gets its clock in the same synchronous step that queues its
    /// record. So clocks follow the log's record order, and with it the memtable
    /// generations (a seal rolls the log in one step): a newer generation always holds
    /// the larger clock, which is what lets reads stop at the first one holding the key.
    Stamped { timestamp_us: u64 },
}

/// A version set appended to the log whose fdatasync has not completed yet.
struct Pending {
    versions: VersionSet,
    ticket: Ticket,
}

/// What the engine has done since it opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    pub flushes: u64,
    pub flush_failures: u64,
    pub compactions: u64,
    pub compaction_failures: u64,
    /// Tombstone-only keys compaction dropped (after `gc_grace`).
    pub keys_purged: u64,
    /// Clock entries flushes and compactions dropped ([`Engine::set_clock_pruning`]).
    pub clock_entries_pruned: u64,
    /// Log segments deleted because tables cover them.
    pub segments_recycled: u64,
}

/// The state the request path and the background jobs share (one shard, one thread).
struct Core {
    node_id: NodeId,
    conflicts: ConflictMode,
    /// The shard's hybrid clock (`max(wall µs, last + 1)`), never decreasing and above
    /// everything stored or replayed: the last clock given to a write in `lww` mode;
    /// in `dvv` mode at least the largest counter this node minted here, so that a
    /// node entry that holds no values can jump to a counter never used
    /// (`version::Pruning`).
    clock: Cell<u64>,
    log: CommitLog,
    locks: Rc<KeyLocks>,
    /// Batch sync only: the newest set of each key that is queued but not yet durable.
    pending: RefCell<AHashMap<Bytes, Pending>>,
    memory: Memory,
    tables: Tables,
    siblings_max: usize,
    record_bytes_max: u32,
    /// Whether a write waits for fdatasync before it becomes visible and is acknowledged.
    wait_durable: bool,
    memtable_bytes: usize,
    sealed_memtables_max: usize,
    gc_grace_us: u64,
    compaction: SizeTieredOptions,
    compaction_bytes_per_sec: u64,
    /// Woken by every change the jobs or waiting writes look at: a seal, a roll, a
    /// write merged, a table installed, a failure, closing.
    changed: Signal,
    closing: Cell<bool>,
    /// Set when tables changed: the compaction job looks for work.
    compaction_wanted: Cell<bool>,
    /// The flush's error while it keeps failing: once the sealed memtables are full,
    /// writes fail with it instead of waiting without end.
    flush_error: RefCell<Option<String>>,
    /// A manifest that could not be stored: no table may change any more.
    tables_failed: RefCell<Option<String>>,
    /// Applied to every set a flush or compaction writes ([`Engine::set_clock_pruning`]).
    clock_pruning: RefCell<Option<ClockPruning>>,
    /// Told of every change to a key's set ([`Engine::set_change_hook`]).
    change_hook: RefCell<Option<ChangeHook>>,
    /// Asked before compaction drops a deleted key ([`Engine::set_purge_rule`]).
    purge_rule: RefCell<Option<PurgeRule>>,
    /// One compaction at a time (the job and [`Engine::compact_all`]).
    compaction_lock: glommio::sync::Semaphore,
    stats: Cell<EngineStats>,
    /// Where the jobs and roll waiters run: fewer shares than requests.
    background: TaskQueueHandle,
}

pub struct Engine {
    core: Rc<Core>,
    jobs: RefCell<Vec<JoinHandle<()>>>,
}

/// What a write returns: the key's version set after it.
pub type WriteOutcome = VersionSet;

impl Engine {
    /// Loads the manifest and opens the tables, replays the commit log from the
    /// manifest's floor into a new memtable, opens the log for writing and starts the
    /// flush and compaction jobs. Must run on the shard's executor; the log's writer
    /// and the flush go into `queue`, compaction into a queue of its own with fewer
    /// shares.
    pub async fn open(
        config: EngineConfig,
        queue: TaskQueueHandle,
    ) -> Result<Engine, StorageError> {
        // Absolute: glommio's directory handles misbehave with relative paths.
        let dir = std::path::absolute(&config.dir).map_err(|source| StorageError::Io {
            op: "resolve path",
            path: config.dir.clone(),
            source,
        })?;
        prime_direct_reads(&dir).await?;
        let tables = Tables::open(
            &dir,
            config.cache_bytes,
            config.table,
            FullDisk {
                bytes_max: config.table_file_bytes_max,
            },
        )
        .await?;
        let log_dir = dir.join("commitlog");
        std::fs::create_dir_all(&log_dir).map_err(|source| StorageError::Io {
            op: "create dir",
            path: log_dir.clone(),
            source,
        })?;
        let log_floor = tables.log_floor();
        commitlog::discard_below(&log_dir, log_floor)?;
        let mut memtable = Memtable::default();
        let report = CommitLog::recover(&log_dir, config.record_bytes_max, |kind, payload| {
            apply_record(&mut memtable, kind, payload)
        })?;
        // The clock's node: the pseudo-node of last-write-wins clocks, or this node,
        // whose counters the clock gives out too (`write`).
        let clock_node = match config.conflicts {
            ConflictMode::Lww => LWW_NODE,
            ConflictMode::Dvv => config.node_id,
        };
        let replayed_clock = memtable
            .iter()
            .map(|(_, versions)| versions.counter_of(clock_node))
            .max()
            .unwrap_or(0);
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
                first_segment_id_min: log_floor,
            },
            queue,
        )
        .await?;
        let compaction_queue = glommio::executor().create_task_queue(
            glommio::Shares::Static(COMPACTION_SHARES),
            glommio::Latency::NotImportant,
            "compaction",
        );
        let core = Rc::new(Core {
            node_id: config.node_id,
            conflicts: config.conflicts,
            clock: Cell::new(tables.clock_floor().max(replayed_clock)),
            log,
            locks: Rc::new(KeyLocks::default()),
            pending: RefCell::new(AHashMap::new()),
            memory: Memory::new(memtable),
            tables,
            siblings_max: config.siblings_max,
            record_bytes_max: config.record_bytes_max,
            wait_durable: config.sync == SyncPolicy::Batch,
            memtable_bytes: config.memtable_bytes,
            sealed_memtables_max: config.sealed_memtables_max.max(1),
            gc_grace_us: config.gc_grace_us,
            compaction: config.compaction,
            compaction_bytes_per_sec: config.compaction_bytes_per_sec,
            changed: Signal::default(),
            closing: Cell::new(false),
            compaction_wanted: Cell::new(true),
            flush_error: RefCell::new(None),
            tables_failed: RefCell::new(None),
            clock_pruning: RefCell::new(None),
            change_hook: RefCell::new(None),
            purge_rule: RefCell::new(None),
            compaction_lock: glommio::sync::Semaphore::new(1),
            stats: Cell::new(EngineStats::default()),
            background: queue,
        });
        // What the log replayed may already be past the threshold.
        core.seal_if_full();
        let jobs = vec![
            glommio::spawn_local_into(jobs::flush_job(core.clone()), queue)
                .expect("the queue belongs to this executor")
                .detach(),
            glommio::spawn_local_into(jobs::compaction_job(core.clone()), compaction_queue)
                .expect("the queue belongs to this executor")
                .detach(),
        ];
        Ok(Engine {
            core,
            jobs: RefCell::new(jobs),
        })
    }

    /// Answers a read without waiting, when it can: `Some(f(set))` if a memtable holds
    /// the key, `Some(f(None))` if no table may hold it either; `None` if tables must be
    /// read ([`get`](Self::get)).
    pub fn read_now<R>(&self, key: &[u8], f: impl FnOnce(Option<&VersionSet>) -> R) -> Option<R> {
        let core = &self.core;
        // `f` goes to memory's lookup, and comes back unused if memory misses.
        let mut f = Some(f);
        let found = core
            .memory
            .find(key, |versions| f.take().expect("unused")(Some(versions)));
        if found.is_some() {
            return found;
        }
        if core.tables.may_hold(key) {
            return None;
        }
        Some(f.take().expect("memory missed, so unused")(None))
    }

    /// The key's durable version set, if any.
    pub async fn get(&self, key: &[u8]) -> Result<Option<VersionSet>, StorageError> {
        self.core.stored(key).await
    }

    /// Coordinates a write of `value` (`None` = delete) as this node. In `dvv` mode it
    /// supersedes what `context` covers and keeps the rest as siblings; in `lww` mode it
    /// supersedes everything and `context` is ignored. Returns once the write is durable
    /// under the sync policy.
    pub async fn write(
        &self,
        key: &[u8],
        context: &Context,
        value: Option<&[u8]>,
        timestamp_us: u64,
    ) -> Result<WriteOutcome, StorageError> {
        self.write_superseding(key, Some(context), value, timestamp_us, VersionSet::clone)
            .await
    }

    /// [`Engine::write`] superseding what `supersedes` names: the versions a client's
    /// context covers, or (an overwrite) everything this shard stores for the key when
    /// the write is made, read under the key's lock. An overwrite costs no read by the
    /// client; versions other replicas hold and this one has not merged yet stay
    /// siblings of it, as with any context.
    pub async fn write_over(
        &self,
        key: &[u8],
        supersedes: &Supersedes,
        value: Option<&[u8]>,
        timestamp_us: u64,
    ) -> Result<WriteOutcome, StorageError> {
        self.write_over_with(key, supersedes, value, timestamp_us, VersionSet::clone)
            .await
    }

    /// [`Engine::write_over`], answering `outcome` of the stored set instead of a copy
    /// of it: a caller that needs only its context, or its encoding, spares copying the
    /// set (each value's `Bytes` header included) on every write. `outcome` runs once
    /// the set is final (logged), and its result is returned once the write is durable.
    pub async fn write_over_with<R>(
        &self,
        key: &[u8],
        supersedes: &Supersedes,
        value: Option<&[u8]>,
        timestamp_us: u64,
        outcome: impl FnOnce(&VersionSet) -> R,
    ) -> Result<R, StorageError> {
        let seen = match supersedes {
            Supersedes::Seen(context) => Some(context),
            Supersedes::Stored => None,
        };
        self.write_superseding(key, seen, value, timestamp_us, outcome)
            .await
    }

    /// The write of [`Engine::write`] and [`Engine::write_over`]: `seen` is the client's
    /// context, `None` an overwrite (the stored set's own context, under the lock).
    async fn write_superseding<R>(
        &self,
        key: &[u8],
        seen: Option<&Context>,
        value: Option<&[u8]>,
        timestamp_us: u64,
        outcome: impl FnOnce(&VersionSet) -> R,
    ) -> Result<R, StorageError> {
        let core = &self.core;
        core.wait_for_room().await?;
        // Own the bytes: the request buffer they came in must not be kept alive.
        let key = Bytes::copy_from_slice(key);
        let versioned = Versioned {
            timestamp_us,
            value: value.map(Bytes::copy_from_slice),
        };
        if core.conflicts == ConflictMode::Lww {
            // Clock 1 is a stand-in of the same encoded length: the real clock is given
            // when the record is queued (see `Queued::Stamped`).
            let versions = VersionSet::last_write(1, versioned);
            core.check_storable(&key, &versions)?;
            return core
                .log_and_apply(
                    key,
                    versions,
                    Queued::Stamped { timestamp_us },
                    None,
                    outcome,
                )
                .await;
        }
        let guard = core.locks.lock(&key).await;
        // The shard's clock gives a counter above every one this shard minted, for a
        // node entry that holds no values (`VersionSet::coordinate`), and then stays
        // above the counter minted.
        let fresh = core.tick(timestamp_us);
        let node_id = core.node_id;
        let versions = core
            .build_on_stored(&key, |stored, _| {
                let old = core.old_contribution(&key, stored);
                let stored_context;
                let context = match seen {
                    Some(context) => context,
                    None => {
                        stored_context = stored.context();
                        &stored_context
                    }
                };
                let new = VersionSet::coordinate(stored, context, versioned, node_id, fresh);
                (old, new)
            })
            .await?;
        let (old, versions) = versions;
        core.clock
            .set(core.clock.get().max(versions.counter_of(core.node_id)));
        core.check_storable(&key, &versions)?;
        core.log_and_apply(key, versions, Queued::Held(guard), old, outcome)
            .await
    }

    /// A replica write: merges `incoming` (another replica's, or a coordinator's, set for
    /// the key) into what this shard stores, and returns the merge once it is durable
    /// under the sync policy. Read-merge-write under the key's lock in both conflict
    /// modes, so that the newest memtable holding a key always holds its whole set (the
    /// read path stops there). If the merge adds nothing, nothing is written.
    ///
    /// Under `lww` the shard's clock moves past the incoming clock, so a write this shard
    /// coordinates later wins over it even if this machine's wall clock is behind.
    pub async fn merge(
        &self,
        key: &[u8],
        incoming: &VersionSet,
    ) -> Result<WriteOutcome, StorageError> {
        let core = &self.core;
        core.wait_for_room().await?;
        let key = Bytes::copy_from_slice(key);
        if core.conflicts == ConflictMode::Lww {
            let clock = incoming.last_write_clock();
            core.clock.set(core.clock.get().max(clock));
        }
        let guard = core.locks.lock(&key).await;
        let (stored, pending) = core.stored_under_lock(&key).await?;
        let merged = stored.sync(incoming);
        if merged == stored {
            // Nothing new to log; but acknowledge only what is durable: a pending set is
            // logged and not yet synced.
            drop(guard);
            if let Some(ticket) = pending {
                core.log.durable(ticket).await?;
            }
            return Ok(stored);
        }
        core.check_storable(&key, &merged)?;
        let old = core.old_contribution(&key, &stored);
        core.log_and_apply(key, merged, Queued::Held(guard), old, VersionSet::clone)
            .await
    }

    /// Every key `wanted` accepts with its set as a read would see it (the newest
    /// memtable holding the key, else the merge over the tables), in key order, as of
    /// the moment the scan starts: the memtables' matching keys are copied and the live
    /// tables chosen in one synchronous step. Reads tables at most `bytes_per_sec` (0: no
    /// limit) in the caller's task queue. For anti-entropy's leaf listings and tree
    /// builds; writes during the scan are not seen.
    pub async fn scan(
        &self,
        wanted: &dyn Fn(&[u8]) -> bool,
        bytes_per_sec: u64,
        mut visit: impl FnMut(&Bytes, &VersionSet),
    ) -> Result<(), StorageError> {
        let core = &self.core;
        let mut memory = std::collections::BTreeMap::new();
        core.memory.for_each_newest(|key, versions| {
            if wanted(key) && !memory.contains_key(key) {
                memory.insert(key.clone(), versions.clone());
            }
        });
        let mut memory = memory.into_iter().peekable();
        jobs::scan_tables(core, wanted, bytes_per_sec, |key, versions| {
            while let Some((first, _)) = memory.peek() {
                if *first > key {
                    break;
                }
                let (first, newer) = memory.next().expect("peeked");
                visit(&first, &newer);
                if first == key {
                    return;
                }
            }
            visit(&key, &versions);
        })
        .await?;
        for (key, versions) in memory {
            visit(&key, &versions);
        }
        Ok(())
    }

    /// Seals the active memtable (if it holds anything) and waits until every sealed
    /// memtable is in a table. For tests, benchmarks and clean shutdowns.
    pub async fn flush(&self) -> Result<(), StorageError> {
        let core = &self.core;
        if core.memory.active_bytes() > 0 {
            core.wait_until(|| core.memory.sealed_count() < core.sealed_memtables_max)
                .await?;
            // The flush job that made room may have sealed the full active memtable
            // itself: sealing its empty successor would flush nothing.
            if core.memory.active_bytes() > 0 {
                core.seal();
            }
        }
        core.wait_until(|| core.memory.sealed_count() == 0).await?;
        match core.flush_error.borrow().clone() {
            Some(e) if core.memory.sealed_count() > 0 => Err(StorageError::JobFailed(e)),
            _ => Ok(()),
        }
    }

    /// Merges every table into one (a major compaction; a single table is rewritten
    /// too, dropping what `gc_grace` allows). Waits for a running compaction first.
    pub async fn compact_all(&self) -> Result<(), StorageError> {
        jobs::compact(&self.core, None).await
    }

    /// Waits until the compaction job finds nothing to do.
    pub async fn compactions_idle(&self) -> Result<(), StorageError> {
        let core = &self.core;
        core.wait_until(|| !core.compaction_wanted.get()).await
    }

    pub fn node_id(&self) -> NodeId {
        self.core.node_id
    }

    /// How this shard settles concurrent writes (fixed when the data dir was made).
    pub fn conflicts(&self) -> ConflictMode {
        self.core.conflicts
    }

    /// Keys in the memtables (for tests and status; a key in two counts twice).
    pub fn memory_key_count(&self) -> usize {
        self.core.memory.key_count()
    }

    /// Memory held by the memtables (approximate).
    pub fn memtable_bytes(&self) -> usize {
        self.core.memory.bytes()
    }

    pub fn table_count(&self) -> usize {
        self.core.tables.count()
    }

    /// Bytes in the block cache.
    pub fn cache_bytes(&self) -> usize {
        self.core.tables.cache().used_bytes()
    }

    /// Block cache lookups since the engine opened: `(hits, misses)`.
    pub fn cache_lookups(&self) -> (u64, u64) {
        let cache = self.core.tables.cache();
        (cache.hits(), cache.misses())
    }

    pub fn stats(&self) -> EngineStats {
        self.core.stats.get()
    }

    /// Installs the rule that bounds clocks (DESIGN.md §5, [`crate::version::Pruning`]):
    /// every set a flush or compaction writes passes through `rule`, which drops the
    /// entries the ring no longer needs and returns how many. The engine knows no ring,
    /// so the server gives it one; without a rule nothing is dropped.
    ///
    /// Pruning happens there, not when a write is logged, because the store is a join:
    /// the memtable, reads and compaction `sync` every copy of a key, and an entry
    /// dropped from one copy comes back from any other. A table a compaction writes
    /// replaces its inputs; once the compaction holds every copy of the key (a major
    /// compaction, or the only table holding it), the entry is gone for good.
    pub fn set_clock_pruning(&self, rule: ClockPruning) {
        *self.core.clock_pruning.borrow_mut() = Some(rule);
    }

    /// Installs the hook told of every change to a key's set ([`KeyChange`]), in the
    /// synchronous step that makes the change: as a write's record is queued (before it
    /// is durable: a write whose fdatasync fails was still reported), or as a flush or
    /// compaction rewrites the key. The hook must not call back into the engine.
    pub fn set_change_hook(&self, hook: ChangeHook) {
        *self.core.change_hook.borrow_mut() = Some(hook);
    }

    /// Installs the rule compaction asks before it drops a deleted key past `gc_grace`
    /// (`compaction::merge::purgeable`'s `replicas_confirmed`). Without one, a key is
    /// dropped on time alone: right only on a node whose copy is the only one.
    pub fn set_purge_rule(&self, rule: PurgeRule) {
        *self.core.purge_rule.borrow_mut() = Some(rule);
    }

    /// Stops the jobs (a running flush or compaction finishes first), makes everything
    /// queued durable and stops the log writer. Sealed memtables are not flushed: their
    /// records are in the log, which the next start replays.
    pub async fn close(&self) -> Result<(), StorageError> {
        self.core.closing.set(true);
        self.core.changed.notify();
        let jobs = std::mem::take(&mut *self.jobs.borrow_mut());
        for job in jobs {
            job.await;
        }
        Ok(self.core.log.close().await?)
    }
}

/// Shares of the compaction queue; requests run in the default queue's 1000: under
/// load, compaction gets about a tenth of the core.
const COMPACTION_SHARES: usize = 100;

impl Core {
    /// Appends the key's new set to the log and makes it visible once durable under
    /// the sync policy (module doc). `queued` says how the set is made final as its
    /// record is queued: a `dvv` write's key guard is released then, an `lww` write's
    /// set gets its clock then.
    async fn log_and_apply<R>(
        self: &Rc<Self>,
        key: Bytes,
        mut versions: VersionSet,
        queued: Queued,
        old: Option<Option<u64>>,
        outcome: impl FnOnce(&VersionSet) -> R,
    ) -> Result<R, StorageError> {
        let payload_len = 2 + key.len() + versions.encoded_len();
        let hooked = self.change_hook.borrow().is_some();
        let mut contribution = 0;
        let (guard, stamp) = match queued {
            Queued::Held(guard) => (Some(guard), None),
            Queued::Stamped { timestamp_us } => (None, Some(timestamp_us)),
        };
        let ticket = self
            .log
            .append_with(RECORD_PUT, payload_len, |payload| {
                if let Some(timestamp_us) = stamp {
                    versions.set_last_write_clock(self.tick(timestamp_us));
                }
                let start = payload.len();
                encode_put(&key, &versions, payload);
                if hooked {
                    contribution = crate::antientropy::contribution_of_payload(&payload[start..]);
                }
            })
            .await?;
        // The set is final now (logged, clock stamped).
        let outcome = outcome(&versions);
        if let Some(hook) = &*self.change_hook.borrow() {
            let change = KeyChange::Written {
                old,
                new: &versions,
                contribution,
            };
            hook(&key, change);
        }
        // Same poll as the append: the record belongs to the generation active now (a
        // seal rolls the log in one step with it, see `Core::seal_if_full`).
        let generation = self.memory.active();
        if !self.wait_durable {
            generation.table.borrow_mut().merge(key, versions);
            self.seal_if_full();
            return Ok(outcome);
        }
        generation.inflight.set(generation.inflight.get() + 1);
        // Only `dvv` writes read pending sets; an `lww` write holds no key guard.
        if guard.is_some() {
            self.pending.borrow_mut().insert(
                key.clone(),
                Pending {
                    versions: versions.clone(),
                    ticket,
                },
            );
        }
        drop(guard);
        let durable = self.log.durable(ticket).await;
        {
            let mut pending = self.pending.borrow_mut();
            if pending.get(&key).is_some_and(|p| p.ticket == ticket) {
                pending.remove(&key);
            }
        }
        if durable.is_ok() {
            generation.table.borrow_mut().merge(key, versions);
        }
        generation.inflight.set(generation.inflight.get() - 1);
        self.changed.notify();
        self.seal_if_full();
        durable?;
        Ok(outcome)
    }

    /// The next clock, `max(timestamp_us, last + 1)`: a `lww` write's clock (module doc
    /// of [`crate::version`], "Last write wins"), or a `dvv` write's fresh counter.
    fn tick(&self, timestamp_us: u64) -> u64 {
        let next = timestamp_us.max(self.clock.get() + 1);
        self.clock.set(next);
        next
    }

    /// The contribution of `stored`, the set a write under the key's lock builds on
    /// (`Some(None)`: the key is absent), when a change hook wants it.
    fn old_contribution(&self, key: &[u8], stored: &VersionSet) -> Option<Option<u64>> {
        if self.change_hook.borrow().is_none() {
            return None;
        }
        if stored.is_empty() {
            return Some(None);
        }
        Some(Some(crate::antientropy::contribution(key, stored)))
    }

    /// Tells the change hook, if any, that a flush or compaction rewrote `key`.
    fn rewritten(&self, key: &[u8]) {
        if let Some(hook) = &*self.change_hook.borrow() {
            hook(key, KeyChange::Rewritten);
        }
    }

    /// Whether compaction may drop `key`'s deleted set: the purge rule's answer, or yes
    /// without one (a single node holds the only copy).
    fn may_purge(&self, key: &[u8], versions: &VersionSet) -> bool {
        match &*self.purge_rule.borrow() {
            Some(rule) => rule(key, versions),
            None => true,
        }
    }

    /// What a write under the key's lock builds on, with its log ticket: the set a write
    /// logged but not yet made durable (and that write's ticket), else the stored set
    /// (empty if none). A copy of it.
    async fn stored_under_lock(
        &self,
        key: &[u8],
    ) -> Result<(VersionSet, Option<Ticket>), StorageError> {
        self.build_on_stored(key, |versions, ticket| (versions.clone(), ticket))
            .await
    }

    /// `f` of what a write under the key's lock builds on ([`Self::stored_under_lock`]),
    /// without copying the set when the pending sets or memory hold it.
    async fn build_on_stored<R>(
        &self,
        key: &[u8],
        f: impl FnOnce(&VersionSet, Option<Ticket>) -> R,
    ) -> Result<R, StorageError> {
        let mut f = Some(f);
        let mut apply =
            |versions: &VersionSet, ticket| f.take().expect("applied once")(versions, ticket);
        let pending = self
            .pending
            .borrow()
            .get(key)
            .map(|p| apply(&p.versions, Some(p.ticket)));
        if let Some(built) = pending {
            return Ok(built);
        }
        if let Some(built) = self.memory.find(key, |versions| apply(versions, None)) {
            return Ok(built);
        }
        let stored = self
            .tables
            .get(key)
            .await?
            .unwrap_or_else(VersionSet::empty);
        Ok(apply(&stored, None))
    }

    /// The key's set in the newest memtable that holds it, else merged over the tables.
    async fn stored(&self, key: &[u8]) -> Result<Option<VersionSet>, StorageError> {
        if let Some(versions) = self.memory.get(key) {
            return Ok(Some(versions));
        }
        self.tables.get(key).await
    }

    /// Waits until `ready()`; fails if the engine closes first.
    async fn wait_until(&self, mut ready: impl FnMut() -> bool) -> Result<(), StorageError> {
        self.changed
            .wait_until(|| self.closing.get() || ready())
            .await;
        if self.closing.get() && !ready() {
            return Err(StorageError::Log(commitlog::LogError::Closed));
        }
        Ok(())
    }

    /// Write back-pressure: waits while the active memtable is full and the sealed ones
    /// wait for their flush; fails at once if that flush keeps failing.
    async fn wait_for_room(&self) -> Result<(), StorageError> {
        let full = || self.active_full() && self.memory.sealed_count() >= self.sealed_memtables_max;
        if !full() {
            return Ok(());
        }
        let failing =
            || self.flush_error.borrow().is_some() || self.tables_failed.borrow().is_some();
        self.wait_until(|| !full() || failing()).await?;
        if full() {
            let error = self.tables_failed.borrow().clone();
            let error = error.or_else(|| self.flush_error.borrow().clone());
            let reason = error.unwrap_or_default();
            return Err(StorageError::JobFailed(format!(
                "memtables are full and cannot be flushed: {reason}"
            )));
        }
        Ok(())
    }

    /// Whether the active memtable reached the flush threshold.
    fn active_full(&self) -> bool {
        self.memory.active_bytes() >= self.memtable_bytes
    }

    /// Seals the active memtable if it reached the threshold and there is room.
    fn seal_if_full(self: &Rc<Self>) {
        if self.active_full() && self.memory.sealed_count() < self.sealed_memtables_max {
            self.seal();
        }
    }

    /// Seals the active memtable and rolls the log in one synchronous step: no record
    /// can be appended between the two, so the roll's segment id is a floor below
    /// which the log holds only the sealed memtable's records and older ones.
    fn seal(self: &Rc<Self>) {
        let sealed = self.memory.seal();
        let roll = self.log.roll();
        let core = self.clone();
        glommio::spawn_local_into(
            async move {
                // A failed log floors nothing: the segments stay.
                let floor = roll.await.unwrap_or(0);
                sealed.log_floor.set(Some(floor));
                core.changed.notify();
            },
            self.background,
        )
        .expect("the queue belongs to this executor")
        .detach();
        self.changed.notify();
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

    /// Applies the clock pruning rule, if any, to a set about to be written to a table.
    fn prune_clock(&self, key: &[u8], versions: &mut VersionSet) {
        let dropped = match &*self.clock_pruning.borrow() {
            Some(rule) => rule(key, versions),
            None => return,
        };
        if dropped > 0 {
            self.update_stats(|s| s.clock_entries_pruned += dropped as u64);
            self.rewritten(key);
        }
    }

    fn update_stats(&self, f: impl FnOnce(&mut EngineStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
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
