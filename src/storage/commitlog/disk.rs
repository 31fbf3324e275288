//! The file operations the commit log needs, behind a small trait (STYLE rule 3).
//!
//! [`DmaDisk`] is the real one: glommio `DmaFile`s (O_DIRECT, io_uring). [`SimDisk`]
//! (in `sim.rs`) keeps files in memory, can fail writes and fdatasyncs on demand and can
//! produce the image a crash would leave. The writer is generic over [`LogDisk`];
//! recovery reads real files with `std::fs` and needs no trait.
//!
//! Contract for every implementation: `write_at` takes a buffer and an offset that are
//! multiples of [`BLOCK_BYTES`](super::segment::BLOCK_BYTES) and writes all of it or
//! fails; bytes count as durable only after a successful `fdatasync` of the file (and a
//! new file's name only after `sync_dir`).
//!
//! [`SimDisk`]: super::SimDisk

use std::future::Future;
use std::io;
use std::path::Path;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use super::error::os_error;
use super::segment;

/// One open segment file.
pub trait SegmentFile: 'static {
    /// Writes all of `buf` at `pos`; both aligned to the block size.
    fn write_at(&self, buf: DmaBuffer, pos: u64) -> impl Future<Output = io::Result<()>>;
    /// Makes every byte written so far durable.
    fn fdatasync(&self) -> impl Future<Output = io::Result<()>>;
    /// Closes the file.
    fn close(self) -> impl Future<Output = io::Result<()>>;
}

/// The directory-level operations of one log.
pub trait LogDisk: 'static {
    type File: SegmentFile;
    /// Creates `dir` if it is missing and lists the segment ids in it, ascending.
    fn open_dir(&self, dir: &Path) -> io::Result<Vec<u64>>;
    /// Creates a new segment file (failing if it exists) of `segment_bytes`, zero-filled
    /// (pre-allocated where the file system can).
    fn create_segment(
        &self,
        path: &Path,
        segment_bytes: u64,
    ) -> impl Future<Output = io::Result<Self::File>>;
    /// Deletes a segment file.
    fn remove_segment(&self, path: &Path) -> impl Future<Output = io::Result<()>>;
    /// Makes the directory entries in `dir` durable (created and removed names).
    fn sync_dir(&self, dir: &Path) -> impl Future<Output = io::Result<()>>;
}

/// The real disk: O_DIRECT glommio `DmaFile`s.
#[derive(Clone, Copy, Debug, Default)]
pub struct DmaDisk;

impl SegmentFile for DmaFile {
    async fn write_at(&self, buf: DmaBuffer, pos: u64) -> io::Result<()> {
        let len = buf.len();
        debug_assert_eq!(pos % segment::BLOCK_BYTES, 0);
        debug_assert_eq!(len as u64 % segment::BLOCK_BYTES, 0);
        crate::storage::direct::write_all_at(self, buf, pos).await
    }

    async fn fdatasync(&self) -> io::Result<()> {
        DmaFile::fdatasync(self).await.map_err(os_error)
    }

    async fn close(self) -> io::Result<()> {
        DmaFile::close(self).await.map_err(os_error)
    }
}

impl LogDisk for DmaDisk {
    type File = DmaFile;

    fn open_dir(&self, dir: &Path) -> io::Result<Vec<u64>> {
        // Blocking std::fs, acceptable because this runs once at start-up, before serving.
        std::fs::create_dir_all(dir)?;
        segment::list_ids(dir)
    }

    async fn create_segment(&self, path: &Path, segment_bytes: u64) -> io::Result<DmaFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(path)
            .await
            .map_err(os_error)?;
        // Allocating every extent up front keeps block allocation off the write path.
        if let Err(e) = file
            .pre_allocate(segment_bytes, false)
            .await
            .map_err(os_error)
        {
            if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
                return Err(e);
            }
        }
        Ok(file)
    }

    async fn remove_segment(&self, path: &Path) -> io::Result<()> {
        let file = DmaFile::open(path).await.map_err(os_error)?;
        let removed = file.remove().await.map_err(os_error);
        let closed = file.close().await.map_err(os_error);
        removed.and(closed)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let d = glommio::io::Directory::open(dir).await.map_err(os_error)?;
        let synced = d.sync().await.map_err(os_error);
        let closed = d.close().await.map_err(os_error);
        synced.and(closed)
    }
}
