//! The Redis-protocol (RESP) front end: redis-cli, redis-benchmark and redis-py talk to
//! a node as to a Redis server (docs/resp.md).
//!
//! Every shard accepts on the RESP port (`--resp-port`; SO_REUSEPORT spreads the
//! connections over the shards, as for the client port). A connection's reader parses
//! commands ([`crate::protocol::resp`]), decides what each one is (`commands`) and
//! either answers at once (PING, HELLO, CONFIG GET, ...) or runs a store operation
//! (`store`): GET, SET and DEL become the binary protocol's requests and run through
//! the same routing and coordinator ([`super::dispatch::run`], and
//! [`super::dispatch::write`] for writes, which skips the response frame). A GET that
//! memory answers is answered inline, as the binary protocol's is; an operation with
//! nothing pipelined behind it and nothing of its connection running is awaited by the
//! reader itself; otherwise it runs as its own task.
//!
//! Redis answers a connection's commands in order, and runs them in order: a
//! pipelined `SET k v` then `GET k` reads `v`. So replies wait for the ones before
//! them (`InOrder`), and a command waits to start while an earlier command of the
//! same connection that writes one of its keys — or reads one it writes — is still
//! running (`BusyKeys`); commands on other keys run concurrently. Limits: as a
//! binary connection, at most `connection_requests_max` replies not yet written (then
//! the reader stops reading), each store request holds one of the shard's permits,
//! and one command takes at most [`RespLimits::command_bytes_max`] bytes. Input that
//! is not RESP gets `-ERR Protocol error: ...` and the connection is closed.
//!
//! Per-connection state is the reader's own or in `Rc`/`RefCell`; nothing here is
//! shared across shards.

mod commands;
mod store;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::task::{Poll, Waker};

use ahash::AHashMap;
use bytes::Bytes;
use glommio::net::TcpStream;
use glommio::sync::Semaphore;

use crate::protocol::resp::{parse, Parsed, Reply, RespLimits, Version};
use crate::runtime::outbox::Outbox;
use crate::runtime::socket::ReadBuffer;

use super::Shard;
use commands::Action;

/// A shard's RESP front end: its settings and its connection count.
pub struct Front {
    /// The port, for INFO (`None`: the front end is off and nothing connects).
    pub port: Option<u16>,
    pub limits: RespLimits,
    /// Open RESP connections on this shard (INFO `shard_connected_clients`).
    connections: Cell<usize>,
    /// Connections accepted so far on this shard, for CLIENT ID.
    accepted: Cell<u64>,
}

impl Front {
    pub fn new(port: Option<u16>, limits: RespLimits) -> Front {
        Front {
            port,
            limits,
            connections: Cell::new(0),
            accepted: Cell::new(0),
        }
    }

    /// A client id unique on this node: a per-shard count, then the shard.
    fn next_client_id(&self, shard: usize) -> u64 {
        self.accepted.set(self.accepted.get() + 1);
        self.accepted.get() << 8 | shard as u64
    }
}

/// What a connection remembers between commands.
pub struct Session {
    pub version: Version,
    /// CLIENT SETNAME / HELLO SETNAME.
    pub name: Option<Bytes>,
    /// CLIENT ID.
    pub id: u64,
}

pub async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let front = &shard.resp;
    front.connections.set(front.connections.get() + 1);
    let outbox = Rc::new(Outbox::default());
    let in_flight = Rc::new(Semaphore::new(shard.connection_requests_max as u64));
    // As in the binary connection: the writer sends on the raw descriptor, the reader's
    // stream owns it and is dropped only after the writer has ended.
    let writer = glommio::spawn_local(super::connection::write_loop(
        stream.as_raw_fd(),
        outbox.clone(),
        in_flight.clone(),
    ));
    let mut reader = Reader {
        session: Session {
            version: Version::Resp2,
            name: None,
            id: front.next_client_id(shard.id),
        },
        shard: shard.clone(),
        stream,
        input: ReadBuffer::default(),
        pending: 0,
        replies: Rc::new(InOrder::new(outbox.clone())),
        busy: Rc::default(),
        in_flight,
    };
    let end = reader.run().await;
    outbox.finish();
    writer.await;
    if end == End::Close {
        let _ = reader.stream.shutdown(std::net::Shutdown::Both).await;
    }
    let front = &shard.resp;
    front.connections.set(front.connections.get() - 1);
}

