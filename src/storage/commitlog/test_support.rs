//! Helpers shared by the commit log's tests.

use std::path::Path;

use super::{recover, RecoveryReport};

pub use crate::test_support::{run, temp_dir};

/// The current task queue, for `open`.
pub fn queue() -> glommio::TaskQueueHandle {
    glommio::executor().current_task_queue()
}

/// A deterministic payload: `len` bytes derived from `i`.
pub fn payload(i: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| (i as usize * 31 + j * 7 + 1) as u8)
        .collect()
}

/// Every record in `dir`, in order, with the report; panics on recovery errors.
pub fn recover_all(dir: &Path, record_bytes_max: u32) -> (Vec<(u8, Vec<u8>)>, RecoveryReport) {
    let mut records = Vec::new();
    let report = recover(dir, record_bytes_max, |kind, payload| {
        records.push((kind, payload.to_vec()));
        Ok::<(), std::convert::Infallible>(())
    })
    .expect("recover");
    (records, report)
}
