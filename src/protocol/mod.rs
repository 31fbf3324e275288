//! The binary client protocol, version 1: framing, request and response codecs.
//!
//! Owns the bytes on the wire and nothing else. Every function here is pure and
//! synchronous: it turns a header and a body (`bytes::Bytes`) into a typed message,
//! or appends a whole frame to a `Vec<u8>`. Reading from sockets, choosing what to
//! answer and closing connections belong to `server` and `client`; the layout itself
//! is drawn byte by byte in `docs/protocol.md`, and the golden-byte tests beside each
//! codec hold the same bytes as that document.
//!
//! How a frame is read (the server side; the client mirrors it with
//! [`decode_response`]):
//!
//! 1. read [`HEADER_LEN`] bytes, [`FrameHeader::decode`] them (bad magic or version:
//!    answer with opcode [`opcode::UNPARSED`] and close the connection);
//! 2. [`Limits::check_body_len`] before reading or allocating the body;
//! 3. read `body_len` bytes into one `Bytes` and [`decode_request`] it. Keys, contexts
//!    and values come out as zero-copy slices of that body.
//!
//! Decoding never panics on any input: every length field is checked against its
//! limit and against the bytes that remain before anything is sliced or allocated.
//! Encoding asserts what only a programmer can get wrong (a payload that does not
//! fit its length field, a body kind that does not match the status).
//!
//! Error discipline: a malformed request is a [`RequestError`] carrying the
//! [`Status`] to answer with and a message that says what was wrong and which limit
//! applied. The internal (cluster) protocol will share the framing and arrives with
//! replication.

pub(crate) mod codec;
mod frame;
mod message;
pub mod resp;
mod response;
mod shard_map;
mod status;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod test_support;

pub use frame::{
    FrameError, FrameHeader, Limits, CONTEXT_BYTES_MAX, FRAME_OVERHEAD_BYTES, HEADER_LEN,
    KEY_BYTES_MAX_DEFAULT, MAGIC, VALUE_BYTES_MAX_DEFAULT, VERSION,
};
pub use message::{
    decode_request, encode_request, level_from_u8, level_to_u8, Consistency, QuorumMode, Request,
    REPAIR_ALL_SHARDS,
};
pub use response::{
    decode_response, encode_error_response, encode_get_response, encode_response,
    encode_written_response, Response, ResponseBody, WireValue,
};
pub use shard_map::ShardMap;
pub use status::{RequestError, Status};

/// Opcodes of protocol v1. A response carries `request opcode | RESPONSE_BIT`.
pub mod opcode {
    /// Liveness check; empty body both ways.
    pub const PING: u8 = 0x01;
    /// Read one key.
    pub const GET: u8 = 0x02;
    /// Write one key, superseding the versions named by the context.
    pub const PUT: u8 = 0x03;
    /// Write a tombstone for one key.
    pub const DELETE: u8 = 0x04;
    /// Ask a node which shard owns which tokens and on which port it listens.
    pub const SHARD_MAP: u8 = 0x05;
    /// Internal: merge a version set into a replica's copy of a key (a coordinator's
    /// write, or read repair). Sent by nodes to the owning shard of a peer.
    pub const REPLICA_WRITE: u8 = 0x20;
    /// Internal: a replica's whole version set for a key, for a coordinator's read.
    pub const REPLICA_READ: u8 = 0x21;
    /// Internal: exchange member tables (push-pull); also how a client learns the ring.
    pub const MEMBERS: u8 = 0x22;
    /// How much data the node stores (for `ringkv status`).
    pub const NODE_STATUS: u8 = 0x23;
    /// Internal: keep a version set as a hint for another node (sloppy quorum's
    /// stand-in), to hand over when that node is Up.
    pub const HINT_WRITE: u8 = 0x24;
    /// How the node sees the cluster: status, phi and pending hints per member.
    pub const CLUSTER_STATUS: u8 = 0x25;
    /// Fault injection: drop or delay this node's internal traffic to chosen peers.
    pub const FAULT: u8 = 0x26;
    /// Internal: one step of an anti-entropy exchange with a shard of a peer (compare
    /// trees, list a leaf's keys, fetch sets); its body is drawn in docs/protocol.md.
    pub const SYNC: u8 = 0x27;
    /// Run an anti-entropy round now on one shard, or on every shard (`ringkv repair`).
    pub const REPAIR: u8 = 0x28;
    /// Flush the memtables and merge every table into one, on one shard or on every
    /// shard (`ringkv admin compact`).
    pub const COMPACT: u8 = 0x29;
    /// Set in every response opcode, so a response can never be taken for a request.
    pub const RESPONSE_BIT: u8 = 0x80;
    /// Opcode of the error frame sent when a header could not be parsed at all
    /// (bad magic or version); the connection is closed after it.
    pub const UNPARSED: u8 = 0xFF;

    /// The opcode of the response to `request_opcode`.
    pub const fn response(request_opcode: u8) -> u8 {
        request_opcode | RESPONSE_BIT
    }

    /// Whether `request_opcode` is one protocol v1 defines.
    pub const fn is_known(request_opcode: u8) -> bool {
        matches!(
            request_opcode,
            PING | GET
                | PUT
                | DELETE
                | SHARD_MAP
                | REPLICA_WRITE
                | REPLICA_READ
                | MEMBERS
                | NODE_STATUS
                | HINT_WRITE
                | CLUSTER_STATUS
                | FAULT
                | SYNC
                | REPAIR
                | COMPACT
        )
    }
}
