//! Versions of one key: dotted version vector sets (DVVSet), and their byte encodings.
//!
//! Owns the causal bookkeeping of a key — which versions supersede which, which are
//! siblings — and two formats: the stored/replicated [`VersionSet`] and the client's
//! opaque [`Context`]. Never touches I/O, clocks, the ring or membership: callers pass in
//! the coordinating node's id and the wall-clock timestamp, and get values back.
//!
//! # What a DVVSet is
//!
//! Almeida, Baquero et al., "Scalable and Accurate Causality Tracking for Eventually
//! Consistent Stores" (2014), as shipped in Riak's `dvvset.erl`. Every write is an
//! *event* named by a *dot* `(node, n)`: the `n`-th write that `node` coordinated for
//! this key. A key's set is a list of entries sorted by node id:
//!
//! ```text
//! (node, counter, values)    values = [value of (node, counter), value of (node, counter-1), ...]
//! ```
//!
//! The entry says two things. The set has *seen* dots `(node, 1..=counter)` (this half,
//! over all entries, is an ordinary version vector: [`VersionSet::context`]). And it
//! still *holds* the values of the newest `values.len()` of them; the older ones, up to
//! the entry's *floor* `counter - values.len()`, were superseded by a write whose
//! context covered them. Values of one node are always a contiguous newest run, because a
//! context is a version vector: covering `(i, k)` covers every `(i, j <= k)`.
//!
//! Compared with one version vector per sibling, this needs one dot per value and one
//! counter per node, and it stays accurate when one coordinator serves many clients:
//! two clients writing through the same node without seeing each other's write get two
//! dots and stay siblings, instead of one clobbering the other (the lost update that
//! per-server vector clocks cause).
//!
//! *Anonymous values* are values that carry a context but no dot yet. They exist inside
//! [`VersionSet::coordinate`] only (every set it returns has none); the format and
//! [`VersionSet::sync`] still handle them so that a decoded set is never misread.
//!
//! # The rule every caller must keep: dots are unique
//!
//! A dot names one value forever. Only `node` mints dots `(node, _)`, in
//! [`VersionSet::coordinate`], from the counter of the set passed as `stored`; so
//! `stored` must be the coordinating node's own, durable replica of the key (never an
//! empty stand-in, never another node's copy). Node ids are random per data directory
//! (DESIGN.md §5), so a wiped disk never reuses counters. A node whose entry holds no
//! values takes its next counter from its shard's clock (microseconds, above every
//! counter it minted), so even an entry dropped by [`VersionSet::prune`] is never
//! counted again. Everything below (the merge laws included) assumes this.
//!
//! # The context is opaque
//!
//! A read returns the encoded version vector of what it saw ([`Context::encode`]); the
//! client sends the same bytes back with its write, and the write supersedes exactly
//! the versions the context covers. Clients never parse it: it carries a format byte so
//! the server may change it, it holds no values (16 bytes per node, whatever the value
//! sizes), and a client in any language only has to copy bytes. The server treats it as
//! untrusted input: [`Context::decode`] checks order, lengths and counter range
//! ([`CONTEXT_COUNTER_MAX`], so no client can push a key's counter near overflow).
//!
//! # Decision: a write without context is concurrent with what is stored
//!
//! An empty context (zero bytes) covers nothing, so the new value becomes a sibling of
//! every stored value rather than overwriting them. The alternative — a blind write
//! replaces everything — silently loses whatever the writer never saw, which DESIGN.md
//! §1 forbids. A client that means to overwrite reads first (or the cluster runs
//! last-write-wins over [`Versioned::timestamp_us`]). The cost: blind writes pile up
//! siblings, so the layer above must bound them ([`VersionSet::check_limits`]).
//!
//! # Last write wins: one pseudo-node, the same merge
//!
//! A node started with `--conflicts lww` ([`ConflictMode::Lww`]) trades siblings for
//! blind writes: a write needs no read of what is stored, so it costs a log append and
//! a memtable insert, and a concurrent write is silently lost to the newer one (the
//! data-loss trade-off of Cassandra's and Riak's `last_write_wins`). Such a key's set is
//! [`VersionSet::last_write`]: one entry of the pseudo-node [`LWW_NODE`] whose counter is
//! the write's *clock*, with the value as its only dot. [`VersionSet::sync`] then *is*
//! last-write-wins: of two such entries the one with the larger counter holds every
//! dot above the joined floor (`counter_max - 1`), so exactly the newest value survives.
//! Memtables, table reads, compaction and replica merges need no code of their own.
//!
//! The clock is a hybrid clock the storage engine keeps per shard: `max(wall clock µs,
//! last clock + 1)`, never below what the shard has stored (it keeps a floor across
//! restarts). So dots stay unique, a newer write on a shard always has the larger
//! counter, and a wall clock that steps back cannot make a later write lose to an
//! earlier one. Clients' contexts are ignored by such writes. Real node ids are odd
//! (`storage::node_meta`), so [`LWW_NODE`] (0) never names a real node. A node keeps
//! the mode it was created with (`node.meta` records it).
//!
//! # Files
//!
//! - `dvvset.rs`: [`VersionSet`], the write ([`VersionSet::coordinate`]), the merge
//!   ([`VersionSet::sync`], with its laws) and the comparisons.
//! - `context.rs`: [`Context`] and its format.
//! - `codec.rs`: the byte layout of a [`VersionSet`] (drawn there) and its decoder.
//! - `prune.rs`: [`Pruning`], the rule that bounds a key's clock (DESIGN.md §5), and
//!   why it loses no write.

