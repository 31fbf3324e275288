//! Real files (O_DIRECT `DmaDisk`): write, close, recover, damage, recover again.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::test_support::{payload, queue, recover_all, run, temp_dir};
use super::*;

const RECORD_MAX: u32 = 4096;
/// Small segments: 4096 header + 4096 data bytes.
const SEG: u64 = 8192;
/// Payload size of the fixed-layout logs below, and the encoded record size.
const FIXED_PAYLOAD: usize = 100;
const FIXED_RECORD: u64 = FIXED_PAYLOAD as u64 + RECORD_OVERHEAD_BYTES as u64;
/// Records of FIXED_RECORD bytes per SEG segment: 4096 / 109.
const PER_SEGMENT: u64 = 37;

fn config(dir: &Path, segment_bytes: u64) -> CommitLogConfig {
    CommitLogConfig {
        segment_bytes,
        record_bytes_max: RECORD_MAX,
        buffer_bytes_max: 256 << 10,
        ..CommitLogConfig::new(dir)
    }
}

/// Opens a log in `dir`, appends `payloads` (kind = index as u8) from concurrent tasks,
/// closes it, and returns the records in ticket order.
fn write_log(dir: &Path, segment_bytes: u64, payloads: Vec<Vec<u8>>) -> Vec<(u8, Vec<u8>)> {
    let config = config(dir, segment_bytes);
    run(move || async move {
        let log = CommitLog::open(config, queue()).await.unwrap();
        let tasks: Vec<_> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, p)| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let ticket = log.append_durable(i as u8, &p).await.unwrap();
                    (ticket, (i as u8, p))
                })
            })
            .collect();
        let mut written = Vec::new();
        for task in tasks {
            written.push(task.await);
        }
        log.close().await.unwrap();
        written.sort_by_key(|(ticket, _)| *ticket);
        written.into_iter().map(|(_, record)| record).collect()
    })
}

/// 100 records of 109 bytes over 8 KiB segments: 37 + 37 + 26.
fn fixed_log(dir: &Path) -> Vec<(u8, Vec<u8>)> {
    let payloads = (0..100).map(|i| payload(i, FIXED_PAYLOAD)).collect();
    let written = write_log(dir, SEG, payloads);
    assert_eq!(segment::list_ids(dir).unwrap(), vec![1, 2, 3]);
    written
}

fn seg_path(dir: &Path, id: u64) -> PathBuf {
    segment::path(dir, id)
}

/// File offset of the `k`-th record of a fixed-layout segment.
fn fixed_offset(k: u64) -> u64 {
    segment::DATA_OFFSET + k * FIXED_RECORD
}

