//! (being written)
pub mod commitlog;
