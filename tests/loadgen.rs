//! `ringkv bench` as a load generator: every YCSB workload against a real node and
//! against a real Redis, closed and open loop; a 100 ms SIGSTOP of the server that the
//! open loop records (every request scheduled during the stall waits) and the closed
//! loop hides (only the requests in flight wait); and the --hgrm, --json and --plot
//! files. The machine is small and loaded: the tests assert behaviour, not speed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_ports, test_dir, Server, BIN};
use serde_json::Value;

const WORKLOADS: [&str; 6] = ["a", "b", "c", "d", "f", "write-only"];

/// Runs `ringkv bench ARGS --json FILE`; the JSON, or a panic with the output.
fn bench(dir: &Path, name: &str, args: &[&str]) -> Value {
    let json = dir.join(format!("{name}.json"));
    let out = Command::new(BIN)
        .arg("bench")
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: {printed}");
    assert!(printed.contains("(0 errors, "), "{name}: {printed}");
    let text = std::fs::read_to_string(&json).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: bad JSON ({e}): {text}"))
}

/// The one run of a non-sweep bench, checked for errors.
fn only_run(report: &Value) -> &Value {
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{report}");
    assert_eq!(runs[0]["errors"], 0, "{report}");
    &runs[0]
}

/// The operations a workload must have run.
fn expected_ops(workload: &str) -> &'static [&'static str] {
    match workload {
        "a" | "b" => &["read", "update"],
        "c" => &["read"],
        "d" => &["read", "insert"],
        "f" => &["read", "rmw"],
        _ => &["update"],
    }
}

fn check_workload(report: &Value, workload: &str, ops: u64) {
    let run = only_run(report);
    assert_eq!(run["ops"], ops, "{workload}: {report}");
    for op in expected_ops(workload) {
        let count = run["operations"][op]["count"].as_u64();
        assert!(
            count.is_some_and(|c| c > 0),
            "{workload} ran no {op}: {report}"
        );
    }
}

