//! Test helpers: splitting encoded frames and proptest strategies for every message.

use bytes::Bytes;
use proptest::collection::{btree_set, vec};
use proptest::prelude::*;

use super::{
    opcode, Consistency, FrameHeader, QuorumMode, Request, Response, ResponseBody, ShardMap,
    Status, WireValue, CONTEXT_BYTES_MAX, HEADER_LEN,
};

/// Splits one whole encoded frame into its decoded header and its body.
pub(crate) fn split_frame(frame: &[u8]) -> (FrameHeader, Bytes) {
    let header_bytes: &[u8; HEADER_LEN] = frame[..HEADER_LEN].try_into().unwrap();
    let header = FrameHeader::decode(header_bytes).expect("encoder wrote a bad header");
    let body = Bytes::copy_from_slice(&frame[HEADER_LEN..]);
    assert_eq!(
        body.len(),
        header.body_len as usize,
        "frame length disagrees with body_len"
    );
    (header, body)
}

/// Byte strings of `range` lengths, plus the exact `edge` length now and then.
fn bytes_with_edge(range: std::ops::Range<usize>, edge: usize) -> impl Strategy<Value = Bytes> {
    prop_oneof![
        8 => vec(any::<u8>(), range),
        1 => vec(any::<u8>(), edge..=edge),
    ]
    .prop_map(Bytes::from)
}

pub(crate) fn arb_quorum() -> impl Strategy<Value = QuorumMode> {
    prop_oneof![Just(QuorumMode::Sloppy), Just(QuorumMode::Strict)]
}

pub(crate) fn arb_consistency() -> impl Strategy<Value = Consistency> {
    prop_oneof![
        Just(Consistency::Default),
        Just(Consistency::One),
        Just(Consistency::Quorum),
        Just(Consistency::All),
        (1..=Consistency::COUNT_MAX).prop_map(Consistency::Count),
    ]
}

fn arb_key() -> impl Strategy<Value = Bytes> {
    bytes_with_edge(1..32, 1024)
}

fn arb_context() -> impl Strategy<Value = Bytes> {
    bytes_with_edge(0..32, CONTEXT_BYTES_MAX as usize)
}

fn arb_value() -> impl Strategy<Value = Bytes> {
    bytes_with_edge(0..256, 0)
}

pub(crate) fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::Ping),
        Just(Request::ShardMap),
        (arb_consistency(), arb_key())
            .prop_map(|(consistency, key)| Request::Get { consistency, key }),
        (
            arb_consistency(),
            arb_quorum(),
            arb_key(),
            arb_context(),
            arb_value()
        )
            .prop_map(|(consistency, quorum, key, context, value)| Request::Put {
                consistency,
                quorum,
                key,
                context,
                value
            }),
        (arb_consistency(), arb_quorum(), arb_key(), arb_context()).prop_map(
            |(consistency, quorum, key, context)| Request::Delete {
                consistency,
                quorum,
                key,
                context,
            }
        ),
        (any::<u64>(), arb_key(), arb_value()).prop_map(|(target, key, versions)| {
            Request::HintWrite {
                target,
                key,
                versions,
            }
        }),
        Just(Request::ClusterStatus),
        arb_value().prop_map(|spec| Request::Fault { spec }),
        (any::<u16>(), arb_value()).prop_map(|(shard, body)| Request::Sync { shard, body }),
        any::<u16>().prop_map(|shard| Request::Repair { shard }),
        any::<u16>().prop_map(|shard| Request::Compact { shard }),
        (arb_key(), arb_value())
            .prop_map(|(key, versions)| Request::ReplicaWrite { key, versions }),
        arb_key().prop_map(|key| Request::ReplicaRead { key }),
        arb_value().prop_map(|table| Request::Members { table }),
        Just(Request::NodeStatus),
    ]
}

fn arb_message() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn arb_wire_value() -> impl Strategy<Value = WireValue> {
    (any::<u64>(), arb_value()).prop_map(|(timestamp_us, value)| WireValue {
        timestamp_us,
        value,
    })
}

