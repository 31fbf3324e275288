//! Real files (O_DIRECT): golden bytes of a small table, round trips, corruption,
//! a full disk.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::prelude::*;

use super::block::decode_block;
use super::footer::{decode_index, Footer, IndexEntry};
use super::*;
use crate::test_support::{temp_dir, test_data_dir};

/// Runs `f` on a fresh glommio executor (small io_memory: tests run in parallel), after
/// [`prime_iopoll_probe`] so that creating an empty file first does not break reads.
fn run<G, F, T>(f: G) -> T
where
    G: FnOnce() -> F + Send + 'static,
    F: Future<Output = T> + 'static,
    T: Send + 'static,
{
    let probe = test_data_dir().join("iopoll-probe");
    if std::fs::metadata(&probe).map(|m| m.len()).unwrap_or(0) < IO_ALIGN_BYTES {
        let tmp = test_data_dir().join(format!("iopoll-probe.{}", std::process::id()));
        std::fs::write(&tmp, vec![0u8; IO_ALIGN_BYTES as usize]).expect("probe file");
        std::fs::rename(&tmp, &probe).expect("probe file");
    }
    glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .spawn(move || async move {
            prime_iopoll_probe(&probe).await.expect("iopoll probe");
            f().await
        })
        .expect("spawn executor")
        .join()
        .expect("executor thread")
}

