//! The record codec: `len u32 | crc32c u32 | kind u8 | payload`, little endian.
//!
//! `len` counts `kind` and `payload` (so it is at least 1: a zero `len` is the end of
//! the data in a segment). The CRC32C is seeded with the segment's [`record_seed`]
//! and covers `len | kind | payload`; in other words it is the plain CRC32C of
//! `segment_id u64 LE | len u32 LE | kind | payload`. A record copied (or left behind)
//! in another segment therefore never validates there.
//!
//! A record is encoded in two steps because its segment is chosen late: `append`
//! encodes it with a zero CRC ([`encode_unsealed`]) and the writer, once it knows which
//! segment the record lands in, fills the CRC in place ([`seal`]).
//!
//! [`record_seed`]: super::segment::record_seed

use std::fmt;
use std::mem::size_of;

/// Offset of `len`: the size of `kind | payload`.
pub const LEN_OFFSET: usize = 0;
/// Offset of the CRC32C.
pub const CRC_OFFSET: usize = LEN_OFFSET + size_of::<u32>();
/// Offset of `kind`, the caller's record type.
pub const KIND_OFFSET: usize = CRC_OFFSET + size_of::<u32>();
/// Offset of the payload.
pub const PAYLOAD_OFFSET: usize = KIND_OFFSET + size_of::<u8>();

/// Bytes read before the record size is known (`len | crc`).
pub const PREFIX_BYTES: usize = KIND_OFFSET;
/// Bytes a record takes besides its payload.
pub const OVERHEAD_BYTES: usize = PAYLOAD_OFFSET;

/// Encoded size of a record with `payload_len` payload bytes.
pub fn record_bytes(payload_len: usize) -> usize {
    OVERHEAD_BYTES + payload_len
}

/// Appends a record with a zero CRC to `out`; [`seal`] must fill it before it is written.
pub fn encode_unsealed(out: &mut Vec<u8>, kind: u8, payload: &[u8]) {
    encode_unsealed_with(out, kind, payload.len(), |out| {
        out.extend_from_slice(payload)
    });
}

/// [`encode_unsealed`] of a payload of `payload_len` bytes that `encode` appends to
/// `out`. Panics if it appends another number of bytes (the length is already written).
pub fn encode_unsealed_with(
    out: &mut Vec<u8>,
    kind: u8,
    payload_len: usize,
    encode: impl FnOnce(&mut Vec<u8>),
) {
    let len = u32::try_from(1 + payload_len).expect("payload checked against record_bytes_max");
    out.reserve(record_bytes(payload_len));
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.push(kind);
    let start = out.len();
    encode(out);
    assert_eq!(
        out.len() - start,
        payload_len,
        "encode wrote another length"
    );
}

/// Fills the CRC of one unsealed record that occupies all of `record`.
pub fn seal(record: &mut [u8], seed: u32) {
    let (len, _) = read_prefix(record);
    assert_eq!(
        PREFIX_BYTES + len as usize,
        record.len(),
        "seal takes exactly one record"
    );
    let crc = record_crc(seed, &record[..CRC_OFFSET], &record[KIND_OFFSET..]);
    record[CRC_OFFSET..KIND_OFFSET].copy_from_slice(&crc.to_le_bytes());
}

/// Appends one complete (sealed) record to `out`.
pub fn encode(out: &mut Vec<u8>, seed: u32, kind: u8, payload: &[u8]) {
    let start = out.len();
    encode_unsealed(out, kind, payload);
    seal(&mut out[start..], seed);
}

/// The CRC32C of a record: seeded with the segment's seed, over `len` then `kind | payload`.
pub fn record_crc(seed: u32, len_bytes: &[u8], kind_and_payload: &[u8]) -> u32 {
    let crc = crc32c::crc32c_append(seed, len_bytes);
    crc32c::crc32c_append(crc, kind_and_payload)
}

