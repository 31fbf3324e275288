//! The byte layout of a [`VersionSet`]: in commit-log records, SSTables and replica
//! messages. Hand-written, little-endian, every count and length checked on decode.
//!
//! # Format
//!
//! The set has no magic, version or checksum of its own: it is always the payload (or
//! the tail of the payload) of a record or frame that carries them.
//!
//! | offset | size | field       | type | meaning                                      |
//! |--------|------|-------------|------|----------------------------------------------|
//! | 0      | 2    | entry_count | u16  | entries that follow, node ids increasing     |
//! | 2      | …    | entries     |      | `entry_count` × entry                        |
//! | …      | 2    | anon_count  | u16  | anonymous values that follow (normally 0)    |
//! | …      | …    | anon values |      | `anon_count` × value, in canonical order     |
//!
//! Entry (18 bytes + its values):
//!
//! | offset | size | field       | type | meaning                                      |
//! |--------|------|-------------|------|----------------------------------------------|
//! | 0      | 8    | node_id     | u64  | strictly greater than the previous entry's   |
//! | 8      | 8    | counter     | u64  | dots `(node, 1..=counter)` seen, `1..=`[`COUNTER_MAX`] |
//! | 16     | 2    | value_count | u16  | values that follow, `<= counter`             |
//! | 18     | …    | values      |      | `value_count` × value, newest first          |
//!
//! Value (9 bytes for a tombstone, 13 + `value_len` for a value):
//!
//! | offset | size        | field        | type | meaning                             |
//! |--------|-------------|--------------|------|-------------------------------------|
//! | 0      | 8           | timestamp_us | u64  | coordinator's wall clock            |
//! | 8      | 1           | kind         | u8   | 0 = tombstone, 1 = value            |
//! | 9      | 4           | value_len    | u32  | kind 1 only                         |
//! | 13     | `value_len` | bytes        |      | kind 1 only                         |
//!
//! The encoding is canonical: a set has exactly one encoding, and a successful decode
//! of `n` bytes re-encodes to those same `n` bytes.

use bytes::Bytes;

use super::dvvset::{Entries, Entry, Values, VersionSet};
use super::{VersionError, Versioned};

/// Largest entry count, value count per entry and anonymous value count (u16 fields).
pub const COUNT_MAX: usize = u16::MAX as usize;
/// Largest value the format can hold (u32 length).
pub const VALUE_BYTES_MAX: usize = u32::MAX as usize;
/// Largest counter a decoded set may carry: 2^63. Reached only by 2^62 writes on top of
/// a client context at [`super::CONTEXT_COUNTER_MAX`], and far enough from `u64::MAX`
/// that [`VersionSet::coordinate`] can always add one.
pub const COUNTER_MAX: u64 = 1 << 63;

const COUNT_BYTES: usize = size_of::<u16>();

const ENTRY_NODE_OFFSET: usize = 0;
const ENTRY_COUNTER_OFFSET: usize = ENTRY_NODE_OFFSET + size_of::<u64>();
const ENTRY_VALUE_COUNT_OFFSET: usize = ENTRY_COUNTER_OFFSET + size_of::<u64>();
/// An entry without its values; also the fewest bytes an entry can take.
const ENTRY_HEADER_BYTES: usize = ENTRY_VALUE_COUNT_OFFSET + COUNT_BYTES;

const VALUE_TIMESTAMP_OFFSET: usize = 0;
const VALUE_KIND_OFFSET: usize = VALUE_TIMESTAMP_OFFSET + size_of::<u64>();
/// A tombstone; also the fewest bytes a value can take.
const TOMBSTONE_BYTES: usize = VALUE_KIND_OFFSET + size_of::<u8>();
const VALUE_LEN_OFFSET: usize = TOMBSTONE_BYTES;
/// A value without its bytes.
const VALUE_HEADER_BYTES: usize = VALUE_LEN_OFFSET + size_of::<u32>();

const KIND_TOMBSTONE: u8 = 0;
const KIND_VALUE: u8 = 1;

impl VersionSet {
    /// Bytes [`VersionSet::encode_into`] appends.
    pub fn encoded_len(&self) -> usize {
        let values: usize = self.values().map(value_len).sum();
        COUNT_BYTES + self.entries.len() * ENTRY_HEADER_BYTES + COUNT_BYTES + values
    }

