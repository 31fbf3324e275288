//! Small pieces every direct-I/O file of a shard shares (commit-log segments and
//! SSTables): the OS error inside a glommio error, and a whole aligned write.

use std::io;

use glommio::io::{DmaBuffer, DmaFile};

/// The OS error inside a glommio error, so that `raw_os_error()` still works.
pub(crate) fn os_error(e: glommio::GlommioError<()>) -> io::Error {
    match e {
        glommio::GlommioError::EnhancedIoError { source, .. } => source,
        glommio::GlommioError::IoError(source) => source,
        other => other.into(),
    }
}

/// Writes all of `buf` at `pos` (both aligned for O_DIRECT) or fails. Aligned direct
/// writes come back short only when the disk is full; callers treat any error as the
/// end of that file's job, so there is no partial-write retry.
pub(crate) async fn write_all_at(file: &DmaFile, buf: DmaBuffer, pos: u64) -> io::Result<()> {
    let len = buf.len();
    let written = file.write_at(buf, pos).await.map_err(os_error)?;
    if written != len {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {written} of {len} bytes at {pos}"),
        ));
    }
    Ok(())
}
