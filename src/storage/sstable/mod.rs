//! SSTables: the immutable sorted tables a shard's memtable is flushed to.
//!
//! Owns the table file format (drawn byte by byte in `docs/storage.md`, "SSTable", and
//! in `block.rs`, `bloom.rs` and `footer.rs`), building and writing tables, reading
//! them with direct I/O, and the shard's block cache. It never decides which tables
//! exist (the manifest) or which to merge (compaction), and treats values as opaque
//! bytes (they are encoded version sets).
//!
//! A table is data blocks (~4 KiB of `key | value` entries, optionally lz4), an index
//! (each block's last key and place), a bloom filter over the keys, properties (entry
//! count, key range, sizes) and a fixed-size footer that locates them. Every block has
//! its own CRC32C, so damage costs the keys of one block, not the table.
//!
//! Trade-offs:
//! - **Index and filter in memory.** Opening a table reads them once; a point read is
//!   then at most one data block read (none when the filter says no, ~1 % of the time
//!   wrongly). The price is memory: ~1.25 bytes per key for the filter and one key per
//!   4 KiB block for the index.
//! - **Whole-block cache of stored frames** (compressed as on disk), keyed by table id
//!   and offset, shared by the shard's tables: a budget holds about twice the blocks it
//!   would decompressed (+11–16 % readrandom at 1 M keys, perf/README.md), and a hit
//!   pays a CRC and an lz4 decompression (~1 µs) instead of a disk read; scans bypass it.
//! - **O_DIRECT both ways.** Writes are aligned chunks, the last one padded and the
//!   file truncated to its true length; reads fetch the aligned blocks around a span.
//!
//! Layout: `block` (frames, entries), `bloom`, `footer` (footer, index, properties),
//! `builder` (sync), `disk` (the write trait), `writer` (async writes), `table`
//! (open, get, iter), `cache`.

pub mod block;
pub mod bloom;
mod builder;
mod cache;
mod disk;
mod error;
mod footer;
mod table;
mod writer;

#[cfg(test)]
mod tests_files;

pub use block::{Compression, BLOCK_HEADER_BYTES, BLOCK_PAYLOAD_BYTES_MAX};
pub use bloom::{false_positive_rate, Bloom};
pub use builder::{TableBuilder, TableOptions, BITS_PER_KEY_DEFAULT, BLOCK_BYTES_DEFAULT};
pub use cache::BlockCache;
pub use disk::{prime_iopoll_probe, DmaTableDisk, FullDisk, FullDiskFile, TableDisk, TableFile};
pub use error::SstError;
pub use footer::{TableProperties, FOOTER_BYTES, FORMAT_VERSION, MAGIC};
pub use table::{Table, TableIter};
pub use writer::{write_table, TableInfo, TableWriter, WRITE_CHUNK_BYTES};

/// Direct I/O unit: write offsets and lengths, and read spans, are multiples of it.
pub const IO_ALIGN_BYTES: u64 = 4096;
