//! What a bench measured, and the ways it is written out: the summary table, the
//! HdrHistogram percentile distribution (`--hgrm`), and JSON (`--json`).
//!
//! Latencies are recorded in nanoseconds (HdrHistogram, 3 significant digits, up to
//! 60 s). The summary prints µs; the `.hgrm` file is in **milliseconds** (values
//! scaled by 10^6, as `HistogramLogProcessor` and wrk2 print them), so HdrHistogram's
//! plotter reads it as-is; JSON fields say their unit in their name (`p99_us`).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use super::workload::Operation;

/// Highest latency a histogram holds, in ns (a request times out long before).
const LATENCY_NS_MAX: u64 = 60_000_000_000;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("valid histogram bounds")
}

/// Records one latency.
pub fn record_ns(histogram: &mut Histogram<u64>, latency: Duration) {
    let ns = latency.as_nanos().clamp(1, u128::from(LATENCY_NS_MAX)) as u64;
    histogram.saturating_record(ns);
}

/// Latencies and counts of one measured run (or of one client thread's share of it).
pub struct Stats {
    /// One histogram per [`Operation`], by [`Operation::index`].
    pub latencies: [Histogram<u64>; 4],
    pub errors: u64,
    pub not_found: u64,
    /// Open loop: requests whose intended send time came and went without being sent,
    /// because the run ended with the generator too far behind its schedule.
    pub unsent: u64,
    pub first_error: Option<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            latencies: std::array::from_fn(|_| new_histogram()),
            errors: 0,
            not_found: 0,
            unsent: 0,
            first_error: None,
        }
    }
}

impl Stats {
    pub fn merge(&mut self, other: Stats) {
        for (mine, theirs) in self.latencies.iter_mut().zip(&other.latencies) {
            mine.add(theirs).expect("same bounds");
        }
        self.errors += other.errors;
        self.not_found += other.not_found;
        self.unsent += other.unsent;
        self.first_error = self.first_error.take().or(other.first_error);
    }

    /// Every operation type together.
    pub fn all(&self) -> Histogram<u64> {
        let mut all = new_histogram();
        for h in &self.latencies {
            all.add(h).expect("same bounds");
        }
        all
    }

    pub fn ops(&self) -> u64 {
        self.latencies.iter().map(Histogram::len).sum()
    }
}

/// One measured run: a closed-loop run, an open-loop run, or one step of a sweep.
pub struct RunReport {
    /// Open loop: the rate requests were scheduled at (ops/s, all connections).
    pub offered_ops_per_sec: Option<f64>,
    /// From the end of the warm-up to the last completion.
    pub elapsed: Duration,
    pub stats: Stats,
}

