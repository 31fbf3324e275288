//! Tests of `message.rs`: golden bytes (the same as in docs/protocol.md), limits,
//! refusals and round trips.

use super::*;
use crate::protocol::test_support::{arb_request, split_frame};
use crate::protocol::{Status, HEADER_LEN};
use proptest::prelude::*;

/// Encodes `request`, checks the bytes against `golden`, and decodes `golden`.
fn assert_golden(request: Request, request_id: u32, golden: &[u8]) {
    let mut buf = Vec::new();
    encode_request(&request, request_id, &mut buf);
    assert_eq!(
        buf, golden,
        "encoder output differs from the documented bytes"
    );
    let (header, body) = split_frame(golden);
    assert_eq!(header.request_id, request_id);
    assert_eq!(
        decode_request(&header, body, &Limits::default()),
        Ok(request)
    );
}

fn decode_body(opcode: u8, body: &[u8]) -> Result<Request, RequestError> {
    let header = FrameHeader {
        opcode,
        flags: 0,
        request_id: 1,
        body_len: body.len() as u32,
    };
    decode_request(&header, Bytes::copy_from_slice(body), &Limits::default())
}

#[test]
fn golden_ping() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x01, 0x00,  0x01, 0x00, 0x00, 0x00,  0x00, 0x00, 0x00, 0x00,
    ];
    assert_golden(Request::Ping, 1, &golden);
}

#[test]
fn golden_get() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x02, 0x00,  0x07, 0x00, 0x00, 0x00,  0x05, 0x00, 0x00, 0x00,
        0x02,                    // consistency QUORUM
        0x02, 0x00, b'k', b'1',  // key "k1"
    ];
    let request = Request::Get {
        consistency: Consistency::Quorum,
        key: "k1".into(),
    };
    assert_golden(request, 7, &golden);
}

#[test]
fn golden_put() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x03, 0x00,  0x09, 0x00, 0x00, 0x00,  0x12, 0x00, 0x00, 0x00,
        0x82,                                    // consistency: 2 replicas
        0x02, 0x00, b'k', b'1',                  // key "k1"
        0x02, 0x00, 0x0C, 0x0D,                  // context 0C 0D
        0x05, 0x00, 0x00, 0x00, b'h', b'e', b'l', b'l', b'o', // value "hello"
    ];
    let request = Request::Put {
        consistency: Consistency::Count(2),
        quorum: QuorumMode::Sloppy,
        key: "k1".into(),
        context: Bytes::from_static(&[0x0C, 0x0D]),
        value: "hello".into(),
    };
    assert_golden(request, 9, &golden);
}

#[test]
fn golden_delete() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x04, 0x00,  0x0A, 0x00, 0x00, 0x00,  0x0A, 0x00, 0x00, 0x00,
        0x41,                          // consistency ONE, strict quorum
        0x02, 0x00, b'k', b'1',        // key "k1"
        0x03, 0x00, 0x0C, 0x0D, 0x0E,  // context 0C 0D 0E
    ];
    let request = Request::Delete {
        consistency: Consistency::One,
        quorum: QuorumMode::Strict,
        key: "k1".into(),
        context: Bytes::from_static(&[0x0C, 0x0D, 0x0E]),
    };
    assert_golden(request, 10, &golden);
}

#[test]
fn golden_hint_write() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x24, 0x00,  0x0B, 0x00, 0x00, 0x00,  0x13, 0x00, 0x00, 0x00,
        0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // target node 7
        0x02, 0x00, b'k', b'1',                         // key "k1"
        0x03, 0x00, 0x00, 0x00, 0x01, 0x02, 0x03,       // version set (opaque here)
    ];
    let request = Request::HintWrite {
        target: 7,
        key: "k1".into(),
        versions: Bytes::from_static(&[1, 2, 3]),
    };
    assert_golden(request, 11, &golden);
}

#[test]
fn the_strict_bit_rides_on_every_consistency_and_counts_stop_at_63() {
    for consistency in [
        Consistency::Default,
        Consistency::One,
        Consistency::Quorum,
        Consistency::All,
        Consistency::Count(1),
        Consistency::Count(63),
    ] {
        for quorum in [QuorumMode::Sloppy, QuorumMode::Strict] {
            let byte = level_to_u8(consistency, quorum);
            assert_eq!(level_from_u8(byte).unwrap(), (consistency, quorum));
        }
    }
    // 0x80 | 64 would be taken for a strict count of 0.
    assert!(level_from_u8(0xC0).is_err());
    assert!(level_from_u8(0x44).is_err());
    // Reads always count only the preference list: GET refuses the bit.
    let error = decode_body(opcode::GET, &[0x42, 0x01, 0x00, b'k']).unwrap_err();
    assert_eq!(error.status, Status::BadRequest);
}

#[test]
fn golden_shard_map() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x05, 0x00,  0x0B, 0x00, 0x00, 0x00,  0x00, 0x00, 0x00, 0x00,
    ];
    assert_golden(Request::ShardMap, 11, &golden);
}

