//! The measuring commands perf/ relies on run and print the lines its scripts parse:
//! `ringkv bench-engine` in both conflict modes, and `ringkv bench-disk`.

mod common;

use std::process::Command;

use common::{test_dir, BIN};

/// `key=value` fields of the line starting with `prefix`, or a panic naming the output.
fn fields(output: &str, prefix: &str) -> Vec<(String, f64)> {
    let line = output
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{output}"));
    line.split_whitespace()
        .filter_map(|f| f.split_once('='))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect()
}

fn field(fields: &[(String, f64)], name: &str) -> f64 {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .unwrap_or_else(|| panic!("no {name} in {fields:?}"))
        .1
}

#[test]
fn bench_engine_runs_every_phase_in_both_modes() {
    let dir = test_dir("bench-engine");
    // lww pinned to core 0 and polling (the perf script's way), dvv unpinned (sleeps).
    for (mode, cores) in [
        ("lww", &["--cpu", "0", "--idle-poll-us", "50"][..]),
        ("dvv", &["--no-pin", "--idle-poll-us", "0"][..]),
    ] {
        let out = Command::new(BIN)
            .args(["bench-engine", "--keys", "3000", "--reads", "1000"])
            .args(["--memtable-bytes", "65536", "--cache-bytes", "65536"])
            .args(["--sync", "none", "--conflicts", mode])
            .args(cores)
            .arg("--dir")
            .arg(dir.join(mode))
            .output()
            .unwrap();
        let output = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode}: {output}");
        assert!(output.contains(&format!("conflicts {mode}")), "{output}");
        let fill = fields(&output, "fillrandom:");
        assert_eq!(field(&fill, "ops"), 3000.0);
        // Keys drawn with repeats: about 63 % of the key space is written, so about
        // that share of reads (and of updaterandom's reads) finds its key.
        for phase in ["readrandom:", "updaterandom:"] {
            let f = fields(&output, phase);
            let found = field(&f, "found") / field(&f, "ops");
            assert!((0.5..0.8).contains(&found), "{mode} {phase} found {found}");
            assert!(field(&f, "ops_per_sec") > 0.0);
            assert!(field(&f, "cpu_us_per_op") > 0.0, "{mode} {phase}: {output}");
        }
        // With 64 KiB memtables the keys are in tables: reads go through the cache.
        let read = fields(&output, "readrandom:");
        assert!(
            field(&read, "cache_hits") + field(&read, "cache_misses") > 0.0,
            "{output}"
        );
        // Ends with the compaction, or after --reads reads if the compaction is slower.
        let during = fields(&output, "readrandom_during_compaction:");
        assert!(field(&during, "ops") <= 1000.0, "{output}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bench_disk_compares_pread_with_glommio() {
    let dir = test_dir("bench-disk");
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(BIN)
        .args([
            "bench-disk",
            "--file-bytes",
            "4194304",
            "--reads",
            "200",
            "--no-pin",
            "--file",
        ])
        .arg(dir.join("probe.dat"))
        .output()
        .unwrap();
    let output =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{output}");
    let f = fields(&output, "bench-disk:");
    assert!(
        field(&f, "pread_us") > 0.0 && field(&f, "glommio_us") > 0.0,
        "{output}"
    );
    assert_eq!(
        std::fs::metadata(dir.join("probe.dat")).unwrap().len(),
        4 << 20
    );
    let _ = std::fs::remove_dir_all(&dir);
}
