//! Block framing and the data-block entry codec.
//!
//! Every block of a table (data, index, filter, properties) is stored in one frame:
//! ```text
//! offset size field
//!      0    1 compression       u8: 0 none, 1 lz4 (lz4_flex block format, no size prefix)
//!      1    4 uncompressed_len  u32: payload bytes after decompression
//!      5    4 stored_len        u32: bytes that follow the header
//!      9    4 crc32c            u32: CRC32C of bytes 0..9 then the stored bytes
//!     13    - stored bytes
//! ```
//! A data block's payload is its entries back to back, keys strictly increasing:
//! `key_len u16 | key | value_len u32 | value`, `key_len` in 1..=65535.
//!
//! Decoders here never panic on any input; they say what is wrong in a `String`, and the
//! table layer adds the file and the block's offset.

use std::mem::size_of;

use bytes::Bytes;

/// How a block's payload is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Stored as is.
    None,
    /// lz4 (block format); a block that lz4 does not shrink is stored as `None`.
    Lz4,
}

impl Compression {
    /// The `compression` byte of a frame.
    pub fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Lz4 => 1,
        }
    }

    /// The compression of a `compression` byte, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Compression::None),
            1 => Some(Compression::Lz4),
            _ => None,
        }
    }
}

const COMPRESSION_OFFSET: usize = 0;
const UNCOMPRESSED_LEN_OFFSET: usize = COMPRESSION_OFFSET + size_of::<u8>();
const STORED_LEN_OFFSET: usize = UNCOMPRESSED_LEN_OFFSET + size_of::<u32>();
const CRC_OFFSET: usize = STORED_LEN_OFFSET + size_of::<u32>();
/// Bytes of a frame before the stored bytes.
pub const BLOCK_HEADER_BYTES: usize = CRC_OFFSET + size_of::<u32>();
/// Largest payload a frame may claim (checked before anything is allocated for it):
/// 256 MiB, above any block of a table of a few hundred MiB (its filter included).
pub const BLOCK_PAYLOAD_BYTES_MAX: u32 = 1 << 28;

/// Appends the frame of `payload` to `out` and returns the frame's length.
pub fn encode_block(out: &mut Vec<u8>, payload: &[u8], compression: Compression) -> u32 {
    let uncompressed_len = u32::try_from(payload.len()).expect("block payload fits u32");
    assert!(
        uncompressed_len <= BLOCK_PAYLOAD_BYTES_MAX,
        "block payload too large"
    );
    let compressed = match compression {
        Compression::Lz4 => Some(lz4_flex::block::compress(payload)),
        Compression::None => None,
    };
    let (code, stored) = match &compressed {
        Some(c) if c.len() < payload.len() => (Compression::Lz4.code(), c.as_slice()),
        _ => (Compression::None.code(), payload),
    };
    let start = out.len();
    out.push(code);
    out.extend_from_slice(&uncompressed_len.to_le_bytes());
    out.extend_from_slice(&(stored.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&out[start..start + CRC_OFFSET]), stored);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(stored);
    (out.len() - start) as u32
}