#[test]
fn golden_replica_write() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x20, 0x00,  0x0C, 0x00, 0x00, 0x00,  0x0B, 0x00, 0x00, 0x00,
        0x02, 0x00, b'k', b'1',        // key "k1"
        0x03, 0x00, 0x00, 0x00,        // set_len 3
        0x01, 0x02, 0x03,              // the version set's bytes (opaque here)
    ];
    let request = Request::ReplicaWrite {
        key: "k1".into(),
        versions: Bytes::from_static(&[1, 2, 3]),
    };
    assert_golden(request, 12, &golden);
}

#[test]
fn golden_replica_read() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x21, 0x00,  0x0D, 0x00, 0x00, 0x00,  0x04, 0x00, 0x00, 0x00,
        0x02, 0x00, b'k', b'1',        // key "k1"
    ];
    assert_golden(Request::ReplicaRead { key: "k1".into() }, 13, &golden);
}

#[test]
fn golden_members() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x22, 0x00,  0x0E, 0x00, 0x00, 0x00,  0x06, 0x00, 0x00, 0x00,
        0x02, 0x00, 0x00, 0x00,  // table_len 2
        0x00, 0x01,              // the table's bytes (opaque here)
    ];
    let request = Request::Members {
        table: Bytes::from_static(&[0x00, 0x01]),
    };
    assert_golden(request, 14, &golden);
}

#[test]
fn golden_node_status() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x23, 0x00,  0x0F, 0x00, 0x00, 0x00,  0x00, 0x00, 0x00, 0x00,
    ];
    assert_golden(Request::NodeStatus, 15, &golden);
}

#[test]
fn replica_write_set_len_past_the_body_is_refused() {
    // set_len says 9 bytes, 3 follow.
    let body = [0x02, 0x00, b'k', b'1', 0x09, 0x00, 0x00, 0x00, 1, 2, 3];
    let err = decode_body(opcode::REPLICA_WRITE, &body).unwrap_err();
    assert_eq!(err.status, Status::BadRequest, "{err:?}");
}

#[test]
fn consistency_bytes_are_the_documented_ones() {
    let cases = [
        (0x00, Consistency::Default),
        (0x01, Consistency::One),
        (0x02, Consistency::Quorum),
        (0x03, Consistency::All),
        (0x81, Consistency::Count(1)),
        (0xBF, Consistency::Count(63)),
    ];
    for (byte, consistency) in cases {
        assert_eq!(Consistency::from_u8(byte), Ok(consistency));
        assert_eq!(consistency.to_u8(), byte);
    }
    for reserved in [0x04, 0x3F, 0x40, 0x7F, 0x80, 0xC1, 0xFF] {
        assert_eq!(
            Consistency::from_u8(reserved).unwrap_err().status,
            Status::BadRequest
        );
    }
}

#[test]
fn key_over_limit_is_too_large() {
    let mut body = vec![0x00, 0x01, 0x04]; // key_len 1025
    body.resize(3 + 1025, b'k');
    let error = decode_body(opcode::GET, &body).unwrap_err();
    assert_eq!(error.status, Status::TooLarge);
    assert_eq!(error.message, "key is 1025 bytes, limit 1024");
}

#[test]
fn key_at_limit_is_accepted() {
    let mut body = vec![0x00, 0x00, 0x04]; // key_len 1024
    body.resize(3 + 1024, b'k');
    assert!(decode_body(opcode::GET, &body).is_ok());
}

#[test]
fn empty_key_is_bad_request() {
    let error = decode_body(opcode::GET, &[0x00, 0x00, 0x00]).unwrap_err();
    assert_eq!(error.status, Status::BadRequest);
    assert_eq!(error.message, "empty key; keys are 1..=1024 bytes");
}

#[test]
fn value_over_limit_is_too_large() {
    let limits = Limits {
        value_bytes_max: 4,
        ..Limits::default()
    };
    #[rustfmt::skip]
    let body = [
        0x00, 0x01, 0x00, b'k', 0x00, 0x00,
        0x05, 0x00, 0x00, 0x00, b'h', b'e', b'l', b'l', b'o',
    ];
    let header = FrameHeader {
        opcode: opcode::PUT,
        flags: 0,
        request_id: 1,
        body_len: 15,
    };
    let error = decode_request(&header, Bytes::copy_from_slice(&body), &limits).unwrap_err();
    assert_eq!(error.status, Status::TooLarge);
    assert_eq!(error.message, "value is 5 bytes, limit 4");
}

#[test]
fn value_len_over_default_limit_is_too_large_before_slicing() {
    // value_len 0x00100001 = 1 MiB + 1, with no value bytes behind it.
    let body = [0x00, 0x01, 0x00, b'k', 0x00, 0x00, 0x01, 0x00, 0x10, 0x00];
    let error = decode_body(opcode::PUT, &body).unwrap_err();
    assert_eq!(error.status, Status::TooLarge);
    assert_eq!(error.message, "value is 1048577 bytes, limit 1048576");
}

