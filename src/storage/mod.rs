//! Per-shard storage: the engine, its memtable and its commit log.
//!
//! Each shard owns one [`Engine`] and nothing else touches it: no locks, no sharing
//! across cores. A write is read-merge-write of the key's version set (DESIGN.md §4),
//! made durable in the shard's commit log before it is acknowledged (under `batch`
//! sync), then flushed to SSTables listed by the shard's manifest and compacted in the
//! background (see [`engine`] for the whole path).

pub mod commitlog;
pub mod compaction;
mod direct;
pub mod engine;
pub mod hint_log;
pub mod keylock;
pub mod manifest;
pub mod memtable;
pub mod node_members;
pub mod node_meta;
pub mod node_tokens;
mod sealed;
pub mod sstable;

use std::path::PathBuf;

pub use engine::{ClockPruning, Engine, EngineConfig, EngineStats};
pub use memtable::Memtable;

use crate::protocol::Status;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error(transparent)]
    Log(#[from] commitlog::LogError),
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "the key would have {count} siblings, over the limit of {max}: read it and write \
         with the context you got, which resolves them"
    )]
    TooManySiblings { count: usize, max: usize },
    #[error("the key's versions cannot be stored: {0}")]
    Version(#[from] crate::version::VersionError),
    #[error(transparent)]
    Table(#[from] sstable::SstError),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("{0}")]
    JobFailed(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl StorageError {
    pub fn status(&self) -> Status {
        match self {
            StorageError::TooManySiblings { .. } | StorageError::Version(_) => Status::TooLarge,
            _ => Status::Internal,
        }
    }
}
