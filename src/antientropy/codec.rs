//! The bytes of the anti-entropy messages: hand-written, little-endian, fixed-width,
//! canonical (one message, one encoding), each with its own CRC32C because the
//! internal protocol's frames carry none (DESIGN.md §8.3).
//!
//! Every message travels as the body of one internal-protocol frame:
//!
//! ```text
//! offset  size  field
//!      0     1  format     1 (MESSAGE_FORMAT)
//!      1     1  kind       1 Open, 2 Accept, 3 Refuse, 4 Descend, 5 Answer, 6 LeafKeys
//!      2     …  body       by kind, below
//!   last     4  crc32c     CRC32C of every byte before it
//! ```
//!
//! Bodies (`pair` = `index u32 | left u64 | right u64`, 20 bytes):
//!
//! ```text
//! Open      tree_format u8 | range_start u64 | range_end u64 | depth u8 | root u64   26 bytes
//! Accept    depth u8 | <Answer body>
//! Refuse    reason u8                          1 unknown range, 2 tree format, 3 busy
//! Descend   level u8 | pair_count u32 | pair × pair_count
//! Answer    flags u8 | level u8 | pair_count u32 | pair × pair_count
//!           | leaf_count u32 | leaf u32 × leaf_count              flags bit 0: more
//! LeafKeys  flags u8 | level u8 | index u32 | key_count u32
//!           | (key_len u16 | key | contribution u64) × key_count    flags bit 0: last
//! ```
//!
//! The decoder checks, before it allocates or trusts anything: the length, the CRC,
//! format and kind; every count against [`Limits`] *and* against the bytes left; levels
//! and depths `<= DEPTH_MAX`, indices below `2^level`; pairs, leaves and keys strictly
//! increasing; `level == 0` when there are no pairs; no unknown flag bits, reasons or
//! trailing bytes. It never panics (`tests.rs` fuzzes it).

use bytes::Bytes;

use super::exchange::{
    Accept, Answer, Descend, KeyDigest, LeafKeys, Message, Open, Pair, Refuse, RefuseReason,
};
use super::merkle::{TokenRange, DEPTH_MAX};

/// The envelope's format byte.
pub const MESSAGE_FORMAT: u8 = 1;

const KIND_OPEN: u8 = 1;
const KIND_ACCEPT: u8 = 2;
const KIND_REFUSE: u8 = 3;
const KIND_DESCEND: u8 = 4;
const KIND_ANSWER: u8 = 5;
const KIND_LEAF_KEYS: u8 = 6;

const PAIR_BYTES: usize = 4 + 8 + 8;
const LEAF_BYTES: usize = 4;
/// The smallest key entry: an empty key and its contribution.
const KEY_ENTRY_BYTES_MIN: usize = 2 + 8;
/// Format, kind, CRC.
const ENVELOPE_BYTES: usize = 1 + 1 + 4;

const FLAG_MORE: u8 = 1;
const FLAG_LAST: u8 = 1;

/// How much one message may carry: what a sender puts in one message and what a
/// receiver accepts. With the defaults a Descend or Answer stays under 150 KiB, and a
/// LeafKeys of 1024 keys of the longest size (1 KiB) under 1.1 MiB, the internal
/// frame's limit (a 1 MiB value plus `FRAME_OVERHEAD_BYTES`); with keys of ~20 bytes
/// it is ~30 KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Pairs per Descend or Answer (20 bytes each: 80 KiB).
    pub pairs_max: u32,
    /// Differing leaves per Answer (4 bytes each: 64 KiB).
    pub leaves_max: u32,
    /// Keys per LeafKeys (a leaf with more is sent in chunks).
    pub keys_max: u32,
    /// Longest key (the client protocol's limit).
    pub key_bytes_max: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            pairs_max: 4096,
            leaves_max: 16384,
            keys_max: 1024,
            key_bytes_max: crate::protocol::KEY_BYTES_MAX_DEFAULT,
        }
    }
}

impl Limits {
    /// Panics on limits no exchange can progress with (a zero) or keys the format
    /// cannot carry.
    pub fn assert_valid(&self) {
        assert!(self.pairs_max > 0 && self.leaves_max > 0 && self.keys_max > 0);
        assert!(self.key_bytes_max <= u16::MAX as u32);
    }
}