mod codec;
mod context;
mod dvvset;
mod prune;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use bytes::Bytes;

pub use codec::{COUNTER_MAX, COUNT_MAX, VALUE_BYTES_MAX};
pub use context::{Context, Supersedes, CONTEXT_COUNTER_MAX, CONTEXT_FORMAT, CONTEXT_OVERWRITE};
pub use dvvset::{Causality, VersionSet, LWW_NODE};
pub use prune::Pruning;

/// A node's identity in dots: random, created on the node's first start and kept in its
/// data directory (DESIGN.md §5).
pub type NodeId = u64;

/// How a node settles concurrent writes to one key (`--conflicts`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConflictMode {
    /// Dotted version vectors: concurrent writes are kept as siblings (the default).
    #[default]
    Dvv,
    /// Last write wins by the shard's hybrid clock: blind writes, no siblings, a
    /// concurrent write is lost (module doc, "Last write wins").
    Lww,
}

impl ConflictMode {
    /// The name on the command line and in messages.
    pub fn name(self) -> &'static str {
        match self {
            ConflictMode::Dvv => "dvv",
            ConflictMode::Lww => "lww",
        }
    }
}

/// One version of a key's value.
///
/// The derived order (timestamp, then bytes) exists only to keep anonymous values in a
/// canonical order; it says nothing about causality.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Versioned {
    /// Coordinator's wall clock when the write was made (microseconds since the Unix
    /// epoch): for last-write-wins and for display, never for causality.
    pub timestamp_us: u64,
    /// The value; `None` is a tombstone (a delete is a version too, so that it can
    /// supersede and be superseded like any write).
    pub value: Option<Bytes>,
}

impl Versioned {
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }
}

/// The wall clock as [`Versioned::timestamp_us`] counts it (0 before the epoch).
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Why a context or version set could not be decoded or encoded. Every message says
/// which field was wrong and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("{what} truncated at byte {offset}: needs {needed} bytes, {available} left")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        available: usize,
    },
    #[error("context format {found} is unknown (this server reads format {CONTEXT_FORMAT})")]
    UnknownContextFormat { found: u8 },
    #[error("{what}: node ids must increase strictly, but node {next} follows node {prev}")]
    NodesOutOfOrder {
        what: &'static str,
        prev: NodeId,
        next: NodeId,
    },
    #[error("{what}: node {node} has counter {counter}, outside 1..={max}")]
    CounterOutOfRange {
        what: &'static str,
        node: NodeId,
        counter: u64,
        max: u64,
    },
    #[error(
        "version set: node {node} holds {value_count} values but has seen only {counter} events"
    )]
    MoreValuesThanEvents {
        node: NodeId,
        counter: u64,
        value_count: u16,
    },
    #[error(
        "version set: value kind {kind} at byte {offset} is unknown (0 = tombstone, 1 = value)"
    )]
    UnknownValueKind { kind: u8, offset: usize },
    #[error(
        "version set: anonymous value {index} is out of canonical order (sorted, no duplicates)"
    )]
    AnonymousOutOfOrder { index: usize },
    #[error("context: {extra} bytes follow the last entry")]
    TrailingBytes { extra: usize },
    #[error("version set too large to encode: {what} is {count}, the format allows {max}")]
    TooLarge {
        what: &'static str,
        count: usize,
        max: usize,
    },
}
