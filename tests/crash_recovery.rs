//! kill -9 a real server under `--sync batch` writes, also while memtables flush and
//! tables compact; every acknowledged write must read back after the restart. In both
//! conflict modes.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{test_dir, Server};
use ringkv::client::blocking::BlockingClient;

#[test]
fn every_acknowledged_write_survives_kill_9() {
    kill9_rounds("crash", &["--sync", "batch"], 3, 0);
}

/// 64 KiB memtables: a flush every few hundred writes and a compaction every four
/// flushes, so the kills land in flushes, compactions and segment recycling.
#[test]
fn every_acknowledged_write_survives_kill_9_during_flushes_and_compactions() {
    kill9_rounds(
        "crash-lsm",
        &["--sync", "batch", "--memtable-bytes", "65536"],
        8,
        200,
    );
}

/// The same under `--conflicts lww`: blind writes, the shard's clock restarting above
/// everything stored after each kill.
#[test]
fn every_acknowledged_lww_write_survives_kill_9_during_flushes_and_compactions() {
    kill9_rounds(
        "crash-lww",
        &[
            "--sync",
            "batch",
            "--memtable-bytes",
            "65536",
            "--conflicts",
            "lww",
        ],
        4,
        200,
    );
}

/// Runs `rounds` of: writers put unique keys (values padded to `pad` bytes) through
/// both ports, the server is killed at a random moment, restarted, and every
/// acknowledged write so far is read back. Returns after cleaning up.
/// With `pad > 0` it also checks that the shards made tables and compacted them.
fn kill9_rounds(name: &str, flags: &[&str], rounds: u64, pad: usize) {
    let dir = test_dir(name);
    let mut server = Server::start(&dir.join("data"), 2, flags);
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let seed: u64 = rand::random();
    eprintln!("{name}: kill delays from seed {seed}");
    for round in 0..rounds {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..6)
            .map(|w| {
                let (stop, acknowledged, port) = (stop.clone(), acknowledged.clone(), server.port);
                std::thread::spawn(move || {
                    // Half the writers use a shard port, so forwarding is exercised too.
                    let port = if w % 2 == 0 { port } else { port + 1 };
                    let Ok(mut client) =
                        BlockingClient::connect("127.0.0.1", port, Duration::from_secs(10))
                    else {
                        return;
                    };
                    for i in 0.. {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let key = format!("r{round}-w{w}-{i}");
                        let value = format!("value-{round}-{w}-{i}-{}", "x".repeat(pad));
                        match client.put(key.as_bytes(), value.as_bytes(), &[]) {
                            Ok(_) => acknowledged.lock().unwrap().push((key, value)),
                            Err(_) => return, // the server is gone: not acknowledged
                        }
                    }
                })
            })
            .collect();
        // Let writes pile up, then kill the server in the middle of them.
        let jitter = seed
            .wrapping_mul(round + 1)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            >> 54;
        std::thread::sleep(Duration::from_millis(700 + jitter));
        server.kill9();
        stop.store(true, Ordering::Relaxed);
        for writer in writers {
            writer.join().unwrap();
        }
        server.restart();
        let acknowledged = acknowledged.lock().unwrap().clone();
        assert!(
            acknowledged.len() > 50,
            "too few writes to prove anything: {}",
            acknowledged.len()
        );
        let mut client = server.client();
        for (key, value) in &acknowledged {
            let result = client.get(key.as_bytes()).unwrap();
            let values: Vec<&[u8]> = result.values.iter().map(|v| v.value.as_ref()).collect();
            assert_eq!(
                values,
                vec![value.as_bytes()],
                "key {key} after kill -9 round {round}"
            );
        }
        eprintln!(
            "{name} round {round}: {} acknowledged writes read back",
            acknowledged.len()
        );
    }
    server.stop();
    if pad > 0 {
        for shard in 0..2 {
            let shard_dir = dir.join(format!("data/shard-{shard:03}"));
            let tables = std::fs::read_dir(&shard_dir)
                .unwrap()
                .filter(|e| e.as_ref().unwrap().path().extension() == Some("sst".as_ref()))
                .count();
            // Dozens of flushes happened; size-tiered compaction keeps a handful.
            assert!(
                (1..=8).contains(&tables),
                "{}: {tables} tables",
                shard_dir.display()
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn clean_shutdown_in_periodic_mode_keeps_every_write() {
    let dir = test_dir("periodic");
    let mut server = Server::start(
        &dir.join("data"),
        2,
        &["--sync", "periodic", "--sync-period-ms", "1000"],
    );
    let mut client = server.client();
    for i in 0..500 {
        client
            .put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes(), &[])
            .unwrap();
    }
    drop(client);
    // SIGTERM: the shards make their logs durable before they exit.
    server.stop();
    server.restart();
    let mut client = server.client();
    for i in 0..500 {
        let result = client.get(format!("k{i}").as_bytes()).unwrap();
        assert_eq!(result.values.len(), 1, "k{i}");
        assert_eq!(result.values[0].value.as_ref(), format!("v{i}").as_bytes());
    }
    let _ = std::fs::remove_dir_all(&dir);
}
