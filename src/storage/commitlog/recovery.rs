//! Replaying the log at start-up (synchronous `std::fs`: it runs before the shard serves).
//!
//! Segments are read in id order; every valid record goes to the caller's `apply`.
//! The policy, from DESIGN.md §4:
//! - The newest segment may end in a torn write: its first bad record (short, too large,
//!   bad CRC, or non-zero bytes after the end marker) ends the log. The file is cut there
//!   (ftruncate + fsync) and the cut is reported, so that the next recovery, when this
//!   segment is no longer the newest, finds it clean.
//! - The newest segment may also be a creation torn by a crash: a bad header with only
//!   zeros after it. It held no record; it is removed and reported.
//! - Anything else (a bad record or header in an older segment, a gap in the ids) is
//!   [`LogError::Corruption`]: those bytes were fdatasync'd before the next segment was
//!   created, so acknowledged writes are damaged and the shard must not start.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use std::fmt::Display;

use super::error::LogError;
use super::record::{self, Defect, KIND_OFFSET, PREFIX_BYTES};
use super::segment::{self, DATA_OFFSET};

/// What recovery found and what it repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment ids on disk after recovery, ascending.
    pub segment_ids: Vec<u64>,
    /// Records handed to `apply`.
    pub records: u64,
    /// Payload bytes handed to `apply` (without record headers).
    pub payload_bytes: u64,
    /// The newest segment's torn tail, cut off.
    pub torn_tail: Option<TornTail>,
    /// The newest segment, removed because its creation was torn (bad header, no data).
    pub removed_segment: Option<PathBuf>,
}

/// A torn tail cut from the newest segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    /// Where the valid data ends; the file now ends here.
    pub offset: u64,
    /// File bytes removed by the cut (including pre-allocated zeros).
    pub bytes_dropped: u64,
    pub reason: String,
}

/// How one segment ended.
enum Scan {
    /// Every record valid, then the end marker and zeros, or the end of the file.
    Clean,
    /// The data stops being valid at `offset`.
    Defect { offset: u64, defect: Defect },
    /// The header block is not valid; `rest_zero` says whether anything follows it.
    BadHeader { reason: String, rest_zero: bool },
}

/// Replays every segment in `dir` into `apply(kind, payload)`, in order. See the module
/// doc for what is repaired and what is refused. A missing `dir` is an empty log.
/// An error from `apply` stops recovery with [`LogError::Apply`] naming the record.
/// `record_bytes_max` must be at least the value the log was written with.
pub fn recover<E: Display>(
    dir: &Path,
    record_bytes_max: u32,
    mut apply: impl FnMut(u8, &[u8]) -> Result<(), E>,
) -> Result<RecoveryReport, LogError> {
    let ids = segment::list_ids(dir).map_err(|e| LogError::io("list", dir, e))?;
    check_contiguous(dir, &ids)?;
    let mut report = RecoveryReport::default();
    for (i, &id) in ids.iter().enumerate() {
        let newest = i + 1 == ids.len();
        let path = segment::path(dir, id);
        match scan_segment(&path, id, record_bytes_max, &mut apply, &mut report)? {
            Scan::Clean => report.segment_ids.push(id),
            Scan::Defect { offset, defect } if newest => {
                report.torn_tail = Some(cut_tail(&path, offset, defect)?);
                report.segment_ids.push(id);
            }
            Scan::BadHeader {
                rest_zero: true, ..
            } if newest => {
                std::fs::remove_file(&path).map_err(|e| LogError::io("remove", &path, e))?;
                sync_dir(dir)?;
                report.removed_segment = Some(path);
            }
            Scan::Defect { offset, defect } => {
                return Err(corruption(path, offset, defect.to_string()));
            }
            Scan::BadHeader { reason, .. } => return Err(corruption(path, 0, reason)),
        }
    }
    Ok(report)
}

/// Deletes the segments of `dir` with ids below `floor`, oldest first, syncing the
/// directory after each: the caller's tables already hold their records (the manifest's
/// log floor), so a flush's clean-up that a crash interrupted is finished here, before
/// [`recover`] replays the rest. Returns the ids removed.
pub fn discard_below(dir: &Path, floor: u64) -> Result<Vec<u64>, LogError> {
    let ids = segment::list_ids(dir).map_err(|e| LogError::io("list", dir, e))?;
    let victims: Vec<u64> = ids.into_iter().filter(|&id| id < floor).collect();
    for &id in &victims {
        let path = segment::path(dir, id);
        std::fs::remove_file(&path).map_err(|e| LogError::io("remove", &path, e))?;
        sync_dir(dir)?;
    }
    Ok(victims)
}

fn corruption(path: PathBuf, offset: u64, reason: String) -> LogError {
    LogError::Corruption {
        path,
        offset,
        reason,
    }
}