/// Checks the whole frame `frame` (exactly one frame, as the index or footer sized it)
/// and returns its payload, decompressed.
pub fn decode_block(frame: &[u8]) -> Result<Bytes, String> {
    if frame.len() < BLOCK_HEADER_BYTES {
        return Err(format!(
            "block of {} bytes is shorter than its header",
            frame.len()
        ));
    }
    let uncompressed_len = read_u32(frame, UNCOMPRESSED_LEN_OFFSET);
    let stored_len = read_u32(frame, STORED_LEN_OFFSET);
    let stored = &frame[BLOCK_HEADER_BYTES..];
    if stored.len() as u64 != u64::from(stored_len) {
        return Err(format!(
            "block stores {stored_len} bytes but its frame holds {}",
            stored.len()
        ));
    }
    let stored_crc = read_u32(frame, CRC_OFFSET);
    let computed = crc32c::crc32c_append(crc32c::crc32c(&frame[..CRC_OFFSET]), stored);
    if stored_crc != computed {
        return Err(format!(
            "block crc32c mismatch: stored {stored_crc:#010x}, computed {computed:#010x}"
        ));
    }
    if uncompressed_len > BLOCK_PAYLOAD_BYTES_MAX {
        return Err(format!(
            "block claims {uncompressed_len} bytes, over the limit"
        ));
    }
    match Compression::from_code(frame[COMPRESSION_OFFSET]) {
        Some(Compression::None) if stored_len == uncompressed_len => {
            Ok(Bytes::copy_from_slice(stored))
        }
        Some(Compression::None) => Err(format!(
            "uncompressed block of {stored_len} bytes claims {uncompressed_len}"
        )),
        Some(Compression::Lz4) => {
            let mut out = vec![0u8; uncompressed_len as usize];
            match lz4_flex::block::decompress_into(stored, &mut out) {
                Ok(n) if n == out.len() => Ok(Bytes::from(out)),
                Ok(n) => Err(format!(
                    "lz4 block gave {n} bytes, claims {uncompressed_len}"
                )),
                Err(e) => Err(format!("lz4 block does not decompress: {e}")),
            }
        }
        None => Err(format!("unknown compression {}", frame[COMPRESSION_OFFSET])),
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// Bytes one entry takes in a data block.
pub fn entry_bytes(key_len: usize, value_len: usize) -> usize {
    size_of::<u16>() + key_len + size_of::<u32>() + value_len
}

/// Appends one entry to a data block's payload.
pub fn encode_entry(out: &mut Vec<u8>, key: &[u8], value: &[u8]) {
    let key_len = u16::try_from(key.len()).expect("key of at most 65535 bytes");
    let value_len = u32::try_from(value.len()).expect("value of at most 4 GiB");
    out.extend_from_slice(&key_len.to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&value_len.to_le_bytes());
    out.extend_from_slice(value);
}

/// A reader of little-endian fields that fails, never panics, at the end of its bytes.
pub struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Whether every byte was consumed.
    pub fn is_done(&self) -> bool {
        self.pos == self.bytes.len()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let left = self.bytes.len() - self.pos;
        if n > left {
            return Err(format!(
                "{what} of {n} bytes at {} runs past the end ({left} left)",
                self.pos
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    pub fn u16(&mut self, what: &str) -> Result<u16, String> {
        Ok(u16::from_le_bytes(
            self.take(2, what)?.try_into().expect("2"),
        ))
    }

    pub fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4, what)?.try_into().expect("4"),
        ))
    }

    pub fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8, what)?.try_into().expect("8"),
        ))
    }

    /// A `u16` length, at least 1, then that many bytes: a key.
    pub fn key(&mut self, what: &str) -> Result<&'a [u8], String> {
        let len = self.u16(what)?;
        if len == 0 {
            return Err(format!("empty {what} at {}", self.pos - 2));
        }
        self.take(usize::from(len), what)
    }
}

/// The next entry of a data block payload, as ranges into it: `(key, value)`.
fn next_entry<'a>(c: &mut Cursor<'a>) -> Result<(&'a [u8], &'a [u8]), String> {
    let key = c.key("key")?;
    let value_len = c.u32("value_len")?;
    let value = c.take(value_len as usize, "value")?;
    Ok((key, value))
}

/// Every entry of a decoded data block, in order; keys checked strictly increasing.
pub fn decode_entries(payload: &Bytes) -> Result<Vec<(Bytes, Bytes)>, String> {
    let mut c = Cursor::new(payload);
    let mut out: Vec<(Bytes, Bytes)> = Vec::new();
    if c.is_done() {
        return Err("data block without entries".to_string());
    }
    while !c.is_done() {
        let (key, value) = next_entry(&mut c)?;
        if out.last().is_some_and(|(prev, _)| prev.as_ref() >= key) {
            return Err(format!("key out of order at {}", c.pos()));
        }
        out.push((payload.slice_ref(key), payload.slice_ref(value)));
    }
    Ok(out)
}