#[test]
fn every_workload_runs_against_one_node_closed_and_open_loop() {
    let dir = test_dir("loadgen-node");
    let server = Server::start(&dir.join("data"), 2, &["--sync", "none"]);
    let port = server.port.to_string();
    let common = ["--port", &port, "--records", "300", "--connections", "3"];
    for workload in WORKLOADS {
        let report = bench(
            &dir,
            workload,
            &[
                &common[..],
                &["--workload", workload, "--prefill", "--ops", "600"],
            ]
            .concat(),
        );
        check_workload(&report, workload, 600);
        // Prefilled: every read finds its record (D reads only acknowledged inserts).
        assert_eq!(only_run(&report)["not_found"], 0, "{workload}: {report}");
    }
    // Open loop, with a warm-up, pipelined, a chosen distribution.
    let report = bench(
        &dir,
        "open",
        &[
            &common[..],
            &["--rate", "1000", "--duration", "1", "--warmup", "0.3"],
            &[
                "--pipeline",
                "2",
                "--distribution",
                "uniform",
                "--workload",
                "b",
            ],
        ]
        .concat(),
    );
    let run = only_run(&report);
    assert_eq!(run["offered_ops_per_sec"], 1000.0);
    assert_eq!(report["setup"]["load"], "open");
    // About a second's worth at 1000/s, whatever the machine does (no more, no less).
    let ops = run["ops"].as_u64().unwrap();
    assert!((900..=1100).contains(&ops), "{report}");
    assert_eq!(run["unsent"], 0, "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `redis-server` child on a free port, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    fn start() -> Redis {
        let port = free_ports(1);
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (tools/test.sh installs it)");
        let redis = Redis { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while redis.command("PING") != "+PONG\r\n" {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer PING"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    /// One inline command; the raw reply ("" if it could not connect).
    fn command(&self, command: &str) -> String {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_workload_runs_against_redis() {
    let dir = test_dir("loadgen-redis");
    let redis = Redis::start();
    let target = format!("redis://127.0.0.1:{}", redis.port);
    for workload in WORKLOADS {
        let report = bench(
            &dir,
            workload,
            &[
                "--target",
                &target,
                "--workload",
                workload,
                "--records",
                "300",
                "--prefill",
                "--ops",
                "1000",
                "--connections",
                "2",
                "--pipeline",
                "8",
            ],
        );
        check_workload(&report, workload, 1000);
        assert_eq!(only_run(&report)["not_found"], 0, "{workload}: {report}");
        assert_eq!(report["setup"]["target"], target);
    }
    // The prefill wrote every record, with the bench's value size, and D inserted more.
    let keys: u64 = redis
        .command("DBSIZE")
        .trim_start_matches(':')
        .trim()
        .parse()
        .unwrap();
    assert!(keys > 300, "DBSIZE {keys}");
    assert_eq!(redis.command("STRLEN key-0000000299"), ":100\r\n");
    // Open loop on Redis too.
    let report = bench(
        &dir,
        "open",
        &[
            "--target",
            &target,
            "--records",
            "300",
            "--rate",
            "2000",
            "--duration",
            "1",
        ],
    );
    assert_eq!(only_run(&report)["offered_ops_per_sec"], 2000.0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Samples of at least 80 ms (the `--slow-ms` given) over all operations.
fn slow_samples(report: &Value) -> u64 {
    only_run(report)["operations"]["all"]["slow"]
        .as_u64()
        .unwrap()
}

/// Runs a 3 s bench of `mode` while a thread stops the server for 100 ms at 1.5 s.
fn bench_with_stall(dir: &Path, server: &Server, name: &str, mode: &[&str]) -> Value {
    let pid = server.pid().unwrap() as i32;
    let staller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        // SAFETY: signalling our own child process by its PID.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        std::thread::sleep(Duration::from_millis(100));
        unsafe { libc::kill(pid, libc::SIGCONT) };
    });
    let port = server.port.to_string();
    let args = [
        &["--port", &port, "--records", "1000", "--connections", "8"][..],
        &["--duration", "3", "--slow-ms", "80"],
        mode,
    ]
    .concat();
    let report = bench(dir, name, &args);
    staller.join().unwrap();
    report
}

#[test]
fn an_open_loop_records_a_server_stall_that_a_closed_loop_hides() {
    let dir = test_dir("loadgen-stall");
    let server = Server::start(&dir.join("data"), 2, &["--sync", "none"]);
    let open = bench_with_stall(&dir, &server, "open", &["--rate", "3000"]);
    let closed = bench_with_stall(&dir, &server, "closed", &[]);
    let in_flight = open["in_flight"].as_u64().unwrap();
    assert_eq!(in_flight, 8);
    // Open loop: requests intended during the first 20 ms of the 100 ms stall all wait
    // at least 80 ms once it ends: about 60 at 3000/s (more if the stop ran long).
    let open_slow = slow_samples(&open);
    let open_all = &only_run(&open)["operations"]["all"];
    assert!(
        open_slow >= 30,
        "open loop saw {open_slow} slow samples: {open}"
    );
    assert!(open_all["p99_9_us"].as_f64().unwrap() >= 80_000.0, "{open}");
    // Closed loop: it saw the stall too (its max), but only the requests in flight
    // waited; a loaded machine may add a hiccup or two of the same size.
    let closed_slow = slow_samples(&closed);
    let closed_all = &only_run(&closed)["operations"]["all"];
    assert!(
        closed_all["max_us"].as_f64().unwrap() >= 80_000.0,
        "{closed}"
    );
    assert!(
        closed_slow <= 2 * in_flight,
        "closed loop saw {closed_slow} slow samples with {in_flight} in flight: {closed}"
    );
    assert!(
        open_slow > 2 * closed_slow,
        "open {open_slow}, closed {closed_slow}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Checks a `.hgrm` file: header, rows that parse and grow, the three footer lines.
fn check_hgrm(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
    );
    let (mut rows, mut footer, mut last_count) = (0, 0, 0u64);
    for line in lines.filter(|l| !l.is_empty()) {
        if line.starts_with("#[") {
            footer += 1;
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let _value: f64 = fields[0].parse().unwrap();
        let q: f64 = fields[1].parse().unwrap();
        let count: u64 = fields[2].parse().unwrap();
        assert!((0.0..=1.0).contains(&q) && count >= last_count, "{line}");
        last_count = count;
        rows += 1;
    }
    assert!(rows > 5 && footer == 3, "{}: {text}", path.display());
    assert!(text.contains(&format!("Total count    = {last_count:>12}]")));
}

fn check_svg(path: &Path, texts: &[&str]) {
    let svg = std::fs::read_to_string(path).unwrap();
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert!(svg.contains("<polyline") && svg.contains("<text"));
    for text in texts {
        assert!(svg.contains(text), "no {text:?} in {}", path.display());
    }
}

#[test]
fn hgrm_json_and_plot_files_are_written_for_a_run_and_a_sweep() {
    let dir = test_dir("loadgen-outputs");
    let server = Server::start(&dir.join("data"), 2, &["--sync", "none"]);
    let port = server.port.to_string();
    let hgrm = dir.join("run.hgrm");
    let plot = dir.join("run.svg");
    let report = bench(
        &dir,
        "run",
        &[
            "--port",
            &port,
            "--records",
            "200",
            "--workload",
            "f",
            "--ops",
            "500",
            "--connections",
            "2",
            "--hgrm",
            hgrm.to_str().unwrap(),
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    check_hgrm(&hgrm);
    check_svg(&plot, &["read", "rmw", "all", "99%"]);
    let all = &only_run(&report)["operations"]["all"];
    assert_eq!(all["count"], 500);
    assert!(all["p50_us"].as_f64().unwrap() <= all["p99_us"].as_f64().unwrap());
    // A sweep far below what the node does: every step keeps up, one file per step.
    let sweep_hgrm = dir.join("sweep.hgrm");
    let sweep_plot = dir.join("sweep.svg");
    let report = bench(
        &dir,
        "sweep",
        &[
            "--port",
            &port,
            "--records",
            "200",
            "--sweep",
            "200:200:600",
            "--duration",
            "0.5",
            "--connections",
            "2",
            "--sweep-p99-ms",
            "1000",
            "--hgrm",
            sweep_hgrm.to_str().unwrap(),
            "--plot",
            sweep_plot.to_str().unwrap(),
        ],
    );
    let steps = report["runs"].as_array().unwrap();
    let offered: Vec<f64> = steps
        .iter()
        .map(|s| s["offered_ops_per_sec"].as_f64().unwrap())
        .collect();
    assert_eq!(offered, [200.0, 400.0, 600.0], "{report}");
    assert!(report["sweep"]["stopped"].is_null(), "{report}");
    for rate in [200, 400, 600] {
        check_hgrm(&dir.join(format!("sweep-{rate}.hgrm")));
    }
    check_svg(
        &sweep_plot,
        &["200 ops/s", "600 ops/s", "Throughput vs latency"],
    );
    let _ = std::fs::remove_dir_all(&dir);
}
