//! Tests of `response.rs`: golden bytes (the same as in docs/protocol.md), the
//! hot-path encoders, decoder refusals, and round trips.

use super::*;
use crate::protocol::test_support::{arb_response, split_frame};
use proptest::prelude::*;

/// Encodes `response` with [`encode_response`], checks the bytes against `golden`,
/// and decodes `golden` back to `response`.
fn assert_golden(request_opcode: u8, request_id: u32, response: &Response, golden: &[u8]) {
    let mut buf = Vec::new();
    encode_response(request_opcode, request_id, response, &mut buf);
    assert_eq!(
        buf, golden,
        "encoder output differs from the documented bytes"
    );
    let (header, body) = split_frame(golden);
    assert_eq!(header.request_id, request_id);
    assert_eq!(
        decode_response(&header, body, request_opcode).as_ref(),
        Ok(response)
    );
}

fn decode_frame(frame: &[u8], expected_request_opcode: u8) -> Result<Response, RequestError> {
    let (header, body) = split_frame(frame);
    decode_response(&header, body, expected_request_opcode)
}

#[test]
fn golden_ping() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x81, 0x00,  0x01, 0x00, 0x00, 0x00,  0x03, 0x00, 0x00, 0x00,
        0x00,        // status Ok
        0x00, 0x00,  // message ""
    ];
    assert_golden(opcode::PING, 1, &Response::ok(ResponseBody::Empty), &golden);
}

#[test]
fn golden_replica_read_ok() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0xA1, 0x00,  0x0D, 0x00, 0x00, 0x00,  0x09, 0x00, 0x00, 0x00,
        0x00,                    // status Ok
        0x00, 0x00,              // message ""
        0x02, 0x00, 0x00, 0x00,  // set_len 2
        0x0A, 0x0B,              // the version set's bytes (opaque here)
    ];
    let body = ResponseBody::Versions {
        versions: Bytes::from_static(&[0x0A, 0x0B]),
    };
    assert_golden(opcode::REPLICA_READ, 13, &Response::ok(body), &golden);
}

#[test]
fn golden_node_status_ok() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0xA3, 0x00,  0x0F, 0x00, 0x00, 0x00,  0x0B, 0x00, 0x00, 0x00,
        0x00,                                            // status Ok
        0x00, 0x00,                                      // message ""
        0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // data_bytes 4096
    ];
    let body = ResponseBody::NodeStatus { data_bytes: 4096 };
    assert_golden(opcode::NODE_STATUS, 15, &Response::ok(body), &golden);
}

#[test]
fn golden_replica_write_ok() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0xA0, 0x00,  0x0C, 0x00, 0x00, 0x00,  0x03, 0x00, 0x00, 0x00,
        0x00,        // status Ok
        0x00, 0x00,  // message ""
    ];
    assert_golden(
        opcode::REPLICA_WRITE,
        12,
        &Response::ok(ResponseBody::Empty),
        &golden,
    );
}

#[rustfmt::skip]
const GOLDEN_GET_OK: [u8; 49] = [
    0xA7, 0x01, 0x82, 0x00,  0x07, 0x00, 0x00, 0x00,  0x25, 0x00, 0x00, 0x00,
    0x00,                                            // status Ok
    0x00, 0x00,                                      // message ""
    0x02, 0x00, 0x0C, 0x0D,                          // context 0C 0D
    0x02, 0x00,                                      // value_count 2
    0x00, 0x40, 0x1E, 0x18, 0x24, 0x0A, 0x06, 0x00,  // timestamp_us 1_700_000_000_000_000
    0x02, 0x00, 0x00, 0x00, b'v', b'1',              // value "v1"
    0x01, 0x40, 0x1E, 0x18, 0x24, 0x0A, 0x06, 0x00,  // timestamp_us 1_700_000_000_000_001
    0x02, 0x00, 0x00, 0x00, b'v', b'2',              // value "v2"
];

#[test]
fn golden_get_ok() {
    let values = vec![
        WireValue {
            timestamp_us: 1_700_000_000_000_000,
            value: "v1".into(),
        },
        WireValue {
            timestamp_us: 1_700_000_000_000_001,
            value: "v2".into(),
        },
    ];
    let context = Bytes::from_static(&[0x0C, 0x0D]);
    assert_golden(
        opcode::GET,
        7,
        &Response::ok(ResponseBody::Get { context, values }),
        &GOLDEN_GET_OK,
    );
}