#[test]
fn body_over_frame_limit_is_too_large() {
    let limits = Limits {
        frame_bytes_max: 4,
        ..Limits::default()
    };
    let header = FrameHeader {
        opcode: opcode::GET,
        flags: 0,
        request_id: 1,
        body_len: 5,
    };
    let body = Bytes::from_static(&[0x00, 0x02, 0x00, b'k', b'1']);
    let error = decode_request(&header, body, &limits).unwrap_err();
    assert_eq!(error.status, Status::TooLarge);
    assert_eq!(error.message, "frame body is 5 bytes, limit 4");
}

#[test]
fn unknown_opcode_is_bad_request() {
    let error = decode_body(0x09, &[]).unwrap_err();
    assert_eq!(error.status, Status::BadRequest);
    assert_eq!(error.message, "unknown opcode 0x09");
    let error = decode_body(0x82, &[]).unwrap_err(); // a response opcode
    assert_eq!(error.message, "unknown opcode 0x82");
}

#[test]
fn trailing_garbage_is_bad_request() {
    let error = decode_body(opcode::GET, &[0x00, 0x01, 0x00, b'k', 0xFF]).unwrap_err();
    assert_eq!(error.status, Status::BadRequest);
    assert_eq!(
        error.message,
        "1 trailing bytes after the last field at offset 4"
    );
    let error = decode_body(opcode::PING, &[0x00]).unwrap_err();
    assert_eq!(error.status, Status::BadRequest);
}

#[test]
fn nonzero_flags_are_bad_request() {
    let header = FrameHeader {
        opcode: opcode::PING,
        flags: 0x01,
        request_id: 1,
        body_len: 0,
    };
    let error = decode_request(&header, Bytes::new(), &Limits::default()).unwrap_err();
    assert_eq!(error.status, Status::BadRequest);
    assert_eq!(error.message, "flags 0x01; protocol v1 requires 0");
}

#[test]
fn body_shorter_than_header_says_is_bad_request() {
    let header = FrameHeader {
        opcode: opcode::PING,
        flags: 0,
        request_id: 1,
        body_len: 3,
    };
    let error = decode_request(&header, Bytes::new(), &Limits::default()).unwrap_err();
    assert_eq!(error.status, Status::BadRequest);
}

#[test]
fn decoded_fields_are_zero_copy_slices_of_the_body() {
    let mut buf = Vec::new();
    let request = Request::Put {
        consistency: Consistency::Default,
        quorum: QuorumMode::Sloppy,
        key: "key".into(),
        context: "ctx".into(),
        value: "value".into(),
    };
    encode_request(&request, 1, &mut buf);
    let (header, body) = split_frame(&buf);
    let range = body.as_ptr_range();
    let Ok(Request::Put {
        key,
        context,
        value,
        ..
    }) = decode_request(&header, body.clone(), &Limits::default())
    else {
        panic!("golden PUT did not decode");
    };
    for field in [key, context, value] {
        assert!(
            range.contains(&field.as_ptr()),
            "field was copied out of the body"
        );
    }
}

#[test]
fn validate_matches_the_decoder_limits() {
    let limits = Limits::default();
    let get = |key: Vec<u8>| Request::Get {
        consistency: Consistency::One,
        key: key.into(),
    };
    assert_eq!(
        get(vec![]).validate(&limits).unwrap_err().status,
        Status::BadRequest
    );
    assert_eq!(
        get(vec![0; 1025]).validate(&limits).unwrap_err().status,
        Status::TooLarge
    );
    assert!(get(vec![0; 1024]).validate(&limits).is_ok());
    let count_zero = Request::Get {
        consistency: Consistency::Count(0),
        key: "k".into(),
    };
    assert_eq!(
        count_zero.validate(&limits).unwrap_err().status,
        Status::BadRequest
    );
    let big_context = Request::Delete {
        consistency: Consistency::One,
        quorum: QuorumMode::Sloppy,
        key: "k".into(),
        context: vec![0; 4097].into(),
    };
    assert_eq!(
        big_context.validate(&limits).unwrap_err().status,
        Status::TooLarge
    );
}

#[test]
#[should_panic(expected = "replica count 0 is not in 1..=63")]
fn encoding_count_zero_panics() {
    let request = Request::Get {
        consistency: Consistency::Count(0),
        key: "k".into(),
    };
    encode_request(&request, 1, &mut Vec::new());
}

proptest! {
    #[test]
    fn requests_round_trip(request in arb_request(), request_id: u32) {
        let mut buf = vec![0xEE]; // frames append; earlier bytes stay untouched
        encode_request(&request, request_id, &mut buf);
        prop_assert_eq!(buf[0], 0xEE);
        let (header, body) = split_frame(&buf[1..]);
        prop_assert_eq!(header.opcode, request.opcode());
        prop_assert_eq!(header.request_id, request_id);
        prop_assert_eq!(body.len() + HEADER_LEN, buf.len() - 1);
        prop_assert_eq!(decode_request(&header, body, &Limits::default()), Ok(request));
    }
}
