//! Helpers for tests that run the real `ringkv` binary: reserved loopback ports, data
//! dirs on the real disk, and processes that are always killed (by PID) when the test
//! ends, however it ends.

#![allow(dead_code)]

pub mod cluster;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ringkv::client::blocking::BlockingClient;

pub const BIN: &str = env!("CARGO_BIN_EXE_ringkv");

/// A fresh directory under the target dir (a real disk: O_DIRECT works there).
pub fn test_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "{name}-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A base port such that `base..base + count` are all free right now and handed to no
/// other test of this process (tests run in parallel threads; two that chose
/// overlapping ports would both pass the free check before either server binds).
pub fn free_ports(count: u16) -> u16 {
    static HANDED_OUT: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    for _ in 0..200 {
        // Below the kernel's ephemeral range (32768+), so no client socket takes them.
        let base = 20_000 + rand::random::<u16>() % 12_000;
        let ports = base..base + count;
        let mut handed_out = HANDED_OUT.lock().unwrap();
        if ports.clone().any(|port| handed_out.contains(&port)) {
            continue;
        }
        if ports
            .clone()
            .all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok())
        {
            handed_out.extend(ports);
            return base;
        }
    }
    panic!("no {count} consecutive free ports found");
}

/// A `ringkv server` child process; killed with SIGKILL when dropped.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    pub shards: usize,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub args: Vec<String>,
}

impl Server {
    /// Starts a server on fresh ports and waits until it answers PING.
    pub fn start(data_dir: &Path, shards: usize, extra: &[&str]) -> Server {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_ports(shards as u16 + 1);
            match Server::start_on(data_dir, port, shards, extra) {
                Ok(server) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("server did not start: {last_error}");
    }

    /// Starts a server on `port` and waits until it answers PING, or returns why not.
    pub fn start_on(
        data_dir: &Path,
        port: u16,
        shards: usize,
        extra: &[&str],
    ) -> Result<Server, String> {
        let log = data_dir.with_extension(format!("{port}.log"));
        let mut args: Vec<String> = vec![
            "server".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--port".into(),
            port.to_string(),
            "--shards".into(),
            shards.to_string(),
            "--no-pin".into(),
            "--io-memory".into(),
            (512 << 10).to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut server = Server {
            child: None,
            port,
            shards,
            data_dir: data_dir.to_path_buf(),
            log,
            args,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::File::create(&self.log).unwrap();
        let child = Command::new(BIN)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {BIN}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                return Err(format!("exited with {status}: {}", self.output()));
            }
            if let Ok(mut client) =
                BlockingClient::connect("127.0.0.1", self.port, Duration::from_secs(5))
            {
                if client.ping().is_ok() {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.kill9();
        Err(format!("not answering after 60 s: {}", self.output()))
    }

    /// What the server printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    pub fn client(&self) -> BlockingClient {
        BlockingClient::connect("127.0.0.1", self.port, Duration::from_secs(30)).unwrap()
    }

    /// A client of one shard's own port.
    pub fn shard_client(&self, shard: usize) -> BlockingClient {
        BlockingClient::connect(
            "127.0.0.1",
            self.port + 1 + shard as u16,
            Duration::from_secs(30),
        )
        .unwrap()
    }

    /// SIGKILL, and reap.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (clean shutdown), and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the same server (same data dir, ports and flags) again.
    pub fn restart(&mut self) {
        self.kill9();
        let mut last = String::new();
        // The kernel may take a moment to release the ports of the killed process.
        for _ in 0..20 {
            match self.spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        panic!("restart failed: {last}");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}
