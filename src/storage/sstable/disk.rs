//! The file operations writing a table needs, behind a small trait (STYLE rule 3).
//!
//! [`DmaTableDisk`] is the real one: a glommio `DmaFile` opened read-write with
//! O_DIRECT. [`FullDisk`] wraps it and fails every write past a byte budget with
//! ENOSPC, so tests can check that a full disk is an error and not a short table.
//!
//! Contract: `write_at` takes a buffer and an offset that are multiples of
//! [`IO_ALIGN_BYTES`] and writes all of it or fails; bytes are durable only after
//! `fdatasync`.

use std::future::Future;
use std::io;
use std::path::Path;

use glommio::io::{DmaBuffer, DmaFile, OpenOptions};

use super::error::os_error;
use super::IO_ALIGN_BYTES;

/// One table file being written.
pub trait TableFile: 'static {
    /// Writes all of `buf` at `pos`; both aligned to [`IO_ALIGN_BYTES`].
    fn write_at(&self, buf: DmaBuffer, pos: u64) -> impl Future<Output = io::Result<()>>;
    /// Sets the file's length (cuts the padding of the last aligned write).
    fn truncate(&self, len: u64) -> impl Future<Output = io::Result<()>>;
    /// Makes the bytes written and the length durable.
    fn fdatasync(&self) -> impl Future<Output = io::Result<()>>;
    fn close(self) -> impl Future<Output = io::Result<()>>;
}

/// Creates table files.
pub trait TableDisk: 'static {
    type File: TableFile;
    /// Creates `path`, failing if it exists.
    fn create(&self, path: &Path) -> impl Future<Output = io::Result<Self::File>>;
}

/// The real disk: O_DIRECT glommio `DmaFile`s.
#[derive(Clone, Copy, Debug, Default)]
pub struct DmaTableDisk;

impl TableFile for DmaFile {
    async fn write_at(&self, buf: DmaBuffer, pos: u64) -> io::Result<()> {
        let len = buf.len();
        debug_assert_eq!(pos % IO_ALIGN_BYTES, 0);
        debug_assert_eq!(len as u64 % IO_ALIGN_BYTES, 0);
        crate::storage::direct::write_all_at(self, buf, pos).await
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        DmaFile::truncate(self, len).await.map_err(os_error)
    }

    async fn fdatasync(&self) -> io::Result<()> {
        DmaFile::fdatasync(self).await.map_err(os_error)
    }

    async fn close(self) -> io::Result<()> {
        DmaFile::close(self).await.map_err(os_error)
    }
}

impl TableDisk for DmaTableDisk {
    type File = DmaFile;

    async fn create(&self, path: &Path) -> io::Result<DmaFile> {
        // `DmaFile::create` opens write-only; readers of the same handle need read too.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .dma_open(path)
            .await
            .map_err(os_error)
    }
}

/// A real disk with room for `bytes_max` bytes per file: a write that would end past it
/// fails with ENOSPC (after writing nothing).
#[derive(Clone, Copy, Debug)]
pub struct FullDisk {
    pub bytes_max: u64,
}

/// A file of a [`FullDisk`].
pub struct FullDiskFile {
    file: DmaFile,
    bytes_max: u64,
}

impl TableFile for FullDiskFile {
    async fn write_at(&self, buf: DmaBuffer, pos: u64) -> io::Result<()> {
        if pos + buf.len() as u64 > self.bytes_max {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        TableFile::write_at(&self.file, buf, pos).await
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        TableFile::truncate(&self.file, len).await
    }

    async fn fdatasync(&self) -> io::Result<()> {
        TableFile::fdatasync(&self.file).await
    }

    async fn close(self) -> io::Result<()> {
        TableFile::close(self.file).await
    }
}

impl TableDisk for FullDisk {
    type File = FullDiskFile;

    async fn create(&self, path: &Path) -> io::Result<FullDiskFile> {
        Ok(FullDiskFile {
            file: DmaTableDisk.create(path).await?,
            bytes_max: self.bytes_max,
        })
    }
}

/// Works around a glommio 0.9.0 bug; call once per executor thread, before any
/// `DmaFile` of the data disk is opened, with a file on that disk of at least 4096 bytes.
///
/// The first `DmaFile` opened on a device, per thread, probes whether the device
/// supports polled I/O by reading its first block, and caches the answer for the thread.
/// If that file is empty (a table or segment just created), the read returns 0 bytes,
/// the probe counts it as success, and every later O_DIRECT *read* on that thread's
/// device goes to the poll ring and fails with EOPNOTSUPP on devices without poll
/// queues (writes still work, so the commit log never noticed). Opening a non-empty file
/// first makes the probe answer correctly.
pub async fn prime_iopoll_probe(non_empty_file: &Path) -> io::Result<()> {
    let file = DmaFile::open(non_empty_file).await.map_err(os_error)?;
    file.close().await.map_err(os_error)
}