/// The value of `key` in a decoded data block, if it is there. Stops at the first larger
/// key; checks the order of the keys it passes.
pub fn find_in_block(payload: &Bytes, key: &[u8]) -> Result<Option<Bytes>, String> {
    let mut c = Cursor::new(payload);
    let mut prev: Option<&[u8]> = None;
    while !c.is_done() {
        let (k, v) = next_entry(&mut c)?;
        if prev.is_some_and(|p| p >= k) {
            return Err(format!("key out of order at {}", c.pos()));
        }
        match k.cmp(key) {
            std::cmp::Ordering::Less => prev = Some(k),
            std::cmp::Ordering::Equal => return Ok(Some(payload.slice_ref(v))),
            std::cmp::Ordering::Greater => return Ok(None),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_data_block() {
        let mut payload = Vec::new();
        encode_entry(&mut payload, b"a", b"xyz");
        let mut frame = Vec::new();
        let len = encode_block(&mut frame, &payload, Compression::None);
        let expected: [u8; 23] = [
            0x00, // compression: none
            0x0a, 0x00, 0x00, 0x00, // uncompressed_len 10
            0x0a, 0x00, 0x00, 0x00, // stored_len 10
            0x83, 0x81, 0xcd, 0xbb, // crc32c of the 9 bytes above and the 10 below
            0x01, 0x00, b'a', // key_len 1, key
            0x03, 0x00, 0x00, 0x00, b'x', b'y', b'z', // value_len 3, value
        ];
        assert_eq!(frame, expected, "got {frame:02x?}");
        assert_eq!(len, 23);
        let decoded = decode_block(&frame).unwrap();
        assert_eq!(decoded.as_ref(), payload.as_slice());
        assert_eq!(
            decode_entries(&decoded).unwrap(),
            vec![(Bytes::from_static(b"a"), Bytes::from_static(b"xyz"))]
        );
    }

    #[test]
    fn lz4_only_when_it_shrinks() {
        let mut frame = Vec::new();
        encode_block(&mut frame, &[7u8; 1000], Compression::Lz4);
        assert_eq!(frame[0], 1);
        assert!(frame.len() < 100);
        assert_eq!(decode_block(&frame).unwrap().as_ref(), &[7u8; 1000][..]);
        let random: Vec<u8> = (0..64u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        let mut frame = Vec::new();
        encode_block(&mut frame, &random, Compression::Lz4);
        assert_eq!(frame[0], 0, "incompressible bytes are stored as is");
    }

    #[test]
    fn every_truncation_and_byte_flip_of_a_block_is_an_error() {
        for compression in [Compression::None, Compression::Lz4] {
            let mut payload = Vec::new();
            for i in 0..20u8 {
                encode_entry(&mut payload, &[b'k', i], &[i; 30]);
            }
            let mut frame = Vec::new();
            encode_block(&mut frame, &payload, compression);
            for n in 0..frame.len() {
                assert!(decode_block(&frame[..n]).is_err(), "truncated to {n}");
            }
            for i in 0..frame.len() {
                for flip in [0x01, 0x80, 0xff] {
                    let mut bad = frame.clone();
                    bad[i] ^= flip;
                    assert!(decode_block(&bad).is_err(), "flip {flip:#x} at {i}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn block_round_trip(payload in proptest::collection::vec(0u8..4, 0..5000), lz4: bool) {
            let compression = if lz4 { Compression::Lz4 } else { Compression::None };
            let mut frame = Vec::new();
            let len = encode_block(&mut frame, &payload, compression);
            prop_assert_eq!(len as usize, frame.len());
            let decoded = decode_block(&frame).unwrap();
            prop_assert_eq!(decoded.as_ref(), payload.as_slice());
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), key in proptest::collection::vec(any::<u8>(), 1..4)) {
            let _ = decode_block(&bytes);
            let b = Bytes::from(bytes);
            let _ = decode_entries(&b);
            let _ = find_in_block(&b, &key);
        }

        #[test]
        fn a_valid_crc_over_garbage_never_panics(code in 0u8..3, claimed in 0u32..10_000, stored in proptest::collection::vec(any::<u8>(), 0..300)) {
            // Garbage that passes the CRC (a buggy writer) still decodes to an error or bytes.
            let mut frame = vec![code];
            frame.extend_from_slice(&claimed.to_le_bytes());
            frame.extend_from_slice(&(stored.len() as u32).to_le_bytes());
            let crc = crc32c::crc32c_append(crc32c::crc32c(&frame), &stored);
            frame.extend_from_slice(&crc.to_le_bytes());
            frame.extend_from_slice(&stored);
            if let Ok(payload) = decode_block(&frame) {
                let _ = decode_entries(&payload);
            }
        }
    }
}
