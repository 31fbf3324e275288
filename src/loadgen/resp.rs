//! A small pipelined RESP2 (Redis protocol) client on glommio, for `--target redis://`:
//! GET and SET, so the same load generator drives Redis (or ringkv's RESP listener) and
//! ringkv side by side.
//!
//! Commands go out as arrays of bulk strings (`*3\r\n$3\r\nSET\r\n$k\r\nkey\r\n...`).
//! Redis answers a connection's commands in order, so the connection keeps a FIFO of
//! the requests waiting: enqueueing the bytes and the waiter happens without an await
//! between them, one reader task parses replies and hands each to the oldest waiter,
//! and one writer task sends whatever is queued in one `send` (pipelined requests leave
//! in batches, as in the ringkv client). Every length in a reply is checked against a
//! limit before anything is allocated; a reply that breaks the framing fails the
//! connection and every request waiting on it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_lite::FutureExt;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;

use crate::runtime::outbox::Outbox;
use crate::runtime::socket::{send_all, ReadBuffer};

/// Longest simple string, error or integer line accepted (without its CRLF).
const LINE_BYTES_MAX: usize = 64 << 10;
/// Largest bulk string accepted (Redis's own proto-max-bulk-len default is 512 MiB;
/// a bench value is far smaller).
const BULK_BYTES_MAX: usize = 64 << 20;
/// Most elements in an array reply, and deepest nesting.
const ARRAY_LEN_MAX: usize = 1 << 20;
const DEPTH_MAX: usize = 8;

/// One RESP2 reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$5\r\nhello` or the null bulk string `$-1`.
    Bulk(Option<Bytes>),
    /// `*2\r\n...` or the null array `*-1`.
    Array(Option<Vec<Reply>>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RespError {
    #[error("malformed reply: {0}")]
    Malformed(String),
    #[error("connection closed: {0}")]
    Closed(String),
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    #[error("server error: {0}")]
    Server(String),
    #[error("unexpected reply to {command}: {reply:?}")]
    Unexpected { command: &'static str, reply: Reply },
}

impl RespError {
    /// True if the connection is gone (no later request on it can succeed).
    pub fn is_fatal(&self) -> bool {
        matches!(self, RespError::Malformed(_) | RespError::Closed(_))
    }
}

/// Appends one command (an array of bulk strings) to `out`.
pub fn encode_command(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Parses one reply from the front of `buf`: `Ok(None)` if more bytes are needed,
/// else the reply and the bytes it took.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    parse_at(buf, 0, 0)
}

fn parse_at(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Reply, usize)>, RespError> {
    if depth > DEPTH_MAX {
        return Err(RespError::Malformed(format!(
            "nested deeper than {DEPTH_MAX}"
        )));
    }
    let Some((line, after)) = line_at(buf, at)? else {
        return Ok(None);
    };
    let (&kind, text) = line
        .split_first()
        .ok_or_else(|| RespError::Malformed("empty line".into()))?;
    let text_str = || {
        std::str::from_utf8(text)
            .map(str::to_owned)
            .map_err(|_| RespError::Malformed("line is not UTF-8".into()))
    };
    match kind {
        b'+' => Ok(Some((Reply::Simple(text_str()?), after))),
        b'-' => Ok(Some((Reply::Error(text_str()?), after))),
        b':' => Ok(Some((Reply::Integer(integer(text)?), after))),
        b'$' => bulk(buf, after, integer(text)?),
        b'*' => array(buf, after, integer(text)?, depth),
        other => Err(RespError::Malformed(format!("type byte {other:#04x}"))),
    }
}

/// The line starting at `at` (without CRLF) and where the next one starts.
fn line_at(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = &buf[at..];
    let window = &rest[..rest.len().min(LINE_BYTES_MAX + 2)];
    match window.windows(2).position(|w| w == b"\r\n") {
        Some(end) => Ok(Some((&rest[..end], at + end + 2))),
        None if rest.len() > LINE_BYTES_MAX + 1 => Err(RespError::Malformed(format!(
            "line longer than {LINE_BYTES_MAX} bytes"
        ))),
        None => Ok(None),
    }
}

fn integer(text: &[u8]) -> Result<i64, RespError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| RespError::Malformed(format!("integer {:?}", String::from_utf8_lossy(text))))
}

fn bulk(buf: &[u8], at: usize, len: i64) -> Result<Option<(Reply, usize)>, RespError> {
    if len == -1 {
        return Ok(Some((Reply::Bulk(None), at)));
    }
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= BULK_BYTES_MAX)
        .ok_or_else(|| RespError::Malformed(format!("bulk length {len}")))?;
    if buf.len() < at + len + 2 {
        return Ok(None);
    }
    if &buf[at + len..at + len + 2] != b"\r\n" {
        return Err(RespError::Malformed("bulk string not ended by CRLF".into()));
    }
    let value = Bytes::copy_from_slice(&buf[at..at + len]);
    Ok(Some((Reply::Bulk(Some(value)), at + len + 2)))
}

