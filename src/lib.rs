//! ringkv (module map is written at the end of issue 2)
pub mod client;
pub mod config;
pub mod error;
pub mod loadgen;
pub mod protocol;
pub mod ring;
pub mod runtime;
pub mod server;
pub mod storage;
pub mod version;
