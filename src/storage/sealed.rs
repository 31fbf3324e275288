//! The frame of the node's small metadata files (`tokens`, `members`):
//!
//! ```text
//! magic (8) | format version u32 | count u32 | payload | CRC32C u32 of every byte before it
//! ```
//!
//! `count` is the file's own (tokens: how many; members: the payload's length); each
//! file checks it against its payload.

/// Bytes before the payload.
pub const HEADER_BYTES: usize = 16;

/// The whole file for `payload`.
pub fn seal(magic: &[u8; 8], version: u32, count: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + payload.len() + 4);
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&count.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Checks length, magic, CRC and version of a `what` file; returns its count and
/// payload. Never panics.
pub fn open<'a>(
    b: &'a [u8],
    magic: &[u8; 8],
    version: u32,
    what: &str,
) -> Result<(u32, &'a [u8]), String> {
    if b.len() < HEADER_BYTES + 4 {
        return Err(format!("is {} bytes, shorter than a header", b.len()));
    }
    if &b[..8] != magic {
        return Err(format!("bad magic (not a ringkv {what} file)"));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if u32::from_le_bytes(crc.try_into().expect("4")) != crc32c::crc32c(body) {
        return Err("CRC32C mismatch".into());
    }
    let found = u32::from_le_bytes(b[8..12].try_into().expect("4"));
    if found != version {
        return Err(format!(
            "format version {found}, this build reads {version}"
        ));
    }
    let count = u32::from_le_bytes(b[12..16].try_into().expect("4"));
    Ok((count, &body[HEADER_BYTES..]))
}
