#!/usr/bin/env python3
"""The ratio table of perf/vs-redis.sh: reads the redis-benchmark CSVs and the
`ringkv bench --json` files it left in DIR and prints a Markdown table, ringkv/Redis
ratios of throughput and latency percentiles per case and driver.

Throughput ratio > 1 and latency ratio < 1 favour ringkv. redis-benchmark reports
p50/p99 (no p99.9); `ringkv bench` reports p50/p99/p99.9. Both servers had one core,
so the throughput ratio is also the ratio per server core.

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
    print("| case | driver | op | ringkv ops/s | Redis ops/s | ops/s ratio | p50 ratio | p99 ratio | p99.9 ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, title, redis_case in cases:
        k_rb = os.path.join(d, f"{name}-ringkv-rb.csv")
        r_rb = os.path.join(d, f"{redis_case}-redis-rb.csv")
        if have(f"{name}-ringkv-rb.csv") and have(f"{redis_case}-redis-rb.csv"):
            k, r = redis_benchmark(k_rb), redis_benchmark(r_rb)
            for op in ("SET", "GET"):
                if op in k and op in r:
                    print(
                        f"| {title} | redis-benchmark | {op} | {k[op][0]:,.0f} | {r[op][0]:,.0f} "
                        f"| {ratio(k[op][0], r[op][0])} | {ratio(k[op][1], r[op][1])} "
                        f"| {ratio(k[op][2], r[op][2])} | – |"
                    )
        k_kb = os.path.join(d, f"{name}-ringkv-kb.json")
        r_kb = os.path.join(d, f"{redis_case}-redis-kb.json")
        if have(f"{name}-ringkv-kb.json") and have(f"{redis_case}-redis-kb.json"):
            k, r = ringkv_bench(k_kb), ringkv_bench(r_kb)
            errors = f" ({k[4]} / {r[4]} errors)" if k[4] or r[4] else ""
            print(
                f"| {title} | ringkv bench redis:// | 50/50 GET/SET{errors} | {k[0]:,.0f} | {r[0]:,.0f} "
                f"| {ratio(k[0], r[0])} | {ratio(k[1], r[1])} | {ratio(k[2], r[2])} "
                f"| {ratio(k[3], r[3])} |"
            )
    print()
    print("Absolute latencies (ms), `ringkv bench` rows: p50 / p99 / p99.9")
    for name, title, redis_case in cases:
        for system, case in (("ringkv", name), ("redis", redis_case)):
            path = os.path.join(d, f"{case}-{system}-kb.json")
            if have(f"{case}-{system}-kb.json") and not (system == "redis" and name == "cluster"):
                k = ringkv_bench(path)
                print(f"- {name} {system}: {k[1]:.3f} / {k[2]:.3f} / {k[3]:.3f}")


if __name__ == "__main__":
    main()
