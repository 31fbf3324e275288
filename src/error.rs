//! Errors: a narrow enum per layer, converted into the crate's [`Error`], and the mapping
//! from errors to the status codes clients see.
//!
//! Layers: storage ([`crate::storage::StorageError`], which wraps the commit log's and the
//! version codec's), protocol ([`crate::protocol::RequestError`]), start-up
//! ([`StartupError`]). I/O errors always say which file and which operation.

use std::path::PathBuf;

use crate::protocol::Status;
use crate::storage::StorageError;

/// Why the server refused to start. Every message says what to change.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Environment(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    DataDir(String),
    #[error("shard {shard}: {source}")]
    Shard { shard: usize, source: StorageError },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Startup(#[from] StartupError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// The status code a client gets for this error.
    pub fn status(&self) -> Status {
        match self {
            Error::Unavailable(_) => Status::Unavailable,
            Error::Storage(e) => e.status(),
            Error::Startup(_) | Error::Internal(_) => Status::Internal,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
