//! Replies, and their bytes in RESP2 and RESP3.
//!
//! RESP3 differs from RESP2 only where ringkv's replies need it: a null is `_` (RESP2:
//! the null bulk string `$-1`), and a map is `%<n>` followed by its keys and values
//! (RESP2: an array of twice as many elements, key, value, key, value).

use std::borrow::Cow;

use bytes::Bytes;

/// The protocol a connection speaks; `HELLO 3` switches to RESP3, `HELLO 2` and
/// `RESET` back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Version {
    #[default]
    Resp2,
    Resp3,
}

impl Version {
    pub fn number(self) -> i64 {
        match self {
            Version::Resp2 => 2,
            Version::Resp3 => 3,
        }
    }
}

/// One reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`, `+PONG`: a short status line.
    Simple(Cow<'static, str>),
    /// `-CODE message`: the whole line after the `-`, code first (`ERR ...`).
    Error(String),
    Integer(i64),
    Bulk(Bytes),
    /// A missing value: GET of an absent key.
    Null,
    Array(Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    pub const OK: Reply = Reply::Simple(Cow::Borrowed("OK"));

    /// `-ERR message`.
    pub fn err(message: impl AsRef<str>) -> Reply {
        Reply::Error(format!("ERR {}", message.as_ref()))
    }

    /// `-CODE message`, `code` an upper-case word (`UNAVAILABLE`, `NOPROTO`).
    pub fn error(code: &str, message: impl AsRef<str>) -> Reply {
        debug_assert!(code.bytes().all(|b| b.is_ascii_uppercase()));
        Reply::Error(format!("{code} {}", message.as_ref()))
    }

    pub fn bulk(bytes: impl Into<Bytes>) -> Reply {
        Reply::Bulk(bytes.into())
    }

    /// A bulk string of `text`.
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Bulk(Bytes::from(text.into()))
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the reply's bytes in `version`.
    pub fn encode(&self, version: Version, out: &mut Vec<u8>) {
        match self {
            Reply::Simple(text) => line(b'+', text, out),
            Reply::Error(text) => line(b'-', text, out),
            Reply::Integer(n) => header(b':', *n, out),
            Reply::Bulk(bytes) => {
                header(b'$', bytes.len() as i64, out);
                out.extend_from_slice(bytes);
                out.extend_from_slice(b"\r\n");
            }
            Reply::Null => match version {
                Version::Resp2 => out.extend_from_slice(b"$-1\r\n"),
                Version::Resp3 => out.extend_from_slice(b"_\r\n"),
            },
            Reply::Array(items) => {
                header(b'*', items.len() as i64, out);
                for item in items {
                    item.encode(version, out);
                }
            }
            Reply::Map(pairs) => {
                match version {
                    Version::Resp2 => header(b'*', 2 * pairs.len() as i64, out),
                    Version::Resp3 => header(b'%', pairs.len() as i64, out),
                }
                for (key, value) in pairs {
                    key.encode(version, out);
                    value.encode(version, out);
                }
            }
        }
    }
}

fn header(kind: u8, number: i64, out: &mut Vec<u8>) {
    out.push(kind);
    out.extend_from_slice(number.to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A status or error line: a CR or LF inside would end it early (and let the text
/// inject replies), so they become spaces.
fn line(kind: u8, text: &str, out: &mut Vec<u8>) {
    out.push(kind);
    out.extend(
        text.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.extend_from_slice(b"\r\n");
}
