//! The 12-byte frame header every message starts with, and the size limits that are
//! checked against it before a body is read.
//!
//! ```text
//! offset  size  field
//!      0     1  magic       0xA7
//!      1     1  version     1
//!      2     1  opcode      request opcode, or request opcode | 0x80 in a response
//!      3     1  flags       0 (reserved in v1)
//!      4     4  request_id  u32 LE, echoed in the response
//!      8     4  body_len    u32 LE, bytes of body that follow
//! ```

use super::{RequestError, Status};

/// First byte of every frame. Chosen to be neither ASCII nor a RESP type byte, so a
/// text client that reaches this port is told so at once.
pub const MAGIC: u8 = 0xA7;
/// The protocol version this module speaks.
pub const VERSION: u8 = 1;

const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + size_of::<u8>();
const OPCODE_OFFSET: usize = VERSION_OFFSET + size_of::<u8>();
const FLAGS_OFFSET: usize = OPCODE_OFFSET + size_of::<u8>();
const REQUEST_ID_OFFSET: usize = FLAGS_OFFSET + size_of::<u8>();
const BODY_LEN_OFFSET: usize = REQUEST_ID_OFFSET + size_of::<u32>();
/// Bytes in a frame header.
pub const HEADER_LEN: usize = BODY_LEN_OFFSET + size_of::<u32>();
const _: () = assert!(HEADER_LEN == 12);

/// Default key limit: DESIGN §1 promises keys up to 1 KiB.
pub const KEY_BYTES_MAX_DEFAULT: u32 = 1024;
/// Default value limit: DESIGN §1 promises values up to 1 MiB.
pub const VALUE_BYTES_MAX_DEFAULT: u32 = 1 << 20;
/// Room a frame needs besides its value: key, context and the fixed fields of a PUT
/// fit in 1024 + 4096 + 9 bytes; 64 KiB leaves headroom for future fields.
pub const FRAME_OVERHEAD_BYTES: u32 = 64 << 10;
/// Largest causal context in a request or response. Fixed by v1, not configurable:
/// a context is a pruned version vector and stays far smaller (DESIGN §5).
pub const CONTEXT_BYTES_MAX: u32 = 4096;

/// The fixed part of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// What the body is: a request opcode, or `request opcode | 0x80` for its answer.
    pub opcode: u8,
    /// Reserved for later versions; 0 in v1 (a request with other flags is refused).
    pub flags: u8,
    /// Chosen by the client and echoed in the response, so pipelined answers that
    /// come back out of order can be matched to their requests.
    pub request_id: u32,
    /// Bytes of body after the header; checked with [`Limits::check_body_len`]
    /// before the body is read.
    pub body_len: u32,
}

/// A header that is not protocol v1. The connection cannot be resynchronised after
/// it: the server answers with opcode `0xFF` and closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic byte 0x{0:02x}, expected 0x{MAGIC:02x}")]
    BadMagic(u8),
    #[error("unsupported protocol version {0}, this server speaks {VERSION}")]
    UnsupportedVersion(u8),
}

impl FrameHeader {
    /// Appends the 12 header bytes to `buf`.
    pub fn encode_into(&self, buf: &mut Vec<u8>) {
        let start = buf.len();
        buf.push(MAGIC);
        buf.push(VERSION);
        buf.push(self.opcode);
        buf.push(self.flags);
        buf.extend_from_slice(&self.request_id.to_le_bytes());
        buf.extend_from_slice(&self.body_len.to_le_bytes());
        debug_assert_eq!(buf.len() - start, HEADER_LEN);
    }

