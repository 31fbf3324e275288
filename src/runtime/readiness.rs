//! Socket readiness from one epoll instance per executor, instead of one io_uring poll
//! per wait.
//!
//! glommio 0.9 waits for a socket to become readable with an io_uring `POLL_ADD`, and
//! arms one again after every read that did not fill the buffer. Its rings are set up
//! without `IORING_SETUP_COOP_TASKRUN`, so every such completion reaches a busy shard as
//! a reschedule interrupt: one per request under unpipelined load (42 000 a second on a
//! shard serving 50 000 GETs, against 50 for Redis's epoll loop), and about a quarter of
//! the shard's time (perf/RESULTS.md).
//!
//! An epoll instance collects readiness without interrupting anyone. Sockets are
//! registered edge-triggered; a reader calls [`Readable::recv`], which tries a
//! non-blocking `recv(2)` and, only when that finds nothing, waits for an edge reported
//! after it. One driver task per executor takes the edges with a non-blocking
//! `epoll_wait` between rounds of the other tasks. Only when a round finds nothing,
//! twice in a row, does it ask glommio to wake it when the epoll descriptor itself
//! turns readable: one io_uring poll per idle spell, not per request.
//!
//! Why edge-triggered: a reader that stops reading (its connection has as many requests
//! in flight as it may) leaves data in its socket, which a level-triggered instance
//! would report on every round. An edge is never missed, because a reader waits only
//! after a `recv` returned `EAGAIN` or came back short (the socket was empty then), and
//! data that arrives after that raises a new edge.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::AsyncReadExt;

/// Edges taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 256;

