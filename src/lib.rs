//! ringkv: a Dynamo-style distributed key-value store, thread-per-core and
//! shared-nothing on glommio (io_uring).
//!
//! # Layout
//!
//! - [`config`]    every limit, timeout and size, with its default and the reason for it
//! - [`error`]     the crate error, start-up errors, and the status a client sees
//! - [`ring`]      token hash (xxh3), token → owner lookup, shard token allocation; the
//!   cluster ring (preference lists over distinct nodes, racks and DCs) and balanced
//!   token allocation for a joining node
//! - [`membership`] the member table, the gossip exchange that carries it with every
//!   heartbeat and load ([`membership::gossip`]), the ring snapshot every shard routes
//!   with, and the failure detector ([`membership::detector`]: phi-accrual suspicion,
//!   Down only when a second source confirms); decide-only, driven by the caller's
//!   clock: the server's control plane and the simulator run them
//! - [`sim`]       the deterministic simulator: five nodes of the real gossip,
//!   detector, placement, quorum, version and hint logic over a simulated network,
//!   disk and clock (drops, delays, partitions, crashes that lose unsynced data,
//!   pauses, power loss), clients checked by the history; a seed replays exactly
//! - [`history`]   recorded client operations and the checks over them: acknowledged
//!   writes lost, reads that missed an acknowledged write (simulator and fault tests)
//! - [`replication`] consistency levels, quorum tracking for writes and reads, the
//!   merge of replicas' answers and the stale replicas read repair writes to, and where
//!   a write goes when replicas are Down (sloppy or strict quorum, with hints)
//! - [`antientropy`] Merkle trees of the ranges a shard replicates (leaf sums updated
//!   in O(1) per write), the level-by-level comparison of two replicas' trees and the
//!   keys each must send; decide-only, with its message codec (the server's driver is
//!   [`server::antientropy`])
//! - [`version`]   dotted version vector sets: siblings, contexts, merge laws, encoding;
//!   last-write-wins (`--conflicts lww`) as one pseudo-node's dots under the same merge
//! - [`protocol`]  binary protocol v1: frame header, requests, responses (docs/protocol.md);
//!   [`protocol::resp`], the Redis protocol's command parser and RESP2/3 replies
//! - [`storage`]   per-shard LSM engine: direct-I/O commit log, memtables, SSTables,
//!   manifest, block cache, size-tiered compaction; node metadata; the durable hint
//!   log ([`storage::hint_log`])
//! - [`runtime`]   start-up checks, one executor per shard (pinned, polling before it
//!   sleeps), cross-shard messages, outbox, socket reads/writes (readiness through one
//!   epoll instance per executor, not an io_uring poll per read), and the watchdog that
//!   wakes an executor glommio left asleep
//! - [`server`]    listeners, connections, dispatch (local, or forwarded to the owner);
//!   the coordinator, the control plane (gossip, failure detector), hinted handoff
//!   ([`server::handoff`]: hints kept and replayed), anti-entropy
//!   ([`server::antientropy`]: trees kept by the engine's change hook, SYNC rounds and
//!   `ringkv repair`, the proof that lets compaction drop a tombstone, the fill of a
//!   `--replace` node), fault injection ([`server::faults`]);
//!   [`server::resp`], the Redis front end (`--resp-port`, docs/resp.md) whose GET, SET and
//!   DEL run through the same dispatch and coordinator
//! - [`client`]    Rust client: async, pipelined, shard-aware; and a blocking one
//! - [`loadgen`]   `ringkv bench`: YCSB workloads (scrambled zipfian, latest) on ringkv
//!   or Redis (a pipelined RESP2 client), closed or open loop with latency from intended
//!   send times, rate sweeps; summary, hgrm, JSON and SVG reports; and `ringkv
//!   bench-engine`, one shard's engine alone, db_bench style; `ringkv bench-disk`,
//!   glommio's O_DIRECT read against pread
//! - [`local`]     `ringkv local --nodes 3`: a cluster of server processes on loopback
//! - [`status`]    `ringkv status`: the cluster as one node knows it, nodetool style
//! - [`inspect`]   `ringkv commitlog dump` / `ringkv sstable dump` for operators
//!
//! # A write, walked through
//!
//! 1. A client sends a PUT frame to any shard's port ([`protocol`]).
//! 2. That shard's connection reader ([`server::connection`]) decodes it and asks
//!    [`server::dispatch::route`] which shard owns the key: `xxh3(key)` looked up in the
//!    node's [`ring::ShardMap`]. If another shard owns it, the request crosses as a
//!    [`runtime::ShardMsg::Forward`] and the encoded response comes back the same way.
//! 3. On the owner, [`storage::Engine::write`] holds the key, reads its stored version
//!    set (memtables, else the SSTables whose filters admit the key), lets [`version::VersionSet::coordinate`] make the new one (the client's
//!    context says which versions it supersedes), appends it to the shard's commit log
//!    and — under `batch` sync — waits for the group commit's fdatasync. Under
//!    `--conflicts lww` it skips the lock and the read: the new set is the value under
//!    the shard's clock ([`version::VersionSet::last_write`]), and the context is ignored.
//! 4. The new set enters the memtable (flushed to an SSTable once full, in the
//!    background); the response (with the new context) goes back
//!    through the connection's [`runtime::outbox::Outbox`].
//!
//! # A read, walked through
//!
//! Steps 1–2 as above; the owning shard answers a GET at once when memory can
//! ([`server::dispatch::answer_at_once`]: a memtable holds the key, or no SSTable's
//! filter admits it), else in a task that reads the SSTables through the block cache
//! ([`storage::Engine::get`]). The answer is every live sibling and the context to
//! write with. Tombstones are never returned; a key that has only tombstones is NOT_FOUND but
//! still carries a context, so a later write supersedes the delete.

pub mod antientropy;
pub mod client;
pub mod config;
pub mod error;
pub mod history;
pub mod inspect;
pub mod loadgen;
pub mod local;
pub mod membership;
pub mod protocol;
pub mod replication;
pub mod ring;
pub mod runtime;
pub mod server;
pub mod sim;
pub mod status;
pub mod storage;
pub mod version;

#[cfg(test)]
mod test_support;
