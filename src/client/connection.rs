//! One pipelined client connection.

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use ahash::AHashMap;
use futures_lite::FutureExt;
use glommio::net::TcpStream;
use glommio::task::JoinHandle;

use super::ClientError;
use crate::protocol::{
    decode_response, encode_request, FrameHeader, Request, Response, HEADER_LEN,
};
use crate::runtime::outbox::Outbox;
use crate::runtime::socket::{send_all, ReadBuffer};

/// Largest response body the client accepts (a GET with many large siblings).
const RESPONSE_BODY_BYTES_MAX: usize = 64 << 20;

type Waiting = AHashMap<u32, (u8, flume::Sender<Result<Response, ClientError>>)>;

pub struct Connection {
    addr: String,
    outbox: Rc<Outbox>,
    waiting: Rc<RefCell<Waiting>>,
    next_id: Cell<u32>,
    /// Set once the connection has failed; later requests fail at once.
    failed: Rc<RefCell<Option<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Connection {
    pub async fn connect(host: &str, port: u16) -> Result<Connection, ClientError> {
        let addr = format!("{host}:{port}");
        let io = |op| {
            let addr = addr.clone();
            move |source| ClientError::Io { op, addr, source }
        };
        let stream = TcpStream::connect(addr.as_str())
            .await
            .map_err(|e| io("connect")(e.into()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| io("set_nodelay")(e.into()))?;
        let outbox = Rc::new(Outbox::default());
        let waiting = Rc::new(RefCell::new(Waiting::default()));
        let failed = Rc::new(RefCell::new(None));
        // The reader reads the stream; the writer sends on its raw descriptor and holds
        // a second reference so the descriptor stays open (and is not reused by another
        // socket) until both have ended.
        let fd = stream.as_raw_fd();
        let stream = Rc::new(RefCell::new(stream));
        let writer = glommio::spawn_local(write_loop(
            fd,
            stream.clone(),
            outbox.clone(),
            failed.clone(),
            waiting.clone(),
        ))
        .detach();
        let reader = glommio::spawn_local(read_loop(
            stream,
            waiting.clone(),
            failed.clone(),
            outbox.clone(),
        ))
        .detach();
        Ok(Connection {
            addr,
            outbox,
            waiting,
            next_id: Cell::new(1),
            failed,
            tasks: vec![writer, reader],
        })
    }

    /// Sends one request and waits for its response (other requests may be in flight).
    pub async fn request(
        &self,
        request: &Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        if let Some(reason) = self.failed.borrow().clone() {
            return Err(ClientError::Closed(format!("{}: {reason}", self.addr)));
        }
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let (tx, rx) = flume::bounded(1);
        self.waiting.borrow_mut().insert(id, (request.opcode(), tx));
        self.outbox
            .push(false, |buf| encode_request(request, id, buf));
        let answer = async {
            rx.recv_async()
                .await
                .map_err(|_| ClientError::Closed(self.addr.clone()))?
        };
        let expired = async {
            glommio::timer::sleep(timeout).await;
            Err(ClientError::Timeout(timeout))
        };
        let result = answer.or(expired).await;
        if result.is_err() {
            self.waiting.borrow_mut().remove(&id);
        }
        result
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.outbox.abort();
        for task in &self.tasks {
            task.cancel();
        }
    }
}

fn fail_all(waiting: &RefCell<Waiting>, failed: &RefCell<Option<String>>, reason: String) {
    failed.borrow_mut().get_or_insert(reason.clone());
    for (_, (_, tx)) in waiting.borrow_mut().drain() {
        let _ = tx.send(Err(ClientError::Closed(reason.clone())));
    }
}

async fn write_loop(
    fd: RawFd,
    _open: Rc<RefCell<TcpStream>>,
    outbox: Rc<Outbox>,
    failed: Rc<RefCell<Option<String>>>,
    waiting: Rc<RefCell<Waiting>>,
) {
    while let Some((buf, _frames)) = outbox.take().await {
        if let Err(e) = send_all(fd, &buf).await {
            fail_all(&waiting, &failed, format!("write: {e}"));
            outbox.abort();
            return;
        }
        outbox.recycle(buf);
    }
}

#[expect(
    clippy::await_holding_refcell_ref,
    reason = "the reader is the stream's only borrower; the writer only keeps it open"
)]
async fn read_loop(
    stream: Rc<RefCell<TcpStream>>,
    waiting: Rc<RefCell<Waiting>>,
    failed: Rc<RefCell<Option<String>>>,
    outbox: Rc<Outbox>,
) {
    let mut input = ReadBuffer::default();
    // Only this task borrows the stream; the writer uses its descriptor.
    let stream = stream.borrow_mut();
    let reason = loop {
        let buf = &mut input.buf;
        let mut pending = 0;
        while buf.len() >= HEADER_LEN {
            let header_bytes: [u8; HEADER_LEN] = buf[..HEADER_LEN].try_into().unwrap();
            let header = match FrameHeader::decode(&header_bytes) {
                Ok(h) => h,
                Err(e) => {
                    fail_all(&waiting, &failed, format!("bad response frame: {e}"));
                    outbox.abort();
                    return;
                }
            };
            let frame_len = HEADER_LEN + header.body_len as usize;
            if header.body_len as usize > RESPONSE_BODY_BYTES_MAX {
                fail_all(
                    &waiting,
                    &failed,
                    format!("response body of {} bytes", header.body_len),
                );
                outbox.abort();
                return;
            }
            if buf.len() < frame_len {
                pending = frame_len - buf.len();
                break;
            }
            let mut frame = buf.split_to(frame_len).freeze();
            let body = frame.split_off(HEADER_LEN);
            let entry = waiting.borrow_mut().remove(&header.request_id);
            if let Some((opcode, tx)) = entry {
                let result = decode_response(&header, body, opcode)
                    .map_err(|e| ClientError::Protocol(e.message));
                let _ = tx.send(result);
            }
        }
        match input.fill(&*stream, pending).await {
            Ok(0) => break "closed by the server".to_string(),
            Ok(_) => {}
            Err(e) => break format!("read: {e}"),
        }
    };
    fail_all(&waiting, &failed, reason);
    outbox.abort();
}
