//! The engine's background jobs: flushing sealed memtables and compacting tables.
//!
//! Both are glommio tasks that wait on the engine's change signal, do one job, and
//! report a failure instead of stopping the shard: a failed flush leaves its memtable in
//! memory and its records in the log (nothing acknowledged is lost) and is retried after
//! a pause; a failed compaction leaves its inputs live. The decisions they run are the
//! synchronous ones of `storage::compaction`. Both yield inside long loops.
//!
//! A manifest that cannot be stored is different: its fsync is never retried, so no
//! table changes after it (`Core::tables_failed`) and the error is reported; reads and
//! writes go on from the live tables and the log.

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::super::compaction::{choose, purgeable, MergeIter};
use super::super::sstable::{Table, TableIter};
use super::super::StorageError;
use super::memory::Generation;
use super::tables::{decode_versions, may_hold, TableOut};
use super::Core;
use crate::version::VersionSet;

/// Pause before retrying a failed flush or compaction: long enough not to spin on a
/// full disk, short enough to recover soon after space is freed.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Memtable entries encoded per step of a flush (then it may yield).
const FLUSH_STEP_ENTRIES: usize = 256;

pub async fn flush_job(core: Rc<Core>) {
    loop {
        core.changed
            .wait_until(|| {
                core.closing.get()
                    || core
                        .memory
                        .oldest_sealed()
                        .is_some_and(|g| g.ready_to_flush())
            })
            .await;
        if core.closing.get() || core.tables_failed.borrow().is_some() {
            return;
        }
        let generation = core.memory.oldest_sealed().expect("waited for one");
        match flush(&core, &generation).await {
            Ok(()) => {
                *core.flush_error.borrow_mut() = None;
                core.update_stats(|s| s.flushes += 1);
                core.compaction_wanted.set(true);
                core.seal_if_full();
            }
            Err(e) => {
                eprintln!(
                    "ringkv: {}: flush failed, retrying: {e}",
                    core.tables.dir().display()
                );
                *core.flush_error.borrow_mut() = Some(e.to_string());
                core.update_stats(|s| s.flush_failures += 1);
                core.changed.notify();
                glommio::timer::sleep(RETRY_PAUSE).await;
            }
        }
        core.changed.notify();
    }
}

/// Writes `generation` to a table, makes it live with the log floor, then recycles the
/// log segments it covers.
async fn flush(core: &Rc<Core>, generation: &Rc<Generation>) -> Result<(), StorageError> {
    let floor = generation.log_floor.get().expect("flushed once rolled");
    let mut out = core.tables.create().await?;
    let mut last: Option<Bytes> = None;
    loop {
        let mut step: Vec<(Bytes, VersionSet)> = generation
            .table
            .borrow()
            .iter_after(last.as_ref())
            .take(FLUSH_STEP_ENTRIES)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let Some((key, _)) = step.last() else { break };
        last = Some(key.clone());
        for (key, versions) in &mut step {
            core.prune_clock(key, versions);
            if let Err(e) = out.add(key, versions).await {
                out.abandon().await;
                return Err(e);
            }
        }
        glommio::yield_if_needed().await;
    }
    let made = out.finish().await?;
    let (table, meta) = made.map_or((None, None), |(t, m)| (Some(t), Some(m)));
    commit(core, |m| {
        m.tables.extend(meta);
        m.log_segment_floor = m.log_segment_floor.max(floor);
    })
    .await?;
    // One synchronous step: a read sees the memtable or the table, never neither.
    core.tables.install(&[], table);
    core.memory.remove_flushed(generation);
    match core.log.remove_segments_below(floor).await {
        Ok(removed) => core.update_stats(|s| s.segments_recycled += removed.len() as u64),
        // They stay on disk; the next start discards them (they are below the floor).
        Err(e) => eprintln!("ringkv: recycling commit-log segments below {floor}: {e}"),
    }
    Ok(())
}

/// Stores the edited manifest; if that fails, no table may change any more.
async fn commit(
    core: &Core,
    edit: impl FnOnce(&mut super::super::manifest::Manifest),
) -> Result<(), StorageError> {
    if let Some(e) = core.tables_failed.borrow().clone() {
        return Err(StorageError::JobFailed(e));
    }
    // Every clock in the tables (and in the memtable being flushed) was given out by
    // now: a restart's clock starts above it.
    let clock = core.clock.get();
    let stored = core
        .tables
        .commit(|m| {
            edit(m);
            m.clock_floor = m.clock_floor.max(clock);
        })
        .await;
    if let Err(e) = &stored {
        let message = format!("the manifest could not be stored ({e}); tables are frozen");
        eprintln!("ringkv: {}: {message}", core.tables.dir().display());
        *core.tables_failed.borrow_mut() = Some(message);
        core.changed.notify();
    }
    stored
}

