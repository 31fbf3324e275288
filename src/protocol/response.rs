//! Responses: `status u8 | message_len u16 | message (UTF-8) | payload`, where the
//! payload is fixed by the request opcode and the status:
//!
//! ```text
//! PING       Ok            (empty)
//! GET        Ok, NotFound  context_len u16 | context | value_count u16 |
//!                          value_count × (timestamp_us u64 | value_len u32 | value)
//! PUT        Ok            context_len u16 | context
//! DELETE     Ok            context_len u16 | context
//! SHARD_MAP  Ok            see `shard_map.rs`
//! REPLICA_WRITE  Ok        (empty)
//! REPLICA_READ   Ok        set_len u32 | version set (docs/storage.md)
//! MEMBERS        Ok        table_len u32 | member table (postcard)
//! NODE_STATUS    Ok        data_bytes u64 (every file under the data dir)
//! any other status         (empty; REPLICA_READ NotFound: the replica has no set)
//! ```
//!
//! The server hot path encodes straight from its version set with
//! [`encode_get_response`] and [`encode_written_response`]; [`encode_response`] is
//! the general form for owned [`Response`] values (client tests, tools).

use bytes::Bytes;

use super::codec::{put_bytes_u16, put_bytes_u32, put_context, put_u16, put_u64, Reader};
use super::frame::{begin_frame, check_header_matches_body, finish_frame};
use super::{opcode, FrameHeader, RequestError, ShardMap, Status};

/// Bytes a GET value takes on the wire besides the value itself.
const WIRE_VALUE_FIXED_BYTES: usize = size_of::<u64>() + size_of::<u32>();
/// Longest message the u16 `message_len` field can carry.
const MESSAGE_BYTES_MAX: usize = u16::MAX as usize;

/// A decoded (or to-be-encoded) response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Status,
    /// Human-readable detail; empty on success.
    pub message: String,
    /// Payload, whose kind follows from the request opcode and the status.
    pub body: ResponseBody,
}

impl Response {
    /// A success with an empty message.
    pub fn ok(body: ResponseBody) -> Response {
        Response {
            status: Status::Ok,
            message: String::new(),
            body,
        }
    }

    /// A failure without payload (not for GET NotFound, which carries a context).
    pub fn error(status: Status, message: impl Into<String>) -> Response {
        Response {
            status,
            message: message.into(),
            body: ResponseBody::Empty,
        }
    }
}

/// The payload of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseBody {
    /// PING, and every status without a payload.
    Empty,
    /// GET with Ok or NotFound (NotFound: no values, but maybe a tombstone context).
    Get {
        context: Bytes,
        values: Vec<WireValue>,
    },
    /// PUT or DELETE with Ok: the context of the version just written.
    Written { context: Bytes },
    /// SHARD_MAP with Ok.
    ShardMap(ShardMap),
    /// REPLICA_READ with Ok: the replica's encoded version set for the key.
    Versions { versions: Bytes },
    /// MEMBERS with Ok: the answering node's member table, encoded.
    Members { table: Bytes },
    /// NODE_STATUS with Ok.
    NodeStatus { data_bytes: u64 },
    /// CLUSTER_STATUS with Ok: the node's view (`membership::ClusterView`, postcard).
    ClusterStatus { view: Bytes },
    /// SYNC with Ok: the peer's step of the exchange (`server::antientropy::wire`).
    Sync { body: Bytes },
    /// REPAIR with Ok: what the round did (`server::antientropy::RepairReport`, postcard).
    Repair { report: Bytes },
}

/// One sibling value of a GET answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireValue {
    /// Wall-clock write time, microseconds since the Unix epoch.
    pub timestamp_us: u64,
    pub value: Bytes,
}

/// Which payload a (request opcode, status) pair carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PayloadKind {
    Empty,
    Get,
    Written,
    ShardMap,
    Versions,
    Members,
    NodeStatus,
    ClusterStatus,
    Sync,
    Repair,
}

