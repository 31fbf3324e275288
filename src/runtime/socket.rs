//! Reading a socket into a frame buffer without zeroing memory on every read.
//!
//! Reads wait through the executor's epoll instance ([`super::readiness`]), not
//! glommio's per-read io_uring poll.
//!
//! A `BytesMut` must be initialized before it can be read into, and zero-filling a
//! 16 KiB chunk per read costs more than the read itself when requests are ~100 bytes.
//! Small reads therefore go through a per-connection scratch buffer (zeroed once) and are
//! copied; a read for a large pending frame goes straight into the frame buffer, where
//! the zeroing is paid once per large frame.

use bytes::BytesMut;
use std::os::fd::AsRawFd;

use super::readiness::Readable;

/// Bytes asked of the socket per small read.
pub const READ_CHUNK_BYTES: usize = 16 << 10;

/// A connection's receive side: its frame buffer and its scratch buffer.
pub struct ReadBuffer {
    /// Received bytes not yet taken as frames.
    pub buf: BytesMut,
    scratch: Box<[u8]>,
    /// The socket's registration with the executor's epoll instance, made on the first
    /// read ([`super::readiness`]).
    readable: Option<Readable>,
}

impl Default for ReadBuffer {
    fn default() -> Self {
        Self {
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
            readable: None,
        }
    }
}

impl ReadBuffer {
    /// Reads once from `stream`, appending to `buf`; `Ok(0)` at end of stream.
    /// `frame_bytes_pending` is how much more the frame being assembled needs.
    pub async fn fill<S: AsRawFd>(
        &mut self,
        stream: &S,
        frame_bytes_pending: usize,
    ) -> std::io::Result<usize> {
        let readable = match &mut self.readable {
            Some(readable) => readable,
            slot => slot.insert(Readable::new(stream.as_raw_fd())?),
        };
        if frame_bytes_pending <= READ_CHUNK_BYTES {
            let n = readable.recv(&mut self.scratch).await?;
            self.buf.extend_from_slice(&self.scratch[..n]);
            return Ok(n);
        }
        let start = self.buf.len();
        self.buf.resize(start + frame_bytes_pending, 0);
        let result = readable.recv(&mut self.buf[start..]).await;
        let n = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(start + n);
        result
    }
}

/// Writes all of `buf` to the socket `fd` with non-blocking `send(2)` calls, waiting with
/// a short, growing sleep when the socket buffer is full.
///
/// Why not glommio's `AsyncWrite`: its write path drops a pending POLLOUT source (and
/// cancels it) whenever a later direct send succeeds; under pipelined load we saw a
/// connection's reads stop completing for good — sockets full of unread requests, even
/// after the peer closed — which such a cancel landing on a reused source would
/// explain. A full send buffer is rare (the peer stopped reading), so sleeping instead
/// of polling for writability costs nothing in the common case.
pub async fn send_all(fd: std::os::fd::RawFd, mut buf: &[u8]) -> std::io::Result<()> {
    const BACKOFF_START: std::time::Duration = std::time::Duration::from_micros(20);
    const BACKOFF_MAX: std::time::Duration = std::time::Duration::from_millis(2);
    let mut backoff = BACKOFF_START;
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid slice; the kernel only reads it.
        let sent = unsafe {
            libc::send(
                fd,
                buf.as_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if sent >= 0 {
            buf = &buf[sent as usize..];
            backoff = BACKOFF_START;
            continue;
        }
        let err = std::io::Error::last_os_error();
        match err.kind() {
            std::io::ErrorKind::Interrupted => {}
            std::io::ErrorKind::WouldBlock => {
                glommio::timer::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
            _ => return Err(err),
        }
    }
    Ok(())
}
