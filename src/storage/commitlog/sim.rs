//! [`SimDisk`]: an in-memory [`LogDisk`] that fails on demand and crashes on demand.
//!
//! It tracks, per file, the bytes as last fdatasync'd and the writes made since. A crash
//! ([`SimDisk::crash`]) keeps the synced bytes plus a prefix of the later writes, the
//! last of them torn at an arbitrary byte, and drops files whose names were never made
//! durable by `sync_dir` (or keeps them: a coin decides). Like a real O_DIRECT file, it
//! rejects unaligned writes. Writes and fdatasyncs are real await points, and fdatasync
//! can be given a latency, so that concurrent appends interleave with the writer.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use glommio::io::DmaBuffer;
use rand::{Rng, SeedableRng};

use super::disk::{LogDisk, SegmentFile};
use super::segment::{self, BLOCK_BYTES};

/// An in-memory disk for tests and simulation. Cheap to clone; clones share the files.
#[derive(Clone, Default)]
pub struct SimDisk {
    state: Rc<RefCell<SimState>>,
}

#[derive(Default)]
struct SimState {
    files: BTreeMap<PathBuf, SimFile>,
    /// Successful fdatasyncs of segment files, all files together.
    fdatasyncs: u64,
    /// Successful writes, all files together.
    writes: u64,
    /// Every fdatasync from the n-th (counting successful ones from 0) on fails with EIO.
    fail_fdatasync_from: Option<u64>,
    /// Every write from the n-th (counting successful ones from 0) on fails with EIO.
    fail_write_from: Option<u64>,
    /// How long each fdatasync takes (a timer sleep), so that appends pile up meanwhile.
    fdatasync_latency: Duration,
}

struct SimFile {
    /// What a read would return now.
    data: Vec<u8>,
    /// The contents as of the last successful fdatasync.
    synced: Vec<u8>,
    /// Writes since the last successful fdatasync, in order: `(offset, bytes)`.
    pending: Vec<(u64, Vec<u8>)>,
    /// The name survives a crash only once `sync_dir` ran after the file was created.
    name_durable: bool,
}

/// A file of a [`SimDisk`].
pub struct SimFileHandle {
    disk: SimDisk,
    path: PathBuf,
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated EIO on {what}"))
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every fdatasync fail with EIO from now on.
    pub fn fail_fdatasync(&self) {
        let mut st = self.state.borrow_mut();
        st.fail_fdatasync_from = Some(st.fdatasyncs);
    }

    /// Makes every write fail with EIO from now on.
    pub fn fail_write(&self) {
        let mut st = self.state.borrow_mut();
        st.fail_write_from = Some(st.writes);
    }

    /// Makes every fdatasync wait `latency` before it completes.
    pub fn set_fdatasync_latency(&self, latency: Duration) {
        self.state.borrow_mut().fdatasync_latency = latency;
    }

    /// Successful fdatasyncs so far.
    pub fn fdatasync_count(&self) -> u64 {
        self.state.borrow().fdatasyncs
    }

    /// Successful writes so far.
    pub fn write_count(&self) -> u64 {
        self.state.borrow().writes
    }

    /// The current contents of every file (what a clean shutdown leaves).
    pub fn files(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let st = self.state.borrow();
        st.files
            .iter()
            .map(|(p, f)| (p.clone(), f.data.clone()))
            .collect()
    }

    /// What a crash at this instant could leave on disk, chosen by `seed`: synced bytes,
    /// plus a prefix of each file's unsynced writes with the last one torn; files whose
    /// name was never synced may be missing.
    pub fn crash(&self, seed: u64) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let st = self.state.borrow();
        let mut image = BTreeMap::new();
        for (path, file) in &st.files {
            if !file.name_durable && rng.gen_bool(0.5) {
                continue;
            }
            image.insert(path.clone(), file.crash_image(&mut rng));
        }
        image
    }

    /// Writes an image from [`files`](Self::files) or [`crash`](Self::crash) to real
    /// files, replacing the segment files in their directories, so that `recover` can
    /// read them.
    pub fn write_image(image: &BTreeMap<PathBuf, Vec<u8>>, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for id in segment::list_ids(dir)? {
            std::fs::remove_file(segment::path(dir, id))?;
        }
        for (path, bytes) in image {
            std::fs::write(path, bytes)?;
        }
        Ok(())
    }
}

