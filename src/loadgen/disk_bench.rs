//! `ringkv bench-disk`: what one O_DIRECT 4 KiB random read costs through glommio
//! (io_uring, as the engine reads its tables) against a plain blocking `pread(2)` of the
//! same file, interleaved read by read so that both see the same disk at the same
//! moment (a virtual disk's latency drifts by ±10 % over minutes).
//!
//! The engine's point reads pay this per block read; the difference is the share of
//! the read path that is the runtime's, not ringkv's (perf/README.md). Pinned and
//! polling (`--idle-poll-us`, the server's shards' way) glommio sees a completion as
//! soon as it is posted; unpinned it sleeps through the wait and pays the wake-up.
//! Blocking reads are fine here: this executor runs nothing else.

use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use glommio::io::DmaFile;
use rand::{Rng, SeedableRng};

use crate::runtime::checks;

/// Bytes per read: one page, the unit of the engine's aligned reads.
const READ_BYTES: usize = 4096;

pub struct DiskBenchOptions {
    /// A file of at least a few MiB on the disk to measure (created if missing).
    pub file: PathBuf,
    pub file_bytes: u64,
    pub reads: u64,
    pub seed: u64,
    /// The core the executor is pinned to, or none: unbound (it then never polls).
    pub cpu: Option<usize>,
    /// While pinned, how long the idle executor polls before it sleeps.
    pub idle_poll_us: u64,
}

/// Mean microseconds per read: `(pread, glommio)`.
pub fn run(options: &DiskBenchOptions) -> Result<(f64, f64), String> {
    checks::check_io_uring().map_err(|e| e.to_string())?;
    let memlock = checks::raise_memlock().map_err(|e| e.to_string())?;
    let io_memory = checks::size_io_memory(memlock, 1, 0).map_err(|e| e.to_string())?;
    if let Some(dir) = options.file.parent().filter(|d| !d.as_os_str().is_empty()) {
        checks::check_data_dir(dir).map_err(|e| e.to_string())?;
    }
    fill(options)?;
    let pages = options.file_bytes / READ_BYTES as u64;
    let (path, reads, seed) = (options.file.clone(), options.reads, options.seed);
    let idle_poll = Duration::from_micros(options.idle_poll_us);
    crate::runtime::executor("bench-disk", options.cpu, idle_poll, io_memory)
        .spawn(move || async move {
            let io = |e: std::io::Error| format!("{}: {e}", path.display());
            let blocking = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECT)
                .open(&path)
                .map_err(io)?;
            let uring = DmaFile::open(&path).await.map_err(|e| e.to_string())?;
            let mut buf = uring.alloc_dma_buffer(READ_BYTES);
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (mut pread, mut glommio) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..reads {
                let at = rng.gen_range(0..pages) * READ_BYTES as u64;
                let t = Instant::now();
                blocking.read_exact_at(buf.as_bytes_mut(), at).map_err(io)?;
                pread += t.elapsed();
                let at = rng.gen_range(0..pages) * READ_BYTES as u64;
                let t = Instant::now();
                let read = uring
                    .read_at_aligned(at, READ_BYTES)
                    .await
                    .map_err(|e| e.to_string())?;
                glommio += t.elapsed();
                if read.len() != READ_BYTES {
                    return Err(format!("short read at {at}"));
                }
            }
            let _ = uring.close().await;
            let mean_us = |d: Duration| d.as_secs_f64() * 1e6 / reads.max(1) as f64;
            Ok((mean_us(pread), mean_us(glommio)))
        })
        .map_err(|e| format!("starting the executor: {e}"))?
        .join()
        .map_err(|e| format!("the benchmark's executor failed: {e:?}"))?
}

/// Writes `file_bytes` of random bytes to the file unless it already holds that many.
fn fill(options: &DiskBenchOptions) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", options.file.display());
    if std::fs::metadata(&options.file).is_ok_and(|m| m.len() >= options.file_bytes) {
        return Ok(());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(options.seed);
    let mut chunk = vec![0u8; 1 << 20];
    let mut file = std::fs::File::create(&options.file).map_err(io)?;
    let mut written = 0;
    while written < options.file_bytes {
        rng.fill(&mut chunk[..]);
        std::io::Write::write_all(&mut file, &chunk).map_err(io)?;
        written += chunk.len() as u64;
    }
    file.sync_all().map_err(io)
}