pub async fn compaction_job(core: Rc<Core>) {
    loop {
        core.changed
            .wait_until(|| core.closing.get() || core.compaction_wanted.get())
            .await;
        if core.closing.get() || core.tables_failed.borrow().is_some() {
            return;
        }
        let Some(choice) = choose(&core.tables.metas(), &core.compaction) else {
            core.compaction_wanted.set(false);
            core.changed.notify();
            continue;
        };
        if let Err(e) = compact(&core, Some(choice.inputs)).await {
            if core.closing.get() {
                return;
            }
            eprintln!(
                "ringkv: {}: compaction failed, retrying: {e}",
                core.tables.dir().display()
            );
            core.update_stats(|s| s.compaction_failures += 1);
            glommio::timer::sleep(RETRY_PAUSE).await;
        }
    }
}

/// Merges the tables `ids` (`None`: every live table) into one and swaps it in. Keys
/// whose every value is a tombstone older than `gc_grace` are dropped, if no other
/// table may hold the key (an older value there would come back).
pub async fn compact(core: &Rc<Core>, ids: Option<Vec<u64>>) -> Result<(), StorageError> {
    let _one_at_a_time = core
        .compaction_lock
        .acquire_permit(1)
        .await
        .expect("never closed");
    let ids = ids.unwrap_or_else(|| core.tables.metas().iter().map(|t| t.id).collect());
    // Another compaction may have taken some of them while this one waited.
    let inputs = core.tables.by_ids(&ids);
    if inputs.is_empty() || inputs.len() != ids.len() {
        return Ok(());
    }
    let others = core.tables.others(&ids);
    let now_us = crate::version::now_us();
    let mut out = core.tables.create().await?;
    let mut purged = 0;
    // Paced, unless tables pile up faster than paced compaction merges them: then the
    // reads (each table a filter check, maybe a block read) matter more.
    let backlog = 2 * core.compaction.min_threshold;
    let pace = Pace::new(core.compaction_bytes_per_sec, || {
        core.tables.count() > backlog
    });
    let merged = merge_into(
        &inputs,
        &core.closing,
        &pace,
        |key, versions| {
            let purge = purgeable(versions, now_us, core.gc_grace_us, true)
                && !others.iter().any(|t| may_hold(t, key))
                && core.may_purge(key, versions);
            purged += u64::from(purge);
            if purge {
                core.rewritten(key);
            } else {
                core.prune_clock(key, versions);
            }
            !purge
        },
        &mut out,
    )
    .await;
    if let Err(e) = merged {
        out.abandon().await;
        return Err(e);
    }
    let made = out.finish().await?;
    let (table, meta) = made.map_or((None, None), |(t, m)| (Some(t), Some(m)));
    commit(core, |m| {
        m.tables.retain(|t| !ids.contains(&t.id));
        m.tables.extend(meta);
    })
    .await?;
    core.tables.install(&ids, table);
    core.tables.delete_files(&ids).await;
    core.update_stats(|s| {
        s.compactions += 1;
        s.keys_purged += purged;
    });
    core.compaction_wanted.set(true);
    core.changed.notify();
    Ok(())
}

/// Streams the k-way merge of `inputs` into `out`, keeping the keys `keep` accepts.
/// Gives up (an error) once `closing` is set: a shutdown does not wait for a long
/// compaction, whose inputs simply stay live.
///
/// [`MergeIter`] pulls from plain iterators; the tables are read a block at a time with
/// awaits. Each source is a buffer of decoded entries that is refilled before every
/// step, so no source the merge advances is empty unless its table is done.
async fn merge_into(
    inputs: &[Rc<Table>],
    closing: &std::cell::Cell<bool>,
    pace: &Pace<impl Fn() -> bool>,
    mut keep: impl FnMut(&[u8], &mut VersionSet) -> bool,
    out: &mut TableOut,
) -> Result<(), StorageError> {
    let buffers: Vec<Buffer> = inputs.iter().map(|_| Buffer::default()).collect();
    let mut scans: Vec<Option<TableIter<'_>>> = inputs.iter().map(|t| Some(t.iter())).collect();
    let every = |_: &[u8]| true;
    refill(inputs, &mut scans, &buffers, pace, &every).await?;
    let mut merge = MergeIter::new(buffers.clone());
    loop {
        refill(inputs, &mut scans, &buffers, pace, &every).await?;
        let Some((key, mut versions)) = merge.next() else {
            return Ok(());
        };
        if keep(&key, &mut versions) {
            out.add(&key, &versions).await?;
        }
        glommio::yield_if_needed().await;
        if closing.get() {
            return Err(StorageError::Log(super::super::commitlog::LogError::Closed));
        }
    }
}

