//! Micro-benchmarks of the hot-path codecs and data structures: frame encode/decode,
//! version-set coordinate/sync/encode/decode, the memtable, SSTable blocks and the
//! bloom filter. Run with `cargo bench`.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};

use ringkv::protocol::{
    decode_request, encode_get_response, encode_request, Consistency, FrameHeader, Limits, Request,
    Status, HEADER_LEN,
};
use ringkv::storage::Memtable;
use ringkv::version::{Context, VersionSet, Versioned};

fn put_request() -> Request {
    Request::Put {
        key: Bytes::from_static(b"key-0000012345"),
        value: Bytes::from(vec![b'v'; 100]),
        context: Bytes::new(),
        consistency: Consistency::Default,
        quorum: ringkv::protocol::QuorumMode::Sloppy,
    }
}

fn protocol(c: &mut Criterion) {
    let mut group = c.benchmark_group("protocol");
    group.throughput(Throughput::Elements(1));
    let request = put_request();
    let mut buf = Vec::with_capacity(256);
    group.bench_function("encode PUT 100 B", |b| {
        b.iter(|| {
            buf.clear();
            encode_request(black_box(&request), 7, &mut buf);
        })
    });
    let mut frame = Vec::new();
    encode_request(&request, 7, &mut frame);
    let frame = Bytes::from(frame);
    let limits = Limits::default();
    group.bench_function("decode PUT 100 B", |b| {
        b.iter(|| {
            let header = FrameHeader::decode(frame[..HEADER_LEN].try_into().unwrap()).unwrap();
            decode_request(&header, frame.slice(HEADER_LEN..), &limits).unwrap()
        })
    });
    let value = vec![b'v'; 100];
    group.bench_function("encode GET response 100 B", |b| {
        b.iter(|| {
            buf.clear();
            let values = std::iter::once((1u64, value.as_slice()));
            encode_get_response(
                7,
                Status::Ok,
                &[1, 1, 0, 7, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0],
                values,
                &mut buf,
            );
        })
    });
    group.finish();
}

fn versions(c: &mut Criterion) {
    let mut group = c.benchmark_group("version");
    let value = Bytes::from(vec![b'v'; 100]);
    let mut stored = VersionSet::empty();
    for i in 0..3u64 {
        stored = VersionSet::coordinate(
            &stored,
            &stored.context(),
            Versioned {
                timestamp_us: i,
                value: Some(value.clone()),
            },
            100 + i,
            0,
        );
    }
    let context = stored.context();
    group.bench_function("coordinate with context", |b| {
        b.iter(|| {
            VersionSet::coordinate(
                black_box(&stored),
                &context,
                Versioned {
                    timestamp_us: 9,
                    value: Some(value.clone()),
                },
                101,
                0,
            )
        })
    });
    let other = VersionSet::coordinate(
        &stored,
        &Context::empty(),
        Versioned {
            timestamp_us: 9,
            value: Some(value.clone()),
        },
        200,
        0,
    );
    group.bench_function("sync concurrent", |b| {
        b.iter(|| black_box(&stored).sync(&other))
    });
    let mut encoded = Vec::new();
    other.encode_into(&mut encoded);
    let encoded = Bytes::from(encoded);
    group.bench_function("encode", |b| {
        let mut buf = Vec::with_capacity(512);
        b.iter(|| {
            buf.clear();
            other.encode_into(&mut buf);
        })
    });
    group.bench_function("decode", |b| {
        b.iter(|| VersionSet::decode(black_box(&encoded)).unwrap())
    });
    group.finish();
}