impl RunReport {
    pub fn throughput(&self) -> f64 {
        self.stats.ops() as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// A whole bench: what was asked, and every run.
pub struct BenchReport {
    /// `key: value` facts about the setup (target, workload, ...), for the outputs.
    pub setup: Vec<(&'static str, Value)>,
    pub runs: Vec<RunReport>,
    /// Samples at or over this latency are counted per operation.
    pub slow: Duration,
    /// Requests in flight at once (connections × pipeline): what a closed loop can have
    /// waiting when the system stalls.
    pub in_flight: usize,
    /// A sweep: the p99 bound it stopped at, and why it stopped (`None`: reached max).
    pub sweep: Option<SweepOutcome>,
}

pub struct SweepOutcome {
    pub p99_bound: Duration,
    pub stopped: Option<String>,
}

impl BenchReport {
    pub fn errors(&self) -> u64 {
        self.runs.iter().map(|r| r.stats.errors).sum()
    }

    /// Human-readable summary: per run, throughput, then percentiles per operation (µs).
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for run in &self.runs {
            out.push_str(&run_summary(run, self.slow));
        }
        if let Some(sweep) = &self.sweep {
            out.push_str(&sweep_table(&self.runs, sweep));
        }
        out
    }

    pub fn json(&self) -> Value {
        let mut setup = serde_json::Map::new();
        for (k, v) in &self.setup {
            setup.insert(k.to_string(), v.clone());
        }
        json!({
            "setup": setup,
            "slow_ms": self.slow.as_secs_f64() * 1e3,
            "in_flight": self.in_flight,
            "runs": self.runs.iter().map(|r| run_json(r, self.slow)).collect::<Vec<_>>(),
            "sweep": self.sweep.as_ref().map(|s| json!({
                "p99_bound_ms": s.p99_bound.as_secs_f64() * 1e3,
                "stopped": s.stopped,
            })),
        })
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1e3
}

/// The percentiles every output gives, with their JSON names.
const PERCENTILES: [(&str, f64); 6] = [
    ("p50", 0.5),
    ("p90", 0.9),
    ("p99", 0.99),
    ("p99_9", 0.999),
    ("p99_99", 0.9999),
    ("p100", 1.0),
];

/// Samples at or over `slow`.
fn slow_count(h: &Histogram<u64>, slow: Duration) -> u64 {
    let low = (slow.as_nanos() as u64).max(1);
    if h.is_empty() || h.max() < low {
        return 0;
    }
    h.count_between(low, h.max())
}

/// The rows of a run's table: each operation that ran, then all of them.
fn rows(stats: &Stats) -> Vec<(&'static str, Histogram<u64>)> {
    let mut rows: Vec<_> = Operation::ALL
        .iter()
        .filter(|op| !stats.latencies[op.index()].is_empty())
        .map(|op| (op.name(), stats.latencies[op.index()].clone()))
        .collect();
    rows.push(("all", stats.all()));
    rows
}

fn run_summary(run: &RunReport, slow: Duration) -> String {
    let stats = &run.stats;
    let mut out = String::new();
    if let Some(rate) = run.offered_ops_per_sec {
        out.push_str(&format!(
            "open loop at {rate:.0} ops/s offered (latency from each request's intended \
             send time), {} unsent\n",
            stats.unsent
        ));
    }
    out.push_str(&format!(
        "{} ops in {:.2} s: {:.0} ops/s ({} errors, {} not found)\n",
        stats.ops(),
        run.elapsed.as_secs_f64(),
        run.throughput(),
        stats.errors,
        stats.not_found
    ));
    let slow_ms = slow.as_secs_f64() * 1e3;
    out.push_str(&format!(
        "op          count     p50 µs     p90 µs     p99 µs   p99.9 µs  p99.99 µs     max µs  ≥{slow_ms}ms\n"
    ));
    for (name, h) in rows(stats) {
        if h.is_empty() {
            continue;
        }
        out.push_str(&format!("{name:<7}{:>10}", h.len()));
        for (_, q) in PERCENTILES {
            out.push_str(&format!(" {:>10.1}", us(h.value_at_quantile(q))));
        }
        out.push_str(&format!(" {:>7}\n", slow_count(&h, slow)));
    }
    if let Some(e) = &stats.first_error {
        out.push_str(&format!("first error: {e}\n"));
    }
    out
}

fn sweep_table(runs: &[RunReport], sweep: &SweepOutcome) -> String {
    let mut out = format!(
        "sweep (stops when achieved < 90% of offered or p99 > {:.1} ms):\n\
         offered/s  achieved/s     p50 µs     p99 µs   p99.9 µs     max µs\n",
        sweep.p99_bound.as_secs_f64() * 1e3
    );
    for run in runs {
        let all = run.stats.all();
        out.push_str(&format!(
            "{:>9.0} {:>11.0} {:>10.1} {:>10.1} {:>10.1} {:>10.1}\n",
            run.offered_ops_per_sec.unwrap_or(0.0),
            run.throughput(),
            us(all.value_at_quantile(0.5)),
            us(all.value_at_quantile(0.99)),
            us(all.value_at_quantile(0.999)),
            us(all.max())
        ));
    }
    out.push_str(&match &sweep.stopped {
        Some(why) => format!("saturated: {why}\n"),
        None => "reached the sweep's maximum rate without saturating\n".to_string(),
    });
    out
}

fn histogram_json(h: &Histogram<u64>, slow: Duration) -> Value {
    let mut map = serde_json::Map::new();
    map.insert("count".into(), json!(h.len()));
    map.insert(
        "mean_us".into(),
        json!(if h.is_empty() { 0.0 } else { h.mean() / 1e3 }),
    );
    for (name, q) in PERCENTILES {
        let key = if name == "p100" {
            "max_us".to_string()
        } else {
            format!("{name}_us")
        };
        map.insert(key, json!(us(h.value_at_quantile(q))));
    }
    map.insert("slow".into(), json!(slow_count(h, slow)));
    Value::Object(map)
}

fn run_json(run: &RunReport, slow: Duration) -> Value {
    let stats = &run.stats;
    let mut operations = serde_json::Map::new();
    for (name, h) in rows(stats) {
        operations.insert(name.to_string(), histogram_json(&h, slow));
    }
    json!({
        "offered_ops_per_sec": run.offered_ops_per_sec,
        "achieved_ops_per_sec": run.throughput(),
        "elapsed_s": run.elapsed.as_secs_f64(),
        "ops": stats.ops(),
        "errors": stats.errors,
        "not_found": stats.not_found,
        "unsent": stats.unsent,
        "first_error": stats.first_error,
        "operations": operations,
    })
}

/// `h` as HdrHistogram's percentile distribution (`outputPercentileDistribution` with
/// 5 ticks per half distance), values in milliseconds.
pub fn hgrm(h: &Histogram<u64>) -> String {
    const NS_PER_MS: f64 = 1e6;
    let digits = h.sigfig() as usize;
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let value = v.value_iterated_to() as f64 / NS_PER_MS;
        let q = v.quantile_iterated_to();
        if q < 1.0 {
            out.push_str(&format!(
                "{value:>12.digits$} {q:>2.12} {total:>10} {:>14.2}\n",
                1.0 / (1.0 - q)
            ));
        } else {
            out.push_str(&format!("{value:>12.digits$} {q:>2.12} {total:>10}\n"));
        }
    }
    let (mean, stdev) = if h.is_empty() {
        (0.0, 0.0)
    } else {
        (h.mean(), h.stdev())
    };
    // Sub-buckets: the power of two that holds 2 × 10^digits (HdrHistogram's rule).
    let sub_buckets = (2.0 * 10f64.powi(digits as i32)).log2().ceil().exp2() as u64;
    out.push_str(&format!(
        "#[Mean    = {:>12.digits$}, StdDeviation   = {:>12.digits$}]\n",
        mean / NS_PER_MS,
        stdev / NS_PER_MS
    ));
    out.push_str(&format!(
        "#[Max     = {:>12.digits$}, Total count    = {:>12}]\n",
        h.max() as f64 / NS_PER_MS,
        h.len()
    ));
    out.push_str(&format!(
        "#[Buckets = {:>12}, SubBuckets     = {:>12}]\n",
        h.buckets(),
        sub_buckets
    ));
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn sample_stats() -> Stats {
        let mut stats = Stats::default();
        for i in 1..=10_000u64 {
            record_ns(
                &mut stats.latencies[0],
                Duration::from_micros(100 + i % 500),
            );
            record_ns(
                &mut stats.latencies[1],
                Duration::from_micros(200 + i % 900),
            );
        }
        record_ns(&mut stats.latencies[1], Duration::from_millis(120));
        stats
    }

    pub(crate) fn sample_report() -> BenchReport {
        BenchReport {
            setup: vec![("target", json!("ringkv://127.0.0.1:1"))],
            runs: vec![RunReport {
                offered_ops_per_sec: Some(1000.0),
                elapsed: Duration::from_secs(2),
                stats: sample_stats(),
            }],
            slow: Duration::from_millis(80),
            in_flight: 4,
            sweep: None,
        }
    }

    #[test]
    fn hgrm_lines_parse_and_end_with_the_footer() {
        let h = sample_stats().all();
        let text = hgrm(&h);
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        );
        assert_eq!(lines.next(), Some(""));
        let mut rows = 0;
        let mut last_count = 0;
        let mut last_value = 0.0;
        let mut footer = Vec::new();
        for line in lines {
            if line.starts_with("#[") {
                footer.push(line);
                continue;
            }
            assert!(footer.is_empty(), "a row after the footer: {line}");
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() == 4 || fields.len() == 3, "{line}");
            let value: f64 = fields[0].parse().unwrap();
            let q: f64 = fields[1].parse().unwrap();
            let count: u64 = fields[2].parse().unwrap();
            assert!(value >= last_value && count >= last_count && (0.0..=1.0).contains(&q));
            if fields.len() == 4 {
                let inverse: f64 = fields[3].parse().unwrap();
                assert!((inverse - 1.0 / (1.0 - q)).abs() / inverse < 0.01, "{line}");
            }
            (last_value, last_count) = (value, count);
            rows += 1;
        }
        assert!(rows > 20, "{text}");
        assert_eq!(last_count, h.len());
        // The 120 ms sample is the max, in milliseconds.
        assert!((119.0..121.0).contains(&last_value), "{last_value}");
        assert_eq!(footer.len(), 3, "{text}");
        assert!(footer[0].starts_with("#[Mean    = ") && footer[0].contains("StdDeviation"));
        assert!(footer[1].contains(&format!("Total count    = {:>12}]", h.len())));
        assert!(
            footer[2].contains("SubBuckets     =         2048]"),
            "{}",
            footer[2]
        );
    }