/// The payload kind for an answer to `request_opcode` with `status`; `Err` when no
/// such answer exists (Ok for an opcode v1 does not define).
fn payload_kind(request_opcode: u8, status: Status) -> Result<PayloadKind, String> {
    match (request_opcode, status) {
        (opcode::GET, Status::Ok | Status::NotFound) => Ok(PayloadKind::Get),
        (opcode::PUT | opcode::DELETE, Status::Ok) => Ok(PayloadKind::Written),
        (opcode::SHARD_MAP, Status::Ok) => Ok(PayloadKind::ShardMap),
        (
            opcode::PING
            | opcode::REPLICA_WRITE
            | opcode::HINT_WRITE
            | opcode::FAULT
            | opcode::COMPACT,
            Status::Ok,
        ) => Ok(PayloadKind::Empty),
        (opcode::REPLICA_READ, Status::Ok) => Ok(PayloadKind::Versions),
        (opcode::MEMBERS, Status::Ok) => Ok(PayloadKind::Members),
        (opcode::NODE_STATUS, Status::Ok) => Ok(PayloadKind::NodeStatus),
        (opcode::CLUSTER_STATUS, Status::Ok) => Ok(PayloadKind::ClusterStatus),
        (opcode::SYNC, Status::Ok) => Ok(PayloadKind::Sync),
        (opcode::REPAIR, Status::Ok) => Ok(PayloadKind::Repair),
        (other, Status::Ok) => Err(format!("status Ok answering unknown opcode 0x{other:02x}")),
        _ => Ok(PayloadKind::Empty),
    }
}

impl ResponseBody {
    fn kind(&self) -> PayloadKind {
        match self {
            ResponseBody::Empty => PayloadKind::Empty,
            ResponseBody::Get { .. } => PayloadKind::Get,
            ResponseBody::Written { .. } => PayloadKind::Written,
            ResponseBody::ShardMap(_) => PayloadKind::ShardMap,
            ResponseBody::Versions { .. } => PayloadKind::Versions,
            ResponseBody::Members { .. } => PayloadKind::Members,
            ResponseBody::NodeStatus { .. } => PayloadKind::NodeStatus,
            ResponseBody::ClusterStatus { .. } => PayloadKind::ClusterStatus,
            ResponseBody::Sync { .. } => PayloadKind::Sync,
            ResponseBody::Repair { .. } => PayloadKind::Repair,
        }
    }
}

/// Appends the header (length patched later), status and message.
fn begin_response(
    request_opcode: u8,
    request_id: u32,
    status: Status,
    message: &str,
    buf: &mut Vec<u8>,
) -> usize {
    let start = begin_frame(opcode::response(request_opcode), request_id, buf);
    buf.push(status.as_u8());
    // A message is advice, not data: cut an overlong one at a character boundary
    // rather than refuse to answer.
    let mut len = message.len().min(MESSAGE_BYTES_MAX);
    while !message.is_char_boundary(len) {
        len -= 1;
    }
    put_bytes_u16(buf, &message.as_bytes()[..len], "message");
    start
}

fn put_get_payload<'a>(
    context: &[u8],
    values: impl ExactSizeIterator<Item = (u64, &'a [u8])>,
    buf: &mut Vec<u8>,
) {
    put_context(buf, context);
    let count = u16::try_from(values.len()).expect("a GET answer carries at most 65535 values");
    put_u16(buf, count);
    let mut written = 0usize;
    for (timestamp_us, value) in values {
        put_u64(buf, timestamp_us);
        put_bytes_u32(buf, value, "value");
        written += 1;
    }
    assert_eq!(
        written,
        usize::from(count),
        "values iterator yielded other than its len()"
    );
}

