//! Client requests: the consistency byte, the request bodies, and their codec.
//!
//! ```text
//! PING       (empty)
//! GET        level u8 | key_len u16 | key
//! PUT        level u8 | key_len u16 | key | context_len u16 | context | value_len u32 | value
//! DELETE     level u8 | key_len u16 | key | context_len u16 | context
//! SHARD_MAP  (empty)
//! REPLICA_WRITE  key_len u16 | key | set_len u32 | version set (docs/storage.md)
//! REPLICA_READ   key_len u16 | key
//! MEMBERS        exchange_len u32 | gossip exchange (postcard; empty: a client asking)
//! NODE_STATUS    (empty)
//! HINT_WRITE     target u64 | key_len u16 | key | set_len u32 | version set
//! CLUSTER_STATUS (empty)
//! FAULT          spec_len u32 | fault spec (postcard)
//! SYNC           shard u16 | body_len u32 | anti-entropy step (server::antientropy::wire)
//! REPAIR         shard u16 (0xffff: every shard of the node)
//! COMPACT        shard u16 (0xffff: every shard of the node)
//! ```
//!
//! The level byte is the consistency (R or W) and, in bit 0x40, the quorum mode:
//! set = strict. Reads always count only the preference list, so GET refuses the bit.
//!
//! REPLICA_WRITE, REPLICA_READ and HINT_WRITE are the internal protocol: nodes send
//! them to each other's owning shards. The version set travels as opaque bytes here;
//! the replica decodes (and so checks) it before it merges anything.

use bytes::Bytes;

use super::codec::{check_context_len, put_bytes_u16, put_bytes_u32, put_context, Reader};
use super::frame::{begin_frame, check_header_matches_body, finish_frame};
use super::{opcode, FrameHeader, Limits, RequestError};

/// How many replicas must answer a read or acknowledge a write (R or W).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Consistency {
    /// Whatever the server is configured with. Wire `0x00`.
    Default,
    /// One replica. Wire `0x01`.
    One,
    /// A majority of the N replicas. Wire `0x02`.
    Quorum,
    /// All N replicas. Wire `0x03`.
    All,
    /// Exactly this many replicas, 1..=127. Wire `0x80 | n`.
    Count(u8),
}

/// Bit that marks an explicit replica count in the consistency byte.
const CONSISTENCY_COUNT_BIT: u8 = 0x80;
/// Bit of the level byte that asks for strict quorum.
const STRICT_BIT: u8 = 0x40;

/// Which replicas a write's acknowledgements may come from (DESIGN.md §6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum QuorumMode {
    /// The preferred replicas that are Up, and a stand-in (the next Up node past the
    /// preference list, keeping a hint) for each that is Down. Wire: bit 0x40 clear.
    #[default]
    Sloppy,
    /// The preferred replicas only: a write that cannot reach W of them is refused.
    /// Wire: bit 0x40 set.
    Strict,
}

/// The level byte: consistency, and the quorum mode in [`STRICT_BIT`].
pub fn level_from_u8(byte: u8) -> Result<(Consistency, QuorumMode), RequestError> {
    let mode = if byte & STRICT_BIT != 0 {
        QuorumMode::Strict
    } else {
        QuorumMode::Sloppy
    };
    Ok((Consistency::from_u8(byte & !STRICT_BIT)?, mode))
}

/// The level byte of `consistency` under `mode`.
pub fn level_to_u8(consistency: Consistency, mode: QuorumMode) -> u8 {
    let strict = if mode == QuorumMode::Strict {
        STRICT_BIT
    } else {
        0
    };
    consistency.to_u8() | strict
}

impl Consistency {
    /// Largest explicit replica count the byte can carry (bit 0x40 is the quorum mode).
    pub const COUNT_MAX: u8 = 0x3F;

    /// Parses the consistency byte (bit 0x40 clear); reserved values are BadRequest.
    pub fn from_u8(byte: u8) -> Result<Consistency, RequestError> {
        match byte {
            0 => Ok(Consistency::Default),
            1 => Ok(Consistency::One),
            2 => Ok(Consistency::Quorum),
            3 => Ok(Consistency::All),
            CONSISTENCY_COUNT_BIT => Err(RequestError::bad_request(
                "consistency 0x80 asks for 0 replicas; counts are 1..=63",
            )),
            count if count & CONSISTENCY_COUNT_BIT != 0 && count & STRICT_BIT == 0 => {
                Ok(Consistency::Count(count & !CONSISTENCY_COUNT_BIT))
            }
            other => Err(RequestError::bad_request(format!(
                "unknown consistency 0x{other:02x}; expected 0..=3 or 0x80|n with n in 1..=63, \
                 plus 0x40 for strict quorum"
            ))),
        }
    }

