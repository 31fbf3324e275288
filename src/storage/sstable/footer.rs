//! The footer, the index block and the properties block.
//!
//! Footer (the last [`FOOTER_BYTES`] bytes of the file):
//! ```text
//! offset size field
//!      0    8 magic              b"RKVSST\0\x01"
//!      8    4 version u32        FORMAT_VERSION (1)
//!     12    8 index_offset u64   frame of the index block
//!     20    4 index_len u32
//!     24    8 filter_offset u64  frame of the filter block
//!     32    4 filter_len u32
//!     36    8 props_offset u64   frame of the properties block
//!     44    4 props_len u32
//!     48    4 crc32c u32         CRC32C of bytes 0..48
//! ```
//! The blocks are contiguous: data blocks from 0, then index, filter, properties, footer.
//!
//! Index block payload, one entry per data block in file order:
//! `key_len u16 | last_key | offset u64 | len u32` (the block's frame).
//!
//! Properties block payload:
//! ```text
//!      0    8 entry_count u64       ≥ 1
//!      8    8 data_block_count u64
//!     16    8 data_bytes u64        bytes of data block frames (= index_offset)
//!     24    8 key_bytes u64         sum of key lengths
//!     32    8 value_bytes u64       sum of value lengths
//!     40    2 smallest_len u16, then the smallest key
//!      …    2 largest_len u16, then the largest key
//! ```

use std::mem::size_of;

use bytes::Bytes;

use super::block::{Cursor, BLOCK_HEADER_BYTES, BLOCK_PAYLOAD_BYTES_MAX};

/// Identifies a ringkv SSTable.
pub const MAGIC: [u8; 8] = *b"RKVSST\0\x01";
/// Bumped on any change of the table layout.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC.len();
const INDEX_OFFSET: usize = VERSION_OFFSET + size_of::<u32>();
const FILTER_OFFSET: usize = INDEX_OFFSET + HANDLE_BYTES;
const PROPS_OFFSET: usize = FILTER_OFFSET + HANDLE_BYTES;
const CRC_OFFSET: usize = PROPS_OFFSET + HANDLE_BYTES;
/// Size of the footer.
pub const FOOTER_BYTES: usize = CRC_OFFSET + size_of::<u32>();
const HANDLE_BYTES: usize = size_of::<u64>() + size_of::<u32>();

/// Where a block's frame sits in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockHandle {
    pub offset: u64,
    /// Frame bytes, header included.
    pub len: u32,
}

impl BlockHandle {
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(u64::from(self.len))
    }
}