fn options(block_bytes: u32, compression: Compression) -> TableOptions {
    TableOptions {
        block_bytes,
        compression,
        bits_per_key: BITS_PER_KEY_DEFAULT,
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key-{i:06}").into_bytes()
}

fn value(i: u32) -> Vec<u8> {
    (0..(i % 50 + 10)).map(|j| (i * 7 + j) as u8).collect()
}

/// A table image of `n` entries `key(i) -> value(i)`.
fn image(n: u32, opts: TableOptions) -> Vec<u8> {
    let mut b = TableBuilder::new(opts);
    (0..n).for_each(|i| b.add(&key(i), &value(i)));
    b.finish().0
}

/// The footer and index of an image, decoded as a reader would.
fn layout(image: &[u8]) -> (Footer, Vec<IndexEntry>) {
    let footer = Footer::decode(&image[image.len() - FOOTER_BYTES..], image.len() as u64).unwrap();
    let frame = &image[footer.index.offset as usize..footer.index.end() as usize];
    let index = decode_index(&decode_block(frame).unwrap(), footer.index.offset).unwrap();
    (footer, index)
}

fn write_image(path: PathBuf, image: Vec<u8>) -> TableInfo {
    run(move || async move { write_table(&DmaTableDisk, &path, &image).await.unwrap() })
}

fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

/// `open` of `path` fails as corruption at `offset`.
fn assert_open_corrupt(path: PathBuf, offset: u64) {
    let p = path.clone();
    let err = run(move || async move { Table::open(&p, 1).await.err() }).expect("refused");
    match err {
        SstError::Corrupt {
            path: at,
            offset: o,
            what,
        } => {
            assert_eq!(at, path, "{what}");
            assert_eq!(o, offset, "{what}");
        }
        other => panic!("expected corruption, got {other}"),
    }
}

#[test]
fn golden_small_table() {
    let mut b = TableBuilder::new(options(4096, Compression::None));
    b.add(b"a", b"xyz");
    let (image, props) = b.finish();
    // Data block at 0 (see block.rs golden_data_block).
    let data: [u8; 23] = [
        0x00, 0x0a, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x83, 0x81, 0xcd, 0xbb, //
        0x01, 0x00, b'a', 0x03, 0x00, 0x00, 0x00, b'x', b'y', b'z',
    ];
    assert_eq!(image[..23], data);
    // Index block at 23: one entry, last key "a", block at 0 of 23 bytes.
    let index: [u8; 28] = [
        0x00, 0x0f, 0x00, 0x00, 0x00, 0x0f, 0x00, 0x00, 0x00, 0xd6, 0x64, 0xde, 0x3f, //
        0x01, 0x00, b'a', 0, 0, 0, 0, 0, 0, 0, 0, 0x17, 0x00, 0x00, 0x00,
    ];
    assert_eq!(image[23..51], index);
    // Filter block at 51: 7 probes and 64 bits, 22 bytes. Properties at 73, 59 bytes.
    assert_eq!(image[51..56], [0x00, 0x09, 0x00, 0x00, 0x00]);
    assert_eq!(image[64], 7);
    let props_frame: [u8; 59] = [
        0x00, 0x2e, 0x00, 0x00, 0x00, 0x2e, 0x00, 0x00, 0x00, 0x82, 0x7d, 0x6d, 0x81, //
        1, 0, 0, 0, 0, 0, 0, 0, // entry_count
        1, 0, 0, 0, 0, 0, 0, 0, // data_block_count
        23, 0, 0, 0, 0, 0, 0, 0, // data_bytes
        1, 0, 0, 0, 0, 0, 0, 0, // key_bytes
        3, 0, 0, 0, 0, 0, 0, 0, // value_bytes
        0x01, 0x00, b'a', 0x01, 0x00, b'a', // smallest, largest
    ];
    assert_eq!(image[73..132], props_frame);
    // Footer at 132: index (23, 28), filter (51, 22), properties (73, 59).
    let footer: [u8; FOOTER_BYTES] = [
        b'R', b'K', b'V', b'S', b'S', b'T', 0, 1, 1, 0, 0, 0, //
        23, 0, 0, 0, 0, 0, 0, 0, 28, 0, 0, 0, //
        51, 0, 0, 0, 0, 0, 0, 0, 22, 0, 0, 0, //
        73, 0, 0, 0, 0, 0, 0, 0, 59, 0, 0, 0, //
        0x0a, 0x72, 0xe8, 0x44,
    ];
    assert_eq!(image.len(), 132 + FOOTER_BYTES);
    assert_eq!(image[132..], footer);
    assert_eq!(props.entry_count, 1);
    assert_eq!(props.data_bytes, 23);
    assert_eq!(props.smallest_key.as_ref(), b"a");
    assert_eq!(props.largest_key.as_ref(), b"a");

    // On disk: the same bytes, truncated to the true length, and readable.
    let dir = temp_dir();
    let path = dir.path().join("1.sst");
    let info = write_image(path.clone(), image.clone());
    assert_eq!(info.file_bytes, image.len() as u64);
    assert_eq!(info.properties, props);
    assert_eq!(std::fs::read(&path).unwrap(), image);
    let value = run(move || async move {
        let t = Table::open(&path, 1).await.unwrap();
        let v = t.get(b"a", &BlockCache::new(1 << 20)).await.unwrap();
        t.close().await.unwrap();
        v
    });
    assert_eq!(value, Some(Bytes::from_static(b"xyz")));
}

#[test]
fn reads_go_through_the_cache() {
    let dir = temp_dir();
    let path = dir.path().join("1.sst");
    write_image(path.clone(), image(2000, options(512, Compression::Lz4)));
    run(move || async move {
        let t = Table::open(&path, 9).await.unwrap();
        assert!(t.block_count() > 10);
        let cache = BlockCache::new(1 << 20);
        assert_eq!(t.get(&key(5), &cache).await.unwrap().unwrap(), value(5));
        assert_eq!(t.get(&key(6), &cache).await.unwrap().unwrap(), value(6));
        assert_eq!((cache.hits(), cache.misses()), (1, 1));
        assert_eq!(cache.len(), 1);
        cache.remove_table(9);
        assert!(cache.is_empty());
        t.close().await.unwrap();
    });
}

#[test]
fn every_truncation_of_a_table_file_is_refused() {
    let dir = temp_dir();
    let image = image(20, options(128, Compression::None));
    let full = dir.path().join("full.sst");
    write_image(full.clone(), image.clone());
    let dir_path = dir.path().to_path_buf();
    run(move || async move {
        for n in 0..image.len() {
            let path = dir_path.join(format!("{n}.sst"));
            std::fs::write(&path, &image[..n]).unwrap();
            assert!(Table::open(&path, 1).await.is_err(), "truncated to {n}");
        }
        assert!(Table::open(&full, 1).await.is_ok());
    });
}

#[test]
fn corrupt_footer_index_filter_or_properties_refuse_open() {
    let image = image(500, options(1024, Compression::Lz4));
    let (footer, _) = layout(&image);
    let dir = temp_dir();
    let footer_at = image.len() as u64 - FOOTER_BYTES as u64;
    for (name, at, reported) in [
        ("footer", footer_at + 20, footer_at),
        ("index", footer.index.offset + 20, footer.index.offset),
        ("filter", footer.filter.offset + 30, footer.filter.offset),
        ("props", footer.props.offset + 15, footer.props.offset),
    ] {
        let path = dir.path().join(format!("{name}.sst"));
        write_image(path.clone(), image.clone());
        flip(&path, at);
        assert_open_corrupt(path, reported);
    }
}

#[test]
fn a_corrupt_data_block_fails_its_keys_only() {
    let n = 300;
    let image = image(n, options(256, Compression::None));
    let (_, index) = layout(&image);
    let bad = &index[3];
    let dir = temp_dir();
    let path = dir.path().join("1.sst");
    write_image(path.clone(), image);
    flip(&path, bad.block.offset + 20);
    let (bad_offset, bad_last) = (bad.block.offset, bad.last_key.clone());
    let first_bad = index[2].last_key.clone();
    run(move || async move {
        let t = Table::open(&path, 1).await.unwrap();
        let cache = BlockCache::new(1 << 20);
        for i in 0..n {
            let k = key(i);
            let in_bad = k.as_slice() > first_bad.as_ref() && k.as_slice() <= bad_last.as_ref();
            match t.get(&k, &cache).await {
                Ok(v) => {
                    assert!(!in_bad, "a key of the corrupt block was served");
                    assert_eq!(v.unwrap(), value(i));
                }
                Err(SstError::Corrupt { offset, .. }) => {
                    assert!(in_bad);
                    assert_eq!(offset, bad_offset);
                }
                Err(e) => panic!("{e}"),
            }
        }
        let mut iter = t.iter();
        let mut errors = 0;
        for _ in 0..t.block_count() {
            if let Err(SstError::Corrupt { offset, .. }) = iter.next_block().await {
                assert_eq!(offset, bad_offset);
                errors += 1;
            }
        }
        assert_eq!(errors, 1);
        assert!(iter.next_block().await.unwrap().is_none());
    });
}

#[test]
fn a_full_disk_is_an_error() {
    let dir = temp_dir();
    let image = image(3000, options(4096, Compression::None));
    assert!(image.len() > 64 << 10, "{}", image.len());
    let dir_path = dir.path().to_path_buf();
    run(move || async move {
        let disk = FullDisk {
            bytes_max: 64 << 10,
        };
        let check = |e: SstError| match e {
            SstError::Io { op, source, .. } => {
                assert_eq!(op, "write");
                assert_eq!(source.raw_os_error(), Some(libc::ENOSPC));
            }
            other => panic!("expected ENOSPC, got {other}"),
        };
        check(
            write_table(&disk, &dir_path.join("a.sst"), &image)
                .await
                .unwrap_err(),
        );

        let mut w = TableWriter::create(
            &disk,
            &dir_path.join("b.sst"),
            options(4096, Compression::None),
        )
        .await
        .unwrap();
        let mut failed = None;
        for i in 0..3000 {
            if let Err(e) = w.add(&key(i), &value(i)).await {
                failed = Some(e);
                break;
            }
        }
        match failed {
            Some(e) => check(e),
            None => check(w.finish().await.unwrap_err()),
        }
        // A name that exists is refused: tables are never overwritten.
        let err = write_table(&DmaTableDisk, &dir_path.join("a.sst"), &image)
            .await
            .unwrap_err();
        assert!(matches!(err, SstError::Io { op: "create", .. }), "{err}");
    });
}

#[test]
fn streamed_and_whole_images_are_identical() {
    let dir = temp_dir();
    let path = dir.path().join("1.sst");
    let opts = options(4096, Compression::Lz4);
    let whole = image(40_000, opts);
    assert!(whole.len() > 2 * WRITE_CHUNK_BYTES, "{}", whole.len());
    let p = path.clone();
    let info = run(move || async move {
        let mut w = TableWriter::create(&DmaTableDisk, &p, opts).await.unwrap();
        for i in 0..40_000 {
            w.add(&key(i), &value(i)).await.unwrap();
        }
        w.finish().await.unwrap()
    });
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    assert_eq!(info.file_bytes, whole.len() as u64);
    assert_eq!(info.properties.entry_count, 40_000);
}

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

fn check_round_trip(map: Map, absent: Vec<Vec<u8>>, opts: TableOptions, stream: bool) {
    let dir = temp_dir();
    let path = dir.path().join("1.sst");
    run(move || async move {
        let info = if stream {
            let mut w = TableWriter::create(&DmaTableDisk, &path, opts)
                .await
                .unwrap();
            for (k, v) in &map {
                w.add(k, v).await.unwrap();
            }
            w.finish().await.unwrap()
        } else {
            let mut b = TableBuilder::new(opts);
            map.iter().for_each(|(k, v)| b.add(k, v));
            write_table(&DmaTableDisk, &path, &b.finish().0)
                .await
                .unwrap()
        };
        assert_eq!(info.properties.entry_count, map.len() as u64);
        let t = Table::open(&path, 1).await.unwrap();
        assert_eq!(t.properties(), &info.properties);
        assert_eq!(
            t.properties().smallest_key.as_ref(),
            map.keys().next().unwrap().as_slice()
        );
        let cache = BlockCache::new(64 << 10);
        for (k, v) in &map {
            assert_eq!(
                t.get(k, &cache).await.unwrap().as_deref(),
                Some(v.as_slice())
            );
        }
        for k in absent.iter().filter(|k| !map.contains_key(*k)) {
            assert_eq!(t.get(k, &cache).await.unwrap(), None);
        }
        let mut iter = t.iter();
        let mut scanned = Vec::new();
        while let Some(block) = iter.next_block().await.unwrap() {
            scanned.extend(block.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())));
        }
        assert_eq!(scanned, map.into_iter().collect::<Vec<_>>());
        t.close().await.unwrap();
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn round_trip(
        map in proptest::collection::btree_map(
            proptest::collection::vec(any::<u8>(), 1..24),
            proptest::collection::vec(0u8..8, 0..120),
            1..3000,
        ),
        absent in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..24), 0..200),
        block_bytes in 1u32..8192,
        lz4: bool,
        stream: bool,
    ) {
        let compression = if lz4 { Compression::Lz4 } else { Compression::None };
        check_round_trip(map, absent, options(block_bytes, compression), stream);
    }
}