pub(crate) fn arb_shard_map() -> impl Strategy<Value = ShardMap> {
    (any::<u64>(), vec(any::<u16>(), 1..8)).prop_flat_map(|(node_id, ports)| {
        let shard_count = ports.len() as u16;
        let vnodes = btree_set(any::<u64>(), 0..40).prop_flat_map(move |tokens| {
            let shards = vec(0..shard_count, tokens.len());
            (Just(tokens), shards)
        });
        vnodes.prop_map(move |(tokens, shards)| ShardMap {
            node_id,
            ports: ports.clone(),
            vnodes: tokens.into_iter().zip(shards).collect(),
        })
    })
}

fn arb_error_status() -> impl Strategy<Value = Status> {
    prop::sample::select(&Status::ALL[1..])
}

/// A request opcode and a well-formed response to it, covering every payload kind
/// and error frames for known, unknown and unparsed opcodes.
pub(crate) fn arb_response() -> impl Strategy<Value = (u8, Response)> {
    let ok = |message, body| Response {
        status: Status::Ok,
        message,
        body,
    };
    prop_oneof![
        arb_message().prop_map(move |message| (opcode::PING, ok(message, ResponseBody::Empty))),
        (
            any::<bool>(),
            arb_message(),
            arb_context(),
            vec(arb_wire_value(), 0..4)
        )
            .prop_map(|(found, message, context, values)| {
                let (status, values) = if found {
                    (Status::Ok, values)
                } else {
                    (Status::NotFound, Vec::new())
                };
                let body = ResponseBody::Get { context, values };
                (
                    opcode::GET,
                    Response {
                        status,
                        message,
                        body,
                    },
                )
            }),
        (
            prop::sample::select(&[opcode::PUT, opcode::DELETE][..]),
            arb_message(),
            arb_context()
        )
            .prop_map(move |(op, message, context)| {
                (op, ok(message, ResponseBody::Written { context }))
            }),
        (arb_message(), arb_shard_map()).prop_map(move |(message, map)| {
            (opcode::SHARD_MAP, ok(message, ResponseBody::ShardMap(map)))
        }),
        arb_message()
            .prop_map(move |message| (opcode::REPLICA_WRITE, ok(message, ResponseBody::Empty))),
        (arb_message(), arb_value()).prop_map(move |(message, versions)| {
            (
                opcode::REPLICA_READ,
                ok(message, ResponseBody::Versions { versions }),
            )
        }),
        (arb_message(), arb_value()).prop_map(move |(message, table)| {
            (
                opcode::MEMBERS,
                ok(message, ResponseBody::Members { table }),
            )
        }),
        (arb_message(), arb_value()).prop_map(move |(message, view)| {
            (
                opcode::CLUSTER_STATUS,
                ok(message, ResponseBody::ClusterStatus { view }),
            )
        }),
        (arb_message(), arb_value()).prop_map(move |(message, body)| (
            opcode::SYNC,
            ok(message, ResponseBody::Sync { body })
        )),
        (arb_message(), arb_value()).prop_map(move |(message, report)| {
            (opcode::REPAIR, ok(message, ResponseBody::Repair { report }))
        }),
        arb_message().prop_map(move |message| (opcode::COMPACT, ok(message, ResponseBody::Empty))),
        (arb_message(), any::<u64>()).prop_map(move |(message, data_bytes)| {
            (
                opcode::NODE_STATUS,
                ok(message, ResponseBody::NodeStatus { data_bytes }),
            )
        }),
        (any::<u8>(), arb_error_status(), arb_message())
            .prop_filter("GET NotFound has a payload", |(op, status, _)| {
                !(*op == opcode::GET && *status == Status::NotFound)
            })
            .prop_map(|(op, status, message)| {
                (
                    op,
                    Response {
                        status,
                        message,
                        body: ResponseBody::Empty,
                    },
                )
            }),
    ]
}