#[derive(PartialEq, Eq)]
enum End {
    /// The peer closed, or the writer failed.
    Stopped,
    /// QUIT, or input that is not RESP: close once the replies are out.
    Close,
}

struct Reader {
    shard: Rc<Shard>,
    stream: TcpStream,
    /// Received bytes not yet parsed into commands.
    input: ReadBuffer,
    /// Bytes the command at the front of `input` still needs (at least).
    pending: usize,
    session: Session,
    replies: Rc<InOrder>,
    busy: Rc<BusyKeys>,
    /// Commands of this connection whose replies are not written yet.
    in_flight: Rc<Semaphore>,
}

impl Reader {
    async fn run(&mut self) -> End {
        loop {
            self.pending = 0;
            loop {
                match parse(&self.input.buf, &self.shard.resp.limits) {
                    Ok(Parsed::Incomplete { needed }) => {
                        self.pending = needed;
                        break;
                    }
                    Ok(Parsed::Nothing { len }) => {
                        let _ = self.input.buf.split_to(len);
                    }
                    Ok(Parsed::Command { args, len }) => {
                        let command = self.input.buf.split_to(len).freeze();
                        let args = args.into_iter().map(|a| a.resolve(&command)).collect();
                        if let Some(end) = self.command(args).await {
                            return end;
                        }
                    }
                    Err(e) => {
                        let seq = self.replies.ticket();
                        self.replies
                            .fill(seq, self.session.version, Reply::err(e.to_string()));
                        return End::Close;
                    }
                }
            }
            let pending = self.pending;
            match self.input.fill(&self.stream, pending).await {
                Ok(n) if n > 0 => {}
                _ => return End::Stopped,
            }
        }
    }

    /// Decides and starts one command; `Some` when the connection ends with it.
    async fn command(&mut self, args: Vec<Bytes>) -> Option<End> {
        // Wait for room before taking the command: this is what stops the reading.
        if self.in_flight.acquire(1).await.is_err() {
            return Some(End::Stopped);
        }
        let seq = self.replies.ticket();
        let action = commands::decide(&self.shard, &mut self.session, args);
        // After the decision: HELLO 3 answers in RESP3 already.
        let version = self.session.version;
        match action {
            Action::Reply(reply) => self.replies.fill(seq, version, reply),
            Action::Quit(reply) => {
                self.replies.fill(seq, version, reply);
                return Some(End::Close);
            }
            Action::Store(op) if !self.busy.any_written(&op) => {
                match store::at_once(&self.shard, &op) {
                    Some(reply) => self.replies.fill(seq, version, reply),
                    None => self.start(seq, version, op).await,
                }
            }
            Action::Store(op) => self.start(seq, version, op).await,
        }
        None
    }

    /// Runs a store command as its own task, once no earlier command of the connection
    /// holds its keys in a way that conflicts.
    async fn start(&mut self, seq: u64, version: Version, op: store::Op) {
        if self.input.buf.is_empty() && self.busy.is_idle() {
            // Nothing pipelined behind it and nothing of this connection running: the
            // reader runs it itself (no task, no key bookkeeping); it would only wait
            // for the socket otherwise.
            let reply = store::run(&self.shard, op).await;
            self.replies.fill(seq, version, reply);
            return;
        }
        let access = op.access();
        self.busy.wait_clear(&access).await;
        self.busy.hold(&access);
        let (shard, replies, busy) = (self.shard.clone(), self.replies.clone(), self.busy.clone());
        glommio::spawn_local(async move {
            let reply = store::run(&shard, op).await;
            busy.release(&access);
            replies.fill(seq, version, reply);
        })
        .detach();
    }
}

