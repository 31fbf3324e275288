//! Helpers shared by the commit log's tests.

use std::future::Future;
use std::path::Path;

use super::{recover, RecoveryReport};

/// Runs `f` on a fresh glommio executor (unbound, small io_memory: tests run in parallel
/// under an 8 MiB RLIMIT_MEMLOCK) and returns its output.
pub fn run<G, F, T>(f: G) -> T
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(f)
        .expect("spawn executor")
        .join()
        .expect("executor thread")
}

/// A temporary directory on a real disk (O_DIRECT fails on tmpfs).
pub fn temp_dir() -> tempfile::TempDir {
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/target");
    std::fs::create_dir_all(base).expect("target dir");
    tempfile::Builder::new()
        .prefix("commitlog-test-")
        .tempdir_in(base)
        .expect("temp dir")
}

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
