//! Writing a table file: [`TableWriter`] streams a [`TableBuilder`]'s chunks to disk;
//! [`write_table`] writes an image built in memory.
//!
//! Every write is a 4096-aligned `DmaBuffer` at an aligned offset; the last one is
//! padded with zeros, and the file is then truncated to the table's true length (the
//! footer must be the file's last bytes), fdatasync'd and closed. Any error is returned
//! as is and nothing is retried: the caller deletes the partial file (its name is not
//! in the manifest yet, so a crash leaves only an orphan to sweep).

use std::path::{Path, PathBuf};

use super::builder::{TableBuilder, TableOptions};
use super::disk::{TableDisk, TableFile};
use super::error::{Result, SstError};
use super::footer::{Footer, TableProperties, FOOTER_BYTES};
use super::IO_ALIGN_BYTES;

/// Bytes gathered before one write: large enough to amortise a syscall, small enough
/// to keep a shard's DMA memory bounded while a table streams out.
pub const WRITE_CHUNK_BYTES: usize = 256 << 10;

/// A table written and synced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableInfo {
    pub path: PathBuf,
    /// The file's length, footer included.
    pub file_bytes: u64,
    pub properties: TableProperties,
}

/// Builds a table straight into a new file, one aligned chunk at a time.
pub struct TableWriter<D: TableDisk> {
    file: D::File,
    path: PathBuf,
    builder: TableBuilder,
    /// File offset of the next chunk.
    written_bytes: u64,
}

impl<D: TableDisk> TableWriter<D> {
    /// Creates `path` (which must not exist).
    pub async fn create(disk: &D, path: &Path, options: TableOptions) -> Result<Self> {
        let file = disk
            .create(path)
            .await
            .map_err(|e| SstError::io("create", path, e))?;
        Ok(TableWriter {
            file,
            path: path.to_path_buf(),
            builder: TableBuilder::new(options),
            written_bytes: 0,
        })
    }

    /// Adds one entry (keys strictly increasing, see [`TableBuilder::add`]) and writes
    /// out a chunk once [`WRITE_CHUNK_BYTES`] are ready.
    pub async fn add(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.builder.add(key, value);
        if let Some(chunk) = self.builder.take_chunk(WRITE_CHUNK_BYTES) {
            write_padded(&self.file, &self.path, self.written_bytes, &chunk).await?;
            self.written_bytes += chunk.len() as u64;
        }
        Ok(())
    }

    /// Entries added so far.
    pub fn entry_count(&self) -> u64 {
        self.builder.entry_count()
    }

    /// Closes the file without finishing the table; the caller removes it.
    pub async fn abandon(self) {
        // Nothing of the file will be used: a close error changes nothing.
        let _ = self.file.close().await;
    }

    /// Writes the rest of the table, truncates, fdatasyncs and closes the file.
    pub async fn finish(self) -> Result<TableInfo> {
        let (tail, properties) = self.builder.finish();
        let file_bytes = self.written_bytes + tail.len() as u64;
        let written = write_all(&self.file, &self.path, self.written_bytes, &tail).await;
        finish_file(self.file, &self.path, written.map(|()| file_bytes))
            .await
            .map(|file_bytes| TableInfo {
                path: self.path,
                file_bytes,
                properties,
            })
    }
}

/// Writes a whole table `image` (from [`TableBuilder::finish`] with nothing taken) to a
/// new file at `path`. Panics if `image` is not a table (a caller bug).
pub async fn write_table<D: TableDisk>(disk: &D, path: &Path, image: &[u8]) -> Result<TableInfo> {
    let properties = image_properties(image);
    let file = disk
        .create(path)
        .await
        .map_err(|e| SstError::io("create", path, e))?;
    let written = write_all(&file, path, 0, image).await;
    let file_bytes = finish_file(file, path, written.map(|()| image.len() as u64)).await?;
    Ok(TableInfo {
        path: path.to_path_buf(),
        file_bytes,
        properties,
    })
}

/// The properties of a table image, decoded as a reader would (the assertion on write
/// paired with the check on read).
fn image_properties(image: &[u8]) -> TableProperties {
    assert!(image.len() >= FOOTER_BYTES, "not a table image");
    let footer = Footer::decode(&image[image.len() - FOOTER_BYTES..], image.len() as u64)
        .expect("footer of a built table");
    let frame = &image[footer.props.offset as usize..footer.props.end() as usize];
    let payload = super::block::decode_block(frame).expect("properties of a built table");
    TableProperties::decode(&payload).expect("properties of a built table")
}

/// Writes `bytes` at aligned `pos` in chunks of [`WRITE_CHUNK_BYTES`] (the last one
/// padded), so that a large filter or image never needs one huge DMA buffer.
async fn write_all<F: TableFile>(file: &F, path: &Path, pos: u64, bytes: &[u8]) -> Result<()> {
    for (i, chunk) in bytes.chunks(WRITE_CHUNK_BYTES).enumerate() {
        write_padded(file, path, pos + (i * WRITE_CHUNK_BYTES) as u64, chunk).await?;
    }
    Ok(())
}

/// Writes `bytes` at aligned `pos`, zero-padded to a whole number of aligned blocks.
async fn write_padded<F: TableFile>(file: &F, path: &Path, pos: u64, bytes: &[u8]) -> Result<()> {
    assert_eq!(pos % IO_ALIGN_BYTES, 0, "chunks start aligned");
    if bytes.is_empty() {
        return Ok(());
    }
    let padded = (bytes.len() as u64).div_ceil(IO_ALIGN_BYTES) * IO_ALIGN_BYTES;
    let mut buf = glommio::allocate_dma_buffer(padded as usize);
    let dst = buf.as_bytes_mut();
    dst[..bytes.len()].copy_from_slice(bytes);
    dst[bytes.len()..].fill(0);
    file.write_at(buf, pos)
        .await
        .map_err(|e| SstError::io("write", path, e))
}

/// After the writes (`written`: the table's length, or their error): truncate to the
/// true length, fdatasync, close. On an earlier error the file is only closed.
async fn finish_file<F: TableFile>(file: F, path: &Path, written: Result<u64>) -> Result<u64> {
    let file_bytes = match written {
        Ok(n) => n,
        Err(e) => {
            // The write error is the one to report; a close error after it adds nothing.
            let _ = file.close().await;
            return Err(e);
        }
    };
    let synced = match file.truncate(file_bytes).await {
        Ok(()) => file
            .fdatasync()
            .await
            .map_err(|e| SstError::io("fdatasync", path, e)),
        Err(e) => Err(SstError::io("truncate", path, e)),
    };
    let closed = file
        .close()
        .await
        .map_err(|e| SstError::io("close", path, e));
    synced.and(closed).map(|()| file_bytes)
}
