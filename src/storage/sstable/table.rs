//! [`Table`]: an open table file. Footer, index, filter and properties are read and
//! checked once, at [`Table::open`], and kept in memory; data blocks are read on demand
//! with aligned O_DIRECT reads, through the shard's [`BlockCache`] for point reads and
//! around it for scans ([`TableIter`]), so that a compaction does not flush the cache.
//!
//! A block whose CRC (or contents) does not check out is an [`SstError::Corrupt`] for
//! every key it holds, with the file and the block's offset; it is never served and
//! never cached. The other blocks of the table keep working.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use glommio::io::DmaFile;

use super::block::{decode_block, decode_entries, find_in_block};
use super::bloom::Bloom;
use super::cache::BlockCache;
use super::error::{os_error, Result, SstError};
use super::footer::{decode_index, BlockHandle, Footer, IndexEntry, TableProperties, FOOTER_BYTES};
use super::IO_ALIGN_BYTES;

/// An open, checked table. Lives on one shard's executor.
pub struct Table {
    /// The caller's id for this table (the manifest's); keys the block cache.
    id: u64,
    path: PathBuf,
    file: DmaFile,
    file_bytes: u64,
    /// One entry per data block, last keys increasing.
    index: Vec<IndexEntry>,
    filter: Bloom,
    properties: TableProperties,
}

impl Table {
    /// Opens and checks the table at `path`: footer, index, filter and properties, every
    /// CRC and their agreement. A table that fails any check is refused.
    pub async fn open(path: &Path, id: u64) -> Result<Table> {
        let file = DmaFile::open(path)
            .await
            .map_err(|e| SstError::io("open", path, os_error(e)))?;
        match load_meta(&file, path).await {
            Ok(meta) => Ok(Table {
                id,
                path: path.to_path_buf(),
                file,
                file_bytes: meta.file_bytes,
                index: meta.index,
                filter: meta.filter,
                properties: meta.properties,
            }),
            Err(e) => {
                // The check failure is the error to report; a close error adds nothing.
                let _ = file.close().await;
                Err(e)
            }
        }
    }

    /// Whether `key` may be in the table (false: certainly not).
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.filter.may_contain(key)
    }

    /// The value of `key`, if the table holds it: filter, index, then the one data block
    /// that can hold it, from `cache` or the disk (and then cached).
    pub async fn get(&self, key: &[u8], cache: &BlockCache) -> Result<Option<Bytes>> {
        if !self.may_contain(key) {
            return Ok(None);
        }
        let i = self.index.partition_point(|e| e.last_key.as_ref() < key);
        let Some(entry) = self.index.get(i) else {
            return Ok(None);
        };
        let offset = entry.block.offset;
        // The cache holds frames as stored (compressed): a budget then holds about twice
        // the blocks, and each one saved is a disk read. A hit pays the CRC and the
        // decompression again, a few hundred ns against tens of µs for the read.
        let block = match cache.get(self.id, offset) {
            Some(frame) => self.decode(offset, &frame)?,
            None => {
                let frame = Bytes::from(self.read_frame(entry.block).await?);
                let block = self.decode(offset, &frame)?;
                cache.insert(self.id, offset, frame);
                block
            }
        };
        find_in_block(&block, key).map_err(|what| self.corrupt(offset, what))
    }

    /// A scan of every entry in key order, one data block per step.
    pub fn iter(&self) -> TableIter<'_> {
        TableIter {
            table: self,
            next_block: 0,
        }
    }

    /// Reads and checks one data block; returns its payload.
    async fn read_block(&self, block: BlockHandle) -> Result<Bytes> {
        let frame = self.read_frame(block).await?;
        self.decode(block.offset, &frame)
    }

    /// The block's frame as stored: header, payload (maybe compressed), unchecked.
    async fn read_frame(&self, block: BlockHandle) -> Result<Vec<u8>> {
        read_span(&self.file, &self.path, block.offset, block.len as usize).await
    }

    /// Checks the frame of the block at `offset` and returns its payload, decompressed.
    fn decode(&self, offset: u64, frame: &[u8]) -> Result<Bytes> {
        decode_block(frame).map_err(|what| self.corrupt(offset, what))
    }

    fn corrupt(&self, offset: u64, what: String) -> SstError {
        SstError::corrupt(&self.path, offset, what)
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    pub fn properties(&self) -> &TableProperties {
        &self.properties
    }

    /// Data blocks in the table.
    pub fn block_count(&self) -> usize {
        self.index.len()
    }

    /// Closes the file. The caller drops the table's blocks from the cache if it also
    /// deletes the file ([`BlockCache::remove_table`]).
    pub async fn close(self) -> Result<()> {
        self.file
            .close()
            .await
            .map_err(|e| SstError::io("close", &self.path, os_error(e)))
    }
}