fn array(
    buf: &[u8],
    mut at: usize,
    len: i64,
    depth: usize,
) -> Result<Option<(Reply, usize)>, RespError> {
    if len == -1 {
        return Ok(Some((Reply::Array(None), at)));
    }
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= ARRAY_LEN_MAX)
        .ok_or_else(|| RespError::Malformed(format!("array length {len}")))?;
    // Grow as elements arrive: a length alone does not get memory.
    let mut items = Vec::new();
    for _ in 0..len {
        let Some((item, next)) = parse_at(buf, at, depth + 1)? else {
            return Ok(None);
        };
        items.push(item);
        at = next;
    }
    Ok(Some((Reply::Array(Some(items)), at)))
}

type Waiter = flume::Sender<Result<Reply, RespError>>;

/// One pipelined connection to a RESP server.
pub struct RespConnection {
    addr: String,
    outbox: Rc<Outbox>,
    /// Requests sent and not yet answered, oldest first.
    waiting: Rc<RefCell<VecDeque<Waiter>>>,
    /// Set once the connection has failed; later requests fail at once.
    failed: Rc<RefCell<Option<String>>>,
    tasks: Vec<JoinHandle<()>>,
    timeout: Duration,
}

impl RespConnection {
    pub async fn connect(host: &str, port: u16, timeout: Duration) -> Result<Self, RespError> {
        let addr = format!("{host}:{port}");
        let stream = TcpStream::connect(addr.as_str())
            .await
            .map_err(|e| RespError::Closed(format!("connect {addr}: {e}")))?;
        stream
            .set_nodelay(true)
            .map_err(|e| RespError::Closed(format!("set_nodelay {addr}: {e}")))?;
        let outbox = Rc::new(Outbox::default());
        let waiting = Rc::new(RefCell::new(VecDeque::new()));
        let failed = Rc::new(RefCell::new(None));
        // As in the ringkv client: the writer sends on the raw descriptor and holds a
        // reference that keeps it open; the reader owns the stream.
        let fd = stream.as_raw_fd();
        let stream = Rc::new(RefCell::new(stream));
        let shared = Shared {
            outbox: outbox.clone(),
            waiting: waiting.clone(),
            failed: failed.clone(),
        };
        let writer = glommio::spawn_local(write_loop(fd, stream.clone(), shared.clone())).detach();
        let reader = glommio::spawn_local(read_loop(stream, shared)).detach();
        Ok(RespConnection {
            addr,
            outbox,
            waiting,
            failed,
            tasks: vec![writer, reader],
            timeout,
        })
    }

    /// Sends one command and waits for its reply (other commands may be in flight).
    pub async fn command(&self, args: &[&[u8]]) -> Result<Reply, RespError> {
        if let Some(reason) = self.failed.borrow().clone() {
            return Err(RespError::Closed(format!("{}: {reason}", self.addr)));
        }
        let (tx, rx) = flume::bounded(1);
        // No await between these two: the reply order is the send order.
        self.waiting.borrow_mut().push_back(tx);
        self.outbox.push(false, |buf| encode_command(args, buf));
        let answer = async {
            rx.recv_async()
                .await
                .map_err(|_| RespError::Closed(self.addr.clone()))?
        };
        let timeout = self.timeout;
        let expired = async {
            glommio::timer::sleep(timeout).await;
            Err(RespError::Timeout(timeout))
        };
        // A timed-out request keeps its place in the FIFO (its reply still comes, in
        // order); only its receiver is gone.
        answer.or(expired).await
    }

    /// GET: the value, or `None` for a missing key.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Bytes>, RespError> {
        match self.command(&[b"GET", key]).await? {
            Reply::Bulk(value) => Ok(value),
            Reply::Error(e) => Err(RespError::Server(e)),
            reply => Err(RespError::Unexpected {
                command: "GET",
                reply,
            }),
        }
    }

    /// SET: `Ok` once the server answered `+OK`.
    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<(), RespError> {
        match self.command(&[b"SET", key, value]).await? {
            Reply::Simple(s) if s == "OK" => Ok(()),
            Reply::Error(e) => Err(RespError::Server(e)),
            reply => Err(RespError::Unexpected {
                command: "SET",
                reply,
            }),
        }
    }
}

impl Drop for RespConnection {
    fn drop(&mut self) {
        self.outbox.abort();
        for task in &self.tasks {
            task.cancel();
        }
    }
}

