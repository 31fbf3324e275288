//! The engine's tables: the live set, the manifest that names it, the block cache, and
//! writing new tables.
//!
//! The live set changes in one synchronous step after the manifest that describes it
//! is durable ([`Tables::commit`] then [`Tables::install`]), so a read sees the tables
//! before a flush or compaction, or after it, never a mix. A read takes a snapshot of
//! the tables that may hold its key (`Rc`s): a compaction may delete their files while
//! it reads, which Linux allows while the file stays open.
//!
//! A read merges the key's sets from *every* table that may hold it rather than stopping
//! at the newest: size-tiered compaction merges tables of similar size whatever their
//! age, so a compaction's output can be newer by id and older in content than a table
//! it left alone. Version sets merge commutatively, so the order never matters; the
//! bloom filters keep the tables actually read to the ones that hold the key (plus
//! ~1 % false positives).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::sync::Semaphore;

use super::super::manifest::{orphan_tables, table_file_name, Manifest, TableMeta, MANIFEST_FILE};
use super::super::sstable::{BlockCache, FullDisk, Table, TableOptions, TableWriter};
use super::super::StorageError;
use crate::version::VersionSet;

pub struct Tables {
    dir: PathBuf,
    /// Live tables, in no particular order (see the module doc).
    live: RefCell<Vec<Rc<Table>>>,
    /// The durable manifest, as last stored.
    manifest: RefCell<Manifest>,
    /// Id of the next table to write: ids are never reused, not even a failed job's.
    next_id: Cell<u64>,
    cache: BlockCache,
    /// One manifest store at a time (flush and compaction both change it).
    manifest_lock: Semaphore,
    disk: FullDisk,
    options: TableOptions,
}