impl SimFile {
    fn crash_image(&self, rng: &mut impl Rng) -> Vec<u8> {
        let mut out = self.synced.clone();
        let kept = rng.gen_range(0..=self.pending.len());
        for (i, (pos, bytes)) in self.pending.iter().take(kept + 1).enumerate() {
            let n = if i < kept {
                bytes.len()
            } else {
                rng.gen_range(0..=bytes.len())
            };
            apply_write(&mut out, *pos, &bytes[..n]);
        }
        out
    }
}

fn apply_write(data: &mut Vec<u8>, pos: u64, bytes: &[u8]) {
    let pos = pos as usize;
    if data.len() < pos + bytes.len() {
        data.resize(pos + bytes.len(), 0);
    }
    data[pos..pos + bytes.len()].copy_from_slice(bytes);
}

impl SegmentFile for SimFileHandle {
    async fn write_at(&self, buf: DmaBuffer, pos: u64) -> io::Result<()> {
        futures_lite::future::yield_now().await;
        let mut st = self.disk.state.borrow_mut();
        if pos % BLOCK_BYTES != 0 || buf.len() as u64 % BLOCK_BYTES != 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        if st.fail_write_from.is_some_and(|n| st.writes >= n) {
            return Err(eio("write"));
        }
        st.writes += 1;
        let file = st
            .files
            .get_mut(&self.path)
            .ok_or_else(|| eio("write to a removed file"))?;
        apply_write(&mut file.data, pos, buf.as_bytes());
        file.pending.push((pos, buf.as_bytes().to_vec()));
        Ok(())
    }

    async fn fdatasync(&self) -> io::Result<()> {
        let latency = self.disk.state.borrow().fdatasync_latency;
        if latency.is_zero() {
            futures_lite::future::yield_now().await;
        } else {
            glommio::timer::sleep(latency).await;
        }
        let mut st = self.disk.state.borrow_mut();
        if st.fail_fdatasync_from.is_some_and(|n| st.fdatasyncs >= n) {
            return Err(eio("fdatasync"));
        }
        st.fdatasyncs += 1;
        let file = st
            .files
            .get_mut(&self.path)
            .ok_or_else(|| eio("fdatasync of a removed file"))?;
        for (pos, bytes) in std::mem::take(&mut file.pending) {
            apply_write(&mut file.synced, pos, &bytes);
        }
        Ok(())
    }

    async fn close(self) -> io::Result<()> {
        Ok(())
    }
}

impl LogDisk for SimDisk {
    type File = SimFileHandle;

    fn open_dir(&self, dir: &Path) -> io::Result<Vec<u64>> {
        let st = self.state.borrow();
        let ids = st
            .files
            .keys()
            .filter(|p| p.parent() == Some(dir))
            .filter_map(|p| p.file_name()?.to_str().and_then(segment::parse_file_name))
            .collect();
        Ok(ids)
    }

    async fn create_segment(&self, path: &Path, segment_bytes: u64) -> io::Result<SimFileHandle> {
        let mut st = self.state.borrow_mut();
        if st.files.contains_key(path) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        let zeros = vec![0; segment_bytes as usize];
        st.files.insert(
            path.to_path_buf(),
            SimFile {
                data: zeros.clone(),
                synced: zeros,
                pending: Vec::new(),
                name_durable: false,
            },
        );
        Ok(SimFileHandle {
            disk: self.clone(),
            path: path.to_path_buf(),
        })
    }

    async fn remove_segment(&self, path: &Path) -> io::Result<()> {
        match self.state.borrow_mut().files.remove(path) {
            Some(_) => Ok(()),
            None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
        }
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut st = self.state.borrow_mut();
        for (path, file) in st.files.iter_mut() {
            if path.parent() == Some(dir) {
                file.name_durable = true;
            }
        }
        Ok(())
    }
}
