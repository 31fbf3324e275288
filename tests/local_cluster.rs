//! `ringkv local --nodes 3` starts a working cluster in one command; `ringkv status`
//! lists its nodes Up with their ownership; SIGINT stops every node it started.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_ports, test_dir, BIN};

#[test]
fn local_starts_a_cluster_that_status_describes_and_sigint_stops() {
    let dir = test_dir("local");
    let port = free_ports(23);
    let mut child = Command::new(BIN)
        .args([
            "local",
            "--nodes",
            "3",
            "--port",
            &port.to_string(),
            "--data-dir",
        ])
        .arg(&dir)
        .args(["--", "--membership-interval-ms", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            unsafe { libc::kill(self.0 as i32, libc::SIGKILL) };
        }
    }
    let _guard = KillOnDrop(pid);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = String::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    for line in lines.by_ref() {
        let line = line.unwrap();
        printed.push_str(&line);
        printed.push('\n');
        if line.contains("Ctrl-C") || Instant::now() > deadline {
            break;
        }
    }
    assert!(
        printed.contains(&format!("127.0.0.1:{}", port + 20)),
        "{printed}"
    );

    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (p1, p3) = (port.to_string(), (port + 20).to_string());
    run(&[
        "put",
        "--port",
        &p1,
        "--consistency",
        "all",
        "greeting",
        "hello",
    ]);
    assert!(run(&["get", "--port", &p3, "--consistency", "all", "greeting"]).starts_with("hello"));
    let status = run(&["status", "--port", &p3]);
    let rows: Vec<&str> = status.lines().skip(2).collect();
    assert_eq!(rows.len(), 3, "{status}");
    assert!(rows.iter().all(|r| r.contains(" Up ")), "{status}");
    // Three nodes, N = 3: every node holds every key.
    assert!(rows.iter().all(|r| r.contains(" 100.0% ")), "{status}");

    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "ringkv local did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every node is gone: nothing answers on their ports.
    for p in [port, port + 10, port + 20] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", p)).is_err(),
            "port {p} still served"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
