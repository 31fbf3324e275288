//! A connection's outgoing bytes, shared by the tasks that produce responses (or
//! requests) and the one task that writes them to the socket.
//!
//! Producers append whole frames; the writer takes everything queued in one swap and
//! writes it with one call, so pipelined frames leave in batches. Single-threaded:
//! `RefCell` and a waker, no locks.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};

#[derive(Default)]
struct State {
    /// Frames waiting to be written.
    buf: Vec<u8>,
    /// How many frames `buf` holds (the writer returns that many in-flight permits).
    frames: usize,
    /// An empty buffer to swap in, so steady state allocates nothing.
    spare: Vec<u8>,
    /// Frames promised but not yet pushed (requests being worked on).
    promised: usize,
    /// No more frames will be promised (the reader ended).
    finished: bool,
    /// Stop at once: the socket failed or the framing broke.
    aborted: bool,
    writer: Option<Waker>,
}

#[derive(Default)]
pub struct Outbox {
    state: RefCell<State>,
}

impl Outbox {
    /// Records that one frame will be pushed later (so the writer waits for it).
    pub fn promise(&self) {
        self.state.borrow_mut().promised += 1;
    }

    /// Appends one frame written by `encode`; fulfils a promise if `promised`.
    pub fn push(&self, promised: bool, encode: impl FnOnce(&mut Vec<u8>)) {
        let mut state = self.state.borrow_mut();
        if promised {
            debug_assert!(state.promised > 0);
            state.promised -= 1;
        }
        if state.aborted {
            return;
        }
        encode(&mut state.buf);
        state.frames += 1;
        if let Some(waker) = state.writer.take() {
            waker.wake();
        }
    }

    /// Appends frame bytes already encoded elsewhere (a forwarded response).
    pub fn push_bytes(&self, promised: bool, bytes: &[u8]) {
        self.push(promised, |buf| buf.extend_from_slice(bytes));
    }

    /// No more frames will be promised; the writer ends once the promised ones are out.
    pub fn finish(&self) {
        let mut state = self.state.borrow_mut();
        state.finished = true;
        if let Some(waker) = state.writer.take() {
            waker.wake();
        }
    }

    /// Drop what is queued and end the writer now.
    pub fn abort(&self) {
        let mut state = self.state.borrow_mut();
        state.aborted = true;
        state.buf.clear();
        if let Some(waker) = state.writer.take() {
            waker.wake();
        }
    }

    pub fn is_aborted(&self) -> bool {
        self.state.borrow().aborted
    }

    /// Waits for queued frames; returns them and their count, or `None` when the writer
    /// should end. Give the buffer back with [`Outbox::recycle`] after writing it.
    pub async fn take(&self) -> Option<(Vec<u8>, usize)> {
        poll_fn(|cx| {
            let mut state = self.state.borrow_mut();
            if state.aborted {
                return Poll::Ready(None);
            }
            if !state.buf.is_empty() {
                let spare = std::mem::take(&mut state.spare);
                let buf = std::mem::replace(&mut state.buf, spare);
                let frames = std::mem::take(&mut state.frames);
                return Poll::Ready(Some((buf, frames)));
            }
            if state.finished && state.promised == 0 {
                return Poll::Ready(None);
            }
            state.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    /// Hands a written buffer back for reuse.
    pub fn recycle(&self, mut buf: Vec<u8>) {
        // Keep big buffers from pinning memory after a burst of large values.
        const SPARE_BYTES_MAX: usize = 1 << 20;
        if buf.capacity() <= SPARE_BYTES_MAX {
            buf.clear();
            self.state.borrow_mut().spare = buf;
        }
    }
}