/// Appends one whole response frame answering `request_opcode`. Panics if the body
/// kind does not match the opcode and status (e.g. `Written` for a GET).
pub fn encode_response(
    request_opcode: u8,
    request_id: u32,
    response: &Response,
    buf: &mut Vec<u8>,
) {
    let expected = payload_kind(request_opcode, response.status).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        response.body.kind(),
        expected,
        "body does not match opcode 0x{request_opcode:02x} with status {:?}",
        response.status
    );
    let start = begin_response(
        request_opcode,
        request_id,
        response.status,
        &response.message,
        buf,
    );
    match &response.body {
        ResponseBody::Empty => {}
        ResponseBody::Get { context, values } => {
            assert!(
                response.status == Status::Ok || values.is_empty(),
                "NotFound with values"
            );
            let values = values.iter().map(|v| (v.timestamp_us, &v.value[..]));
            put_get_payload(context, values, buf);
        }
        ResponseBody::Written { context } => put_context(buf, context),
        ResponseBody::ShardMap(map) => map.encode_into(buf),
        ResponseBody::Versions { versions } => put_bytes_u32(buf, versions, "version set"),
        ResponseBody::Members { table } => put_bytes_u32(buf, table, "member table"),
        ResponseBody::NodeStatus { data_bytes } => put_u64(buf, *data_bytes),
        ResponseBody::ClusterStatus { view } => put_bytes_u32(buf, view, "cluster view"),
        ResponseBody::Sync { body } => put_bytes_u32(buf, body, "sync body"),
        ResponseBody::Repair { report } => put_bytes_u32(buf, report, "repair report"),
    }
    finish_frame(start, buf);
}

/// Appends a GET answer encoded straight from `(timestamp_us, value)` pairs, with an
/// empty message. `status` must be Ok, or NotFound with no values.
pub fn encode_get_response<'a>(
    request_id: u32,
    status: Status,
    context: &[u8],
    values: impl ExactSizeIterator<Item = (u64, &'a [u8])>,
    buf: &mut Vec<u8>,
) {
    assert!(
        status == Status::Ok || (status == Status::NotFound && values.len() == 0),
        "a GET payload goes with Ok, or NotFound without values; got {status:?}"
    );
    let start = begin_response(opcode::GET, request_id, status, "", buf);
    put_get_payload(context, values, buf);
    finish_frame(start, buf);
}

/// Appends a successful PUT or DELETE answer carrying the new version's context.
pub fn encode_written_response(
    request_opcode: u8,
    request_id: u32,
    context: &[u8],
    buf: &mut Vec<u8>,
) {
    assert!(
        matches!(request_opcode, opcode::PUT | opcode::DELETE),
        "a written context answers PUT or DELETE, not 0x{request_opcode:02x}"
    );
    let start = begin_response(request_opcode, request_id, Status::Ok, "", buf);
    put_context(buf, context);
    finish_frame(start, buf);
}

/// Appends an answer without payload: any non-Ok status except NotFound for GET
/// (use [`encode_get_response`]). `request_opcode` may be one v1 does not know, or
/// [`opcode::UNPARSED`] when the header could not be parsed.
pub fn encode_error_response(
    request_opcode: u8,
    request_id: u32,
    status: Status,
    message: &str,
    buf: &mut Vec<u8>,
) {
    assert_ne!(
        status,
        Status::Ok,
        "an error response needs a non-Ok status"
    );
    assert!(
        !(request_opcode == opcode::GET && status == Status::NotFound),
        "GET NotFound carries a context: use encode_get_response"
    );
    let start = begin_response(request_opcode, request_id, status, message, buf);
    finish_frame(start, buf);
}