    /// Appends the set's encoding (format above) to `buf`.
    ///
    /// Panics when [`VersionSet::check_limits`] fails: callers that can meet such a set
    /// (a coordinator after a blind write) check it first.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        if let Err(e) = self.check_limits() {
            panic!("{e}: check_limits() before encoding");
        }
        let start = buf.len();
        buf.reserve(self.encoded_len());
        put_count(buf, self.entries.len());
        for entry in &self.entries {
            buf.extend_from_slice(&entry.node.to_le_bytes());
            buf.extend_from_slice(&entry.counter.to_le_bytes());
            put_count(buf, entry.values.len());
            entry.values.iter().for_each(|v| put_value(buf, v));
        }
        put_count(buf, self.anonymous.len());
        self.anonymous.iter().for_each(|v| put_value(buf, v));
        debug_assert_eq!(buf.len() - start, self.encoded_len());
    }

    /// The encoding in a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        self.encode_into(&mut buf);
        buf
    }

    /// Decodes one set from the front of `buf`; returns it and the bytes it took (the
    /// caller decides whether trailing bytes are an error). Values are slices of `buf`
    /// (no copy): they keep `buf`'s allocation alive.
    ///
    /// Never panics: every count and length is checked against the bytes left before
    /// anything is sliced or allocated.
    pub fn decode(buf: &Bytes) -> Result<(VersionSet, usize), VersionError> {
        let mut r = Reader::new(buf);
        let entry_count = usize::from(r.u16("entry count")?);
        let mut entries: Entries =
            Entries::with_capacity(entry_count.min(r.remaining() / ENTRY_HEADER_BYTES));
        for _ in 0..entry_count {
            let entry = decode_entry(&mut r, buf)?;
            if let Some(prev) = entries.last() {
                if prev.node >= entry.node {
                    return Err(VersionError::NodesOutOfOrder {
                        what: "version set",
                        prev: prev.node,
                        next: entry.node,
                    });
                }
            }
            entries.push(entry);
        }
        let anon_count = r.u16("anonymous value count")?;
        let anonymous = decode_values(&mut r, buf, anon_count)?.into_vec();
        if let Some(i) = anonymous.windows(2).position(|w| w[0] >= w[1]) {
            return Err(VersionError::AnonymousOutOfOrder { index: i + 1 });
        }
        let set = VersionSet { entries, anonymous };
        set.assert_invariants();
        Ok((set, r.position()))
    }
}

fn decode_entry(r: &mut Reader<'_>, buf: &Bytes) -> Result<Entry, VersionError> {
    let node = r.u64("entry node id")?;
    let counter = r.u64("entry counter")?;
    if !(1..=COUNTER_MAX).contains(&counter) {
        return Err(VersionError::CounterOutOfRange {
            what: "version set",
            node,
            counter,
            max: COUNTER_MAX,
        });
    }
    let value_count = r.u16("entry value count")?;
    if u64::from(value_count) > counter {
        return Err(VersionError::MoreValuesThanEvents {
            node,
            counter,
            value_count,
        });
    }
    let values = decode_values(r, buf, value_count)?;
    Ok(Entry {
        node,
        counter,
        values,
    })
}

fn decode_values(r: &mut Reader<'_>, buf: &Bytes, count: u16) -> Result<Values, VersionError> {
    let count = usize::from(count);
    let mut values = Values::with_capacity(count.min(r.remaining() / TOMBSTONE_BYTES));
    for _ in 0..count {
        values.push(decode_value(r, buf)?);
    }
    Ok(values)
}

fn decode_value(r: &mut Reader<'_>, buf: &Bytes) -> Result<Versioned, VersionError> {
    let timestamp_us = r.u64("value timestamp")?;
    let kind_offset = r.position();
    let value = match r.u8("value kind")? {
        KIND_TOMBSTONE => None,
        KIND_VALUE => {
            let len = r.u32("value length")? as usize;
            Some(buf.slice(r.skip(len, "value bytes")?))
        }
        kind => {
            let offset = kind_offset;
            return Err(VersionError::UnknownValueKind { kind, offset });
        }
    };
    Ok(Versioned {
        timestamp_us,
        value,
    })
}

fn value_len(v: &Versioned) -> usize {
    match &v.value {
        None => TOMBSTONE_BYTES,
        Some(bytes) => VALUE_HEADER_BYTES + bytes.len(),
    }
}

fn put_count(buf: &mut Vec<u8>, count: usize) {
    debug_assert!(count <= COUNT_MAX);
    buf.extend_from_slice(&(count as u16).to_le_bytes());
}

fn put_value(buf: &mut Vec<u8>, v: &Versioned) {
    buf.extend_from_slice(&v.timestamp_us.to_le_bytes());
    match &v.value {
        None => buf.push(KIND_TOMBSTONE),
        Some(bytes) => {
            debug_assert!(bytes.len() <= VALUE_BYTES_MAX);
            buf.push(KIND_VALUE);
            buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            buf.extend_from_slice(bytes);
        }
    }
}

/// Reads little-endian fields from the front of a buffer; every read checks the bytes
/// left first and says which field ran short.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub(super) fn position(&self) -> usize {
        self.pos
    }

    pub(super) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Fails unless `needed` more bytes are there (consumes nothing).
    pub(super) fn need(&self, needed: usize, what: &'static str) -> Result<(), VersionError> {
        if needed > self.remaining() {
            return Err(VersionError::Truncated {
                what,
                offset: self.pos,
                needed,
                available: self.remaining(),
            });
        }
        Ok(())
    }

    /// Consumes `len` bytes and returns where they are.
    pub(super) fn skip(
        &mut self,
        len: usize,
        what: &'static str,
    ) -> Result<std::ops::Range<usize>, VersionError> {
        self.need(len, what)?;
        let range = self.pos..self.pos + len;
        self.pos += len;
        Ok(range)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], VersionError> {
        let range = self.skip(N, what)?;
        Ok(self.buf[range].try_into().expect("range has N bytes"))
    }

    pub(super) fn u8(&mut self, what: &'static str) -> Result<u8, VersionError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub(super) fn u16(&mut self, what: &'static str) -> Result<u16, VersionError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub(super) fn u32(&mut self, what: &'static str) -> Result<u32, VersionError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub(super) fn u64(&mut self, what: &'static str) -> Result<u64, VersionError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
}
