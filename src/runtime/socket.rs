//! Reading a socket into a frame buffer without zeroing memory on every read.
//!
//! A `BytesMut` must be initialized before glommio can read into it, and zero-filling a
//! 16 KiB chunk per read costs more than the read itself when requests are ~100 bytes.
//! Small reads therefore go through a per-connection scratch buffer (zeroed once) and are
//! copied; a read for a large pending frame goes straight into the frame buffer, where
//! the zeroing is paid once per large frame.

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncReadExt};

/// Bytes asked of the socket per small read.
pub const READ_CHUNK_BYTES: usize = 16 << 10;

/// A connection's receive side: its frame buffer and its scratch buffer.
pub struct ReadBuffer {
    /// Received bytes not yet taken as frames.
    pub buf: BytesMut,
    scratch: Box<[u8]>,
}

impl Default for ReadBuffer {
    fn default() -> Self {
        Self {
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            scratch: vec![0; READ_CHUNK_BYTES].into_boxed_slice(),
        }
    }
}

impl ReadBuffer {
    /// Reads once from `stream`, appending to `buf`; `Ok(0)` at end of stream.
    /// `frame_bytes_pending` is how much more the frame being assembled needs.
    pub async fn fill<S: AsyncRead + Unpin>(
        &mut self,
        stream: &mut S,
        frame_bytes_pending: usize,
    ) -> std::io::Result<usize> {
        if frame_bytes_pending <= READ_CHUNK_BYTES {
            let n = stream.read(&mut self.scratch).await?;
            self.buf.extend_from_slice(&self.scratch[..n]);
            return Ok(n);
        }
        let start = self.buf.len();
        self.buf.resize(start + frame_bytes_pending, 0);
        let result = stream.read(&mut self.buf[start..]).await;
        let n = *result.as_ref().unwrap_or(&0);
        self.buf.truncate(start + n);
        result
    }
}