/// What the reader and writer tasks share with the connection.
#[derive(Clone)]
struct Shared {
    outbox: Rc<Outbox>,
    waiting: Rc<RefCell<VecDeque<Waiter>>>,
    failed: Rc<RefCell<Option<String>>>,
}

impl Shared {
    fn fail_all(&self, reason: String) {
        self.failed.borrow_mut().get_or_insert(reason.clone());
        for tx in self.waiting.borrow_mut().drain(..) {
            let _ = tx.send(Err(RespError::Closed(reason.clone())));
        }
        self.outbox.abort();
    }
}

async fn write_loop(fd: RawFd, _open: Rc<RefCell<TcpStream>>, shared: Shared) {
    while let Some((buf, _commands)) = shared.outbox.take().await {
        if let Err(e) = send_all(fd, &buf).await {
            shared.fail_all(format!("write: {e}"));
            return;
        }
        shared.outbox.recycle(buf);
    }
}

#[expect(
    clippy::await_holding_refcell_ref,
    reason = "the reader is the stream's only borrower; the writer only keeps it open"
)]
async fn read_loop(stream: Rc<RefCell<TcpStream>>, shared: Shared) {
    let mut input = ReadBuffer::default();
    let stream = stream.borrow_mut();
    let reason = loop {
        if let Err(e) = hand_out_replies(&mut input.buf, &shared) {
            break e.to_string();
        }
        match input.fill(&*stream, 0).await {
            Ok(0) => break "closed by the server".to_string(),
            Ok(_) => {}
            Err(e) => break format!("read: {e}"),
        }
    };
    shared.fail_all(reason);
}

/// Parses every whole reply in `buf` and gives each to the oldest waiter.
fn hand_out_replies(buf: &mut BytesMut, shared: &Shared) -> Result<(), RespError> {
    while let Some((reply, used)) = parse_reply(buf)? {
        buf.advance(used);
        let waiter = shared.waiting.borrow_mut().pop_front();
        let Some(tx) = waiter else {
            return Err(RespError::Malformed(format!(
                "a reply nobody asked for: {reply:?}"
            )));
        };
        // A request that timed out dropped its receiver; its reply is discarded.
        let _ = tx.send(Ok(reply));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> Reply {
        let (reply, used) = parse_reply(bytes).unwrap().expect("a whole reply");
        assert_eq!(used, bytes.len(), "{bytes:?}");
        reply
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode_command(&[b"SET", b"k", b"hello"], &mut out);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nhello\r\n");
    }

    #[test]
    fn every_reply_type_parses() {
        assert_eq!(parse_all(b"+OK\r\n"), Reply::Simple("OK".into()));
        assert_eq!(
            parse_all(b"-ERR wrong type\r\n"),
            Reply::Error("ERR wrong type".into())
        );
        assert_eq!(parse_all(b":-42\r\n"), Reply::Integer(-42));
        assert_eq!(
            parse_all(b"$5\r\nhe\r\no\r\n"),
            Reply::Bulk(Some(Bytes::from_static(b"he\r\no")))
        );
        assert_eq!(parse_all(b"$0\r\n\r\n"), Reply::Bulk(Some(Bytes::new())));
        assert_eq!(parse_all(b"$-1\r\n"), Reply::Bulk(None));
        assert_eq!(parse_all(b"*-1\r\n"), Reply::Array(None));
        assert_eq!(
            parse_all(b"*2\r\n:1\r\n$1\r\nx\r\n"),
            Reply::Array(Some(vec![
                Reply::Integer(1),
                Reply::Bulk(Some(Bytes::from_static(b"x")))
            ]))
        );
    }

    #[test]
    fn a_partial_reply_asks_for_more_at_every_cut() {
        let whole = b"*2\r\n$5\r\nhello\r\n+OK\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse_reply(&whole[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(parse_reply(whole).unwrap().is_some());
    }

    #[test]
    fn bad_lengths_and_framing_are_refused() {
        for bad in [
            &b"$-2\r\n"[..],
            b"$99999999999\r\n",
            b"*-5\r\n",
            b"*99999999\r\n",
            b":12x\r\n",
            b"$3\r\nabcXY",
            b"?what\r\n",
            b"\r\n",
        ] {
            assert!(
                matches!(parse_reply(bad), Err(RespError::Malformed(_))),
                "{:?}: {:?}",
                String::from_utf8_lossy(bad),
                parse_reply(bad)
            );
        }
        let long_line = [b"+".as_slice(), &vec![b'a'; LINE_BYTES_MAX + 10]].concat();
        assert!(parse_reply(&long_line).is_err());
        let deep = b"*1\r\n".repeat(DEPTH_MAX + 2);
        assert!(parse_reply(&deep).is_err());
    }
}
