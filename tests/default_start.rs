//! The README's start command: `ringkv server` with no configuration keeps its data
//! under the current directory and serves.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_ports, test_dir, BIN};
use ringkv::client::blocking::BlockingClient;

#[test]
fn a_server_with_no_configuration_serves_from_the_current_directory() {
    let dir = test_dir("default-start");
    // Only the port is chosen (so tests can run side by side) and pinning is off (so it
    // fits a loaded 2-core machine); everything else is the embedded default.
    let port = free_ports(1 + std::thread::available_parallelism().unwrap().get() as u16);
    let mut child = Command::new(BIN)
        .args(["server", "--port", &port.to_string(), "--no-pin"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut client = loop {
        assert!(child.try_wait().unwrap().is_none(), "server exited");
        assert!(Instant::now() < deadline, "server never answered");
        if let Ok(mut c) = BlockingClient::connect("127.0.0.1", port, Duration::from_secs(5)) {
            if c.ping().is_ok() {
                break c;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    client.put(b"greeting", b"hello", &[]).unwrap();
    assert_eq!(
        client.get(b"greeting").unwrap().values[0].value.as_ref(),
        b"hello"
    );
    assert!(dir.join("ringkv-data/node.meta").is_file());
    assert!(dir.join("ringkv-data/shard-000/commitlog").is_dir());
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