/// One non-blocking `recv(2)`; `None` when nothing is there yet.
pub fn try_recv(fd: RawFd, buf: &mut [u8]) -> Option<io::Result<usize>> {
    loop {
        // SAFETY: `buf` is a valid, writable slice of `buf.len()` bytes.
        let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Some(Ok(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return None,
            _ => return Some(Err(err)),
        }
    }
}

/// A socket registered with this executor's epoll instance, for reading.
///
/// Dropping it removes the registration. Closing the socket first is fine too: the
/// kernel forgets a closed socket's registration itself, and the removal then fails
/// harmlessly (only this executor registers with its instance, and nothing runs on it
/// between the two drops to reuse the descriptor number).
pub struct Readable {
    fd: RawFd,
    /// The last `recv` came back short: the socket was empty after it.
    drained: Cell<bool>,
    slot: usize,
    generation: u32,
    poller: Rc<Poller>,
}

impl Readable {
    /// Registers `fd`, which the caller keeps open for the `Readable`'s life.
    pub fn new(fd: RawFd) -> io::Result<Readable> {
        let poller = Poller::current()?;
        let (slot, generation) = poller.allocate();
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token(slot, generation),
        };
        // SAFETY: `event` is a valid epoll_event; the kernel copies it.
        let rc = unsafe {
            libc::epoll_ctl(
                poller.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd,
                &mut event,
            )
        };
        if rc < 0 {
            let err = io::Error::last_os_error();
            poller.release(slot);
            return Err(err);
        }
        Ok(Readable {
            fd,
            drained: Cell::new(false),
            slot,
            generation,
            poller,
        })
    }

    /// Reads what the socket has (`Ok(0)` at end of stream), waiting for it if nothing.
    ///
    /// A read that came back short emptied the socket, so the next call waits for an
    /// edge before it reads, rather than spending a `recv` to learn `EAGAIN`: under
    /// unpipelined load that was every other `recv` a shard made. Nothing is missed:
    /// the slot's flag is cleared just before each `recv`, with no await between, so
    /// any edge taken after it is for data that arrived after the flag was cleared; and
    /// data arriving after the short read raises an edge of its own (the kernel reports
    /// a socket again on every arrival after its last report), which the driver takes.
    /// The exception is the end of the stream: a peer that sends its last bytes and
    /// closes raises one edge for both, and nothing after it. So once any edge has said
    /// hang-up or error, every call reads first (and gets the 0 or the error).
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        if self.drained.get() && !self.poller.slots.borrow()[self.slot].hangup {
            self.edge().await;
        }
        loop {
            self.poller.slots.borrow_mut()[self.slot].ready = false;
            if let Some(result) = try_recv(self.fd, buf) {
                self.drained
                    .set(matches!(result, Ok(n) if n > 0 && n < buf.len()));
                return result;
            }
            self.edge().await;
        }
    }

    /// Waits for an edge the driver took after this call began, or a stale one it took
    /// before (the caller's `recv` then finds nothing and waits again).
    async fn edge(&self) {
        poll_fn(|cx| {
            let mut slots = self.poller.slots.borrow_mut();
            let slot = &mut slots[self.slot];
            debug_assert_eq!(slot.generation, self.generation);
            if std::mem::take(&mut slot.ready) {
                return Poll::Ready(());
            }
            slot.waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

impl Drop for Readable {
    fn drop(&mut self) {
        // SAFETY: plain syscall; a descriptor already closed only makes it fail.
        unsafe {
            libc::epoll_ctl(
                self.poller.epoll.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                self.fd,
                std::ptr::null_mut(),
            );
        }
        self.poller.release(self.slot);
    }
}

fn token(slot: usize, generation: u32) -> u64 {
    u64::from(generation) << 32 | slot as u64
}

#[derive(Default)]
struct Slot {
    /// Bumped when the slot is freed, so an edge taken for its last socket is ignored.
    generation: u32,
    /// An edge came since the reader last looked.
    ready: bool,
    /// An edge said the peer hung up (or the socket has an error): no edge may follow.
    hangup: bool,
    waker: Option<Waker>,
}

/// An executor's epoll instance, its registered sockets and its driver's state.
struct Poller {
    epoll: OwnedFd,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
    /// Times the driver went to sleep on the epoll descriptor (tests look at it).
    sleeps: Cell<u64>,
}

thread_local! {
    /// The poller of the executor running on this thread, with that executor's id: an
    /// executor that ends takes its driver task with it, so the next one on the same
    /// thread needs a poller of its own.
    static POLLER: RefCell<Option<(usize, Rc<Poller>)>> = const { RefCell::new(None) };
}

impl Poller {
    /// This executor's poller, created (and its driver started) on first use.
    fn current() -> io::Result<Rc<Poller>> {
        let executor = glommio::executor().id();
        POLLER.with(|cell| {
            if let Some((id, poller)) = cell.borrow().as_ref() {
                if *id == executor {
                    return Ok(poller.clone());
                }
            }
            // SAFETY: plain syscall; the descriptor is owned from here on.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let poller = Rc::new(Poller {
                // SAFETY: `fd` was just created and nothing else owns it.
                epoll: unsafe { OwnedFd::from_raw_fd(fd) },
                slots: RefCell::default(),
                free: RefCell::default(),
                sleeps: Cell::new(0),
            });
            glommio::spawn_local(drive(Rc::downgrade(&poller))).detach();
            *cell.borrow_mut() = Some((executor, poller.clone()));
            Ok(poller)
        })
    }

    fn allocate(&self) -> (usize, u32) {
        let mut slots = self.slots.borrow_mut();
        let slot = self.free.borrow_mut().pop().unwrap_or_else(|| {
            slots.push(Slot::default());
            slots.len() - 1
        });
        slots[slot].ready = false;
        slots[slot].hangup = false;
        slots[slot].waker = None;
        (slot, slots[slot].generation)
    }

    fn release(&self, slot: usize) {
        let mut slots = self.slots.borrow_mut();
        slots[slot].generation = slots[slot].generation.wrapping_add(1);
        slots[slot].waker = None;
        self.free.borrow_mut().push(slot);
    }

    /// Takes the edges the kernel has; how many there were.
    fn take_edges(&self, events: &mut [libc::epoll_event]) -> usize {
        // SAFETY: `events` is a valid buffer of `events.len()` entries.
        let n = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as i32,
                0,
            )
        };
        let Ok(n) = usize::try_from(n) else {
            return 0; // EINTR: the next round tries again
        };
        let mut wakers = Vec::new();
        {
            let mut slots = self.slots.borrow_mut();
            for event in &events[..n] {
                let (slot, generation) = (event.u64 as u32 as usize, (event.u64 >> 32) as u32);
                let Some(slot) = slots.get_mut(slot) else {
                    continue;
                };
                if slot.generation != generation {
                    continue;
                }
                slot.ready = true;
                let hangup = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;
                slot.hangup |= event.events & hangup != 0;
                wakers.extend(slot.waker.take());
            }
        }
        // Woken outside the borrow: a waker may run code that registers a socket.
        wakers.into_iter().for_each(Waker::wake);
        n
    }

    /// Waits until the epoll descriptor is readable, through glommio's reactor.
    ///
    /// glommio 0.9 has no public "wait for this descriptor" call. A glommio stream arms
    /// an io_uring poll for readability on the descriptor it is made from, and a read
    /// waits for that poll before it tries `recv`. So a stream over a duplicate of the
    /// epoll descriptor waits for exactly what is needed; its read then fails (an epoll
    /// descriptor is not a socket), which only says the wait is over. The duplicate is
    /// closed when the stream drops.
    async fn sleep(&self) {
        self.sleeps.set(self.sleeps.get() + 1);
        // SAFETY: plain syscall; the duplicate is owned by the stream below.
        let fd = unsafe { libc::fcntl(self.epoll.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
        if fd < 0 {
            // Out of descriptors: poll again after a short sleep rather than spin.
            glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
            return;
        }
        // SAFETY: `fd` is a fresh duplicate nothing else owns.
        let mut stream = unsafe { glommio::net::UnixStream::from_raw_fd(fd) };
        let _ = stream.read(&mut [0u8; 1]).await;
    }
}

/// The executor's driver: hands edges to readers, sleeps when there are none.
async fn drive(poller: std::rc::Weak<Poller>) {
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS_PER_WAIT];
    let mut idle_rounds = 0;
    loop {
        let Some(poller) = poller.upgrade() else {
            return;
        };
        if poller.take_edges(&mut events) > 0 {
            idle_rounds = 0;
        } else {
            idle_rounds += 1;
        }
        if idle_rounds < 2 {
            // Let the readers (and everyone else) run, then look again after glommio's
            // next I/O poll. Not `yield_now`: a task that is always runnable keeps the
            // task queue from emptying, and glommio submits queued I/O (a commit-log
            // fdatasync, say) only when it empties or is preempted — that was measured
            // delaying a batch's fdatasync by 0.4 ms. A timer fires in that poll.
            drop(poller);
            glommio::timer::sleep(Duration::from_micros(1)).await;
            continue;
        }
        idle_rounds = 0;
        poller.sleep().await;
    }
}