    /// The wire byte. Panics on `Count(0)` or a count over 127, which no byte can
    /// carry: check user input with [`Request::validate`] first.
    pub fn to_u8(self) -> u8 {
        match self {
            Consistency::Default => 0,
            Consistency::One => 1,
            Consistency::Quorum => 2,
            Consistency::All => 3,
            Consistency::Count(count) => {
                assert!(
                    Consistency::count_fits(count),
                    "replica count {count} is not in 1..=63"
                );
                CONSISTENCY_COUNT_BIT | count
            }
        }
    }

    fn count_fits(count: u8) -> bool {
        (1..=Consistency::COUNT_MAX).contains(&count)
    }
}

/// A decoded client request. Keys, contexts and values are zero-copy slices of the
/// frame body they were decoded from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    Get {
        consistency: Consistency,
        key: Bytes,
    },
    Put {
        consistency: Consistency,
        quorum: QuorumMode,
        key: Bytes,
        /// Opaque causal context from an earlier read; empty = concurrent with all.
        context: Bytes,
        value: Bytes,
    },
    Delete {
        consistency: Consistency,
        quorum: QuorumMode,
        key: Bytes,
        /// Opaque causal context from an earlier read; empty = concurrent with all.
        context: Bytes,
    },
    ShardMap,
    /// Merge `versions` (an encoded version set) into this replica's copy of `key`.
    ReplicaWrite {
        key: Bytes,
        versions: Bytes,
    },
    /// This replica's version set for `key`.
    ReplicaRead {
        key: Bytes,
    },
    /// The sender's gossip exchange (`membership::Exchange`, encoded; empty from a
    /// client): the answer carries the receiver's after merging it.
    Members {
        table: Bytes,
    },
    NodeStatus,
    /// Keep `versions` for `key` as a hint for node `target` (this shard stands in
    /// for it under sloppy quorum) and hand it over once `target` is Up.
    HintWrite {
        target: u64,
        key: Bytes,
        versions: Bytes,
    },
    /// How this node sees the cluster: each member's status, phi, pending hints.
    ClusterStatus,
    /// Fault injection (`ringkv admin fault`): an encoded `server::faults::FaultSpec`.
    Fault {
        spec: Bytes,
    },
    /// One step of an anti-entropy exchange, for the peer's `shard`.
    Sync {
        shard: u16,
        body: Bytes,
    },
    /// Run an anti-entropy round on `shard` now ([`REPAIR_ALL_SHARDS`]: every shard).
    Repair {
        shard: u16,
    },
    /// Flush and merge every table of `shard` ([`REPAIR_ALL_SHARDS`]: every shard).
    Compact {
        shard: u16,
    },
}

/// REPAIR's shard for "every shard of the node".
pub const REPAIR_ALL_SHARDS: u16 = u16::MAX;

impl Request {
    /// The opcode this request is sent with.
    pub fn opcode(&self) -> u8 {
        match self {
            Request::Ping => opcode::PING,
            Request::Get { .. } => opcode::GET,
            Request::Put { .. } => opcode::PUT,
            Request::Delete { .. } => opcode::DELETE,
            Request::ShardMap => opcode::SHARD_MAP,
            Request::ReplicaWrite { .. } => opcode::REPLICA_WRITE,
            Request::ReplicaRead { .. } => opcode::REPLICA_READ,
            Request::Members { .. } => opcode::MEMBERS,
            Request::NodeStatus => opcode::NODE_STATUS,
            Request::HintWrite { .. } => opcode::HINT_WRITE,
            Request::ClusterStatus => opcode::CLUSTER_STATUS,
            Request::Fault { .. } => opcode::FAULT,
            Request::Sync { .. } => opcode::SYNC,
            Request::Repair { .. } => opcode::REPAIR,
            Request::Compact { .. } => opcode::COMPACT,
        }
    }