#[test]
fn hot_path_get_encoder_writes_the_same_bytes() {
    let stored: [(u64, &[u8]); 2] = [
        (1_700_000_000_000_000, b"v1"),
        (1_700_000_000_000_001, b"v2"),
    ];
    let mut buf = Vec::new();
    encode_get_response(
        7,
        Status::Ok,
        &[0x0C, 0x0D],
        stored.iter().copied(),
        &mut buf,
    );
    assert_eq!(buf, GOLDEN_GET_OK);
}

#[test]
fn golden_get_not_found_carries_a_context() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x82, 0x00,  0x08, 0x00, 0x00, 0x00,  0x09, 0x00, 0x00, 0x00,
        0x01,                    // status NotFound
        0x00, 0x00,              // message ""
        0x02, 0x00, 0x0C, 0x0D,  // context 0C 0D (a tombstone)
        0x00, 0x00,              // value_count 0
    ];
    let context = Bytes::from_static(&[0x0C, 0x0D]);
    let body = ResponseBody::Get {
        context,
        values: vec![],
    };
    let response = Response {
        status: Status::NotFound,
        message: String::new(),
        body,
    };
    assert_golden(opcode::GET, 8, &response, &golden);
    let mut buf = Vec::new();
    encode_get_response(
        8,
        Status::NotFound,
        &[0x0C, 0x0D],
        std::iter::empty(),
        &mut buf,
    );
    assert_eq!(buf, golden);
}

#[test]
fn golden_put_ok() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x83, 0x00,  0x09, 0x00, 0x00, 0x00,  0x08, 0x00, 0x00, 0x00,
        0x00,                          // status Ok
        0x00, 0x00,                    // message ""
        0x03, 0x00, 0x0C, 0x0D, 0x0E,  // context 0C 0D 0E
    ];
    let context = Bytes::from_static(&[0x0C, 0x0D, 0x0E]);
    assert_golden(
        opcode::PUT,
        9,
        &Response::ok(ResponseBody::Written { context }),
        &golden,
    );
    let mut buf = Vec::new();
    encode_written_response(opcode::PUT, 9, &[0x0C, 0x0D, 0x0E], &mut buf);
    assert_eq!(buf, golden);
}

#[test]
fn golden_delete_ok() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x84, 0x00,  0x0A, 0x00, 0x00, 0x00,  0x08, 0x00, 0x00, 0x00,
        0x00,                          // status Ok
        0x00, 0x00,                    // message ""
        0x03, 0x00, 0x0C, 0x0D, 0x0F,  // context 0C 0D 0F
    ];
    let context = Bytes::from_static(&[0x0C, 0x0D, 0x0F]);
    assert_golden(
        opcode::DELETE,
        10,
        &Response::ok(ResponseBody::Written { context }),
        &golden,
    );
    let mut buf = Vec::new();
    encode_written_response(opcode::DELETE, 10, &[0x0C, 0x0D, 0x0F], &mut buf);
    assert_eq!(buf, golden);
}

#[test]
fn golden_shard_map() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x85, 0x00,  0x0B, 0x00, 0x00, 0x00,  0x33, 0x00, 0x00, 0x00,
        0x00,                                            // status Ok
        0x00, 0x00,                                      // message ""
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,  // node_id 0x1122334455667788
        0x02, 0x00,                                      // shard_count 2
        0x58, 0x1B,                                      // shard 0: port 7000
        0x59, 0x1B,                                      // shard 1: port 7001
        0x03, 0x00, 0x00, 0x00,                          // vnode_count 3
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x40,  // token 0x4000000000000000
        0x00, 0x00,                                      //   shard 0
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80,  // token 0x8000000000000000
        0x01, 0x00,                                      //   shard 1
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xC0,  // token 0xC000000000000000
        0x00, 0x00,                                      //   shard 0
    ];
    let map = ShardMap {
        node_id: 0x1122_3344_5566_7788,
        ports: vec![7000, 7001],
        vnodes: vec![
            (0x4000_0000_0000_0000, 0),
            (0x8000_0000_0000_0000, 1),
            (0xC000_0000_0000_0000, 0),
        ],
    };
    assert_golden(
        opcode::SHARD_MAP,
        11,
        &Response::ok(ResponseBody::ShardMap(map)),
        &golden,
    );
}