fn overwrite(path: &Path, offset: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

fn flip_byte(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn records_come_back_in_order_and_a_second_session_follows() {
    let dir = temp_dir();
    let payloads: Vec<_> = (0..300)
        .map(|i| payload(i, (i as usize * 997) % 4000))
        .collect();
    let first = write_log(dir.path(), 1 << 20, payloads);
    let (records, report) = recover_all(dir.path(), RECORD_MAX);
    assert_eq!(records, first);
    assert_eq!(report.records, 300);
    assert_eq!(report.segment_ids, vec![1]);
    assert_eq!(report.torn_tail, None);

    let second = write_log(
        dir.path(),
        1 << 20,
        (0..50).map(|i| payload(i + 1000, 64)).collect(),
    );
    let (records, report) = recover_all(dir.path(), RECORD_MAX);
    assert_eq!(records, [first, second].concat());
    assert_eq!(
        report.segment_ids,
        vec![1, 2],
        "a new session starts a new segment"
    );
}

#[test]
fn segments_roll_across_many_files() {
    let dir = temp_dir();
    let payloads: Vec<_> = (0..400)
        .map(|i| payload(i, 50 + (i as usize * 389) % 1500))
        .collect();
    let written = write_log(dir.path(), SEG, payloads);
    let (records, report) = recover_all(dir.path(), RECORD_MAX);
    assert_eq!(records, written);
    let n = report.segment_ids.len() as u64;
    assert!(n >= 20, "only {n} segments");
    assert_eq!(report.segment_ids, (1..=n).collect::<Vec<_>>());
    for id in 1..=n {
        let len = std::fs::metadata(seg_path(dir.path(), id)).unwrap().len();
        assert_eq!(len, SEG, "segments are pre-allocated to segment_bytes");
    }
}

/// Damages the newest segment of a fixed log, then checks that recovery keeps exactly
/// `kept` records, cuts the file at the first bad byte, and that a second recovery is clean.
fn torn_tail_case(damage: impl FnOnce(&Path), kept: usize, cut_at: u64) {
    let dir = temp_dir();
    let written = fixed_log(dir.path());
    let newest = seg_path(dir.path(), 3);
    damage(&newest);

    let (records, report) = recover_all(dir.path(), RECORD_MAX);
    assert_eq!(records[..], written[..kept]);
    let torn = report.torn_tail.expect("a torn tail is reported");
    assert_eq!(
        (torn.path.as_path(), torn.offset),
        (newest.as_path(), cut_at),
        "{torn:?}"
    );
    assert_eq!(
        std::fs::metadata(&newest).unwrap().len(),
        cut_at,
        "file cut"
    );

    let (again, report) = recover_all(dir.path(), RECORD_MAX);
    assert_eq!(again, records);
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.segment_ids, vec![1, 2, 3]);
}

#[test]
fn torn_tail_truncated_mid_record() {
    let last = 2 * PER_SEGMENT + 25; // index of the last record, 26th of segment 3
    torn_tail_case(
        |p| {
            let f = OpenOptions::new().write(true).open(p).unwrap();
            f.set_len(fixed_offset(25) + 50).unwrap();
        },
        last as usize,
        fixed_offset(25),
    );
}

#[test]
fn torn_tail_overwritten_with_garbage() {
    let last = 2 * PER_SEGMENT + 25;
    torn_tail_case(
        |p| overwrite(p, fixed_offset(25) + 30, &[0xA5; 700]),
        last as usize,
        fixed_offset(25),
    );
}

#[test]
fn torn_tail_garbage_after_the_end_marker() {
    torn_tail_case(
        |p| overwrite(p, fixed_offset(26) + 200, &[0x5A; 10]),
        100,
        fixed_offset(26),
    );
}

#[test]
fn torn_tail_bit_flip_in_the_last_record() {
    let last = 2 * PER_SEGMENT + 25;
    torn_tail_case(
        |p| flip_byte(p, fixed_offset(25) + 60),
        last as usize,
        fixed_offset(25),
    );
}

#[test]
fn corruption_in_an_older_segment_names_file_and_offset() {
    let dir = temp_dir();
    fixed_log(dir.path());
    let older = seg_path(dir.path(), 2);
    flip_byte(&older, fixed_offset(5) + 20);
    let err = recover(dir.path(), RECORD_MAX, |_, _| {
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_err();
    let LogError::Corruption {
        path,
        offset,
        reason,
    } = &err
    else {
        panic!("expected Corruption, got {err:?}");
    };
    assert_eq!((path, *offset), (&older, fixed_offset(5)), "{err}");
    assert!(reason.contains("crc32c"), "{reason}");
    assert!(
        err.to_string().contains("00000000000000000002.log"),
        "{err}"
    );
}

#[test]
fn zeroed_len_in_an_older_segment_is_corruption_not_an_early_end() {
    let dir = temp_dir();
    fixed_log(dir.path());
    let older = seg_path(dir.path(), 1);
    overwrite(&older, fixed_offset(10), &[0; 8]);
    let err = recover(dir.path(), RECORD_MAX, |_, _| {
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_err();
    assert!(
        matches!(&err, LogError::Corruption { offset, .. } if *offset == fixed_offset(10)),
        "{err:?}"
    );
}

#[test]
fn bad_header_of_an_older_segment_is_corruption() {
    let dir = temp_dir();
    fixed_log(dir.path());
    flip_byte(&seg_path(dir.path(), 1), 17);
    let err = recover(dir.path(), RECORD_MAX, |_, _| {
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_err();
    assert!(
        matches!(&err, LogError::Corruption { offset: 0, reason, .. } if reason.contains("header")),
        "{err:?}"
    );
}

#[test]
fn torn_creation_of_the_newest_segment_is_removed() {
    let dir = temp_dir();
    let written = fixed_log(dir.path());
    // A crash between creating segment 4 and syncing its header.
    std::fs::write(seg_path(dir.path(), 4), vec![0u8; SEG as usize]).unwrap();
    let (records, report) = recover_all(dir.path(), RECORD_MAX);
    assert_eq!(records, written);
    assert_eq!(report.removed_segment, Some(seg_path(dir.path(), 4)));
    assert!(!seg_path(dir.path(), 4).exists());
    assert_eq!(report.segment_ids, vec![1, 2, 3]);
}

#[test]
fn missing_segment_is_corruption() {
    let dir = temp_dir();
    fixed_log(dir.path());
    std::fs::remove_file(seg_path(dir.path(), 2)).unwrap();
    let err = recover(dir.path(), RECORD_MAX, |_, _| {
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_err();
    assert!(
        matches!(&err, LogError::Corruption { path, .. } if *path == seg_path(dir.path(), 2)),
        "{err:?}"
    );
}

#[test]
fn apply_error_stops_recovery_with_the_record_position() {
    let dir = temp_dir();
    fixed_log(dir.path());
    let mut seen = 0;
    let err = recover(dir.path(), RECORD_MAX, |_, _| {
        seen += 1;
        if seen == 40 {
            Err("refused")
        } else {
            Ok(())
        }
    })
    .unwrap_err();
    let LogError::Apply {
        path,
        offset,
        reason,
    } = err
    else {
        panic!("expected Apply, got {err:?}");
    };
    assert_eq!((path, offset), (seg_path(dir.path(), 2), fixed_offset(2)));
    assert_eq!(reason, "refused");
}

#[test]
fn empty_or_missing_dir_is_an_empty_log() {
    let dir = temp_dir();
    let (records, report) = recover_all(&dir.path().join("never-created"), RECORD_MAX);
    assert!(records.is_empty());
    assert_eq!(report, RecoveryReport::default());
}

#[test]
fn roll_then_remove_segments_below_recycles_covered_segments() {
    let dir = temp_dir();
    let path = dir.path().to_path_buf();
    let after = run(move || async move {
        let log = CommitLog::open(config(&path, 1 << 16), queue())
            .await
            .unwrap();
        for i in 0..5 {
            log.append_durable(0, &payload(i, 300)).await.unwrap();
        }
        let boundary = log.roll().await.unwrap();
        assert_eq!(boundary, 2);
        assert_eq!(
            log.roll().await.unwrap(),
            2,
            "an empty active segment is its own boundary"
        );
        let mut after = Vec::new();
        for i in 5..8 {
            let p = payload(i, 300);
            log.append_durable(1, &p).await.unwrap();
            after.push((1, p));
        }
        assert_eq!(log.segment_ids(), vec![1, 2]);
        assert_eq!(log.remove_segments_below(boundary).await.unwrap(), vec![1]);
        assert_eq!(
            log.remove_segments_below(u64::MAX).await.unwrap(),
            Vec::<u64>::new(),
            "the active segment is never removed"
        );
        assert_eq!(log.segment_ids(), vec![2]);
        log.close().await.unwrap();
        after
    });
    let (records, report) = recover_all(dir.path(), RECORD_MAX);
    assert_eq!(records, after);
    assert_eq!(report.segment_ids, vec![2]);
}

/// The extents of `path` as (logical offset, length, unwritten), from FIEMAP.
fn extents(path: &Path) -> Vec<(u64, u64, bool)> {
    const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
    const FIEMAP_EXTENT_UNWRITTEN: u32 = 0x800;
    const MAX: usize = 64;
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Extent {
        logical: u64,
        physical: u64,
        length: u64,
        reserved64: [u64; 2],
        flags: u32,
        reserved: [u32; 3],
    }
    #[repr(C)]
    struct Map {
        start: u64,
        length: u64,
        flags: u32,
        mapped: u32,
        count: u32,
        reserved: u32,
        extents: [Extent; MAX],
    }
    let file = std::fs::File::open(path).unwrap();
    let mut map = Map {
        start: 0,
        length: u64::MAX,
        flags: 1, // FIEMAP_FLAG_SYNC
        mapped: 0,
        count: MAX as u32,
        reserved: 0,
        extents: [Extent::default(); MAX],
    };
    use std::os::fd::AsRawFd;
    // SAFETY: `map` is a valid fiemap with room for `count` extents.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), FS_IOC_FIEMAP, &mut map) };
    assert_eq!(rc, 0, "FIEMAP: {}", std::io::Error::last_os_error());
    map.extents[..map.mapped as usize]
        .iter()
        .map(|e| (e.logical, e.length, e.flags & FIEMAP_EXTENT_UNWRITTEN != 0))
        .collect()
}

/// Records land in blocks already written with zeros, so a batch's fdatasync need not
/// write the extent tree (the writer's `ZERO_AHEAD_BYTES`).
#[test]
fn records_land_in_blocks_zeroed_ahead_of_them() {
    let dir = temp_dir();
    let segment_bytes = 8 << 20;
    let payloads = (0..50).map(|i| payload(i, 1000)).collect();
    write_log(dir.path(), segment_bytes, payloads);
    let path = segment::path(dir.path(), 1);
    let extents = extents(&path);
    let written_through = extents
        .iter()
        .filter(|(_, _, unwritten)| !unwritten)
        .map(|(start, len, _)| start + len)
        .max()
        .unwrap_or(0);
    // 50 records of ~1 KiB: the first zeroed stretch (1 MiB) covers them, and the
    // segment past it is still preallocated, not written (when the file system
    // preallocates at all).
    assert!(written_through >= 1 << 20, "{extents:?}");
    if extents.iter().any(|e| e.2) {
        assert!(written_through < segment_bytes, "{extents:?}");
    }
}