/// Decodes the body of a response frame answering a request sent with
/// `expected_request_opcode`. An error-only frame with opcode [`opcode::UNPARSED`]
/// is accepted for any request. Never panics.
pub fn decode_response(
    header: &FrameHeader,
    body: Bytes,
    expected_request_opcode: u8,
) -> Result<Response, RequestError> {
    let answered = check_response_frame(header, &body, expected_request_opcode)?;
    let mut reader = Reader::new(body);
    let status_byte = reader.u8("status")?;
    let status = Status::from_u8(status_byte)
        .ok_or_else(|| RequestError::bad_request(format!("unknown status {status_byte}")))?;
    let message = read_message(&mut reader)?;
    let body = match payload_kind(answered, status).map_err(RequestError::bad_request)? {
        PayloadKind::Empty => ResponseBody::Empty,
        PayloadKind::Get => read_get_payload(&mut reader, status)?,
        PayloadKind::Written => ResponseBody::Written {
            context: reader.context()?,
        },
        PayloadKind::ShardMap => ResponseBody::ShardMap(ShardMap::decode(&mut reader)?),
        PayloadKind::Versions => {
            let len = reader.u32("set_len")? as usize;
            ResponseBody::Versions {
                versions: reader.bytes(len, "version set")?,
            }
        }
        PayloadKind::NodeStatus => ResponseBody::NodeStatus {
            data_bytes: reader.u64("data_bytes")?,
        },
        PayloadKind::Members => {
            let len = reader.u32("exchange_len")? as usize;
            ResponseBody::Members {
                table: reader.bytes(len, "gossip exchange")?,
            }
        }
        PayloadKind::ClusterStatus => {
            let len = reader.u32("view_len")? as usize;
            ResponseBody::ClusterStatus {
                view: reader.bytes(len, "cluster view")?,
            }
        }
        PayloadKind::Sync => {
            let len = reader.u32("body_len")? as usize;
            ResponseBody::Sync {
                body: reader.bytes(len, "sync body")?,
            }
        }
        PayloadKind::Repair => {
            let len = reader.u32("report_len")? as usize;
            ResponseBody::Repair {
                report: reader.bytes(len, "repair report")?,
            }
        }
    };
    reader.finish()?;
    Ok(Response {
        status,
        message,
        body,
    })
}

/// Checks opcode, flags and length; returns the request opcode the frame answers.
fn check_response_frame(
    header: &FrameHeader,
    body: &Bytes,
    expected_request_opcode: u8,
) -> Result<u8, RequestError> {
    let expected = opcode::response(expected_request_opcode);
    let answered = match header.opcode {
        op if op == expected => expected_request_opcode,
        opcode::UNPARSED => opcode::UNPARSED,
        other => {
            return Err(RequestError::bad_request(format!(
                "response opcode 0x{other:02x} does not answer request opcode \
                 0x{expected_request_opcode:02x} (expected 0x{expected:02x})"
            )))
        }
    };
    check_header_matches_body(header, body)?;
    Ok(answered)
}

fn read_message(reader: &mut Reader) -> Result<String, RequestError> {
    let len = usize::from(reader.u16("message_len")?);
    let bytes = reader.bytes(len, "message")?;
    match std::str::from_utf8(&bytes) {
        Ok(message) => Ok(message.to_owned()),
        Err(error) => Err(RequestError::bad_request(format!(
            "message is not UTF-8: {error}"
        ))),
    }
}

fn read_get_payload(reader: &mut Reader, status: Status) -> Result<ResponseBody, RequestError> {
    let context = reader.context()?;
    let count = usize::from(reader.u16("value_count")?);
    if status == Status::NotFound && count != 0 {
        return Err(RequestError::bad_request(format!(
            "NotFound with value_count {count}"
        )));
    }
    reader.ensure_room(count, WIRE_VALUE_FIXED_BYTES, "value_count")?;
    let mut values = Vec::with_capacity(count);
    for _ in 0..count {
        let timestamp_us = reader.u64("timestamp_us")?;
        let len = reader.u32("value_len")? as usize;
        let value = reader.bytes(len, "value")?;
        values.push(WireValue {
            timestamp_us,
            value,
        });
    }
    Ok(ResponseBody::Get { context, values })
}

#[cfg(test)]
#[path = "response_tests.rs"]
mod tests;
