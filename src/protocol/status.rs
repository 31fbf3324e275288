//! Wire status codes and the error a decoder returns for a malformed message.

/// The first byte of every response body. The numbers are the wire format: never
/// renumber a variant, only add new ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Status {
    /// The request was carried out.
    Ok = 0,
    /// GET: no live value for the key (the context may still name tombstones).
    NotFound = 1,
    /// A key, value, context or frame is over its limit.
    TooLarge = 2,
    /// The request is malformed: unknown opcode, bad length, trailing bytes, ...
    BadRequest = 3,
    /// Not enough replicas could be reached for the requested consistency.
    Unavailable = 4,
    /// A bug or a storage failure on the server.
    Internal = 5,
    /// The server sheds load; retry later, preferably with backoff.
    Overloaded = 6,
}

impl Status {
    /// Every status, in wire order (for tests and tables).
    pub const ALL: [Status; 7] = [
        Status::Ok,
        Status::NotFound,
        Status::TooLarge,
        Status::BadRequest,
        Status::Unavailable,
        Status::Internal,
        Status::Overloaded,
    ];

    /// The status with wire value `byte`, or `None` if v1 defines no such status.
    pub fn from_u8(byte: u8) -> Option<Status> {
        Status::ALL.get(usize::from(byte)).copied()
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
}

/// Why a message could not be decoded (or, for `Request::validate`, encoded):
/// the status to answer with and a human-readable reason that names the limit.
///
/// On the client side ([`decode_response`](super::decode_response)) a
/// `RequestError` means the response frame itself was malformed; a well-formed
/// error answer from the server is an `Ok(Response)` with a non-Ok status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status:?}: {message}")]
pub struct RequestError {
    /// Status code to send back.
    pub status: Status,
    /// What was wrong, for the client's logs.
    pub message: String,
}

impl RequestError {
    pub fn new(status: Status, message: impl Into<String>) -> RequestError {
        RequestError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> RequestError {
        RequestError::new(Status::BadRequest, message)
    }

    pub fn too_large(message: impl Into<String>) -> RequestError {
        RequestError::new(Status::TooLarge, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bytes_are_the_documented_ones() {
        let bytes: Vec<u8> = Status::ALL.iter().map(|s| s.as_u8()).collect();
        assert_eq!(bytes, [0, 1, 2, 3, 4, 5, 6]);
        for status in Status::ALL {
            assert_eq!(Status::from_u8(status.as_u8()), Some(status));
        }
        assert_eq!(Status::from_u8(7), None);
        assert_eq!(Status::from_u8(0xFF), None);
    }

    #[test]
    fn request_error_displays_status_and_reason() {
        let error = RequestError::too_large("key is 1025 bytes, limit 1024");
        assert_eq!(error.to_string(), "TooLarge: key is 1025 bytes, limit 1024");
    }
}