#[test]
fn golden_error_for_a_known_opcode() {
    #[rustfmt::skip]
    let golden = [
        0xA7, 0x01, 0x83, 0x00,  0x09, 0x00, 0x00, 0x00,  0x03, 0x00, 0x00, 0x00,
        0x04,        // status Unavailable
        0x00, 0x00,  // message ""
    ];
    let response = Response {
        status: Status::Unavailable,
        message: String::new(),
        body: ResponseBody::Empty,
    };
    assert_golden(opcode::PUT, 9, &response, &golden);
}

#[test]
fn golden_error_for_an_unknown_opcode() {
    #[rustfmt::skip]
    let golden = [
        &[
            0xA7, 0x01, 0x89, 0x00,  0x0C, 0x00, 0x00, 0x00,  0x16, 0x00, 0x00, 0x00,
            0x03,        // status BadRequest
            0x13, 0x00,  // message_len 19
        ][..],
        b"unknown opcode 0x09",
    ]
    .concat();
    let mut buf = Vec::new();
    encode_error_response(
        0x09,
        12,
        Status::BadRequest,
        "unknown opcode 0x09",
        &mut buf,
    );
    assert_eq!(buf, golden);
    let response = decode_frame(&golden, 0x09).unwrap();
    assert_eq!(response.status, Status::BadRequest);
    assert_eq!(response.message, "unknown opcode 0x09");
    assert_eq!(response.body, ResponseBody::Empty);
}

#[test]
fn golden_error_for_an_unparsed_header() {
    #[rustfmt::skip]
    let golden = [
        &[
            0xA7, 0x01, 0xFF, 0x00,  0x2A, 0x00, 0x00, 0x00,  0x0C, 0x00, 0x00, 0x00,
            0x03,        // status BadRequest
            0x09, 0x00,  // message_len 9
        ][..],
        b"bad magic",
    ]
    .concat();
    let mut buf = Vec::new();
    encode_error_response(
        opcode::UNPARSED,
        42,
        Status::BadRequest,
        "bad magic",
        &mut buf,
    );
    assert_eq!(buf, golden);
    // Whatever the client was waiting for, an UNPARSED frame is an answer to it.
    let response = decode_frame(&golden, opcode::GET).unwrap();
    assert_eq!(
        (response.status, response.message.as_str()),
        (Status::BadRequest, "bad magic")
    );
}

#[test]
fn response_for_another_opcode_is_refused() {
    let mut buf = Vec::new();
    encode_written_response(opcode::PUT, 1, b"ctx", &mut buf);
    let error = decode_frame(&buf, opcode::GET).unwrap_err();
    assert_eq!(error.status, Status::BadRequest);
    assert_eq!(
        error.message,
        "response opcode 0x83 does not answer request opcode 0x02 (expected 0x82)"
    );
}

#[test]
fn ok_for_an_unknown_opcode_or_unparsed_frame_is_refused() {
    let frame = [
        0xA7, 0x01, 0x89, 0x00, 1, 0, 0, 0, 3, 0, 0, 0, 0x00, 0x00, 0x00,
    ];
    let error = decode_frame(&frame, 0x09).unwrap_err();
    assert_eq!(error.message, "status Ok answering unknown opcode 0x09");
    let frame = [
        0xA7, 0x01, 0xFF, 0x00, 1, 0, 0, 0, 3, 0, 0, 0, 0x00, 0x00, 0x00,
    ];
    assert_eq!(
        decode_frame(&frame, opcode::PING).unwrap_err().status,
        Status::BadRequest
    );
}

#[test]
fn malformed_responses_are_refused() {
    let cases: [(&[u8], &str); 5] = [
        (&[0x07, 0x00, 0x00], "unknown status 7"),
        (&[0x00, 0x01, 0x00, 0xFF], "message is not UTF-8"),
        (
            &[0x00, 0x00, 0x00, 0x00],
            "1 trailing bytes after the last field at offset 3",
        ),
        (&[0x03, 0x00, 0x00, 0x00], "1 trailing bytes"), // an error frame has no payload
        (
            &[0x00, 0x02, 0x00, b'o'],
            "truncated body: message needs 2 bytes at offset 3, 1 left",
        ),
    ];
    for (body, expected) in cases {
        let frame = [
            &[
                0xA7,
                0x01,
                0x81,
                0x00,
                1,
                0,
                0,
                0,
                body.len() as u8,
                0,
                0,
                0,
            ][..],
            body,
        ];
        let error = decode_frame(&frame.concat(), opcode::PING).unwrap_err();
        assert_eq!(error.status, Status::BadRequest);
        assert!(
            error.message.starts_with(expected),
            "{:?} for {body:?}",
            error.message
        );
    }
}

