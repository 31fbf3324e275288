//! Helpers every unit test of the crate may use (test builds only).

use std::future::Future;
use std::path::PathBuf;

/// Where test files go: under `target/`, on the real disk (O_DIRECT fails on tmpfs).
pub fn test_data_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-data"));
    std::fs::create_dir_all(&dir).expect("test data dir");
    dir
}

/// A fresh temporary directory under [`test_data_dir`], removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(test_data_dir()).expect("temp dir")
}

/// Runs `f` on a fresh glommio executor (unbound, small io_memory: tests run in parallel
/// under an 8 MiB RLIMIT_MEMLOCK), under a watchdog (`runtime::watchdog`), and returns
/// its output.
pub fn run<G, F, T>(f: G) -> T
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || crate::runtime::watchdog::guarded("test executor", f()))
        .expect("spawn executor")
        .join()
        .expect("executor thread")
}