/// A block-at-a-time scan of a table in key order (for compaction).
pub struct TableIter<'a> {
    table: &'a Table,
    next_block: usize,
}

impl TableIter<'_> {
    /// The entries of the next data block, `None` after the last. A corrupt block is an
    /// error (the scan may go on with the block after it, but a compaction should stop:
    /// its output would silently lose those keys).
    pub async fn next_block(&mut self) -> Result<Option<Vec<(Bytes, Bytes)>>> {
        let Some(entry) = self.table.index.get(self.next_block) else {
            return Ok(None);
        };
        self.next_block += 1;
        let block = self.table.read_block(entry.block).await?;
        let entries =
            decode_entries(&block).map_err(|w| self.table.corrupt(entry.block.offset, w))?;
        if entries.last().map(|(k, _)| k) != Some(&entry.last_key) {
            let what = "block's last key differs from the index".to_string();
            return Err(self.table.corrupt(entry.block.offset, what));
        }
        Ok(Some(entries))
    }
}

/// Reads `len` bytes at `pos` with one aligned O_DIRECT read of the blocks around them.
async fn read_span(file: &DmaFile, path: &Path, pos: u64, len: usize) -> Result<Vec<u8>> {
    let start = pos - pos % IO_ALIGN_BYTES;
    let end = (pos + len as u64).div_ceil(IO_ALIGN_BYTES) * IO_ALIGN_BYTES;
    let read = file
        .read_at_aligned(start, (end - start) as usize)
        .await
        .map_err(|e| SstError::io("read", path, os_error(e)))?;
    let skip = (pos - start) as usize;
    if read.len() < skip + len {
        let what = format!("file ends before the {len} bytes at {pos}");
        return Err(SstError::corrupt(path, pos, what));
    }
    Ok(read[skip..skip + len].to_vec())
}

/// What [`Table::open`] reads and keeps.
struct Meta {
    file_bytes: u64,
    index: Vec<IndexEntry>,
    filter: Bloom,
    properties: TableProperties,
}

/// Reads the footer, then index, filter and properties in one read, checking each.
async fn load_meta(file: &DmaFile, path: &Path) -> Result<Meta> {
    let file_bytes = file
        .file_size()
        .await
        .map_err(|e| SstError::io("stat", path, os_error(e)))?;
    let Some(footer_at) = file_bytes.checked_sub(FOOTER_BYTES as u64) else {
        let what = format!("file of {file_bytes} bytes is shorter than a footer");
        return Err(SstError::corrupt(path, 0, what));
    };
    let footer_bytes = read_span(file, path, footer_at, FOOTER_BYTES).await?;
    let footer = Footer::decode(&footer_bytes, file_bytes)
        .map_err(|w| SstError::corrupt(path, footer_at, w))?;
    let meta_at = footer.index.offset;
    let meta = Bytes::from(read_span(file, path, meta_at, (footer_at - meta_at) as usize).await?);
    let block = |h: BlockHandle| {
        let at = (h.offset - meta_at) as usize;
        decode_block(&meta[at..at + h.len as usize])
            .map_err(|w| SstError::corrupt(path, h.offset, w))
    };
    let props_payload = block(footer.props)?;
    let properties = TableProperties::decode(&props_payload)
        .map_err(|w| SstError::corrupt(path, footer.props.offset, w))?;
    let index_payload = block(footer.index)?;
    let index = decode_index(&index_payload, footer.index.offset)
        .and_then(|index| check_index(&index, &properties).map(|()| index))
        .map_err(|w| SstError::corrupt(path, footer.index.offset, w))?;
    let filter = Bloom::decode(block(footer.filter)?)
        .map_err(|w| SstError::corrupt(path, footer.filter.offset, w))?;
    Ok(Meta {
        file_bytes,
        index,
        filter,
        properties,
    })
}

/// The index must agree with the properties: block count, data bytes, largest key.
fn check_index(index: &[IndexEntry], props: &TableProperties) -> std::result::Result<(), String> {
    let last = index.last().map(|e| &e.last_key);
    if index.len() as u64 != props.data_block_count
        || index.last().map(|e| e.block.end()) != Some(props.data_bytes)
        || last != Some(&props.largest_key)
    {
        return Err(format!(
            "index of {} blocks disagrees with the properties ({} blocks, {} data bytes)",
            index.len(),
            props.data_block_count,
            props.data_bytes
        ));
    }
    Ok(())
}
