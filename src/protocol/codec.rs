//! Little-endian field reader and writers shared by the request and response codecs.
//!
//! The reader is the one place that slices a body: every read checks the bytes
//! that remain first, so a decoder built on it cannot index out of bounds.

use bytes::Bytes;

use super::frame::CONTEXT_BYTES_MAX;
use super::RequestError;

/// A cursor over one frame body. Slices come out zero-copy (`Bytes::slice`).
pub(crate) struct Reader {
    /// The whole body; never modified, only sliced.
    body: Bytes,
    /// Offset of the next unread byte (kept for error messages).
    position: usize,
}

impl Reader {
    pub(crate) fn new(body: Bytes) -> Reader {
        Reader { body, position: 0 }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.body.len() - self.position
    }

    /// The next `len` bytes as a slice of the body, or BadRequest naming `field`.
    pub(crate) fn bytes(&mut self, len: usize, field: &str) -> Result<Bytes, RequestError> {
        if len > self.remaining() {
            return Err(RequestError::bad_request(format!(
                "truncated body: {field} needs {len} bytes at offset {}, {} left",
                self.position,
                self.remaining()
            )));
        }
        let slice = self.body.slice(self.position..self.position + len);
        self.position += len;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], RequestError> {
        let slice = self.bytes(N, field)?;
        let mut array = [0u8; N];
        array.copy_from_slice(&slice);
        Ok(array)
    }

    pub(crate) fn u8(&mut self, field: &str) -> Result<u8, RequestError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: &str) -> Result<u16, RequestError> {
        self.array(field).map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self, field: &str) -> Result<u32, RequestError> {
        self.array(field).map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self, field: &str) -> Result<u64, RequestError> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// Refuses a count of `entry_bytes`-sized entries that cannot fit in what is
    /// left of the body, so nothing is allocated for a lying count.
    pub(crate) fn ensure_room(
        &self,
        count: usize,
        entry_bytes: usize,
        field: &str,
    ) -> Result<(), RequestError> {
        let needed = count.saturating_mul(entry_bytes);
        if needed > self.remaining() {
            return Err(RequestError::bad_request(format!(
                "{field} {count} needs at least {needed} bytes, {} left",
                self.remaining()
            )));
        }
        Ok(())
    }

    /// `context_len u16 | context`, with the v1 context limit.
    pub(crate) fn context(&mut self) -> Result<Bytes, RequestError> {
        let len = self.u16("context_len")?;
        check_context_len(usize::from(len))?;
        self.bytes(usize::from(len), "context")
    }

    /// Succeeds only if every byte of the body was consumed.
    pub(crate) fn finish(self) -> Result<(), RequestError> {
        if self.remaining() != 0 {
            return Err(RequestError::bad_request(format!(
                "{} trailing bytes after the last field at offset {}",
                self.remaining(),
                self.position
            )));
        }
        Ok(())
    }
}

/// TooLarge when a context exceeds [`CONTEXT_BYTES_MAX`].
pub(crate) fn check_context_len(len: usize) -> Result<(), RequestError> {
    if len > CONTEXT_BYTES_MAX as usize {
        return Err(RequestError::too_large(format!(
            "context is {len} bytes, limit {CONTEXT_BYTES_MAX}"
        )));
    }
    Ok(())
}

pub(crate) fn put_u16(buf: &mut Vec<u8>, value: u16) {
    buf.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u32(buf: &mut Vec<u8>, value: u32) {
    buf.extend_from_slice(&value.to_le_bytes());
}

pub(crate) fn put_u64(buf: &mut Vec<u8>, value: u64) {
    buf.extend_from_slice(&value.to_le_bytes());
}

/// `len u16 | bytes`. Panics if `bytes` cannot be described by a u16 length:
/// callers validate user input before encoding.
pub(crate) fn put_bytes_u16(buf: &mut Vec<u8>, bytes: &[u8], field: &str) {
    let len = u16::try_from(bytes.len())
        .unwrap_or_else(|_| panic!("{field} is {} bytes, its length field is u16", bytes.len()));
    put_u16(buf, len);
    buf.extend_from_slice(bytes);
}

/// `len u32 | bytes`, same contract as [`put_bytes_u16`].
pub(crate) fn put_bytes_u32(buf: &mut Vec<u8>, bytes: &[u8], field: &str) {
    let len = u32::try_from(bytes.len())
        .unwrap_or_else(|_| panic!("{field} is {} bytes, its length field is u32", bytes.len()));
    put_u32(buf, len);
    buf.extend_from_slice(bytes);
}

/// `context_len u16 | context`. The assertion pairs with [`Reader::context`]: an
/// encoder never writes a context the decoder would refuse.
pub(crate) fn put_context(buf: &mut Vec<u8>, context: &[u8]) {
    assert!(
        context.len() <= CONTEXT_BYTES_MAX as usize,
        "context is {} bytes, limit {CONTEXT_BYTES_MAX}",
        context.len()
    );
    put_bytes_u16(buf, context, "context");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Status;

    #[test]
    fn reader_reads_little_endian_fields_in_order() {
        let mut reader = Reader::new(Bytes::from_static(&[
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E,
            0x0F,
        ]));
        assert_eq!(reader.u8("a").unwrap(), 0x01);
        assert_eq!(reader.u16("b").unwrap(), 0x0302);
        assert_eq!(reader.u32("c").unwrap(), 0x0706_0504);
        assert_eq!(reader.u64("d").unwrap(), 0x0F0E_0D0C_0B0A_0908);
        assert!(reader.finish().is_ok());
    }

    #[test]
    fn short_read_names_the_field_and_the_shortfall() {
        let mut reader = Reader::new(Bytes::from_static(&[0x01, 0x02]));
        reader.u8("consistency").unwrap();
        let error = reader.u16("key_len").unwrap_err();
        assert_eq!(error.status, Status::BadRequest);
        assert_eq!(
            error.message,
            "truncated body: key_len needs 2 bytes at offset 1, 1 left"
        );
    }

    #[test]
    fn slices_share_the_body_allocation() {
        let body = Bytes::from(vec![0u8, 1, 2, 3, 4, 5]);
        let mut reader = Reader::new(body.clone());
        reader.u16("skip").unwrap();
        let slice = reader.bytes(3, "key").unwrap();
        assert_eq!(slice.as_ptr(), body[2..].as_ptr());
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut reader = Reader::new(Bytes::from_static(&[0x00, 0xFF, 0xFF]));
        reader.u8("status").unwrap();
        let error = reader.finish().unwrap_err();
        assert_eq!(error.status, Status::BadRequest);
        assert_eq!(
            error.message,
            "2 trailing bytes after the last field at offset 1"
        );
    }

    #[test]
    fn oversize_context_is_too_large() {
        let mut body = vec![0x01, 0x10]; // context_len 4097
        body.resize(2 + 4097, 0);
        let error = Reader::new(Bytes::from(body)).context().unwrap_err();
        assert_eq!(error.status, Status::TooLarge);
        assert_eq!(error.message, "context is 4097 bytes, limit 4096");
    }
}
