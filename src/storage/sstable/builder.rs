//! [`TableBuilder`]: sorted entries in, table bytes out, block by block.
//!
//! The builder is plain synchronous code (STYLE rule 2): it never touches a file. Its
//! output can be taken in aligned chunks while it runs ([`TableBuilder::take_chunk`]),
//! so a writer streams a large table with bounded memory, or all at once from
//! [`TableBuilder::finish`] when nothing was taken.

use bytes::Bytes;

use super::block::{encode_block, encode_entry, entry_bytes, Compression};
use super::bloom::BloomBuilder;
use super::footer::{encode_index_entry, BlockHandle, Footer, TableProperties};
use super::IO_ALIGN_BYTES;

/// 4 KiB data blocks: one disk block read per point lookup before compression.
pub const BLOCK_BYTES_DEFAULT: u32 = 4096;
/// 10 bits per key: about 0.8 % false positives for 1.25 bytes per key.
pub const BITS_PER_KEY_DEFAULT: u32 = 10;

/// How a table is built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableOptions {
    /// Target uncompressed size of a data block; a block is closed before an entry that
    /// would take it past this (a block holds at least one entry, however large).
    pub block_bytes: u32,
    /// Compression of data and index blocks.
    pub compression: Compression,
    /// Bloom filter bits per key.
    pub bits_per_key: u32,
}

impl Default for TableOptions {
    fn default() -> Self {
        TableOptions {
            block_bytes: BLOCK_BYTES_DEFAULT,
            // Version sets carry timestamps and repeated node ids: lz4 is cheap and a
            // block it does not shrink is stored as is.
            compression: Compression::Lz4,
            bits_per_key: BITS_PER_KEY_DEFAULT,
        }
    }
}

/// Builds one table from entries added in strictly increasing key order.
pub struct TableBuilder {
    options: TableOptions,
    /// Finished bytes not yet taken by [`take_chunk`](Self::take_chunk).
    out: Vec<u8>,
    /// Bytes already taken: the file offset of `out[0]`.
    taken_bytes: u64,
    /// The open data block's payload.
    block: Vec<u8>,
    /// The last key added (the open block's last key once it has entries).
    last_key: Vec<u8>,
    /// The index payload so far.
    index: Vec<u8>,
    bloom: BloomBuilder,
    props: TableProperties,
}

impl TableBuilder {
    pub fn new(options: TableOptions) -> Self {
        assert!(options.block_bytes >= 1, "block_bytes must be positive");
        TableBuilder {
            options,
            out: Vec::new(),
            taken_bytes: 0,
            block: Vec::with_capacity(options.block_bytes as usize),
            last_key: Vec::new(),
            index: Vec::new(),
            bloom: BloomBuilder::new(options.bits_per_key),
            props: TableProperties {
                entry_count: 0,
                data_block_count: 0,
                data_bytes: 0,
                key_bytes: 0,
                value_bytes: 0,
                smallest_key: Bytes::new(),
                largest_key: Bytes::new(),
            },
        }
    }