/// The decoded footer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    pub index: BlockHandle,
    pub filter: BlockHandle,
    pub props: BlockHandle,
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_BYTES] {
        let mut f = [0u8; FOOTER_BYTES];
        f[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&MAGIC);
        f[VERSION_OFFSET..INDEX_OFFSET].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        for (at, h) in [
            (INDEX_OFFSET, self.index),
            (FILTER_OFFSET, self.filter),
            (PROPS_OFFSET, self.props),
        ] {
            f[at..at + 8].copy_from_slice(&h.offset.to_le_bytes());
            f[at + 8..at + HANDLE_BYTES].copy_from_slice(&h.len.to_le_bytes());
        }
        let crc = crc32c::crc32c(&f[..CRC_OFFSET]);
        f[CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        f
    }

    /// Decodes the footer of a file of `file_bytes` bytes and checks that its blocks
    /// tile the file: index, filter, properties back to back, ending at the footer.
    pub fn decode(bytes: &[u8], file_bytes: u64) -> Result<Self, String> {
        if bytes.len() != FOOTER_BYTES {
            return Err(format!(
                "footer of {} bytes, not {FOOTER_BYTES}",
                bytes.len()
            ));
        }
        let mut c = Cursor::new(&bytes[CRC_OFFSET..]);
        let stored = c.u32("crc")?;
        let computed = crc32c::crc32c(&bytes[..CRC_OFFSET]);
        if stored != computed {
            return Err(format!(
                "footer crc32c mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ));
        }
        if bytes[MAGIC_OFFSET..VERSION_OFFSET] != MAGIC {
            return Err("bad magic".to_string());
        }
        let mut c = Cursor::new(&bytes[VERSION_OFFSET..CRC_OFFSET]);
        let version = c.u32("version")?;
        if version != FORMAT_VERSION {
            return Err(format!("unknown format version {version}"));
        }
        let mut handle = |what| -> Result<BlockHandle, String> {
            Ok(BlockHandle {
                offset: c.u64(what)?,
                len: c.u32(what)?,
            })
        };
        let footer = Footer {
            index: handle("index handle")?,
            filter: handle("filter handle")?,
            props: handle("properties handle")?,
        };
        footer.check_layout(file_bytes)?;
        Ok(footer)
    }

    fn check_layout(&self, file_bytes: u64) -> Result<(), String> {
        for h in [self.index, self.filter, self.props] {
            if (h.len as usize) < BLOCK_HEADER_BYTES
                || h.len > BLOCK_PAYLOAD_BYTES_MAX + BLOCK_HEADER_BYTES as u32
            {
                return Err(format!(
                    "block at {} has impossible length {}",
                    h.offset, h.len
                ));
            }
        }
        let footer_at = file_bytes.checked_sub(FOOTER_BYTES as u64);
        let tiled = self.index.end() == self.filter.offset
            && self.filter.end() == self.props.offset
            && Some(self.props.end()) == footer_at;
        if !tiled {
            return Err(format!(
                "index {:?}, filter {:?} and properties {:?} do not end at the footer of a \
                 {file_bytes}-byte file",
                self.index, self.filter, self.props
            ));
        }
        Ok(())
    }
}

/// One index entry: a data block's last key and where its frame is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub last_key: Bytes,
    pub block: BlockHandle,
}

/// Appends one index entry to the index payload.
pub fn encode_index_entry(out: &mut Vec<u8>, last_key: &[u8], block: BlockHandle) {
    let key_len = u16::try_from(last_key.len()).expect("key of at most 65535 bytes");
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(last_key);
    out.extend_from_slice(&block.offset.to_le_bytes());
    out.extend_from_slice(&block.len.to_le_bytes());
}

/// Decodes an index payload whose data blocks must tile `0..data_bytes`, with last keys
/// strictly increasing. Never panics.
pub fn decode_index(payload: &Bytes, data_bytes: u64) -> Result<Vec<IndexEntry>, String> {
    let mut c = Cursor::new(payload);
    let mut out: Vec<IndexEntry> = Vec::new();
    let mut next_offset = 0u64;
    while !c.is_done() {
        let key = c.key("last key")?;
        let block = BlockHandle {
            offset: c.u64("block offset")?,
            len: c.u32("block len")?,
        };
        if block.offset != next_offset || (block.len as usize) < BLOCK_HEADER_BYTES {
            return Err(format!(
                "index entry {} names block {block:?}, expected one at {next_offset}",
                out.len()
            ));
        }
        if out.last().is_some_and(|e| e.last_key.as_ref() >= key) {
            return Err(format!("index key out of order at entry {}", out.len()));
        }
        next_offset = block.end();
        out.push(IndexEntry {
            last_key: payload.slice_ref(key),
            block,
        });
    }
    if out.is_empty() || next_offset != data_bytes {
        return Err(format!(
            "index of {} blocks covers {next_offset} bytes of {data_bytes} data bytes",
            out.len()
        ));
    }
    Ok(out)
}

/// What a table holds, as compaction and the manifest need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableProperties {
    /// Entries (keys) in the table, at least 1.
    pub entry_count: u64,
    /// Data blocks, equal to the index entries.
    pub data_block_count: u64,
    /// Bytes of data block frames; the index starts here.
    pub data_bytes: u64,
    /// Sum of key lengths (before compression).
    pub key_bytes: u64,
    /// Sum of value lengths (before compression).
    pub value_bytes: u64,
    /// The first key.
    pub smallest_key: Bytes,
    /// The last key.
    pub largest_key: Bytes,
}