/// Decoded entries of one input, waiting for the merge.
#[derive(Clone, Default)]
struct Buffer(Rc<std::cell::RefCell<std::collections::VecDeque<(Bytes, VersionSet)>>>);

impl Iterator for Buffer {
    type Item = (Bytes, VersionSet);

    fn next(&mut self) -> Option<Self::Item> {
        self.0.borrow_mut().pop_front()
    }
}

/// Reads the next block of every input whose buffer is empty and that has blocks left,
/// decoding the entries whose key `wanted` accepts.
async fn refill(
    inputs: &[Rc<Table>],
    scans: &mut [Option<TableIter<'_>>],
    buffers: &[Buffer],
    pace: &Pace<impl Fn() -> bool>,
    wanted: &dyn Fn(&[u8]) -> bool,
) -> Result<(), StorageError> {
    for (i, scan) in scans.iter_mut().enumerate() {
        while buffers[i].0.borrow().is_empty() {
            let Some(iter) = scan else { break };
            match iter.next_block().await? {
                Some(entries) => {
                    let bytes: usize = entries.iter().map(|(k, v)| k.len() + v.len()).sum();
                    pace.wait(bytes as u64).await;
                    let mut buffer = buffers[i].0.borrow_mut();
                    for (key, bytes) in entries {
                        if !wanted(&key) {
                            continue;
                        }
                        let versions = decode_versions(&inputs[i], &key, &bytes)?;
                        buffer.push_back((key, versions));
                    }
                }
                None => *scan = None,
            }
        }
    }
    Ok(())
}

/// Every key of the live tables that `wanted` accepts, with its set merged over the
/// tables, in key order: `visit` sees each once. Reads the tables a block at a time at
/// most `bytes_per_sec` (0: no limit). The tables are the ones live when the scan
/// starts; a compaction that replaces them meanwhile leaves their files readable
/// (open handles), so the scan sees one consistent set of tables.
pub async fn scan_tables(
    core: &Rc<Core>,
    wanted: &dyn Fn(&[u8]) -> bool,
    bytes_per_sec: u64,
    mut visit: impl FnMut(Bytes, VersionSet),
) -> Result<(), StorageError> {
    let ids: Vec<u64> = core.tables.metas().iter().map(|t| t.id).collect();
    let inputs = core.tables.by_ids(&ids);
    let buffers: Vec<Buffer> = inputs.iter().map(|_| Buffer::default()).collect();
    let mut scans: Vec<Option<TableIter<'_>>> = inputs.iter().map(|t| Some(t.iter())).collect();
    let pace = Pace::new(bytes_per_sec, || false);
    refill(&inputs, &mut scans, &buffers, &pace, wanted).await?;
    let mut merge = MergeIter::new(buffers.clone());
    loop {
        refill(&inputs, &mut scans, &buffers, &pace, wanted).await?;
        let Some((key, versions)) = merge.next() else {
            return Ok(());
        };
        visit(key, versions);
        glommio::yield_if_needed().await;
        if core.closing.get() {
            return Err(StorageError::Log(super::super::commitlog::LogError::Closed));
        }
    }
}

/// Keeps a compaction's reading at `bytes_per_sec` (entry bytes, before compression):
/// after each block, sleeps while it is ahead of that rate, unless `behind()` says
/// compaction is falling behind.
struct Pace<B> {
    bytes_per_sec: u64,
    behind: B,
    started: std::time::Instant,
    bytes: std::cell::Cell<u64>,
}

impl<B: Fn() -> bool> Pace<B> {
    fn new(bytes_per_sec: u64, behind: B) -> Pace<B> {
        Pace {
            bytes_per_sec,
            behind,
            started: std::time::Instant::now(),
            bytes: std::cell::Cell::new(0),
        }
    }

    async fn wait(&self, bytes: u64) {
        if self.bytes_per_sec == 0 || (self.behind)() {
            return;
        }
        self.bytes.set(self.bytes.get() + bytes);
        let due = Duration::from_secs_f64(self.bytes.get() as f64 / self.bytes_per_sec as f64);
        let ahead = due.saturating_sub(self.started.elapsed());
        // Timers are coarse: sleeping for less than a millisecond costs more than it paces.
        if ahead >= Duration::from_millis(1) {
            glommio::timer::sleep(ahead).await;
        }
    }
}
