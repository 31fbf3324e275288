//! Errors of the SSTable layer. Every error names the file; corruption names the byte.

use std::io;
use std::path::PathBuf;

/// What went wrong reading or writing an SSTable.
#[derive(Debug, thiserror::Error)]
pub enum SstError {
    /// An OS error on `op` (create, write, fdatasync, open, read, ...) of `path`. A failed
    /// write or fdatasync leaves a partial file: the caller deletes it and never uses it.
    #[error("sstable: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The bytes of the block (or footer) starting at `offset` are not what was written:
    /// a bad CRC, an impossible length, keys out of order. Nothing in that block is served.
    #[error("sstable corrupt: {} at byte {offset}: {what}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        what: String,
    },
}

impl SstError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SstError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, what: impl Into<String>) -> Self {
        SstError::Corrupt {
            path: path.into(),
            offset,
            what: what.into(),
        }
    }
}

/// Shorthand for results of this layer.
pub type Result<T> = std::result::Result<T, SstError>;

pub(crate) use crate::storage::direct::os_error;