    /// Parses a header, checking magic and version only: opcode, flags and body
    /// length are the caller's to judge (see [`Limits::check_body_len`]).
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<FrameHeader, FrameError> {
        if bytes[MAGIC_OFFSET] != MAGIC {
            return Err(FrameError::BadMagic(bytes[MAGIC_OFFSET]));
        }
        if bytes[VERSION_OFFSET] != VERSION {
            return Err(FrameError::UnsupportedVersion(bytes[VERSION_OFFSET]));
        }
        Ok(FrameHeader {
            opcode: bytes[OPCODE_OFFSET],
            flags: bytes[FLAGS_OFFSET],
            request_id: FrameHeader::request_id_unchecked(bytes),
            body_len: read_u32(bytes, BODY_LEN_OFFSET),
        })
    }

    /// The request id field of a header that may have failed [`FrameHeader::decode`],
    /// so the error frame can still echo it (meaningless if the peer does not speak
    /// this protocol at all).
    pub fn request_id_unchecked(bytes: &[u8; HEADER_LEN]) -> u32 {
        read_u32(bytes, REQUEST_ID_OFFSET)
    }
}

fn read_u32(bytes: &[u8; HEADER_LEN], offset: usize) -> u32 {
    let mut field = [0u8; size_of::<u32>()];
    field.copy_from_slice(&bytes[offset..offset + size_of::<u32>()]);
    u32::from_le_bytes(field)
}

/// Appends a header with `body_len` 0 and returns where the frame starts, for
/// [`finish_frame`] to patch the length once the body is written.
pub(crate) fn begin_frame(opcode: u8, request_id: u32, buf: &mut Vec<u8>) -> usize {
    let start = buf.len();
    FrameHeader {
        opcode,
        flags: 0,
        request_id,
        body_len: 0,
    }
    .encode_into(buf);
    start
}

/// Patches the body length of the frame begun at `start` to cover everything
/// appended to `buf` since its header.
pub(crate) fn finish_frame(start: usize, buf: &mut [u8]) {
    assert_eq!(
        buf[start + MAGIC_OFFSET],
        MAGIC,
        "finish_frame without begin_frame"
    );
    let body_len = buf.len() - start - HEADER_LEN;
    let body_len = u32::try_from(body_len).expect("frame body must fit the u32 body_len field");
    let field = start + BODY_LEN_OFFSET;
    buf[field..field + size_of::<u32>()].copy_from_slice(&body_len.to_le_bytes());
}

/// Size limits a server enforces on requests. Every length is checked against
/// these before anything is allocated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key accepted (keys are 1..=key_bytes_max bytes).
    pub key_bytes_max: u32,
    /// Longest value accepted in a PUT.
    pub value_bytes_max: u32,
    /// Longest request body accepted; a larger `body_len` is refused from the
    /// header alone, before the body is read.
    pub frame_bytes_max: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            key_bytes_max: KEY_BYTES_MAX_DEFAULT,
            value_bytes_max: VALUE_BYTES_MAX_DEFAULT,
            frame_bytes_max: VALUE_BYTES_MAX_DEFAULT + FRAME_OVERHEAD_BYTES,
        }
    }
}

impl Limits {
    /// `Err(Status::TooLarge)` when a header announces a body longer than
    /// `frame_bytes_max`; call it before reading or allocating the body.
    pub fn check_body_len(&self, body_len: u32) -> Result<(), Status> {
        if body_len > self.frame_bytes_max {
            return Err(Status::TooLarge);
        }
        Ok(())
    }
}