/// Replies leave in the order their commands came, whatever order they are ready in.
struct InOrder {
    outbox: Rc<Outbox>,
    order: RefCell<Order>,
}

#[derive(Default)]
struct Order {
    /// Sequence number of `slots[0]`: the oldest reply not yet handed to the outbox.
    first: u64,
    /// One per command taken, its reply once it is ready.
    slots: VecDeque<Option<(Version, Reply)>>,
}

impl InOrder {
    fn new(outbox: Rc<Outbox>) -> InOrder {
        InOrder {
            outbox,
            order: RefCell::default(),
        }
    }

    /// A place in line for the next command's reply.
    fn ticket(&self) -> u64 {
        self.outbox.promise();
        let mut order = self.order.borrow_mut();
        order.slots.push_back(None);
        order.first + order.slots.len() as u64 - 1
    }

    /// The reply of ticket `seq`; it and every ready reply after it go out, in order.
    fn fill(&self, seq: u64, version: Version, reply: Reply) {
        let mut order = self.order.borrow_mut();
        let index = (seq - order.first) as usize;
        assert!(order.slots[index].is_none(), "reply {seq} filled twice");
        order.slots[index] = Some((version, reply));
        while let Some(Some(_)) = order.slots.front() {
            let (version, reply) = order.slots.pop_front().flatten().expect("front is ready");
            order.first += 1;
            self.outbox.push(true, |out| reply.encode(version, out));
        }
    }
}

/// The keys a command reads or writes.
pub struct Access {
    keys: Vec<Bytes>,
    writes: bool,
}

/// Keys that commands of one connection are working on: a command waits while an
/// earlier one writes a key it touches, or reads a key it writes.
#[derive(Default)]
struct BusyKeys {
    keys: RefCell<AHashMap<Bytes, Holders>>,
    /// The reader, waiting for a key to become free.
    waiter: Cell<Option<Waker>>,
}

#[derive(Default)]
struct Holders {
    readers: u32,
    writing: bool,
}

impl BusyKeys {
    /// No command of the connection holds a key.
    fn is_idle(&self) -> bool {
        self.keys.borrow().is_empty()
    }

    /// Whether an earlier command is writing a key that `op` reads (the only conflict
    /// a GET answered at once can have).
    fn any_written(&self, op: &store::Op) -> bool {
        let keys = self.keys.borrow();
        match op {
            store::Op::Get(key) => keys.get(key).is_some_and(|h| h.writing),
            _ => !keys.is_empty(),
        }
    }

    fn conflicts(&self, access: &Access) -> bool {
        let keys = self.keys.borrow();
        access.keys.iter().any(|key| match keys.get(key) {
            Some(holders) => holders.writing || (access.writes && holders.readers > 0),
            None => false,
        })
    }

    async fn wait_clear(&self, access: &Access) {
        poll_fn(|cx| {
            if !self.conflicts(access) {
                return Poll::Ready(());
            }
            self.waiter.set(Some(cx.waker().clone()));
            Poll::Pending
        })
        .await
    }

    fn hold(&self, access: &Access) {
        let mut keys = self.keys.borrow_mut();
        for key in &access.keys {
            let holders = keys.entry(key.clone()).or_default();
            if access.writes {
                debug_assert!(!holders.writing && holders.readers == 0);
                holders.writing = true;
            } else {
                holders.readers += 1;
            }
        }
    }

    fn release(&self, access: &Access) {
        let mut keys = self.keys.borrow_mut();
        for key in &access.keys {
            let Some(holders) = keys.get_mut(key) else {
                continue;
            };
            if access.writes {
                holders.writing = false;
            } else {
                holders.readers -= 1;
            }
            if !holders.writing && holders.readers == 0 {
                keys.remove(key);
            }
        }
        drop(keys);
        if let Some(waker) = self.waiter.take() {
            waker.wake();
        }
    }
}