#[test]
fn not_found_with_values_is_refused() {
    let body = [
        0x01, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let frame = [
        &[
            0xA7,
            0x01,
            0x82,
            0x00,
            1,
            0,
            0,
            0,
            body.len() as u8,
            0,
            0,
            0,
        ][..],
        &body,
    ];
    let error = decode_frame(&frame.concat(), opcode::GET).unwrap_err();
    assert_eq!(error.message, "NotFound with value_count 1");
}

#[test]
fn lying_value_count_is_refused_before_allocating() {
    // Ok, message "", context "", value_count 65535, and no values behind it.
    let frame = [
        0xA7, 0x01, 0x82, 0x00, 1, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF,
    ];
    let error = decode_frame(&frame, opcode::GET).unwrap_err();
    assert_eq!(
        error.message,
        "value_count 65535 needs at least 786420 bytes, 0 left"
    );
}

#[test]
fn nonzero_flags_are_refused() {
    let frame = [
        0xA7, 0x01, 0x81, 0x01, 1, 0, 0, 0, 3, 0, 0, 0, 0x00, 0x00, 0x00,
    ];
    let (mut header, body) = split_frame(&[&frame[..3], &[0x00], &frame[4..]].concat());
    header.flags = 0x01;
    let error = decode_response(&header, body, opcode::PING).unwrap_err();
    assert_eq!(error.message, "flags 0x01; protocol v1 requires 0");
}

#[test]
fn overlong_message_is_cut_at_a_character_boundary() {
    let message = "é".repeat(40_000); // 80_000 bytes; 65_535 falls inside a character
    let mut buf = Vec::new();
    encode_error_response(opcode::GET, 1, Status::Internal, &message, &mut buf);
    let response = decode_frame(&buf, opcode::GET).unwrap();
    assert_eq!(response.message.len(), 65_534);
    assert!(message.starts_with(&response.message));
}

#[test]
#[should_panic(expected = "body does not match opcode 0x02 with status Ok")]
fn encoding_a_body_of_the_wrong_kind_panics() {
    let response = Response::ok(ResponseBody::Written {
        context: Bytes::new(),
    });
    encode_response(opcode::GET, 1, &response, &mut Vec::new());
}

#[test]
#[should_panic(expected = "GET NotFound carries a context")]
fn get_not_found_through_the_error_encoder_panics() {
    encode_error_response(opcode::GET, 1, Status::NotFound, "", &mut Vec::new());
}

#[test]
#[should_panic(expected = "values iterator yielded other than its len()")]
fn lying_values_iterator_panics() {
    struct Liar;
    impl Iterator for Liar {
        type Item = (u64, &'static [u8]);
        fn next(&mut self) -> Option<Self::Item> {
            None
        }
    }
    impl ExactSizeIterator for Liar {
        fn len(&self) -> usize {
            1
        }
    }
    encode_get_response(1, Status::Ok, b"", Liar, &mut Vec::new());
}

proptest! {
    #[test]
    fn responses_round_trip((request_opcode, response) in arb_response(), request_id: u32) {
        let mut buf = vec![0xEE]; // frames append; earlier bytes stay untouched
        encode_response(request_opcode, request_id, &response, &mut buf);
        prop_assert_eq!(buf[0], 0xEE);
        let (header, body) = split_frame(&buf[1..]);
        prop_assert_eq!(header.opcode, request_opcode | 0x80);
        prop_assert_eq!(header.request_id, request_id);
        prop_assert_eq!(decode_response(&header, body, request_opcode), Ok(response));
    }

    #[test]
    fn hot_path_encoders_match_encode_response(
        (request_opcode, mut response) in arb_response(),
        request_id: u32,
    ) {
        let mut hot = Vec::new();
        match &response.body {
            ResponseBody::Get { context, values } => {
                let values = values.iter().map(|v| (v.timestamp_us, &v.value[..]));
                encode_get_response(request_id, response.status, context, values, &mut hot);
                response.message.clear(); // the hot-path encoders send no message
            }
            ResponseBody::Written { context } => {
                encode_written_response(request_opcode, request_id, context, &mut hot);
                response.message.clear();
            }
            ResponseBody::Empty if response.status != Status::Ok => {
                let (status, message) = (response.status, &response.message);
                encode_error_response(request_opcode, request_id, status, message, &mut hot);
            }
            _ => return Ok(()),
        }
        let mut general = Vec::new();
        encode_response(request_opcode, request_id, &response, &mut general);
        prop_assert_eq!(hot, general);
    }
}
