//! The Redis-protocol front end (`--resp-port`) with real Redis clients: redis-cli runs
//! every supported command and gets Redis's errors for unsupported ones; inline
//! commands and pipelining over a raw socket answer in order; input that is not RESP
//! gets a protocol error and a closed connection, and the node keeps serving;
//! redis-benchmark (plain and pipelined) runs without an error; redis-py works in RESP2
//! and RESP3; in a 3-node cluster a SET through one node's RESP port is read through
//! the others'; a RESP port that is one of the binary ports is refused at start.
//!
//! redis-cli, redis-benchmark and redis-py must be installed (tools/test.sh installs
//! them); a missing one fails the test rather than skipping it. Every client runs
//! under a deadline and is killed by PID if it passes it.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{free_ports, test_dir, Server};

/// Longest any one client run may take; far past what it needs on a loaded machine.
const CLIENT_DEADLINE: Duration = Duration::from_secs(300);

/// A node with a RESP port, and that port.
struct Node {
    server: Server,
    resp_port: u16,
}

/// Starts a node of `shards` shards whose RESP port follows its shard ports (all
/// reserved together).
fn start_node(data: &Path, shards: usize, extra: &[&str]) -> Node {
    let mut last = String::new();
    for _ in 0..5 {
        let port = free_ports(shards as u16 + 2);
        let resp_port = port + shards as u16 + 1;
        let resp = resp_port.to_string();
        let mut args = vec!["--resp-port", &resp];
        args.extend_from_slice(extra);
        match Server::start_on(data, port, shards, &args) {
            Ok(server) => return Node { server, resp_port },
            Err(e) => last = e,
        }
    }
    panic!("the node did not start: {last}");
}

/// Runs `command` to its end, killing it (by PID) if it passes [`CLIENT_DEADLINE`].
fn run(mut command: Command) -> Output {
    let program = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{program}: {e} (tools/test.sh installs redis-tools and redis-py)")
        });
    // Drain the pipes while waiting, so a chatty client never blocks on a full pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + CLIENT_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} ran past {CLIENT_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// What redis-cli prints for one command (without a terminal: raw values, one a line).
fn redis_cli(port: u16, args: &[&str]) -> String {
    let mut command = Command::new("redis-cli");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    let output = run(command);
    String::from_utf8_lossy(&output.stdout)
        .trim_end()
        .to_string()
}

/// Sends `input` on a fresh connection and reads until the server closes it.
fn raw_exchange(port: u16, input: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream.write_all(input).unwrap();
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .unwrap_or_else(|e| panic!("no close after {input:?}: {e}; got {reply:?}"));
    reply
}

