//! kill -9 a real server under `--sync batch` writes; every acknowledged write must read
//! back after the restart.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{test_dir, Server};
use ringkv::client::blocking::BlockingClient;

#[test]
fn every_acknowledged_write_survives_kill_9() {
    let dir = test_dir("crash");
    let mut server = Server::start(&dir.join("data"), 2, &["--sync", "batch"]);
    let acknowledged: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    for round in 0..3 {
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
                        let value = format!("value-{round}-{w}-{i}");
                        match client.put(key.as_bytes(), value.as_bytes(), &[]) {
                            Ok(_) => acknowledged.lock().unwrap().push((key, value)),
                            Err(_) => return, // the server is gone: not acknowledged
                        }
                    }
                })
            })
            .collect();
        // Let writes pile up, then kill the server in the middle of them.
        std::thread::sleep(Duration::from_millis(700 + 300 * round));
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
            "round {round}: {} acknowledged writes read back",
            acknowledged.len()
        );
    }
    server.stop();
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
