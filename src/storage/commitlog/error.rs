//! Errors of the commit log. Every I/O error names the file and the operation.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// What went wrong in the commit log.
///
/// `Clone` because one write or fdatasync failure is handed to every waiter of the
/// batch and to every later caller; the OS error is shared behind an `Arc` for that.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O error outside the writer (start-up, recovery, segment removal). Nothing was
    /// acknowledged on the strength of the failed operation.
    #[error("commit log: {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        source: Arc<io::Error>,
    },
    /// The writer hit a write, fdatasync, close or create error. The log is dead: the
    /// kernel may have dropped the dirty pages, so nothing is retried and every later
    /// call fails with this error (STYLE rule 6).
    #[error("commit log failed on {op} {}: {source}; it accepts no more work", path.display())]
    Failed {
        op: &'static str,
        path: PathBuf,
        source: Arc<io::Error>,
    },
    /// A bad header, a bad record outside the tail of the newest segment, or a missing
    /// segment. Recovery refuses to go on: acknowledged data would be lost.
    #[error("commit log corrupt: {} at byte {offset}: {reason}", path.display())]
    Corruption {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// Recovery's `apply` refused the valid (CRC-checked) record at `offset` of `path`.
    #[error("commit log record at byte {offset} of {} refused: {reason}", path.display())]
    Apply {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// `append` got a record larger than `record_bytes_max` (header included).
    #[error("record of {record_bytes} bytes exceeds record_bytes_max {record_bytes_max}")]
    RecordTooLarge {
        record_bytes: u64,
        record_bytes_max: u32,
    },
    /// The log was closed (or is closing); it takes no more records.
    #[error("commit log is closed")]
    Closed,
    /// The configuration cannot work (say why).
    #[error("invalid commit log config: {0}")]
    InvalidConfig(String),
}

impl LogError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        LogError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

pub(crate) use crate::storage::direct::os_error;