/// Splits the first [`PREFIX_BYTES`] of `bytes` into `(len, crc)`.
pub fn read_prefix(bytes: &[u8]) -> (u32, u32) {
    let len = u32::from_le_bytes(bytes[LEN_OFFSET..CRC_OFFSET].try_into().expect("4 bytes"));
    let crc = u32::from_le_bytes(bytes[CRC_OFFSET..KIND_OFFSET].try_into().expect("4 bytes"));
    (len, crc)
}

/// Why the bytes at some offset are not a valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Defect {
    /// The record would end past the end of the file (a torn write).
    Truncated {
        record_bytes: u64,
        available_bytes: u64,
    },
    /// `len` is larger than the configured limit (garbage, or a log from another config).
    TooLarge {
        record_bytes: u64,
        record_bytes_max: u32,
    },
    /// The stored CRC does not match the bytes (a torn write, a bit flip, or stale data).
    CrcMismatch { stored: u32, computed: u32 },
    /// The data ended (zero `len`) but non-zero bytes follow at `offset`.
    DataAfterEnd { offset: u64 },
}

impl fmt::Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defect::Truncated {
                record_bytes,
                available_bytes,
            } => write!(
                f,
                "record of {record_bytes} bytes but only {available_bytes} bytes left in the file"
            ),
            Defect::TooLarge {
                record_bytes,
                record_bytes_max,
            } => write!(
                f,
                "record of {record_bytes} bytes exceeds record_bytes_max {record_bytes_max}"
            ),
            Defect::CrcMismatch { stored, computed } => write!(
                f,
                "crc32c mismatch: stored {stored:#010x}, computed {computed:#010x}"
            ),
            Defect::DataAfterEnd { offset } => {
                write!(f, "non-zero byte at {offset} after the end of the data")
            }
        }
    }
}

/// Checks a record's `len` before anything is allocated for it. Returns the record's
/// encoded size, or `None` for the end-of-data marker (`len == 0`).
pub fn check_len(
    len: u32,
    record_bytes_max: u32,
    available_bytes: u64,
) -> Result<Option<usize>, Defect> {
    if len == 0 {
        return Ok(None);
    }
    let record_bytes = PREFIX_BYTES as u64 + u64::from(len);
    if record_bytes > u64::from(record_bytes_max) {
        return Err(Defect::TooLarge {
            record_bytes,
            record_bytes_max,
        });
    }
    if record_bytes > available_bytes {
        return Err(Defect::Truncated {
            record_bytes,
            available_bytes,
        });
    }
    Ok(Some(record_bytes as usize))
}

/// Checks the CRC of `kind | payload` (`body`) against the stored one.
pub fn check_crc(seed: u32, len: u32, stored: u32, body: &[u8]) -> Result<(), Defect> {
    debug_assert_eq!(body.len(), len as usize);
    let computed = record_crc(seed, &len.to_le_bytes(), body);
    if computed == stored {
        Ok(())
    } else {
        Err(Defect::CrcMismatch { stored, computed })
    }
}

/// One step of decoding a buffer of records.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A valid record of `bytes` encoded bytes.
    Record {
        kind: u8,
        payload: &'a [u8],
        bytes: usize,
    },
    /// The end-of-data marker, or fewer bytes left than a record prefix and all zero.
    End,
}