fn memtable(c: &mut Criterion) {
    let mut group = c.benchmark_group("memtable");
    let value = Bytes::from(vec![b'v'; 100]);
    let mut table = Memtable::default();
    let keys: Vec<Bytes> = (0..100_000u32)
        .map(|i| Bytes::from(format!("key-{i:010}")))
        .collect();
    for (i, key) in keys.iter().enumerate() {
        let v = VersionSet::coordinate(
            &VersionSet::empty(),
            &Context::empty(),
            Versioned {
                timestamp_us: i as u64,
                value: Some(value.clone()),
            },
            1,
            0,
        );
        table.merge(key.clone(), v);
    }
    let mut i = 0usize;
    group.bench_function("get hit (100k keys)", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            black_box(table.get(&keys[i]).is_some())
        })
    });
    group.bench_function("merge overwrite (100k keys)", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            let stored = table.get(&keys[i]).unwrap();
            let next = VersionSet::coordinate(
                stored,
                &stored.context(),
                Versioned {
                    timestamp_us: 1,
                    value: Some(value.clone()),
                },
                1,
                0,
            );
            table.merge(keys[i].clone(), next);
        })
    });
    group.finish();
}

/// A ~4 KiB data block of 100-byte values, as the SSTable writer makes them.
fn block_payload() -> Vec<u8> {
    use ringkv::storage::sstable::block::encode_entry;
    let mut payload = Vec::new();
    let value = vec![b'v'; 100];
    let mut i = 0u32;
    while payload.len() < 4000 {
        encode_entry(&mut payload, format!("key-{i:010}").as_bytes(), &value);
        i += 1;
    }
    payload
}

fn sstable_blocks(c: &mut Criterion) {
    use ringkv::storage::sstable::block::{decode_block, encode_block, find_in_block};
    use ringkv::storage::sstable::Compression;
    let mut group = c.benchmark_group("sstable block 4 KiB");
    let payload = block_payload();
    group.throughput(Throughput::Bytes(payload.len() as u64));
    for (name, compression) in [("none", Compression::None), ("lz4", Compression::Lz4)] {
        let mut frame = Vec::with_capacity(8192);
        group.bench_function(format!("encode {name}"), |b| {
            b.iter(|| {
                frame.clear();
                encode_block(&mut frame, black_box(&payload), compression)
            })
        });
        group.bench_function(format!("decode {name}"), |b| {
            b.iter(|| decode_block(black_box(&frame)).unwrap())
        });
    }
    let decoded = Bytes::from(payload.clone());
    group.bench_function("find last key", |b| {
        b.iter(|| find_in_block(black_box(&decoded), b"key-0000000033").unwrap())
    });
    group.finish();
}

fn checksums(c: &mut Criterion) {
    let mut group = c.benchmark_group("crc32c");
    for len in [128usize, 4096] {
        let data = vec![0x5Au8; len];
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("{len} B"), |b| {
            b.iter(|| crc32c::crc32c(black_box(&data)))
        });
    }
    group.finish();
}

fn bloom_filter(c: &mut Criterion) {
    use ringkv::storage::sstable::bloom::{Bloom, BloomBuilder};
    let mut group = c.benchmark_group("bloom 10 bits/key, 100k keys");
    let keys: Vec<Vec<u8>> = (0..100_000u32)
        .map(|i| format!("key-{i:010}").into_bytes())
        .collect();
    group.bench_function("build", |b| {
        b.iter(|| {
            let mut builder = BloomBuilder::new(10);
            for key in &keys {
                builder.add_key(key);
            }
            builder.finish()
        })
    });
    let mut builder = BloomBuilder::new(10);
    for key in &keys {
        builder.add_key(key);
    }
    let bloom = Bloom::decode(Bytes::from(builder.finish())).unwrap();
    let mut i = 0usize;
    group.throughput(Throughput::Elements(1));
    group.bench_function("query present", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            bloom.may_contain(black_box(&keys[i]))
        })
    });
    group.bench_function("query absent", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            bloom.may_contain(black_box(format!("absent-{i}").as_bytes()))
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    protocol,
    versions,
    memtable,
    sstable_blocks,
    bloom_filter,
    checksums
);
criterion_main!(benches);