impl Tables {
    /// Loads the shard's manifest (storing an empty one in a new directory), deletes
    /// orphan tables a crash left, and opens every live table. Anything missing or
    /// damaged refuses the start.
    pub async fn open(
        dir: &Path,
        cache_bytes: usize,
        options: TableOptions,
        disk: FullDisk,
    ) -> Result<Tables, StorageError> {
        let manifest = Manifest::load(dir)?;
        if !dir.join(MANIFEST_FILE).exists() {
            manifest.store(dir)?;
        }
        for orphan in orphan_tables(dir, &manifest)? {
            std::fs::remove_file(&orphan).map_err(|source| StorageError::Io {
                op: "remove orphan table",
                path: orphan.clone(),
                source,
            })?;
            eprintln!(
                "ringkv: {}: removed a table a crashed flush or compaction left (never live)",
                orphan.display()
            );
        }
        let mut live = Vec::with_capacity(manifest.tables.len());
        for meta in &manifest.tables {
            let table = Table::open(&dir.join(table_file_name(meta.id)), meta.id).await?;
            live.push(Rc::new(table));
        }
        Ok(Tables {
            dir: dir.to_path_buf(),
            live: RefCell::new(live),
            next_id: Cell::new(manifest.next_table_id),
            manifest: RefCell::new(manifest),
            cache: BlockCache::new(cache_bytes),
            manifest_lock: Semaphore::new(1),
            disk,
            options,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The manifest's log floor: segments below it are covered by the tables.
    pub fn log_floor(&self) -> u64 {
        self.manifest.borrow().log_segment_floor
    }

    /// Every last-write-wins clock in the live tables is at most this.
    pub fn clock_floor(&self) -> u64 {
        self.manifest.borrow().clock_floor
    }

    /// Whether any live table may hold `key` (key range and filter).
    pub fn may_hold(&self, key: &[u8]) -> bool {
        self.live.borrow().iter().any(|t| may_hold(t, key))
    }

    /// The key's set merged over every table that holds it.
    pub async fn get(&self, key: &[u8]) -> Result<Option<VersionSet>, StorageError> {
        let candidates: Vec<Rc<Table>> = self
            .live
            .borrow()
            .iter()
            .filter(|t| may_hold(t, key))
            .cloned()
            .collect();
        let mut found: Option<VersionSet> = None;
        for table in candidates {
            let Some(bytes) = table.get(key, &self.cache).await? else {
                continue;
            };
            // A copy: the decoded values would otherwise share (and pin) the cached
            // block, and a write keeps them in its memtable.
            let versions = decode_versions(&table, key, &Bytes::copy_from_slice(&bytes))?;
            found = Some(match found {
                Some(f) => f.sync(&versions),
                None => versions,
            });
        }
        Ok(found)
    }

    /// The live tables' metadata (what compaction chooses from).
    pub fn metas(&self) -> Vec<TableMeta> {
        self.manifest.borrow().tables.clone()
    }

    /// The live tables with these ids (for a compaction's inputs).
    pub fn by_ids(&self, ids: &[u64]) -> Vec<Rc<Table>> {
        let live = self.live.borrow();
        ids.iter()
            .filter_map(|id| live.iter().find(|t| t.id() == *id).cloned())
            .collect()
    }

    /// Live tables other than `ids` (what a compaction's purge must check).
    pub fn others(&self, ids: &[u64]) -> Vec<Rc<Table>> {
        let live = self.live.borrow();
        live.iter()
            .filter(|t| !ids.contains(&t.id()))
            .cloned()
            .collect()
    }

    pub fn count(&self) -> usize {
        self.live.borrow().len()
    }

    pub fn cache(&self) -> &BlockCache {
        &self.cache
    }

    /// Starts a new table file; it is an orphan until a manifest lists it.
    pub async fn create(&self) -> Result<TableOut, StorageError> {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let path = self.dir.join(table_file_name(id));
        let writer = TableWriter::create(&self.disk, &path, self.options).await?;
        Ok(TableOut {
            id,
            path,
            writer,
            smallest: None,
            largest: Bytes::new(),
            scratch: Vec::new(),
        })
    }

    /// Makes the manifest `edit` describes durable (atomic replace, in the blocking
    /// pool so the shard keeps serving through the fsyncs). An error is final: the
    /// caller stops changing tables.
    pub async fn commit(&self, edit: impl FnOnce(&mut Manifest)) -> Result<(), StorageError> {
        let _permit = self
            .manifest_lock
            .acquire_permit(1)
            .await
            .expect("the manifest lock is never closed");
        let mut next = self.manifest.borrow().clone();
        edit(&mut next);
        next.generation += 1;
        next.next_table_id = next.next_table_id.max(self.next_id.get());
        let (stored, dir) = (next.clone(), self.dir.clone());
        glommio::executor()
            .spawn_blocking(move || stored.store(&dir))
            .await?;
        *self.manifest.borrow_mut() = next;
        Ok(())
    }

    /// Swaps the live set after [`commit`](Self::commit): drops `removed`, adds `added`.
    pub fn install(&self, removed: &[u64], added: Option<Rc<Table>>) {
        let mut live = self.live.borrow_mut();
        live.retain(|t| !removed.contains(&t.id()));
        live.extend(added);
        for &id in removed {
            self.cache.remove_table(id);
        }
    }

    /// Deletes the files of tables no manifest lists any more. A failure leaves an
    /// orphan that the next start removes, so it is reported, not returned.
    pub async fn delete_files(&self, ids: &[u64]) {
        let paths: Vec<PathBuf> = ids
            .iter()
            .map(|&id| self.dir.join(table_file_name(id)))
            .collect();
        let failed = glommio::executor()
            .spawn_blocking(move || {
                paths
                    .into_iter()
                    .filter_map(|p| std::fs::remove_file(&p).err().map(|e| (p, e)))
                    .collect::<Vec<_>>()
            })
            .await;
        for (path, e) in failed {
            eprintln!(
                "ringkv: {}: could not delete a table no longer in use ({e}); the next \
                 start removes it",
                path.display()
            );
        }
    }
}

/// Whether `table` may hold `key`: within its key range, and its filter says maybe.
pub fn may_hold(table: &Table, key: &[u8]) -> bool {
    let props = table.properties();
    props.smallest_key.as_ref() <= key
        && key <= props.largest_key.as_ref()
        && table.may_contain(key)
}

/// Decodes a table entry's version set; a CRC-checked block whose entry does not decode
/// is damage (or a format bug), reported like a bad block.
pub fn decode_versions(
    table: &Table,
    key: &[u8],
    bytes: &Bytes,
) -> Result<VersionSet, StorageError> {
    match VersionSet::decode(bytes) {
        Ok((versions, used)) if used == bytes.len() => Ok(versions),
        Ok((_, used)) => Err(table_corrupt(
            table,
            key,
            format!("{} trailing bytes", bytes.len() - used),
        )),
        Err(e) => Err(table_corrupt(table, key, e.to_string())),
    }
}

fn table_corrupt(table: &Table, key: &[u8], what: String) -> StorageError {
    StorageError::Corrupt {
        path: table.path().to_path_buf(),
        reason: format!("the version set of key {key:?} does not decode: {what}"),
    }
}

/// A table being written by a flush or a compaction: entries in, a live-able table out.
pub struct TableOut {
    id: u64,
    path: PathBuf,
    writer: TableWriter<FullDisk>,
    smallest: Option<Bytes>,
    largest: Bytes,
    scratch: Vec<u8>,
}

impl TableOut {
    /// Adds the next key (strictly increasing) and its set.
    pub async fn add(&mut self, key: &Bytes, versions: &VersionSet) -> Result<(), StorageError> {
        self.scratch.clear();
        versions.encode_into(&mut self.scratch);
        self.writer.add(key, &self.scratch).await?;
        if self.smallest.is_none() {
            self.smallest = Some(key.clone());
        }
        self.largest = key.clone();
        Ok(())
    }

    /// Finishes, syncs and opens the table. `None` if nothing was added (the file is
    /// removed: an empty table serves nothing). On error the partial file is removed.
    pub async fn finish(self) -> Result<Option<(Rc<Table>, TableMeta)>, StorageError> {
        let Some(smallest) = self.smallest else {
            self.abandon().await;
            return Ok(None);
        };
        let entries = self.writer.entry_count();
        let info = match self.writer.finish().await {
            Ok(info) => info,
            Err(e) => {
                remove_quietly(&self.path);
                return Err(e.into());
            }
        };
        let table = match Table::open(&self.path, self.id).await {
            Ok(table) => table,
            Err(e) => {
                remove_quietly(&self.path);
                return Err(e.into());
            }
        };
        let meta = TableMeta {
            id: self.id,
            size_bytes: info.file_bytes,
            entries,
            smallest_key: smallest,
            largest_key: self.largest,
            created_seq: self.id,
        };
        Ok(Some((Rc::new(table), meta)))
    }

    /// Gives up on the table: closes and removes its file.
    pub async fn abandon(self) {
        self.writer.abandon().await;
        remove_quietly(&self.path);
    }
}

/// Removes a table file that never became live; if that fails, the next start does.
fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            eprintln!("ringkv: {}: remove unfinished table: {e}", path.display());
        }
    }
}