#[test]
fn redis_cli_runs_every_supported_command() {
    let dir = test_dir("resp-cli");
    let node = start_node(&dir.join("data"), 2, &[]);
    let cli = |args: &[&str]| redis_cli(node.resp_port, args);
    assert_eq!(cli(&["PING"]), "PONG");
    assert_eq!(cli(&["PING", "hello"]), "hello");
    assert_eq!(cli(&["ECHO", "a b"]), "a b");
    assert_eq!(cli(&["GET", "greeting"]), "");
    assert_eq!(cli(&["SET", "greeting", "hello"]), "OK");
    assert_eq!(cli(&["GET", "greeting"]), "hello");
    assert_eq!(cli(&["SET", "greeting", "again"]), "OK");
    assert_eq!(cli(&["GET", "greeting"]), "again");
    assert_eq!(cli(&["MSET", "a", "1", "b", "2", "a", "3"]), "OK");
    assert_eq!(cli(&["MGET", "a", "nothing", "b"]), "3\n\n2");
    assert_eq!(cli(&["EXISTS", "a", "b", "nothing", "a"]), "3");
    assert_eq!(cli(&["DEL", "a", "nothing", "a"]), "1");
    assert_eq!(cli(&["EXISTS", "a"]), "0");
    assert_eq!(cli(&["GET", "a"]), "");
    assert_eq!(cli(&["GET", "b"]), "2");
    let info = cli(&["INFO"]);
    for field in [
        "# Server",
        "redis_version:7.0.0",
        "ringkv_version:",
        "role:master",
    ] {
        assert!(info.contains(field), "{field} in {info}");
    }
    assert_eq!(cli(&["CONFIG", "GET", "save"]), "save");
    assert_eq!(cli(&["SELECT", "0"]), "OK");
    assert_eq!(cli(&["COMMAND", "COUNT"]), "19");
    // What ringkv does not do is refused by name, and nothing is written.
    assert_eq!(
        cli(&["SET", "greeting", "x", "EX", "10"]),
        "ERR ringkv does not support SET option EX"
    );
    assert_eq!(
        cli(&["SET", "greeting", "x", "nx"]),
        "ERR ringkv does not support SET option NX"
    );
    assert_eq!(cli(&["GET", "greeting"]), "again");
    assert!(cli(&["FLUSHALL"]).starts_with("ERR unknown command 'FLUSHALL'"));
    assert!(cli(&["SELECT", "1"]).starts_with("ERR DB index is out of range"));
    assert!(cli(&["GET"]).starts_with("ERR wrong number of arguments for 'get' command"));
    // What the store writes through RESP, the binary protocol reads, and back.
    let mut client = node.server.client();
    let got = client.get(b"greeting").unwrap();
    assert_eq!(got.values.len(), 1, "SET overwrote: no siblings");
    assert_eq!(got.values[0].value.as_ref(), b"again");
    client.put(b"from-binary", b"yes", &[]).unwrap();
    assert_eq!(cli(&["GET", "from-binary"]), "yes");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inline_and_pipelined_commands_answer_in_order_and_bad_input_closes() {
    let dir = test_dir("resp-raw");
    let node = start_node(&dir.join("data"), 2, &[]);
    let port = node.resp_port;
    // Inline lines as telnet sends them, a multibulk between them, QUIT at the end:
    // one write, every reply in order, then the close.
    let reply = raw_exchange(
        port,
        b"PING\r\nSET inline \"a b\"\r\n\r\nGET inline\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n\
          SET inline next\nGET inline\nQUIT\r\n",
    );
    assert_eq!(
        String::from_utf8_lossy(&reply),
        "+PONG\r\n+OK\r\n$3\r\na b\r\n$2\r\nhi\r\n+OK\r\n$4\r\nnext\r\n+OK\r\n"
    );
    // A hundred pipelined SET/GET pairs of one key: each GET sees the SET before it.
    let mut input = Vec::new();
    for i in 0..100 {
        input.extend_from_slice(format!("SET k {i}\r\nGET k\r\n").as_bytes());
    }
    input.extend_from_slice(b"QUIT\r\n");
    let reply = String::from_utf8(raw_exchange(port, &input)).unwrap();
    let expected: String = (0..100)
        .map(|i| format!("+OK\r\n${}\r\n{i}\r\n", i.to_string().len()))
        .collect::<String>()
        + "+OK\r\n";
    assert_eq!(reply, expected);
    // Lengths over the limits are refused from the length line: no body is awaited.
    for (input, error) in [
        (
            &b"*1\r\n$99999999999\r\n"[..],
            "-ERR Protocol error: invalid bulk length",
        ),
        (
            b"*99999999\r\n",
            "-ERR Protocol error: invalid multibulk length",
        ),
        (
            b"*1\r\n+PING\r\n",
            "-ERR Protocol error: expected '$', got '+'",
        ),
        (
            b"SET \"unbalanced\r\n",
            "-ERR Protocol error: unbalanced quotes",
        ),
    ] {
        let reply = String::from_utf8_lossy(&raw_exchange(port, input)).into_owned();
        assert!(reply.starts_with(error), "{input:?}: {reply}");
        assert!(
            reply.ends_with("\r\n") && reply.lines().count() == 1,
            "{reply}"
        );
    }
    // An inline line that never ends is cut off at 64 KiB.
    // Exactly one byte over: the node has read everything when it closes (no reset).
    let reply = raw_exchange(port, &vec![b'a'; (64 << 10) + 1]);
    assert!(
        reply.starts_with(b"-ERR Protocol error: too big inline request"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // A key over the key limit is an error reply; the connection goes on.
    let long_key = "k".repeat(2000);
    let reply = raw_exchange(
        port,
        format!("SET {long_key} v\r\nPING\r\nQUIT\r\n").as_bytes(),
    );
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with("-ERR key is 2000 bytes, limit 1024\r\n+PONG\r\n"),
        "{reply}"
    );
    assert_eq!(redis_cli(port, &["PING"]), "PONG");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn redis_benchmark_runs_without_errors_plain_and_pipelined() {
    let dir = test_dir("resp-benchmark");
    let node = start_node(&dir.join("data"), 2, &[]);
    for pipeline in ["1", "16"] {
        let mut command = Command::new("redis-benchmark");
        command.args(["-h", "127.0.0.1", "-p", &node.resp_port.to_string()]);
        command.args([
            "-t",
            "set,get,mset,ping",
            "-n",
            "2000",
            "-q",
            "-P",
            pipeline,
        ]);
        let output = run(command);
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "-P {pipeline}: {text}");
        assert!(
            !text.to_lowercase().contains("error"),
            "-P {pipeline}: {text}"
        );
        for test in [
            "PING_INLINE: ",
            "PING_MBULK: ",
            "SET: ",
            "GET: ",
            "MSET (10 keys): ",
        ] {
            let done = text.split(['\r', '\n']).any(|line| {
                line.trim_start().starts_with(test) && line.contains("requests per second")
            });
            assert!(done, "-P {pipeline}: no {test:?} result in {text}");
        }
    }
    assert_eq!(redis_cli(node.resp_port, &["PING"]), "PONG");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs tests/resp_clients.py (redis-py) against `ports`.
fn redis_py(ports: &[u16]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resp_clients.py");
    let mut command = Command::new("python3");
    command
        .arg(script)
        .args(ports.iter().map(|p| p.to_string()));
    let output = run(command);
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "redis-py: {text}");
    assert!(text.contains("resp_clients: ok"), "{text}");
}

#[test]
fn redis_py_works_in_resp2_and_resp3() {
    let dir = test_dir("resp-py");
    let node = start_node(&dir.join("data"), 2, &[]);
    redis_py(&[node.resp_port]);
    // Under last-write-wins SET writes blind; what a client sees is the same.
    let lww = start_node(&dir.join("lww"), 1, &["--conflicts", "lww"]);
    redis_py(&[lww.resp_port]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_set_through_one_node_is_read_through_the_others() {
    let dir = test_dir("resp-cluster");
    let fast_membership = [
        "--membership-interval-ms",
        "100",
        "--replica-timeout-ms",
        "3000",
    ];
    let mut nodes: Vec<Node> = vec![start_node(&dir.join("node0"), 2, &fast_membership)];
    let seeds = format!("127.0.0.1:{}", nodes[0].server.port);
    for i in 1..3 {
        let mut args = fast_membership.to_vec();
        args.extend(["--seeds", &seeds]);
        nodes.push(start_node(&dir.join(format!("node{i}")), 2, &args));
        let deadline = Instant::now() + Duration::from_secs(60);
        while !nodes
            .iter()
            .all(|n| ringkv::local::members_known(n.server.port) == nodes.len())
        {
            assert!(Instant::now() < deadline, "the nodes did not meet");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    for i in 0..20 {
        let key = format!("key{i}");
        let writer = nodes[i % 3].resp_port;
        assert_eq!(redis_cli(writer, &["SET", &key, &format!("v{i}")]), "OK");
    }
    for node in &nodes {
        for i in 0..20 {
            assert_eq!(
                redis_cli(node.resp_port, &["GET", &format!("key{i}")]),
                format!("v{i}")
            );
        }
    }
    assert_eq!(redis_cli(nodes[1].resp_port, &["DEL", "key0", "key1"]), "2");
    assert_eq!(
        redis_cli(nodes[2].resp_port, &["EXISTS", "key0", "key1", "key2"]),
        "1"
    );
    redis_py(&[nodes[0].resp_port, nodes[2].resp_port]);
    drop(nodes);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_resp_port_that_is_the_client_or_a_shard_port_is_refused() {
    let dir = test_dir("resp-port-clash");
    for clash in ["27700", "27702"] {
        let output = Command::new(common::BIN)
            .args([
                "server",
                "--port",
                "27700",
                "--shards",
                "2",
                "--resp-port",
                clash,
            ])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("--resp-port {clash} must be a port of its own")),
            "{stderr}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