#[test]
fn every_single_byte_flip_of_a_table_file_is_detected() {
    for compression in [Compression::None, Compression::Lz4] {
        let n = 12;
        let image = image(n, options(100, compression));
        let dir = temp_dir();
        let dir_path = dir.path().to_path_buf();
        run(move || async move {
            let cache = BlockCache::new(0);
            for at in 0..image.len() {
                let path = dir_path.join(format!("{at}.sst"));
                let mut bad = image.clone();
                bad[at] ^= 0x01;
                std::fs::write(&path, &bad).unwrap();
                let Ok(t) = Table::open(&path, at as u64).await else {
                    continue;
                };
                let mut detected = false;
                for i in 0..n {
                    match t.get(&key(i), &cache).await {
                        Ok(v) => {
                            assert_eq!(v.as_deref(), Some(value(i).as_slice()), "flip at {at}")
                        }
                        Err(SstError::Corrupt { offset, .. }) => {
                            assert!(offset <= at as u64);
                            detected = true;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                assert!(detected, "flip at {at} went unnoticed");
                t.close().await.unwrap();
            }
        });
    }
}

#[test]
fn largest_keys_and_values_larger_than_a_block() {
    let big_key = vec![b'k'; usize::from(u16::MAX)];
    let mut small_key = big_key.clone();
    small_key.truncate(10);
    let big_value = vec![3u8; 100_000];
    let dir = temp_dir();
    let path = dir.path().join("1.sst");
    let (bk, bv, sk) = (big_key.clone(), big_value.clone(), small_key.clone());
    run(move || async move {
        let mut w = TableWriter::create(&DmaTableDisk, &path, options(4096, Compression::Lz4))
            .await
            .unwrap();
        w.add(&sk, b"small").await.unwrap();
        w.add(&bk, &bv).await.unwrap();
        let info = w.finish().await.unwrap();
        assert_eq!(info.properties.largest_key.as_ref(), bk.as_slice());
        let t = Table::open(&path, 1).await.unwrap();
        assert_eq!(t.block_count(), 2);
        let cache = BlockCache::new(1 << 20);
        assert_eq!(t.get(&bk, &cache).await.unwrap().unwrap(), bv);
        assert_eq!(t.get(&sk, &cache).await.unwrap().unwrap(), &b"small"[..]);
        let mut long = bk.clone();
        long.push(0);
        assert_eq!(t.get(&long[1..], &cache).await.unwrap(), None);
        t.close().await.unwrap();
    });
}