/// Segments are created with consecutive ids and removed oldest first, so a gap means a
/// segment went missing.
fn check_contiguous(dir: &Path, ids: &[u64]) -> Result<(), LogError> {
    for pair in ids.windows(2) {
        if pair[1] != pair[0] + 1 {
            let missing = pair[0] + 1;
            return Err(corruption(
                segment::path(dir, missing),
                0,
                format!(
                    "segment {missing} is missing between {} and {}",
                    pair[0], pair[1]
                ),
            ));
        }
    }
    Ok(())
}

fn scan_segment<E: Display>(
    path: &Path,
    id: u64,
    record_bytes_max: u32,
    apply: &mut impl FnMut(u8, &[u8]) -> Result<(), E>,
    report: &mut RecoveryReport,
) -> Result<Scan, LogError> {
    let io_err = |e| LogError::io("read", path, e);
    let file = File::open(path).map_err(|e| LogError::io("open", path, e))?;
    let file_bytes = file.metadata().map_err(io_err)?.len();
    let mut reader = BufReader::with_capacity(256 << 10, file);

    let mut header = vec![0u8; DATA_OFFSET.min(file_bytes) as usize];
    reader.read_exact(&mut header).map_err(io_err)?;
    if let Err(reason) = segment::check_header(&header, id) {
        let rest_zero = first_non_zero(&mut reader, DATA_OFFSET.min(file_bytes))
            .map_err(io_err)?
            .is_none();
        return Ok(Scan::BadHeader { reason, rest_zero });
    }

    let seed = segment::record_seed(id);
    let mut pos = DATA_OFFSET;
    let mut body = Vec::new();
    loop {
        let available = file_bytes - pos;
        if available < PREFIX_BYTES as u64 {
            // Too short for a record: the end, provided it is all zeros.
            return match first_non_zero(&mut reader, pos).map_err(io_err)? {
                None => Ok(Scan::Clean),
                Some(_) => Ok(Scan::Defect {
                    offset: pos,
                    defect: Defect::Truncated {
                        record_bytes: PREFIX_BYTES as u64,
                        available_bytes: available,
                    },
                }),
            };
        }
        let mut prefix = [0u8; PREFIX_BYTES];
        reader.read_exact(&mut prefix).map_err(io_err)?;
        let (len, crc) = record::read_prefix(&prefix);
        let record_bytes = match record::check_len(len, record_bytes_max, available) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return end_of_data(&mut reader, pos, crc).map_err(io_err),
            Err(defect) => {
                return Ok(Scan::Defect {
                    offset: pos,
                    defect,
                })
            }
        };
        // Bounded by record_bytes_max, checked above.
        body.resize(record_bytes - KIND_OFFSET, 0);
        reader.read_exact(&mut body).map_err(io_err)?;
        if let Err(defect) = record::check_crc(seed, len, crc, &body) {
            return Ok(Scan::Defect {
                offset: pos,
                defect,
            });
        }
        apply(body[0], &body[1..]).map_err(|e| LogError::Apply {
            path: path.to_path_buf(),
            offset: pos,
            reason: e.to_string(),
        })?;
        report.records += 1;
        report.payload_bytes += body.len() as u64 - 1;
        pos += record_bytes as u64;
    }
}

/// At a zero `len` at `pos`: the rest of the file (the CRC field included) must be zero.
fn end_of_data(reader: &mut BufReader<File>, pos: u64, crc: u32) -> io::Result<Scan> {
    let non_zero = if crc != 0 {
        Some(pos + 4)
    } else {
        first_non_zero(reader, pos + PREFIX_BYTES as u64)?
    };
    Ok(match non_zero {
        None => Scan::Clean,
        Some(offset) => Scan::Defect {
            offset: pos,
            defect: Defect::DataAfterEnd { offset },
        },
    })
}

/// Reads `reader` (positioned at file offset `pos`) to the end; returns the offset of the
/// first non-zero byte.
fn first_non_zero(reader: &mut impl Read, mut pos: u64) -> io::Result<Option<u64>> {
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(i) = chunk[..n].iter().position(|&b| b != 0) {
            return Ok(Some(pos + i as u64));
        }
        pos += n as u64;
    }
}

/// Cuts the newest segment at `offset` (ftruncate, then fsync for the new size).
fn cut_tail(path: &Path, offset: u64, defect: Defect) -> Result<TornTail, LogError> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| LogError::io("open", path, e))?;
    let file_bytes = file
        .metadata()
        .map_err(|e| LogError::io("stat", path, e))?
        .len();
    file.set_len(offset)
        .and_then(|()| file.sync_all())
        .map_err(|e| LogError::io("truncate", path, e))?;
    Ok(TornTail {
        path: path.to_path_buf(),
        offset,
        bytes_dropped: file_bytes - offset,
        reason: defect.to_string(),
    })
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io("sync directory", dir, e))
}
