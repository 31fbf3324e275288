//! Segment files: names, the header block, the record seed and block alignment.
//!
//! A segment is `NNNNNNNNNNNNNNNNNNNN.log` (its id, zero-padded to 20 digits so that the
//! names sort like the ids). Its first 4096-byte block holds only the header; records
//! start at byte 4096. The header block is written and fdatasync'd when the segment is
//! created, before any record, so a bad header in the newest segment with nothing but
//! zeros after it can only be a creation torn by a crash.
//!
//! Header (the rest of the block is zero):
//! ```text
//! offset size field
//!      0    8 magic        b"RKVLOG\0\x01"
//!      8    4 version u32  FORMAT_VERSION (1)
//!     12    4 reserved u32 0
//!     16    8 segment_id   u64, equal to the id in the file name
//!     24    4 crc32c u32   CRC32C of bytes 0..24
//! ```

use std::mem::size_of;
use std::path::{Path, PathBuf};

/// Direct I/O unit: offsets, lengths and buffers are multiples of it.
pub const BLOCK_BYTES: u64 = 4096;
/// The header occupies the whole first block; records start here.
pub const DATA_OFFSET: u64 = BLOCK_BYTES;
/// Identifies a ringkv commit-log segment.
pub const MAGIC: [u8; 8] = *b"RKVLOG\0\x01";
/// Bumped on any change of the segment or record layout.
pub const FORMAT_VERSION: u32 = 1;
/// The id of the first segment a fresh log creates.
pub const FIRST_SEGMENT_ID: u64 = 1;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + MAGIC.len();
const RESERVED_OFFSET: usize = VERSION_OFFSET + size_of::<u32>();
const SEGMENT_ID_OFFSET: usize = RESERVED_OFFSET + size_of::<u32>();
const HEADER_CRC_OFFSET: usize = SEGMENT_ID_OFFSET + size_of::<u64>();
/// Bytes of the header block that carry fields.
pub const HEADER_USED_BYTES: usize = HEADER_CRC_OFFSET + size_of::<u32>();

const FILE_SUFFIX: &str = ".log";
const ID_DIGITS: usize = 20;

/// The seed of every record CRC in segment `segment_id`: CRC32C of the id (u64 LE).
pub fn record_seed(segment_id: u64) -> u32 {
    crc32c::crc32c(&segment_id.to_le_bytes())
}

/// The header of segment `segment_id`, without the zero padding of its block.
pub fn encode_header(segment_id: u64) -> [u8; HEADER_USED_BYTES] {
    encode_header_of(&MAGIC, FORMAT_VERSION, segment_id)
}

/// Checks a header read from the file of segment `expected_id`; the error says why not.
pub fn check_header(bytes: &[u8], expected_id: u64) -> Result<(), String> {
    check_header_of(&MAGIC, FORMAT_VERSION, bytes, expected_id)
}