impl TableProperties {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.smallest_key.len() + self.largest_key.len());
        for v in [
            self.entry_count,
            self.data_block_count,
            self.data_bytes,
            self.key_bytes,
            self.value_bytes,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for key in [&self.smallest_key, &self.largest_key] {
            let len = u16::try_from(key.len()).expect("key of at most 65535 bytes");
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(key);
        }
        out
    }

    /// Decodes a properties payload. Never panics.
    pub fn decode(payload: &Bytes) -> Result<Self, String> {
        let mut c = Cursor::new(payload);
        let props = TableProperties {
            entry_count: c.u64("entry_count")?,
            data_block_count: c.u64("data_block_count")?,
            data_bytes: c.u64("data_bytes")?,
            key_bytes: c.u64("key_bytes")?,
            value_bytes: c.u64("value_bytes")?,
            smallest_key: payload.slice_ref(c.key("smallest key")?),
            largest_key: payload.slice_ref(c.key("largest key")?),
        };
        if !c.is_done() {
            return Err(format!(
                "{} bytes after the properties",
                payload.len() - c.pos()
            ));
        }
        if props.entry_count == 0 || props.smallest_key > props.largest_key {
            return Err("properties of an empty table or with inverted key range".to_string());
        }
        if props.data_block_count == 0 || props.data_block_count > props.entry_count {
            return Err(format!(
                "{} data blocks for {} entries",
                props.data_block_count, props.entry_count
            ));
        }
        Ok(props)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The footer of the one-entry table of `tests_files::golden_small_table`.
    fn footer() -> Footer {
        Footer {
            index: BlockHandle {
                offset: 23,
                len: 28,
            },
            filter: BlockHandle {
                offset: 51,
                len: 22,
            },
            props: BlockHandle {
                offset: 73,
                len: 59,
            },
        }
    }

    #[test]
    fn golden_footer() {
        let f = footer().encode();
        let expected_prefix: [u8; 48] = [
            b'R', b'K', b'V', b'S', b'S', b'T', 0, 1, // magic
            1, 0, 0, 0, // version 1
            23, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0, 0, // index at 23, 28 bytes
            51, 0, 0, 0, 0, 0, 0, 0, 22, 0, 0, 0, // filter at 51, 22 bytes
            73, 0, 0, 0, 0, 0, 0, 0, 59, 0, 0, 0, // properties at 73, 59 bytes
        ];
        assert_eq!(f[..48], expected_prefix);
        // CRC32C of the 48 bytes above, computed independently (Python, bit by bit).
        assert_eq!(f[48..], [0x0a, 0x72, 0xe8, 0x44], "got {:02x?}", &f[48..]);
        assert_eq!(Footer::decode(&f, 132 + FOOTER_BYTES as u64), Ok(footer()));
    }

    #[test]
    fn footer_refuses_every_truncation_flip_and_wrong_size() {
        let f = footer().encode();
        let file_bytes = 132 + FOOTER_BYTES as u64;
        for n in 0..FOOTER_BYTES {
            assert!(Footer::decode(&f[..n], file_bytes).is_err());
        }
        for i in 0..FOOTER_BYTES {
            let mut bad = f;
            bad[i] ^= 0x10;
            assert!(Footer::decode(&bad, file_bytes).is_err(), "flip at {i}");
        }
        assert!(Footer::decode(&f, file_bytes + 1)
            .unwrap_err()
            .contains("do not end"));
    }

    fn index_payload() -> Vec<u8> {
        let mut out = Vec::new();
        encode_index_entry(&mut out, b"b", BlockHandle { offset: 0, len: 40 });
        encode_index_entry(
            &mut out,
            b"d",
            BlockHandle {
                offset: 40,
                len: 50,
            },
        );
        out
    }

    #[test]
    fn index_round_trip_and_every_truncation_and_flip_is_caught_or_harmless() {
        let payload = Bytes::from(index_payload());
        let index = decode_index(&payload, 90).unwrap();
        assert_eq!(index.len(), 2);
        assert_eq!(index[1].last_key.as_ref(), b"d");
        assert_eq!(
            index[1].block,
            BlockHandle {
                offset: 40,
                len: 50
            }
        );
        assert!(decode_index(&payload, 91).is_err());
        for n in 0..payload.len() {
            assert!(
                decode_index(&payload.slice(..n), 90).is_err(),
                "truncated to {n}"
            );
        }
        // Inside a CRC-checked block a flip is caught by the CRC; the decoder itself
        // must just never panic (a flip in a key byte can still decode).
        for i in 0..payload.len() {
            let mut bad = payload.to_vec();
            bad[i] ^= 0xff;
            let _ = decode_index(&Bytes::from(bad), 90);
        }
    }

    #[test]
    fn properties_round_trip() {
        let props = TableProperties {
            entry_count: 3,
            data_block_count: 1,
            data_bytes: 100,
            key_bytes: 9,
            value_bytes: 30,
            smallest_key: Bytes::from_static(b"aa"),
            largest_key: Bytes::from_static(b"zz"),
        };
        let payload = Bytes::from(props.encode());
        assert_eq!(TableProperties::decode(&payload), Ok(props));
        for n in 0..payload.len() {
            assert!(TableProperties::decode(&payload.slice(..n)).is_err());
        }
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120), file_bytes: u64, data_bytes in 0u64..1000) {
            let _ = Footer::decode(&bytes, file_bytes);
            let b = Bytes::from(bytes);
            let _ = decode_index(&b, data_bytes);
            let _ = TableProperties::decode(&b);
        }
    }
}
