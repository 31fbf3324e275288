//! A data set ten times larger than the memtables and block caches together reads back
//! whole, and the server's memory stays bounded: its RSS is measured and printed.

mod common;

use std::time::{Duration, Instant};

use common::{test_dir, Server};
use ringkv::client::blocking::BlockingClient;

const SHARDS: usize = 2;
const MEMTABLE_BYTES: u64 = 1 << 20;
const CACHE_BYTES: u64 = 1 << 20;
const VALUE_BYTES: usize = 1000;
const WRITERS: u64 = 4;

/// Resident memory of a process, from /proc (bytes).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

fn value(i: u64) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(VALUE_BYTES, b'a' + (i % 26) as u8);
    v
}

/// Runs `f(client, i)` for every i in `0..keys`, split over WRITERS threads.
fn parallel(port: u16, keys: u64, f: fn(&mut BlockingClient, u64)) {
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            std::thread::spawn(move || {
                let mut client =
                    BlockingClient::connect("127.0.0.1", port, Duration::from_secs(30)).unwrap();
                for i in (w..keys).step_by(WRITERS as usize) {
                    f(&mut client, i);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn ten_times_memory_reads_back_with_bounded_rss() {
    let dir = test_dir("large");
    let mut server = Server::start(
        &dir.join("data"),
        SHARDS,
        &[
            "--sync",
            "periodic",
            "--memtable-bytes",
            &MEMTABLE_BYTES.to_string(),
            "--cache-bytes",
            &CACHE_BYTES.to_string(),
        ],
    );
    let pid = server.pid().unwrap();
    // Per shard: an active and a sealed memtable, and the cache.
    let in_memory = SHARDS as u64 * (2 * MEMTABLE_BYTES + CACHE_BYTES);
    let keys = 10 * in_memory / VALUE_BYTES as u64 + 1;
    let data_bytes = keys * VALUE_BYTES as u64;
    let rss_start = rss_bytes(pid);

    let started = Instant::now();
    parallel(server.port, keys, |client, i| {
        client
            .put(format!("key-{i:08}").as_bytes(), &value(i), &[])
            .unwrap();
    });
    let rss_written = rss_bytes(pid);
    let write_secs = started.elapsed().as_secs_f64();

    let started = Instant::now();
    parallel(server.port, keys, |client, i| {
        let key = format!("key-{i:08}");
        let got = client.get(key.as_bytes()).unwrap();
        assert_eq!(got.values.len(), 1, "{key}");
        assert!(got.values[0].value.as_ref() == value(i).as_slice(), "{key}");
    });
    let rss_read = rss_bytes(pid);
    let read_secs = started.elapsed().as_secs_f64();

    let tables = std::fs::read_dir(dir.join("data/shard-000"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("sst".as_ref()))
        .count();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "large data set: {keys} keys, {:.1} MiB of values, {:.1} MiB memtables + caches; \
         written in {write_secs:.1} s, read back in {read_secs:.1} s; shard 0 has {tables} \
         tables; RSS {:.1} MiB at start, {:.1} MiB after writing, {:.1} MiB after reading",
        mib(data_bytes),
        mib(in_memory),
        mib(rss_start),
        mib(rss_written),
        mib(rss_read)
    );
    assert!(tables >= 1, "nothing was flushed");
    // The data set did not end up in memory: growth stays well below its size (the
    // rest is filters, indexes, connection buffers and allocator slack).
    let growth = rss_written.max(rss_read).saturating_sub(rss_start);
    assert!(
        growth < data_bytes / 3,
        "RSS grew by {:.1} MiB for a {:.1} MiB data set",
        mib(growth),
        mib(data_bytes)
    );
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