/// Why some bytes are not an anti-entropy message. Offsets count from the message's
/// first byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {len} bytes is shorter than its {ENVELOPE_BYTES}-byte envelope")]
    TooShort { len: usize },
    #[error("CRC32C mismatch: bytes say {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error("message format {0} is unknown (this node reads format {MESSAGE_FORMAT})")]
    Format(u8),
    #[error("message kind {0} is unknown")]
    Kind(u8),
    #[error("{field} truncated at byte {offset}: needs {needed} bytes, {available} left")]
    Truncated {
        field: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("{field} is {value}, above the limit {max}")]
    OverLimit {
        field: &'static str,
        value: u64,
        max: u64,
    },
    #[error("{field} {value} at byte {offset}: {why}")]
    Invalid {
        field: &'static str,
        value: u64,
        offset: usize,
        why: &'static str,
    },
    #[error("{extra} bytes follow the message body")]
    Trailing { extra: usize },
}

/// Appends `message`'s bytes. Panics on a message no decoder would accept (out of
/// order, a count over `u32`, a key over `u16::MAX` bytes): programmer errors.
pub fn encode(message: &Message, out: &mut Vec<u8>) {
    let begin = out.len();
    out.push(MESSAGE_FORMAT);
    match message {
        Message::Open(open) => {
            out.push(KIND_OPEN);
            out.push(open.tree_format);
            out.extend_from_slice(&open.range.start.to_le_bytes());
            out.extend_from_slice(&open.range.end.to_le_bytes());
            out.push(open.depth);
            out.extend_from_slice(&open.root.to_le_bytes());
        }
        Message::Accept(accept) => {
            out.push(KIND_ACCEPT);
            out.push(accept.depth);
            encode_answer(&accept.answer, out);
        }
        Message::Refuse(refuse) => {
            out.push(KIND_REFUSE);
            out.push(refuse.reason as u8);
        }
        Message::Descend(descend) => {
            out.push(KIND_DESCEND);
            encode_pairs(descend.level, &descend.pairs, out);
        }
        Message::Answer(answer) => {
            out.push(KIND_ANSWER);
            encode_answer(answer, out);
        }
        Message::LeafKeys(leaf) => {
            out.push(KIND_LEAF_KEYS);
            encode_leaf_keys(leaf, out);
        }
    }
    let crc = crc32c::crc32c(&out[begin..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

fn encode_pairs(level: u8, pairs: &[Pair], out: &mut Vec<u8>) {
    assert!(pairs.windows(2).all(|w| w[0].index < w[1].index));
    assert!(
        !pairs.is_empty() || level == 0,
        "level {level} without pairs"
    );
    out.push(level);
    out.extend_from_slice(&count(pairs.len()).to_le_bytes());
    for pair in pairs {
        out.extend_from_slice(&pair.index.to_le_bytes());
        out.extend_from_slice(&pair.left.to_le_bytes());
        out.extend_from_slice(&pair.right.to_le_bytes());
    }
}

fn encode_answer(answer: &Answer, out: &mut Vec<u8>) {
    assert!(answer.leaves.windows(2).all(|w| w[0] < w[1]));
    out.push(if answer.more { FLAG_MORE } else { 0 });
    encode_pairs(answer.level, &answer.pairs, out);
    out.extend_from_slice(&count(answer.leaves.len()).to_le_bytes());
    for leaf in &answer.leaves {
        out.extend_from_slice(&leaf.to_le_bytes());
    }
}

fn encode_leaf_keys(leaf: &LeafKeys, out: &mut Vec<u8>) {
    assert!(leaf.keys.windows(2).all(|w| w[0].key < w[1].key));
    out.push(if leaf.last { FLAG_LAST } else { 0 });
    out.push(leaf.level);
    out.extend_from_slice(&leaf.index.to_le_bytes());
    out.extend_from_slice(&count(leaf.keys.len()).to_le_bytes());
    for entry in &leaf.keys {
        let len = u16::try_from(entry.key.len()).expect("key over u16::MAX bytes");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&entry.key);
        out.extend_from_slice(&entry.contribution.to_le_bytes());
    }
}

fn count(len: usize) -> u32 {
    u32::try_from(len).expect("count over u32::MAX")
}

/// Parses one message (the whole frame body), checking everything the module doc lists.
pub fn decode(bytes: Bytes, limits: &Limits) -> Result<Message, DecodeError> {
    if bytes.len() < ENVELOPE_BYTES {
        return Err(DecodeError::TooShort { len: bytes.len() });
    }
    let crc_at = bytes.len() - 4;
    let stored = u32::from_le_bytes(bytes[crc_at..].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(&bytes[..crc_at]);
    if stored != computed {
        return Err(DecodeError::Crc { stored, computed });
    }
    if bytes[0] != MESSAGE_FORMAT {
        return Err(DecodeError::Format(bytes[0]));
    }
    let kind = bytes[1];
    let mut reader = Reader {
        bytes: bytes.slice(..crc_at),
        position: 2,
    };
    let message = match kind {
        KIND_OPEN => Message::Open(decode_open(&mut reader)?),
        KIND_ACCEPT => {
            let depth = reader.depth("depth")?;
            let answer = decode_answer(&mut reader, limits)?;
            Message::Accept(Accept { depth, answer })
        }
        KIND_REFUSE => Message::Refuse(decode_refuse(&mut reader)?),
        KIND_DESCEND => {
            let (level, pairs) = decode_pairs(&mut reader, limits)?;
            Message::Descend(Descend { level, pairs })
        }
        KIND_ANSWER => Message::Answer(decode_answer(&mut reader, limits)?),
        KIND_LEAF_KEYS => Message::LeafKeys(decode_leaf_keys(&mut reader, limits)?),
        other => return Err(DecodeError::Kind(other)),
    };
    let extra = reader.remaining();
    if extra > 0 {
        return Err(DecodeError::Trailing { extra });
    }
    Ok(message)
}

fn decode_open(reader: &mut Reader) -> Result<Open, DecodeError> {
    Ok(Open {
        tree_format: reader.u8("tree format")?,
        range: TokenRange {
            start: reader.u64("range start")?,
            end: reader.u64("range end")?,
        },
        depth: reader.depth("depth")?,
        root: reader.u64("root")?,
    })
}

fn decode_refuse(reader: &mut Reader) -> Result<Refuse, DecodeError> {
    let offset = reader.position;
    let reason = match reader.u8("refuse reason")? {
        1 => RefuseReason::UnknownRange,
        2 => RefuseReason::TreeFormat,
        3 => RefuseReason::Busy,
        other => return Err(reader.invalid("refuse reason", other, offset, "unknown")),
    };
    Ok(Refuse { reason })
}

fn decode_pairs(reader: &mut Reader, limits: &Limits) -> Result<(u8, Vec<Pair>), DecodeError> {
    let level = reader.depth("level")?;
    let count = reader.count("pair count", limits.pairs_max, PAIR_BYTES)?;
    if count == 0 && level != 0 {
        let offset = reader.position - 5;
        return Err(reader.invalid("level", level, offset, "without pairs must be 0"));
    }
    let mut pairs = Vec::with_capacity(count);
    for _ in 0..count {
        let offset = reader.position;
        let pair = Pair {
            index: reader.u32("pair index")?,
            left: reader.u64("left sum")?,
            right: reader.u64("right sum")?,
        };
        if (pair.index as u64) >= 1u64 << level {
            return Err(reader.invalid("pair index", pair.index, offset, "beyond its level"));
        }
        if pairs.last().is_some_and(|p: &Pair| p.index >= pair.index) {
            return Err(reader.invalid("pair index", pair.index, offset, "not increasing"));
        }
        pairs.push(pair);
    }
    Ok((level, pairs))
}

fn decode_answer(reader: &mut Reader, limits: &Limits) -> Result<Answer, DecodeError> {
    let more = reader.flags("answer flags", FLAG_MORE)? == FLAG_MORE;
    let (level, pairs) = decode_pairs(reader, limits)?;
    let count = reader.count("leaf count", limits.leaves_max, LEAF_BYTES)?;
    let mut leaves: Vec<u32> = Vec::with_capacity(count);
    for _ in 0..count {
        let offset = reader.position;
        let leaf = reader.u32("leaf")?;
        if (leaf as u64) >= 1u64 << DEPTH_MAX {
            return Err(reader.invalid("leaf", leaf, offset, "beyond the deepest level"));
        }
        if leaves.last().is_some_and(|&last| last >= leaf) {
            return Err(reader.invalid("leaf", leaf, offset, "not increasing"));
        }
        leaves.push(leaf);
    }
    Ok(Answer {
        level,
        pairs,
        leaves,
        more,
    })
}

fn decode_leaf_keys(reader: &mut Reader, limits: &Limits) -> Result<LeafKeys, DecodeError> {
    let last = reader.flags("leaf keys flags", FLAG_LAST)? == FLAG_LAST;
    let level = reader.depth("level")?;
    let offset = reader.position;
    let index = reader.u32("leaf index")?;
    if (index as u64) >= 1u64 << level {
        return Err(reader.invalid("leaf index", index, offset, "beyond its level"));
    }
    let count = reader.count("key count", limits.keys_max, KEY_ENTRY_BYTES_MIN)?;
    let mut keys: Vec<KeyDigest> = Vec::with_capacity(count);
    for _ in 0..count {
        let offset = reader.position;
        let len = reader.u16("key length")?;
        if len as u32 > limits.key_bytes_max {
            return Err(DecodeError::OverLimit {
                field: "key length",
                value: len as u64,
                max: limits.key_bytes_max as u64,
            });
        }
        let key = reader.bytes(len as usize, "key")?;
        if keys.last().is_some_and(|k| k.key >= key) {
            return Err(reader.invalid("key", len, offset, "not increasing"));
        }
        let contribution = reader.u64("contribution")?;
        keys.push(KeyDigest { key, contribution });
    }
    Ok(LeafKeys {
        level,
        index,
        last,
        keys,
    })
}

/// A cursor over one message. Every read checks what is left first.
struct Reader {
    /// The message without its CRC.
    bytes: Bytes,
    position: usize,
}

impl Reader {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn bytes(&mut self, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        if len > self.remaining() {
            return Err(DecodeError::Truncated {
                field,
                offset: self.position,
                needed: len,
                available: self.remaining(),
            });
        }
        let slice = self.bytes.slice(self.position..self.position + len);
        self.position += len;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let slice = self.bytes(N, field)?;
        Ok(slice[..].try_into().expect("N bytes"))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.array(field).map(u16::from_le_bytes)
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.array(field).map(u32::from_le_bytes)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A level or depth: at most [`DEPTH_MAX`].
    fn depth(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        let offset = self.position;
        let depth = self.u8(field)?;
        if depth > DEPTH_MAX {
            return Err(self.invalid(field, depth, offset, "beyond the deepest level"));
        }
        Ok(depth)
    }

    /// A flags byte with no bits but `known`.
    fn flags(&mut self, field: &'static str, known: u8) -> Result<u8, DecodeError> {
        let offset = self.position;
        let flags = self.u8(field)?;
        if flags & !known != 0 {
            return Err(self.invalid(field, flags, offset, "unknown flag bits"));
        }
        Ok(flags)
    }

    /// A count of entries of at least `entry_bytes` each: within `max`, and within the
    /// bytes left, so that a lying count allocates nothing.
    fn count(
        &mut self,
        field: &'static str,
        max: u32,
        entry_bytes: usize,
    ) -> Result<usize, DecodeError> {
        let count = self.u32(field)?;
        if count > max {
            return Err(DecodeError::OverLimit {
                field,
                value: count as u64,
                max: max as u64,
            });
        }
        let needed = (count as usize).saturating_mul(entry_bytes);
        if needed > self.remaining() {
            return Err(DecodeError::Truncated {
                field,
                offset: self.position,
                needed,
                available: self.remaining(),
            });
        }
        Ok(count as usize)
    }

    fn invalid(
        &self,
        field: &'static str,
        value: impl Into<u64>,
        offset: usize,
        why: &'static str,
    ) -> DecodeError {
        DecodeError::Invalid {
            field,
            value: value.into(),
            offset,
            why,
        }
    }
}