/// Checks what every frame's header must agree with, request or response: no flags in
/// v1, and a body of exactly `body_len` bytes.
pub(crate) fn check_header_matches_body(
    header: &FrameHeader,
    body: &[u8],
) -> Result<(), RequestError> {
    if header.flags != 0 {
        return Err(RequestError::bad_request(format!(
            "flags 0x{:02x}; protocol v1 requires 0",
            header.flags
        )));
    }
    if body.len() as u64 != u64::from(header.body_len) {
        return Err(RequestError::bad_request(format!(
            "body is {} bytes, header says {}",
            body.len(),
            header.body_len
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_golden_bytes() {
        let header = FrameHeader {
            opcode: 0x02,
            flags: 0,
            request_id: 7,
            body_len: 5,
        };
        let golden = [
            0xA7, 0x01, 0x02, 0x00, 0x07, 0x00, 0x00, 0x00, 0x05, 0x00, 0x00, 0x00,
        ];
        let mut buf = Vec::new();
        header.encode_into(&mut buf);
        assert_eq!(buf, golden);
        assert_eq!(FrameHeader::decode(&golden), Ok(header));
    }

    #[test]
    fn header_fields_are_little_endian() {
        let header = FrameHeader {
            opcode: 0x83,
            flags: 0,
            request_id: 0x0403_0201,
            body_len: 0x0807_0605,
        };
        let mut buf = Vec::new();
        header.encode_into(&mut buf);
        assert_eq!(buf, [0xA7, 0x01, 0x83, 0x00, 1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    fn bad_magic_is_rejected() {
        let bytes = [b'*', 0x01, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(FrameHeader::decode(&bytes), Err(FrameError::BadMagic(b'*')));
    }

    #[test]
    fn other_versions_are_rejected() {
        let bytes = [0xA7, 0x02, 0x02, 0x00, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            FrameHeader::decode(&bytes),
            Err(FrameError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn request_id_survives_a_bad_header() {
        let bytes = [0x00, 0x09, 0x02, 0x00, 0x2A, 0, 0, 0, 0, 0, 0, 0];
        assert!(FrameHeader::decode(&bytes).is_err());
        assert_eq!(FrameHeader::request_id_unchecked(&bytes), 42);
    }

    #[test]
    fn default_limits_are_the_documented_ones() {
        let limits = Limits::default();
        assert_eq!(limits.key_bytes_max, 1024);
        assert_eq!(limits.value_bytes_max, 1_048_576);
        assert_eq!(limits.frame_bytes_max, 1_048_576 + 65_536);
    }

    #[test]
    fn oversize_body_is_refused_from_the_header_alone() {
        let limits = Limits::default();
        let golden = [
            0xA7, 0x01, 0x03, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x11, 0x00,
        ];
        let header = FrameHeader::decode(&golden).unwrap();
        assert_eq!(header.body_len, limits.frame_bytes_max + 1);
        assert_eq!(
            limits.check_body_len(header.body_len),
            Err(Status::TooLarge)
        );
        assert_eq!(limits.check_body_len(limits.frame_bytes_max), Ok(()));
    }

    #[test]
    fn finish_frame_patches_the_body_length() {
        let mut buf = vec![0xEE]; // bytes of an earlier frame stay untouched
        let start = begin_frame(0x81, 3, &mut buf);
        buf.extend_from_slice(&[1, 2, 3]);
        finish_frame(start, &mut buf);
        assert_eq!(
            buf,
            [0xEE, 0xA7, 0x01, 0x81, 0x00, 3, 0, 0, 0, 3, 0, 0, 0, 1, 2, 3]
        );
    }

    proptest! {
        #[test]
        fn header_round_trips(opcode: u8, flags: u8, request_id: u32, body_len: u32) {
            let header = FrameHeader { opcode, flags, request_id, body_len };
            let mut buf = Vec::new();
            header.encode_into(&mut buf);
            let bytes: [u8; HEADER_LEN] = buf.try_into().unwrap();
            prop_assert_eq!(FrameHeader::decode(&bytes), Ok(header));
        }

        #[test]
        fn arbitrary_header_bytes_never_panic(bytes: [u8; HEADER_LEN]) {
            match FrameHeader::decode(&bytes) {
                Ok(header) => {
                    prop_assert_eq!((bytes[0], bytes[1]), (MAGIC, VERSION));
                    let mut buf = Vec::new();
                    header.encode_into(&mut buf);
                    prop_assert_eq!(&buf[..], &bytes[..]);
                }
                Err(FrameError::BadMagic(magic)) => prop_assert_eq!(magic, bytes[0]),
                Err(FrameError::UnsupportedVersion(v)) => prop_assert_eq!(v, bytes[1]),
            }
        }
    }
}