/// The segment header layout, shared by every segmented log of a shard (the commit
/// log, the hint log), which differ only in `magic` and `version`:
/// `magic [8] | version u32 | reserved u32 = 0 | segment_id u64 | crc32c u32` of the
/// bytes before the CRC.
pub fn encode_header_of(magic: &[u8; 8], version: u32, segment_id: u64) -> [u8; HEADER_USED_BYTES] {
    let mut h = [0u8; HEADER_USED_BYTES];
    h[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(magic);
    h[VERSION_OFFSET..RESERVED_OFFSET].copy_from_slice(&version.to_le_bytes());
    h[RESERVED_OFFSET..SEGMENT_ID_OFFSET].copy_from_slice(&0u32.to_le_bytes());
    h[SEGMENT_ID_OFFSET..HEADER_CRC_OFFSET].copy_from_slice(&segment_id.to_le_bytes());
    let crc = crc32c::crc32c(&h[..HEADER_CRC_OFFSET]);
    h[HEADER_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Checks a header of [`encode_header_of`]'s layout read from the file of segment
/// `expected_id`: length, CRC, magic, version, id; the error says which failed.
pub fn check_header_of(
    magic: &[u8; 8],
    version: u32,
    bytes: &[u8],
    expected_id: u64,
) -> Result<(), String> {
    if bytes.len() < HEADER_USED_BYTES {
        return Err(format!(
            "header is {} bytes, short of {HEADER_USED_BYTES}",
            bytes.len()
        ));
    }
    let stored = u32::from_le_bytes(
        bytes[HEADER_CRC_OFFSET..HEADER_USED_BYTES]
            .try_into()
            .expect("4"),
    );
    let computed = crc32c::crc32c(&bytes[..HEADER_CRC_OFFSET]);
    if stored != computed {
        return Err(format!(
            "header crc32c mismatch: stored {stored:#010x}, computed {computed:#010x}"
        ));
    }
    if bytes[MAGIC_OFFSET..VERSION_OFFSET] != magic[..] {
        return Err("bad magic".to_string());
    }
    let stored_version = u32::from_le_bytes(
        bytes[VERSION_OFFSET..RESERVED_OFFSET]
            .try_into()
            .expect("4"),
    );
    if stored_version != version {
        return Err(format!("unknown format version {stored_version}"));
    }
    let id = u64::from_le_bytes(
        bytes[SEGMENT_ID_OFFSET..HEADER_CRC_OFFSET]
            .try_into()
            .expect("8"),
    );
    if id != expected_id {
        return Err(format!(
            "header names segment {id}, file name says {expected_id}"
        ));
    }
    Ok(())
}

/// `00000000000000000042.log` for id 42.
pub fn file_name(segment_id: u64) -> String {
    format!("{segment_id:0width$}{FILE_SUFFIX}", width = ID_DIGITS)
}

/// The id of a segment file name, or `None` for any other file.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(FILE_SUFFIX)?;
    if digits.len() != ID_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Path of segment `segment_id` in `dir`.
pub fn path(dir: &Path, segment_id: u64) -> PathBuf {
    dir.join(file_name(segment_id))
}

/// Largest multiple of [`BLOCK_BYTES`] at or below `v`.
pub fn align_down(v: u64) -> u64 {
    v - v % BLOCK_BYTES
}

/// Smallest multiple of [`BLOCK_BYTES`] at or above `v`.
pub fn align_up(v: u64) -> u64 {
    align_down(v + BLOCK_BYTES - 1)
}

/// Segment ids of the segment files in `dir`, ascending. A missing `dir` holds none.
pub fn list_ids(dir: &Path) -> std::io::Result<Vec<u64>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut ids = Vec::new();
    for entry in entries {
        if let Some(id) = entry?.file_name().to_str().and_then(parse_file_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_header() {
        let h = encode_header(42);
        let expected_prefix: [u8; 24] = [
            b'R', b'K', b'V', b'L', b'O', b'G', 0, 1, // magic
            1, 0, 0, 0, // version 1
            0, 0, 0, 0, // reserved
            42, 0, 0, 0, 0, 0, 0, 0, // segment id
        ];
        assert_eq!(h[..24], expected_prefix);
        // CRC32C of the 24 bytes above, computed independently (Python, bit by bit).
        assert_eq!(h[24..], [0xa7, 0x12, 0x65, 0x4f]);
        assert_eq!(check_header(&h, 42), Ok(()));
    }

    #[test]
    fn header_checks_crc_id_and_length() {
        let h = encode_header(5);
        assert!(check_header(&h, 6).unwrap_err().contains("segment 5"));
        let mut bad = h;
        bad[17] ^= 1;
        assert!(check_header(&bad, 5).unwrap_err().contains("crc32c"));
        assert!(check_header(&h[..20], 5).is_err());
        assert!(check_header(&[0; 4096], 5).is_err());
    }

    #[test]
    fn file_names_sort_like_ids_and_parse_back() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(file_name(u64::MAX), "18446744073709551615.log");
        assert!(file_name(9) < file_name(10));
        assert_eq!(parse_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004x.log"), None);
        assert_eq!(parse_file_name("00000000000000000042.log.tmp"), None);
        assert_eq!(parse_file_name("99999999999999999999.log"), None);
    }

    #[test]
    fn alignment() {
        assert_eq!(align_down(4095), 0);
        assert_eq!(align_down(4096), 4096);
        assert_eq!(align_up(1), 4096);
        assert_eq!(align_up(4096), 4096);
        assert_eq!(align_up(0), 0);
    }
}
