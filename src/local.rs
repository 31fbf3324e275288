//! `ringkv local --nodes 3`: a cluster of real `ringkv server` processes on loopback,
//! in one command, for trying ringkv and for tests.
//!
//! Node `i` (from 1) listens on `port + (i - 1) × step` (shard `k` one port above that
//! plus `k`, the Redis protocol on the port after the last shard's) with its data in
//! `DIR/node<i>`, its output in `DIR/node<i>.log`. Node 1
//! starts alone; every later node starts with node 1 as its seed once the nodes before
//! it know each other, so each joins the whole ring. The children are unpinned (they
//! share the machine) and get SIGTERM if this process dies (`PR_SET_PDEATHSIG`); on
//! SIGINT or SIGTERM this process stops them cleanly and waits for them.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::blocking::BlockingClient;
use crate::membership::Exchange;
use crate::protocol::{Request, ResponseBody};

pub struct LocalOptions {
    pub nodes: usize,
    pub shards: usize,
    pub port: u16,
    pub data_dir: PathBuf,
    /// Extra `ringkv server` flags, given to every node.
    pub server_args: Vec<String>,
}

/// One child server.
pub struct LocalNode {
    pub port: u16,
    /// Its RESP port (`--resp-port`), for redis-cli.
    pub resp_port: u16,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Child,
}

/// A running local cluster; its nodes are killed when it is dropped.
pub struct LocalCluster {
    pub nodes: Vec<LocalNode>,
}

impl LocalOptions {
    /// Ports between two nodes' client ports: room for the shard ports and RESP's.
    pub fn step(&self) -> u16 {
        (self.shards as u16 + 2).max(10)
    }

    /// The RESP port of the node whose client port is `port`: after its shard ports.
    pub fn resp_port(&self, port: u16) -> u16 {
        port + self.shards as u16 + 1
    }
}

/// How many members the node on `port` knows (0 if it does not answer).
pub fn members_known(port: u16) -> usize {
    let Ok(mut client) = BlockingClient::connect("127.0.0.1", port, Duration::from_secs(2)) else {
        return 0;
    };
    match client.request(&Request::Members {
        table: Default::default(),
    }) {
        Ok(response) => match response.body {
            ResponseBody::Members { table } => {
                Exchange::decode(&table).map_or(0, |exchange| exchange.table.len())
            }
            _ => 0,
        },
        Err(_) => 0,
    }
}

impl LocalCluster {
    /// Starts the nodes one after the other; fails (stopping those already started)
    /// if one exits or does not join within a minute.
    pub fn start(options: &LocalOptions) -> Result<LocalCluster, String> {
        if options.nodes == 0 || options.nodes > 64 {
            return Err("--nodes must be between 1 and 64".into());
        }
        let last = u32::from(options.port) + u32::from(options.step()) * options.nodes as u32;
        if last >= u32::from(u16::MAX) {
            return Err(format!(
                "--port {} leaves no room for {} nodes",
                options.port, options.nodes
            ));
        }
        std::fs::create_dir_all(&options.data_dir)
            .map_err(|e| format!("{}: {e}", options.data_dir.display()))?;
        let exe = std::env::current_exe().map_err(|e| format!("finding the ringkv binary: {e}"))?;
        let mut cluster = LocalCluster { nodes: Vec::new() };
        for i in 0..options.nodes {
            let port = options.port + options.step() * i as u16;
            let resp_port = options.resp_port(port);
            let data_dir = options.data_dir.join(format!("node{}", i + 1));
            let log = options.data_dir.join(format!("node{}.log", i + 1));
            let mut command = Command::new(&exe);
            command
                .arg("server")
                .arg("--data-dir")
                .arg(&data_dir)
                .args([
                    "--port",
                    &port.to_string(),
                    "--shards",
                    &options.shards.to_string(),
                    "--resp-port",
                    &resp_port.to_string(),
                    "--no-pin",
                ])
                .args(&options.server_args);
            if i > 0 {
                command.args(["--seeds", &format!("127.0.0.1:{}", options.port)]);
            }
            let child = spawn_child(command, &log)?;
            cluster.nodes.push(LocalNode {
                port,
                resp_port,
                data_dir,
                log,
                child,
            });
            cluster.wait_joined()?;
        }
        Ok(cluster)
    }

    /// Waits until every node started so far answers and knows all the others.
    fn wait_joined(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let count = self.nodes.len();
        loop {
            for node in &mut self.nodes {
                if let Ok(Some(status)) = node.child.try_wait() {
                    return Err(format!(
                        "the node on port {} exited with {status}:\n{}",
                        node.port,
                        tail(&node.log)
                    ));
                }
            }
            if self.nodes.iter().all(|n| members_known(n.port) == count) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let node = self.nodes.last().expect("a node");
                return Err(format!(
                    "the node on port {} did not join within 60 s:\n{}",
                    node.port,
                    tail(&node.log)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM to every node, then waits (SIGKILL after 30 s).
    pub fn stop(&mut self) {
        for node in &self.nodes {
            unsafe { libc::kill(node.child.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &mut self.nodes {
            while Instant::now() < deadline && matches!(node.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
        self.nodes.clear();
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

fn spawn_child(mut command: Command, log: &Path) -> Result<Child, String> {
    let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: prctl is async-signal-safe; it only sets this child's death signal.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    command.spawn().map_err(|e| format!("starting a node: {e}"))
}

/// The last lines of a log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