    /// Runs the checks a server would run on this request, so a client can refuse
    /// bad input before [`encode_request`] (which panics on unencodable fields).
    pub fn validate(&self, limits: &Limits) -> Result<(), RequestError> {
        match self {
            Request::Ping | Request::ShardMap | Request::NodeStatus | Request::ClusterStatus => {
                Ok(())
            }
            Request::Get { consistency, key } => {
                check_consistency(*consistency)?;
                check_key_len(key.len(), limits)
            }
            Request::Put {
                consistency,
                key,
                context,
                value,
                ..
            } => {
                check_consistency(*consistency)?;
                check_key_len(key.len(), limits)?;
                check_context_len(context.len())?;
                check_value_len(value.len(), limits)
            }
            Request::Delete {
                consistency,
                key,
                context,
                ..
            } => {
                check_consistency(*consistency)?;
                check_key_len(key.len(), limits)?;
                check_context_len(context.len())
            }
            Request::ReplicaWrite { key, versions } => {
                check_key_len(key.len(), limits)?;
                check_set_len(versions.len(), limits)
            }
            Request::ReplicaRead { key } => check_key_len(key.len(), limits),
            Request::Members { table } => check_set_len(table.len(), limits),
            Request::HintWrite { key, versions, .. } => {
                check_key_len(key.len(), limits)?;
                check_set_len(versions.len(), limits)
            }
            Request::Fault { spec } => check_set_len(spec.len(), limits),
            Request::Sync { body, .. } => check_set_len(body.len(), limits),
            Request::Repair { .. } | Request::Compact { .. } => Ok(()),
        }
    }
}

fn check_set_len(len: usize, limits: &Limits) -> Result<(), RequestError> {
    if len as u64 > u64::from(limits.frame_bytes_max) {
        return Err(RequestError::too_large(format!(
            "version set is {len} bytes, frame limit {}",
            limits.frame_bytes_max
        )));
    }
    Ok(())
}

fn check_consistency(consistency: Consistency) -> Result<(), RequestError> {
    match consistency {
        Consistency::Count(count) if !Consistency::count_fits(count) => Err(
            RequestError::bad_request(format!("replica count {count} is not in 1..=63")),
        ),
        _ => Ok(()),
    }
}

fn check_key_len(len: usize, limits: &Limits) -> Result<(), RequestError> {
    if len == 0 {
        return Err(RequestError::bad_request(format!(
            "empty key; keys are 1..={} bytes",
            limits.key_bytes_max
        )));
    }
    if len > limits.key_bytes_max as usize {
        return Err(RequestError::too_large(format!(
            "key is {len} bytes, limit {}",
            limits.key_bytes_max
        )));
    }
    Ok(())
}

fn check_value_len(len: usize, limits: &Limits) -> Result<(), RequestError> {
    if len > limits.value_bytes_max as usize {
        return Err(RequestError::too_large(format!(
            "value is {len} bytes, limit {}",
            limits.value_bytes_max
        )));
    }
    Ok(())
}

/// Decodes the body of a request frame. `body` must be the `header.body_len` bytes
/// that followed `header`. Never panics; every failure names what was wrong.
pub fn decode_request(
    header: &FrameHeader,
    body: Bytes,
    limits: &Limits,
) -> Result<Request, RequestError> {
    check_request_frame(header, &body, limits)?;
    let mut reader = Reader::new(body);
    let request = match header.opcode {
        opcode::PING => Request::Ping,
        opcode::GET => {
            let (consistency, quorum) = read_level(&mut reader)?;
            if quorum == QuorumMode::Strict {
                return Err(RequestError::bad_request(
                    "GET with the strict-quorum bit (0x40): reads always count only the \
                     key's preferred replicas, so the bit is for PUT and DELETE",
                ));
            }
            let key = read_key(&mut reader, limits)?;
            Request::Get { consistency, key }
        }
        opcode::PUT => {
            let (consistency, quorum) = read_level(&mut reader)?;
            let key = read_key(&mut reader, limits)?;
            let context = reader.context()?;
            let value = read_value(&mut reader, limits)?;
            Request::Put {
                consistency,
                quorum,
                key,
                context,
                value,
            }
        }
        opcode::DELETE => {
            let (consistency, quorum) = read_level(&mut reader)?;
            let key = read_key(&mut reader, limits)?;
            let context = reader.context()?;
            Request::Delete {
                consistency,
                quorum,
                key,
                context,
            }
        }
        opcode::SHARD_MAP => Request::ShardMap,
        opcode::NODE_STATUS => Request::NodeStatus,
        opcode::REPLICA_WRITE => {
            let key = read_key(&mut reader, limits)?;
            let len = reader.u32("set_len")? as usize;
            check_set_len(len, limits)?;
            let versions = reader.bytes(len, "version set")?;
            Request::ReplicaWrite { key, versions }
        }
        opcode::REPLICA_READ => Request::ReplicaRead {
            key: read_key(&mut reader, limits)?,
        },
        opcode::MEMBERS => {
            let len = reader.u32("exchange_len")? as usize;
            Request::Members {
                table: reader.bytes(len, "gossip exchange")?,
            }
        }
        opcode::HINT_WRITE => {
            let target = reader.u64("target")?;
            let key = read_key(&mut reader, limits)?;
            let len = reader.u32("set_len")? as usize;
            check_set_len(len, limits)?;
            let versions = reader.bytes(len, "version set")?;
            Request::HintWrite {
                target,
                key,
                versions,
            }
        }
        opcode::CLUSTER_STATUS => Request::ClusterStatus,
        opcode::FAULT => {
            let len = reader.u32("spec_len")? as usize;
            Request::Fault {
                spec: reader.bytes(len, "fault spec")?,
            }
        }
        opcode::SYNC => {
            let shard = reader.u16("shard")?;
            let len = reader.u32("body_len")? as usize;
            check_set_len(len, limits)?;
            Request::Sync {
                shard,
                body: reader.bytes(len, "sync body")?,
            }
        }
        opcode::REPAIR => Request::Repair {
            shard: reader.u16("shard")?,
        },
        opcode::COMPACT => Request::Compact {
            shard: reader.u16("shard")?,
        },
        other => {
            return Err(RequestError::bad_request(format!(
                "unknown opcode 0x{other:02x}"
            )))
        }
    };
    reader.finish()?;
    Ok(request)
}