/// Times this executor's driver went to sleep on the epoll descriptor.
pub fn driver_sleeps() -> u64 {
    POLLER.with(|cell| cell.borrow().as_ref().map_or(0, |(_, p)| p.sleeps.get()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream as StdUnixStream;

    fn run<T, F>(f: impl FnOnce() -> F + Send + 'static) -> T
    where
        T: Send + 'static,
        F: std::future::Future<Output = T> + 'static,
    {
        glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .io_memory(1 << 20)
            .spawn(f)
            .expect("executor")
            .join()
            .expect("join")
    }

    fn pair() -> (StdUnixStream, StdUnixStream) {
        let (a, b) = StdUnixStream::pair().expect("socketpair");
        a.set_nonblocking(true).expect("nonblocking");
        (a, b)
    }

    #[test]
    fn a_reader_gets_data_sent_before_and_after_it_waits() {
        let got = run(|| async {
            let (ours, mut theirs) = pair();
            theirs.write_all(b"early").unwrap();
            let readable = Readable::new(ours.as_raw_fd()).unwrap();
            let mut buf = [0u8; 64];
            let n = readable.recv(&mut buf).await.unwrap();
            let first = buf[..n].to_vec();
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                theirs.write_all(b"late").unwrap();
                theirs
            });
            let n = readable.recv(&mut buf).await.unwrap();
            let second = buf[..n].to_vec();
            drop(writer.join().unwrap()); // the peer closes
            let end = readable.recv(&mut buf).await.unwrap();
            (first, second, end)
        });
        assert_eq!(got, (b"early".to_vec(), b"late".to_vec(), 0));
    }

    #[test]
    fn the_end_of_stream_after_a_short_read_is_seen() {
        // The peer's last bytes and its close raise one edge between them: the short
        // read that takes the bytes must not leave the reader waiting for another.
        let got = run(|| async {
            let (ours, mut theirs) = pair();
            let readable = Readable::new(ours.as_raw_fd()).unwrap();
            // The reader waits first, so that the one edge is taken before its read.
            let peer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(30));
                theirs.write_all(b"last").unwrap();
            });
            let mut buf = [0u8; 64];
            let n = readable.recv(&mut buf).await.unwrap();
            peer.join().unwrap();
            let end = glommio::timer::timeout(Duration::from_secs(10), async {
                Ok(readable.recv(&mut buf).await.unwrap())
            })
            .await
            .expect("the end of the stream raised no edge after the short read");
            (n, end)
        });
        assert_eq!(got, (4, 0));
    }

    #[test]
    fn short_reads_lose_nothing_that_arrives_between_them() {
        // Every read here comes back short, so every next read waits for an edge
        // without asking the socket first: bytes arriving around those reads must
        // still raise the edge that wakes it.
        const MESSAGES: usize = 20_000;
        let (total, expected) = run(|| async {
            let (ours, mut theirs) = pair();
            let readable = Readable::new(ours.as_raw_fd()).unwrap();
            let writer = std::thread::spawn(move || {
                let mut sent = 0;
                for i in 0..MESSAGES {
                    let message = vec![b'x'; 1 + i % 97];
                    theirs.write_all(&message).unwrap();
                    sent += message.len();
                    if i % 64 == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
                sent
            });
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0;
            let read_all = async {
                loop {
                    match readable.recv(&mut buf).await.unwrap() {
                        0 => break,
                        n => total += n,
                    }
                }
            };
            glommio::timer::timeout(Duration::from_secs(30), async {
                read_all.await;
                Ok(())
            })
            .await
            .expect("the reader missed an edge and waited for good");
            (total, writer.join().unwrap())
        });
        assert_eq!(total, expected);
    }

    #[test]
    fn an_idle_executor_sleeps_instead_of_spinning() {
        let (sleeps, n) = run(|| async {
            let (ours, mut theirs) = pair();
            let readable = Readable::new(ours.as_raw_fd()).unwrap();
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                theirs.write_all(b"x").unwrap();
                theirs
            });
            let mut buf = [0u8; 8];
            let n = readable.recv(&mut buf).await.unwrap();
            let sleeps = driver_sleeps();
            drop(writer.join().unwrap());
            (sleeps, n)
        });
        assert_eq!(n, 1);
        // One sleep covers the wait; a spinning driver would count thousands (or none,
        // if the wait did not reach glommio's reactor).
        assert!((1..=3).contains(&sleeps), "driver slept {sleeps} times");
    }

    #[test]
    fn many_sockets_on_one_executor_each_get_their_own_data() {
        let totals = run(|| async {
            let mut peers = Vec::new();
            let mut tasks = Vec::new();
            for i in 0..20u8 {
                let (ours, theirs) = pair();
                peers.push(theirs);
                tasks.push(glommio::spawn_local(async move {
                    let readable = Readable::new(ours.as_raw_fd()).unwrap();
                    let mut got = Vec::new();
                    let mut buf = [0u8; 16];
                    loop {
                        match readable.recv(&mut buf).await.unwrap() {
                            0 => break,
                            n => got.extend_from_slice(&buf[..n]),
                        }
                    }
                    drop(readable);
                    drop(ours);
                    assert!(got.iter().all(|&b| b == i), "socket {i} got {got:?}");
                    got.len()
                }));
            }
            let writer = std::thread::spawn(move || {
                for round in 0..50 {
                    for (i, peer) in peers.iter_mut().enumerate() {
                        if (round + i) % 3 == 0 {
                            peer.write_all(&[i as u8; 7]).unwrap();
                        }
                    }
                    std::thread::sleep(Duration::from_micros(300));
                }
            });
            let mut totals = Vec::new();
            for task in tasks {
                totals.push(task.await);
            }
            writer.join().unwrap();
            totals
        });
        for (i, total) in totals.iter().enumerate() {
            let rounds = (0..50).filter(|round| (round + i) % 3 == 0).count();
            assert_eq!(*total, rounds * 7, "socket {i}");
        }
    }
}