    /// Adds one entry. Panics unless `key` is 1..=65535 bytes and greater than the
    /// previous key, and `value` fits a block (a caller bug, not an operating error).
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        assert!(
            !key.is_empty() && key.len() <= usize::from(u16::MAX),
            "key length"
        );
        assert!(
            self.props.entry_count == 0 || key > self.last_key.as_slice(),
            "keys must be added in strictly increasing order"
        );
        let bytes = entry_bytes(key.len(), value.len());
        assert!(
            bytes as u64 <= u64::from(super::block::BLOCK_PAYLOAD_BYTES_MAX),
            "value size"
        );
        if !self.block.is_empty() && self.block.len() + bytes > self.options.block_bytes as usize {
            self.finish_block();
        }
        encode_entry(&mut self.block, key, value);
        self.bloom.add_key(key);
        if self.props.entry_count == 0 {
            self.props.smallest_key = Bytes::copy_from_slice(key);
        }
        self.props.entry_count += 1;
        self.props.key_bytes += key.len() as u64;
        self.props.value_bytes += value.len() as u64;
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
    }

    /// Entries added so far.
    pub fn entry_count(&self) -> u64 {
        self.props.entry_count
    }

    /// Bytes the table has so far (blocks finished, taken or not).
    pub fn finished_bytes(&self) -> u64 {
        self.taken_bytes + self.out.len() as u64
    }

    fn finish_block(&mut self) {
        debug_assert!(!self.block.is_empty());
        let offset = self.finished_bytes();
        let len = encode_block(&mut self.out, &self.block, self.options.compression);
        encode_index_entry(&mut self.index, &self.last_key, BlockHandle { offset, len });
        self.props.data_block_count += 1;
        self.block.clear();
    }

    /// Takes the finished bytes once at least `chunk_bytes_min` are waiting: the largest
    /// prefix that is a multiple of [`IO_ALIGN_BYTES`], to be written at
    /// [`finished_bytes`](Self::finished_bytes) minus its length, i.e. right after the
    /// previous chunk. `None` while fewer bytes wait.
    pub fn take_chunk(&mut self, chunk_bytes_min: usize) -> Option<Vec<u8>> {
        let aligned = self.out.len() - self.out.len() % IO_ALIGN_BYTES as usize;
        if aligned == 0 || aligned < chunk_bytes_min {
            return None;
        }
        let rest = self.out.split_off(aligned);
        self.taken_bytes += aligned as u64;
        Some(std::mem::replace(&mut self.out, rest))
    }

    /// Closes the table: the last data block, index, filter, properties and footer.
    /// Returns the bytes not taken yet (the whole table if `take_chunk` never gave any)
    /// and the table's properties. Panics on a table without entries.
    pub fn finish(mut self) -> (Vec<u8>, TableProperties) {
        assert!(
            self.props.entry_count > 0,
            "a table holds at least one entry"
        );
        self.finish_block();
        self.props.data_bytes = self.finished_bytes();
        self.props.largest_key = Bytes::copy_from_slice(&self.last_key);
        let compression = self.options.compression;
        let index_payload = std::mem::take(&mut self.index);
        let index = self.write_block(&index_payload, compression);
        // Filter bits look random: lz4 would not shrink them.
        let filter = self.write_block(&self.bloom.finish(), Compression::None);
        let props = self.write_block(&self.props.encode(), Compression::None);
        let footer = Footer {
            index,
            filter,
            props,
        };
        self.out.extend_from_slice(&footer.encode());
        (self.out, self.props)
    }

    fn write_block(&mut self, payload: &[u8], compression: Compression) -> BlockHandle {
        let offset = self.finished_bytes();
        let len = encode_block(&mut self.out, payload, compression);
        BlockHandle { offset, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "strictly increasing")]
    fn keys_out_of_order_panic() {
        let mut b = TableBuilder::new(TableOptions::default());
        b.add(b"b", b"1");
        b.add(b"a", b"2");
    }

    #[test]
    #[should_panic(expected = "strictly increasing")]
    fn duplicate_keys_panic() {
        let mut b = TableBuilder::new(TableOptions::default());
        b.add(b"a", b"1");
        b.add(b"a", b"2");
    }

    #[test]
    #[should_panic(expected = "at least one entry")]
    fn an_empty_table_panics() {
        let _ = TableBuilder::new(TableOptions::default()).finish();
    }

    #[test]
    fn chunks_are_aligned_and_concatenate_to_the_image() {
        let opts = TableOptions::default();
        let (mut a, mut b) = (TableBuilder::new(opts), TableBuilder::new(opts));
        let mut streamed = Vec::new();
        for i in 0..5000u32 {
            let (k, v) = (i.to_be_bytes(), i.to_le_bytes().repeat(8));
            a.add(&k, &v);
            b.add(&k, &v);
            if let Some(chunk) = b.take_chunk(8192) {
                assert_eq!(chunk.len() as u64 % IO_ALIGN_BYTES, 0);
                streamed.extend_from_slice(&chunk);
            }
        }
        assert!(!streamed.is_empty());
        let (tail, props) = b.finish();
        streamed.extend_from_slice(&tail);
        let (whole, whole_props) = a.finish();
        assert_eq!(streamed, whole);
        assert_eq!(props, whole_props);
        assert_eq!(props.entry_count, 5000);
    }
}