    #[test]
    fn json_has_per_operation_percentiles_and_slow_counts() {
        let report = sample_report();
        let value: Value =
            serde_json::from_str(&serde_json::to_string(&report.json()).unwrap()).unwrap();
        assert_eq!(value["in_flight"], 4);
        assert_eq!(value["slow_ms"], 80.0);
        let run = &value["runs"][0];
        assert_eq!(run["offered_ops_per_sec"], 1000.0);
        assert_eq!(run["ops"], 20_001);
        let ops = &run["operations"];
        for name in ["read", "update", "all"] {
            for field in [
                "count",
                "p50_us",
                "p99_us",
                "p99_9_us",
                "p99_99_us",
                "max_us",
            ] {
                assert!(ops[name][field].is_number(), "{name}.{field}: {ops}");
            }
        }
        assert!(
            ops["insert"].is_null(),
            "operations that did not run are left out"
        );
        assert_eq!(ops["update"]["slow"], 1);
        assert_eq!(ops["read"]["slow"], 0);
        assert!(ops["all"]["max_us"].as_f64().unwrap() >= 119_000.0);
        let summary = report.summary();
        assert!(summary.contains("(0 errors, 0 not found)"), "{summary}");
        assert!(summary.contains("open loop at 1000 ops/s"), "{summary}");
    }
}
