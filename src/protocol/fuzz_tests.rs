//! "Never panics" properties for every decoder: arbitrary bytes, mutated valid
//! frames, and valid frames truncated at every length.
//!
//! Every v1 encoding is canonical, so whenever a decoder accepts some bytes,
//! re-encoding what it returned must give the same bytes back; the properties
//! check that too, which catches decoders that accept more than the format says.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;

use super::test_support::{arb_request, arb_response};
use super::*;

/// Decodes a whole frame as a request; on success, checks it re-encodes to `frame`.
fn check_request_frame(frame: &[u8], limits: &Limits) -> Result<(), TestCaseError> {
    let Some(header_bytes) = frame.first_chunk::<HEADER_LEN>() else {
        return Ok(());
    };
    let Ok(header) = FrameHeader::decode(header_bytes) else {
        return Ok(());
    };
    let body = Bytes::copy_from_slice(&frame[HEADER_LEN..]);
    if let Ok(request) = decode_request(&header, body, limits) {
        let mut buf = Vec::new();
        encode_request(&request, header.request_id, &mut buf);
        prop_assert_eq!(&buf[..], frame);
    }
    Ok(())
}

/// Decodes a whole frame as a response; on success, checks it re-encodes to `frame`.
fn check_response_frame(frame: &[u8], expected_request_opcode: u8) -> Result<(), TestCaseError> {
    let Some(header_bytes) = frame.first_chunk::<HEADER_LEN>() else {
        return Ok(());
    };
    let Ok(header) = FrameHeader::decode(header_bytes) else {
        return Ok(());
    };
    let body = Bytes::copy_from_slice(&frame[HEADER_LEN..]);
    if let Ok(response) = decode_response(&header, body, expected_request_opcode) {
        let answered = if header.opcode == opcode::UNPARSED {
            opcode::UNPARSED
        } else {
            expected_request_opcode
        };
        let mut buf = Vec::new();
        encode_response(answered, header.request_id, &response, &mut buf);
        prop_assert_eq!(&buf[..], frame);
    }
    Ok(())
}

/// A header for `body` whose body_len is honest, so decoding reaches the fields.
fn frame_with(opcode: u8, flags: u8, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    FrameHeader {
        opcode,
        flags,
        request_id: 5,
        body_len: body.len() as u32,
    }
    .encode_into(&mut frame);
    frame.extend_from_slice(body);
    frame
}

/// Mostly known opcodes (so the body parsers run), sometimes anything.
fn arb_opcode() -> impl Strategy<Value = u8> {
    prop_oneof![4 => 1u8..=5, 1 => any::<u8>()]
}

fn arb_flags() -> impl Strategy<Value = u8> {
    prop_oneof![9 => Just(0u8), 1 => any::<u8>()]
}

/// Small limits so that random lengths hit them too.
fn small_limits() -> Limits {
    Limits {
        key_bytes_max: 8,
        value_bytes_max: 16,
        frame_bytes_max: 48,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_request_bodies_never_panic(
        opcode in arb_opcode(),
        flags in arb_flags(),
        body in vec(any::<u8>(), 0..64),
    ) {
        let frame = frame_with(opcode, flags, &body);
        check_request_frame(&frame, &Limits::default())?;
        check_request_frame(&frame, &small_limits())?;
    }

    #[test]
    fn arbitrary_request_frames_never_panic(frame in vec(any::<u8>(), 0..64)) {
        check_request_frame(&frame, &Limits::default())?;
    }

    #[test]
    fn arbitrary_response_bodies_never_panic(
        opcode in arb_opcode(),
        flags in arb_flags(),
        body in vec(any::<u8>(), 0..96),
    ) {
        check_response_frame(&frame_with(opcode | 0x80, flags, &body), opcode)?;
        check_response_frame(&frame_with(opcode::UNPARSED, flags, &body), opcode)?;
    }

    #[test]
    fn arbitrary_response_frames_never_panic(frame in vec(any::<u8>(), 0..96), opcode: u8) {
        check_response_frame(&frame, opcode)?;
    }

    #[test]
    fn mutated_request_frames_never_panic(
        request in arb_request(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut frame = Vec::new();
        encode_request(&request, 5, &mut frame);
        for (index, byte) in flips {
            let at = index.index(frame.len());
            frame[at] = byte;
        }
        check_request_frame(&frame, &Limits::default())?;
    }

    #[test]
    fn mutated_response_frames_never_panic(
        (request_opcode, response) in arb_response(),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut frame = Vec::new();
        encode_response(request_opcode, 5, &response, &mut frame);
        for (index, byte) in flips {
            let at = index.index(frame.len());
            frame[at] = byte;
        }
        check_response_frame(&frame, request_opcode)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Cut a valid frame at every length. With the original header, a short body
    /// disagrees with body_len; with body_len rewritten to match, the field parsers
    /// run out of bytes. Both must be refused: no strict prefix of a v1 body is a
    /// valid body.
    #[test]
    fn truncated_requests_are_refused(request in arb_request()) {
        let mut frame = Vec::new();
        encode_request(&request, 5, &mut frame);
        let header = FrameHeader::decode(frame.first_chunk().unwrap()).unwrap();
        for cut in 0..frame.len() {
            check_request_frame(&frame[..cut], &Limits::default())?;
            let Some(body) = frame[..cut].get(HEADER_LEN..) else { continue };
            let honest = FrameHeader { body_len: body.len() as u32, ..header };
            let body = Bytes::copy_from_slice(body);
            let result = decode_request(&honest, body.clone(), &Limits::default());
            prop_assert_eq!(result.unwrap_err().status, Status::BadRequest);
            prop_assert!(decode_request(&header, body, &Limits::default()).is_err());
        }
    }

    #[test]
    fn truncated_responses_are_refused((request_opcode, response) in arb_response()) {
        let mut frame = Vec::new();
        encode_response(request_opcode, 5, &response, &mut frame);
        let header = FrameHeader::decode(frame.first_chunk().unwrap()).unwrap();
        for cut in 0..frame.len() {
            check_response_frame(&frame[..cut], request_opcode)?;
            let Some(body) = frame[..cut].get(HEADER_LEN..) else { continue };
            let honest = FrameHeader { body_len: body.len() as u32, ..header };
            let body = Bytes::copy_from_slice(body);
            prop_assert!(decode_response(&honest, body.clone(), request_opcode).is_err());
            prop_assert!(decode_response(&header, body, request_opcode).is_err());
        }
    }
}
