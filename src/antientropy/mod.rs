//! Anti-entropy, the decide half (issue 7): Merkle trees of the token ranges a shard
//! replicates, the comparison of two replicas' trees, and which keys each must send.
//!
//! Owns: the tree of one range and its incremental update ([`merkle`]), the exchange
//! state machines and the key diff ([`exchange`]), the bytes of their messages
//! ([`codec`]). Never touches storage, sockets, clocks or the ring: the caller hands in
//! contributions, snapshots and messages, and carries out what comes back. So the
//! server and the simulator (`src/sim`) drive the same code.
//!
//! # The tree
//!
//! One tree per (shard, vnode range it replicates): the ring's ranges `(token[i-1],
//! token[i]]` are the unit every replica of a key agrees on (`ring::cluster`), whereas
//! the union of ranges one shard replicates differs from replica to replica. A key
//! contributes `xxh3(key_len | key | encoded version set)` (the commit log's PUT
//! payload, so the engine hashes bytes it already has); a leaf is the wrapping *sum* of
//! its keys' contributions, an inner node the sum of its children. A write moves one
//! leaf in O(1) (16 ns measured); inner nodes are summed when a sync takes a snapshot
//! (10 µs at the default depth); trees of different depths compare at the smaller
//! one. `merkle.rs` says why sums, and how a leaf whose old contribution is unknown is
//! marked dirty and rebuilt.
//!
//! # Default depth: 14 (16 384 leaves)
//!
//! A shard replicates about `N × vnodes_per_shard` ranges (48 with N = 3 and 16
//! vnodes per shard, whatever the cluster size), so what counts is keys *per range*:
//! 1M keys on a shard are ~21k per tree.
//!
//! - **Keys per leaf**: ~1.3 at 21k keys per tree (1M per shard), ~6 for the 100k keys
//!   of one tree in the bytes test, ~61 for 1M keys in one tree.
//! - **Memory**: 8 bytes and 2 bits per leaf: 132 KiB per tree, ~6.2 MiB per shard of
//!   48 trees; a snapshot adds 256 KiB per sync in flight.
//! - **Bytes**: an isolated difference costs ~20 bytes per level on the way down plus
//!   its leaf's key list (~20–30 bytes per key): about `20·d + 25·k/2^d` for `k` keys
//!   in the tree, smallest near `2^d ≈ k`, and flat around it. Measured for 21k keys
//!   per tree (`exchange_tests.rs`), bytes per divergent key at 0.1 % / 1 %: depth 12:
//!   314 / 231, 13: 285 / 198, **14: 286 / 197**, 15: 292 / 200, 16: 314 / 218. So 14
//!   sits at the optimum, and 15 or 16 would cost 2–4× the memory for nothing. With
//!   many more keys per tree the leaf lists grow (100k keys in one tree: 313 bytes per
//!   divergent key at 14, 268 at 16); trees of different depths compare, so the depth
//!   can follow the data later without a flag day.
//!
//! # Updates: which path the engine takes
//!
//! The engine reports every change (`storage::engine::KeyChange`) and the server's
//! driver (`server::antientropy`) applies it:
//!
//! - `dvv` writes read the stored set under the key's lock, and replica writes and
//!   sync merges ([`crate::storage::Engine::merge`]) are read-merge-write in both modes:
//!   both contributions are known, [`MerkleTree::update`]`(token, old, new)`.
//! - `lww` writes are blind: [`MerkleTree::mark_dirty`]. The next sync descends into
//!   the leaf whatever its sum (the snapshot poisons it), lists its keys from storage
//!   and hands them to [`MerkleTree::finish_rebuild`] (void if the leaf was written
//!   meanwhile).
//! - A flush's clock pruning and a compaction's purge rewrite a key's stored set:
//!   `mark_dirty` too.
//!
//! # What the driver does (`server::antientropy`)
//!
//! - **Where trees live**: in the shard, one per vnode range it replicates under the
//!   current ring snapshot; a ring change that moves the shard's ranges builds them
//!   again from storage (one scan, in the background; writes meanwhile mark leaves
//!   dirty).
//! - **A sync**: `tree.snapshot(random)`, [`Session::open`], [`Open`] and [`Descend`]
//!   in SYNC frames ([`encode`]), the peer answering with [`Session::accept`] and
//!   `on_descend`. Then both sides list the differing leaves' keys from one scan each
//!   (the peer in pages of its own format, not [`LeafKeys`]), [`diff_keys`] says what
//!   to push and fetch, and every receiver merges.
//! - **Not done**: incoming sets are merged unpruned (clock pruning applies on the way
//!   into a table), and the simulator does not run syncs yet.
//!
//! # Files
//!
//! - `merkle.rs`: [`TokenRange`], [`Shape`], [`contribution`], [`MerkleTree`],
//!   [`Snapshot`].
//! - `exchange.rs`: the messages, [`Session`] (initiator and responder),
//!   [`diff_keys`], [`comparison_cost`].
//! - `codec.rs`: the message bytes (drawn there), [`Limits`], [`DecodeError`].

pub mod codec;
pub mod exchange;
pub mod merkle;

#[cfg(test)]
mod codec_tests;
#[cfg(test)]
mod exchange_tests;
#[cfg(test)]
mod merkle_tests;

pub use codec::{decode, encode, DecodeError, Limits};
pub use exchange::{
    comparison_cost, diff_keys, Accept, Answer, Cost, Descend, ExchangeError, KeyDiff, KeyDigest,
    LeafKeys, Message, Open, Pair, Refuse, RefuseReason, Session,
};
pub use merkle::{
    contribution, contribution_of_payload, MerkleTree, RebuildTicket, Shape, Snapshot, TokenRange,
    DEPTH_MAX,
};

/// Depth of a new tree (module doc, "Default depth").
pub const DEPTH_DEFAULT: u8 = 14;

/// How trees hash keys and place them in leaves: the contribution ([`contribution`]
/// with its seed) and the leaf of a token ([`Shape::node_of`]). Trees of two formats
/// cannot be compared (every leaf would differ); a responder refuses.
pub const TREE_FORMAT: u8 = 1;