/// Decodes the record at the start of `buf` (the rest of a segment). Never panics.
pub fn decode(buf: &[u8], seed: u32, record_bytes_max: u32) -> Result<Decoded<'_>, Defect> {
    if buf.len() < PREFIX_BYTES {
        return match buf.iter().position(|&b| b != 0) {
            None => Ok(Decoded::End),
            Some(_) => Err(Defect::Truncated {
                record_bytes: PREFIX_BYTES as u64,
                available_bytes: buf.len() as u64,
            }),
        };
    }
    let (len, stored) = read_prefix(buf);
    let Some(bytes) = check_len(len, record_bytes_max, buf.len() as u64)? else {
        return Ok(Decoded::End);
    };
    let body = &buf[KIND_OFFSET..bytes];
    check_crc(seed, len, stored, body)?;
    Ok(Decoded::Record {
        kind: body[0],
        payload: &body[1..],
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: u32 = 1 << 20;

    #[test]
    fn golden_bytes_for_one_record() {
        // Segment id 7, kind 3, payload "abc".
        let seed = super::super::segment::record_seed(7);
        let mut out = Vec::new();
        encode(&mut out, seed, 3, b"abc");
        let expected: [u8; 12] = [
            0x04, 0x00, 0x00, 0x00, // len = 1 + 3
            0x6b, 0xc1, 0x9c,
            0x82, // crc32c(07 00 00 00 00 00 00 00 | 04 00 00 00 | 03 | "abc")
            0x03, // kind
            b'a', b'b', b'c', // payload
        ];
        assert_eq!(out, expected, "got {out:02x?}");
        // The CRC is the plain CRC32C of segment id, len, kind and payload.
        let mut plain = 7u64.to_le_bytes().to_vec();
        plain.extend_from_slice(&[4, 0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(crc32c::crc32c(&plain).to_le_bytes(), out[4..8]);
    }

    #[test]
    fn zero_len_is_the_end_and_short_zero_tail_is_the_end() {
        assert_eq!(decode(&[0; 64], 1, MAX), Ok(Decoded::End));
        assert_eq!(decode(&[0; 5], 1, MAX), Ok(Decoded::End));
        assert!(matches!(
            decode(&[0, 0, 1, 0, 0], 1, MAX),
            Err(Defect::Truncated { .. })
        ));
    }

    #[test]
    fn another_segments_seed_does_not_validate() {
        let mut out = Vec::new();
        encode(&mut out, 11, 1, b"payload");
        assert!(matches!(
            decode(&out, 12, MAX),
            Err(Defect::CrcMismatch { .. })
        ));
    }

    #[test]
    fn len_is_checked_against_the_limit_before_the_buffer() {
        let mut out = Vec::new();
        encode(&mut out, 1, 1, &[9; 100]);
        assert_eq!(
            decode(&out, 1, 50),
            Err(Defect::TooLarge {
                record_bytes: 109,
                record_bytes_max: 50
            })
        );
        assert!(matches!(
            decode(&out[..50], 1, MAX),
            Err(Defect::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn round_trip(seed: u32, kind: u8, payload in proptest::collection::vec(any::<u8>(), 0..3000),
                      trailing in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut out = Vec::new();
            encode(&mut out, seed, kind, &payload);
            prop_assert_eq!(out.len(), record_bytes(payload.len()));
            out.extend_from_slice(&trailing);
            let decoded = decode(&out, seed, MAX).unwrap();
            prop_assert_eq!(decoded, Decoded::Record { kind, payload: &payload, bytes: record_bytes(payload.len()) });
        }

        #[test]
        fn unsealed_then_sealed_equals_encoded(seed: u32, kind: u8, payload in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut a = Vec::new();
            encode(&mut a, seed, kind, &payload);
            let mut b = Vec::new();
            encode_unsealed(&mut b, kind, &payload);
            seal(&mut b, seed);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn any_single_bit_flip_is_detected(seed: u32, kind: u8, payload in proptest::collection::vec(any::<u8>(), 0..200), bit in 0usize..2000) {
            let mut out = Vec::new();
            encode(&mut out, seed, kind, &payload);
            let bit = bit % (out.len() * 8);
            out[bit / 8] ^= 1 << (bit % 8);
            // A flipped len can also turn the record into the end marker; never a valid record.
            let valid = matches!(decode(&out, seed, MAX), Ok(Decoded::Record { .. }));
            prop_assert!(!valid, "a flipped record decoded as valid");
        }

        #[test]
        fn decode_never_panics(seed: u32, bytes in proptest::collection::vec(any::<u8>(), 0..64), max in 0u32..100) {
            let _ = decode(&bytes, seed, max);
        }
    }
}
