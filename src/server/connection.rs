//! One client connection: a reader that parses and dispatches frames, a writer that
//! sends responses in batches.
//!
//! The reader owns the socket (a glommio `TcpStream`); the writer task sends on its raw
//! descriptor ([`send_all`]) and the two meet only in the connection's [`Outbox`].
//!
//! Limits: a connection has at most `connection_requests_max` requests whose responses
//! are not yet written, and the shard at most `shard_requests_max` requests in
//! progress; past either, the reader stops reading its socket. A frame whose header is not ringkv's gets an error frame
//! and the connection is closed; a body over the frame limit is refused (TooLarge)
//! and skipped without being buffered.

use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;

use glommio::net::TcpStream;
use glommio::sync::Semaphore;

use crate::protocol::{
    decode_request, encode_error_response, opcode, FrameHeader, Status, HEADER_LEN,
};
use crate::runtime::outbox::Outbox;
use crate::runtime::socket::{send_all, ReadBuffer};

use super::dispatch::{self, Route};
use super::Shard;

pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let outbox = Rc::new(Outbox::default());
    let in_flight = Rc::new(Semaphore::new(shard.connection_requests_max as u64));
    // The writer sends on the raw descriptor; the reader's stream owns (and closes) it,
    // and is dropped only after the writer has ended.
    let writer = glommio::spawn_local(write_loop(
        stream.as_raw_fd(),
        outbox.clone(),
        in_flight.clone(),
    ));
    let mut reader = Reader {
        shard,
        stream,
        input: ReadBuffer::default(),
        pending: 0,
        outbox: outbox.clone(),
        in_flight,
    };
    let close_now = reader.run().await;
    if close_now {
        // Let the error frame out, then close: the stream can no longer be parsed.
        outbox.finish();
        writer.await;
        let _ = reader.stream.shutdown(std::net::Shutdown::Both).await;
    } else {
        outbox.finish();
        writer.await;
    }
}

pub(super) async fn write_loop(fd: RawFd, outbox: Rc<Outbox>, in_flight: Rc<Semaphore>) {
    while let Some((buf, frames)) = outbox.take().await {
        if send_all(fd, &buf).await.is_err() {
            outbox.abort();
            in_flight.close();
            return;
        }
        outbox.recycle(buf);
        in_flight.signal(frames as u64);
    }
}

struct Reader {
    shard: Rc<Shard>,
    stream: TcpStream,
    /// Received bytes not yet parsed into frames.
    input: ReadBuffer,
    /// Bytes the frame at the front of `input` still needs.
    pending: usize,
    outbox: Rc<Outbox>,
    /// Requests of this connection whose responses are not written yet.
    in_flight: Rc<Semaphore>,
}

impl Reader {
    /// Reads and dispatches frames until the peer closes (false) or the framing breaks
    /// (true: close the connection after the error frame).
    async fn run(&mut self) -> bool {
        loop {
            self.pending = 0;
            while self.input.buf.len() >= HEADER_LEN {
                match self.next_frame().await {
                    Step::Dispatched => {}
                    Step::NeedBytes(n) => {
                        self.pending = n;
                        break;
                    }
                    Step::Skip(n) => {
                        if !self.skip(n).await {
                            return false;
                        }
                    }
                    Step::Close => return true,
                    Step::Stop => return false,
                }
            }
            if !self.fill().await {
                return false;
            }
        }
    }

    /// Reads more bytes; false on end of stream or error.
    async fn fill(&mut self) -> bool {
        let pending = self.pending;
        matches!(self.input.fill(&self.stream, pending).await, Ok(n) if n > 0)
    }

    /// Discards the body of a refused frame without buffering it; false if the stream
    /// ended first.
    async fn skip(&mut self, mut remaining: usize) -> bool {
        loop {
            let here = remaining.min(self.input.buf.len());
            let _ = self.input.buf.split_to(here);
            remaining -= here;
            if remaining == 0 {
                return true;
            }
            self.input.buf.clear();
            self.pending = 0;
            if !self.fill().await {
                return false;
            }
        }
    }

    async fn next_frame(&mut self) -> Step {
        let header_bytes: [u8; HEADER_LEN] = self.input.buf[..HEADER_LEN].try_into().unwrap();
        let header = match FrameHeader::decode(&header_bytes) {
            Ok(header) => header,
            Err(e) => {
                let request_id = FrameHeader::request_id_unchecked(&header_bytes);
                let message = format!("not a ringkv frame: {e}; closing the connection");
                self.outbox.push(false, |out| {
                    encode_error_response(
                        opcode::UNPARSED,
                        request_id,
                        Status::BadRequest,
                        &message,
                        out,
                    )
                });
                return Step::Close;
            }
        };
        // Wait for room before taking the request: this is what stops the reading.
        if self.in_flight.acquire(1).await.is_err() {
            return Step::Stop;
        }
        if let Err(status) = self.shard.limits.check_body_len(header.body_len) {
            let message = format!(
                "frame body of {} bytes is over the limit of {} bytes",
                header.body_len, self.shard.limits.frame_bytes_max
            );
            self.outbox.push(false, |out| {
                encode_error_response(header.opcode, header.request_id, status, &message, out)
            });
            let _ = self.input.buf.split_to(HEADER_LEN);
            return Step::Skip(header.body_len as usize);
        }
        let frame_len = HEADER_LEN + header.body_len as usize;
        if self.input.buf.len() < frame_len {
            self.in_flight.signal(1);
            return Step::NeedBytes(frame_len - self.input.buf.len());
        }
        let mut frame = self.input.buf.split_to(frame_len).freeze();
        let body = frame.split_off(HEADER_LEN);
        match decode_request(&header, body, &self.shard.limits) {
            Ok(request) => {
                self.dispatch(header.request_id, header.opcode, request)
                    .await
            }
            Err(e) => self.outbox.push(false, |out| {
                encode_error_response(header.opcode, header.request_id, e.status, &e.message, out)
            }),
        }
        Step::Dispatched
    }

    async fn dispatch(&mut self, request_id: u32, opcode: u8, request: crate::protocol::Request) {
        let shard = &self.shard;
        if shard.permits.acquire(1).await.is_err() {
            return;
        }
        let route = dispatch::route(shard, &request);
        if route == Route::Here && dispatch::answers_at_once(shard, &request) {
            self.outbox.push(false, |out| {
                dispatch::answer_at_once(shard, request_id, opcode, &request, out)
            });
            shard.permits.signal(1);
            return;
        }
        self.outbox.promise();
        let (shard, outbox) = (self.shard.clone(), self.outbox.clone());
        glommio::spawn_local(async move {
            let frame = match route {
                Route::Here => {
                    let mut frame = Vec::new();
                    dispatch::execute_local(&shard, request_id, opcode, request, &mut frame).await;
                    frame
                }
                Route::Shard(owner) => {
                    dispatch::forward(&shard, owner, request_id, opcode, request).await
                }
            };
            shard.permits.signal(1);
            outbox.push_bytes(true, &frame);
        })
        .detach();
    }
}

enum Step {
    /// A frame was taken (answered, refused, or handed to a task).
    Dispatched,
    /// The next frame is incomplete: this many more bytes are needed.
    NeedBytes(usize),
    /// A refused body of this many bytes follows and must be discarded.
    Skip(usize),
    /// The framing is broken: close after the error frame.
    Close,
    /// The connection's writer has gone: stop.
    Stop,
}
