#!/usr/bin/env python3
"""The ratio table of perf/vs-redis.sh: reads the redis-benchmark CSVs and the
`ringkv bench --json` files it left in DIR and prints a Markdown table, ringkv/Redis
ratios of throughput and latency percentiles per case and driver.

Throughput ratio > 1 and latency ratio < 1 favour ringkv. redis-benchmark reports
p50/p99 (no p99.9); `ringkv bench` reports p50/p99/p99.9.

Both servers had one core, but a server need not keep its core busy: when the client
core saturates first, the server idles part of the time. So the table also gives how
busy the server core was during each run (NAME.cpu, written by the script) and the
throughput per busy server core, ops/s ÷ busy fraction, and its ratio.

Usage: perf/vs_redis_table.py DIR
"""

import csv
import json
import os
import sys


def redis_benchmark(path):
    """{op: (rps, p50_ms, p99_ms)} from one redis-benchmark --csv output."""
    out = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out[row["test"]] = (
                float(row["rps"]),
                float(row["p50_latency_ms"]),
                float(row["p99_latency_ms"]),
            )
    return out


def ringkv_bench(path):
    """(ops/s, p50_ms, p99_ms, p99.9_ms, errors) of the `all` row of one bench run."""
    with open(path) as f:
        run = json.load(f)["runs"][0]
    op = run["operations"]["all"]
    ms = lambda key: op[key] / 1000.0
    return (
        run["achieved_ops_per_sec"],
        ms("p50_us"),
        ms("p99_us"),
        ms("p99_9_us"),
        run["errors"],
    )


def busy(path):
    """{op: busy fraction of the server core} from one NAME.cpu file (empty if none)."""
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                op, fraction = line.split()
                out[op] = float(fraction)
    return out


def per_core(ops, fraction):
    return ops / fraction if fraction else 0.0


def ratio(a, b):
    return f"{a / b:.2f}" if b else "–"


def main():
    d = sys.argv[1]
    have = lambda name: os.path.exists(os.path.join(d, name))
    cases = [
        ("plain", "50 conns, unpipelined (ringkv periodic / Redis no persistence)", "plain"),
        ("durable", "50 conns, durable (ringkv batch / Redis appendfsync always)", "durable"),
        ("pipeline", "50 conns × 16 pipelined (periodic / no persistence)", "pipeline"),
        ("cluster", "3-node ringkv, N=3 QUORUM, on one core / Redis no persistence", "plain"),
    ]
    print(
        "| case | driver | op | ringkv ops/s | Redis ops/s | ops/s ratio "
        "| server core busy, ringkv / Redis | per busy server core, ringkv / Redis "
        "| per-core ratio | p50 ratio | p99 ratio | p99.9 ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    def row(title, driver, op, k, r, k_busy, r_busy, p999):
        kc, rc = per_core(k[0], k_busy), per_core(r[0], r_busy)
        print(
            f"| {title} | {driver} | {op} | {k[0]:,.0f} | {r[0]:,.0f} | {ratio(k[0], r[0])} "
            f"| {k_busy:.0%} / {r_busy:.0%} | {kc:,.0f} / {rc:,.0f} | **{ratio(kc, rc)}** "
            f"| {ratio(k[1], r[1])} | {ratio(k[2], r[2])} | {p999} |"
        )

    for name, title, redis_case in cases:
        k_rb = os.path.join(d, f"{name}-ringkv-rb.csv")
        r_rb = os.path.join(d, f"{redis_case}-redis-rb.csv")
        k_cpu = busy(os.path.join(d, f"{name}-ringkv-rb.cpu"))
        r_cpu = busy(os.path.join(d, f"{redis_case}-redis-rb.cpu"))
        if have(f"{name}-ringkv-rb.csv") and have(f"{redis_case}-redis-rb.csv"):
            k, r = redis_benchmark(k_rb), redis_benchmark(r_rb)
            for op in ("SET", "GET"):
                if op in k and op in r:
                    row(title, "redis-benchmark", op, k[op], r[op],
                        k_cpu.get(op, 0.0), r_cpu.get(op, 0.0), "–")
        k_kb = os.path.join(d, f"{name}-ringkv-kb.json")
        r_kb = os.path.join(d, f"{redis_case}-redis-kb.json")
        if have(f"{name}-ringkv-kb.json") and have(f"{redis_case}-redis-kb.json"):
            k, r = ringkv_bench(k_kb), ringkv_bench(r_kb)
            errors = f" ({k[4]} / {r[4]} errors)" if k[4] or r[4] else ""
            k_busy = busy(os.path.join(d, f"{name}-ringkv-kb.cpu")).get("all", 0.0)
            r_busy = busy(os.path.join(d, f"{redis_case}-redis-kb.cpu")).get("all", 0.0)
            row(title, "ringkv bench redis://", f"50/50 GET/SET{errors}", k, r,
                k_busy, r_busy, ratio(k[3], r[3]))
    print()
    print("Absolute latencies (ms), `ringkv bench` rows: p50 / p99 / p99.9")
    for name, title, redis_case in cases:
        for system, case in (("ringkv", name), ("redis", redis_case)):
            path = os.path.join(d, f"{case}-{system}-kb.json")
            if have(f"{case}-{system}-kb.json") and not (system == "redis" and name == "cluster"):
                k = ringkv_bench(path)
                print(f"- {name} {system}: {k[1]:.3f} / {k[2]:.3f} / {k[3]:.3f}")
    if len(sys.argv) > 3:
        cpu_per_request(d, int(sys.argv[2]), int(sys.argv[3]))


def cpu_per_request(d, requests, hz):
    """The server's own CPU time per redis-benchmark request, user and system (µs),
    from the NAME.ticks files: what bounds throughput per core, apart from the noise of
    what else runs on that core."""
    if not requests:
        return
    print()
    print("Server CPU per request, µs (user / system), redis-benchmark rows:")
    print()
    print("| case | op | ringkv | Redis |")
    print("|---|---|---|---|")
    for name, redis_case in (("plain", "plain"), ("durable", "durable"), ("pipeline", "pipeline")):
        k = ticks(os.path.join(d, f"{name}-ringkv-rb.ticks"))
        r = ticks(os.path.join(d, f"{redis_case}-redis-rb.ticks"))
        for op in ("SET", "GET"):
            if op in k and op in r:
                fmt = lambda t: " / ".join(f"{x / hz / requests * 1e6:.2f}" for x in t)
                print(f"| {name} | {op} | {fmt(k[op])} | {fmt(r[op])} |")


def ticks(path):
    """{op: (user ticks, system ticks)} from one NAME.ticks file (empty if none)."""
    out = {}
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                op, user, system = line.split()
                out[op] = (int(user), int(system))
    return out


if __name__ == "__main__":
    main()