fn check_request_frame(
    header: &FrameHeader,
    body: &Bytes,
    limits: &Limits,
) -> Result<(), RequestError> {
    check_header_matches_body(header, body)?;
    limits.check_body_len(header.body_len).map_err(|status| {
        RequestError::new(
            status,
            format!(
                "frame body is {} bytes, limit {}",
                header.body_len, limits.frame_bytes_max
            ),
        )
    })
}

fn read_level(reader: &mut Reader) -> Result<(Consistency, QuorumMode), RequestError> {
    level_from_u8(reader.u8("level")?)
}

fn read_key(reader: &mut Reader, limits: &Limits) -> Result<Bytes, RequestError> {
    let len = usize::from(reader.u16("key_len")?);
    check_key_len(len, limits)?;
    reader.bytes(len, "key")
}

fn read_value(reader: &mut Reader, limits: &Limits) -> Result<Bytes, RequestError> {
    let len = reader.u32("value_len")? as usize;
    check_value_len(len, limits)?;
    reader.bytes(len, "value")
}

/// Appends one whole request frame to `buf`. Panics if a field cannot be encoded
/// (key over 65535 bytes, context over 4096, `Count(0)`): run
/// [`Request::validate`] on user input first.
pub fn encode_request(request: &Request, request_id: u32, buf: &mut Vec<u8>) {
    let start = begin_frame(request.opcode(), request_id, buf);
    match request {
        Request::Ping | Request::ShardMap | Request::NodeStatus | Request::ClusterStatus => {}
        Request::Get { consistency, key } => {
            buf.push(consistency.to_u8());
            put_bytes_u16(buf, key, "key");
        }
        Request::Put {
            consistency,
            quorum,
            key,
            context,
            value,
        } => {
            buf.push(level_to_u8(*consistency, *quorum));
            put_bytes_u16(buf, key, "key");
            put_context(buf, context);
            put_bytes_u32(buf, value, "value");
        }
        Request::Delete {
            consistency,
            quorum,
            key,
            context,
        } => {
            buf.push(level_to_u8(*consistency, *quorum));
            put_bytes_u16(buf, key, "key");
            put_context(buf, context);
        }
        Request::ReplicaWrite { key, versions } => {
            put_bytes_u16(buf, key, "key");
            put_bytes_u32(buf, versions, "version set");
        }
        Request::ReplicaRead { key } => put_bytes_u16(buf, key, "key"),
        Request::Members { table } => put_bytes_u32(buf, table, "gossip exchange"),
        Request::HintWrite {
            target,
            key,
            versions,
        } => {
            buf.extend_from_slice(&target.to_le_bytes());
            put_bytes_u16(buf, key, "key");
            put_bytes_u32(buf, versions, "version set");
        }
        Request::Fault { spec } => put_bytes_u32(buf, spec, "fault spec"),
        Request::Sync { shard, body } => {
            buf.extend_from_slice(&shard.to_le_bytes());
            put_bytes_u32(buf, body, "sync body");
        }
        Request::Repair { shard } | Request::Compact { shard } => {
            buf.extend_from_slice(&shard.to_le_bytes())
        }
    }
    finish_frame(start, buf);
}

#[cfg(test)]
#[path = "message_tests.rs"]
mod tests;
