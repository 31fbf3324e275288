//! [`Context`]: the opaque causal context a client gets with a read and sends back.
//!
//! # Format (little-endian)
//!
//! | offset        | size | field     | type | meaning                                  |
//! |---------------|------|-----------|------|------------------------------------------|
//! | 0             | 1    | format    | u8   | [`CONTEXT_FORMAT`] (= 1)                 |
//! | 1             | 2    | count     | u16  | number of pairs that follow              |
//! | 3 + 16·i      | 8    | node_id   | u64  | pair `i`: node id, strictly increasing   |
//! | 3 + 16·i + 8  | 8    | counter   | u64  | pair `i`: dots `1..=counter` seen, `1..=`[`CONTEXT_COUNTER_MAX`] |
//!
//! Total `3 + 16 · count` bytes, nothing after. The empty byte string is also the
//! empty context: a client that has no context sends zero bytes. Every other input is
//! checked (format, lengths, order, counter range) before anything is allocated.

use super::codec::{Reader, COUNT_MAX};
use super::{NodeId, VersionError};

/// The only context format this server writes and reads.
pub const CONTEXT_FORMAT: u8 = 1;

/// A write context of this one byte is an *overwrite*: the write supersedes every
/// version the coordinating replica stores for the key when it makes the write, as if
/// the client had read that replica just before (what a Redis SET means). Versions
/// other replicas hold that the coordinator has not merged yet stay siblings.
pub const CONTEXT_OVERWRITE: u8 = 2;

/// What a write supersedes: the versions a client's context covers, or, for an
/// overwrite ([`CONTEXT_OVERWRITE`]), what the coordinating replica stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Supersedes {
    Seen(Context),
    Stored,
}

impl Supersedes {
    /// Parses a write's context bytes: `[CONTEXT_OVERWRITE]`, or a [`Context`].
    pub fn decode(bytes: &[u8]) -> Result<Supersedes, VersionError> {
        match bytes {
            [CONTEXT_OVERWRITE] => Ok(Supersedes::Stored),
            _ => Context::decode(bytes).map(Supersedes::Seen),
        }
    }
}

/// Largest counter a client's context may carry: 2^62. Stored counters grow by one per
/// write, or jump to the shard's clock (microseconds since the epoch, about 2^51), so a
/// context at the limit still leaves 2^62 writes before a stored set reaches
/// [`super::COUNTER_MAX`] (2^63); no client can push a key toward overflow.
pub const CONTEXT_COUNTER_MAX: u64 = 1 << 62;

const FORMAT_OFFSET: usize = 0;
const COUNT_OFFSET: usize = FORMAT_OFFSET + size_of::<u8>();
const PAIRS_OFFSET: usize = COUNT_OFFSET + size_of::<u16>();
const PAIR_BYTES: usize = size_of::<u64>() + size_of::<u64>();

/// A version vector `[(node, counter)]`, sorted by node, no duplicates, counters >= 1:
/// the events a client had seen when it read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Context(Vec<(NodeId, u64)>);

impl Context {
    /// The context of a client that has read nothing: a write with it supersedes nothing.
    pub fn empty() -> Context {
        Context(Vec::new())
    }

    /// Built from pairs the caller keeps sorted, unique and non-zero (a set's entries).
    pub(crate) fn from_sorted(pairs: Vec<(NodeId, u64)>) -> Context {
        debug_assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
        debug_assert!(pairs.iter().all(|&(_, counter)| counter >= 1));
        Context(pairs)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The `(node, counter)` pairs, sorted by node.
    pub fn pairs(&self) -> &[(NodeId, u64)] {
        &self.0
    }

    /// Events of `node` this context has seen (0 if none).
    pub fn counter(&self, node: NodeId) -> u64 {
        self.0
            .binary_search_by_key(&node, |&(n, _)| n)
            .map_or(0, |i| self.0[i].1)
    }

    /// Bytes [`Context::encode`] produces.
    pub fn encoded_len(&self) -> usize {
        PAIRS_OFFSET + self.0.len() * PAIR_BYTES
    }

    /// The opaque bytes a read hands the client (format above).
    ///
    /// Panics past [`COUNT_MAX`] pairs: contexts come from sets, whose entry count
    /// [`super::VersionSet::check_limits`] bounds the same way.
    pub fn encode(&self) -> Vec<u8> {
        assert!(
            self.0.len() <= COUNT_MAX,
            "context of {} pairs does not fit the format",
            self.0.len()
        );
        let mut buf = Vec::with_capacity(self.encoded_len());
        buf.push(CONTEXT_FORMAT);
        buf.extend_from_slice(&(self.0.len() as u16).to_le_bytes());
        for &(node, counter) in &self.0 {
            buf.extend_from_slice(&node.to_le_bytes());
            buf.extend_from_slice(&counter.to_le_bytes());
        }
        debug_assert_eq!(buf.len(), self.encoded_len());
        buf
    }

    /// Parses a client's context. Empty input is the empty context; anything else must
    /// be exactly one well-formed context (format above), or it is refused.
    pub fn decode(bytes: &[u8]) -> Result<Context, VersionError> {
        if bytes.is_empty() {
            return Ok(Context::empty());
        }
        let mut r = Reader::new(bytes);
        let format = r.u8("context format")?;
        if format != CONTEXT_FORMAT {
            return Err(VersionError::UnknownContextFormat { found: format });
        }
        let count = usize::from(r.u16("context count")?);
        r.need(count * PAIR_BYTES, "context pairs")?;
        let mut pairs: Vec<(NodeId, u64)> = Vec::with_capacity(count);
        for _ in 0..count {
            let node = r.u64("context node id")?;
            let counter = r.u64("context counter")?;
            if let Some(&(prev, _)) = pairs.last() {
                if prev >= node {
                    return Err(VersionError::NodesOutOfOrder {
                        what: "context",
                        prev,
                        next: node,
                    });
                }
            }
            if !(1..=CONTEXT_COUNTER_MAX).contains(&counter) {
                return Err(VersionError::CounterOutOfRange {
                    what: "context",
                    node,
                    counter,
                    max: CONTEXT_COUNTER_MAX,
                });
            }
            pairs.push((node, counter));
        }
        if r.remaining() > 0 {
            return Err(VersionError::TrailingBytes {
                extra: r.remaining(),
            });
        }
        Ok(Context(pairs))
    }
}
