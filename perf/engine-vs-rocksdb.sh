#!/usr/bin/env bash
# ringkv's single-shard storage engine against RocksDB's db_bench on this machine, same
# shape of work: 1,000,000 random 16-byte keys, 100-byte values (half random, half
# zeros: lz4 halves them), fillrandom then readrandom on the filled store, one thread,
# write-ahead log on but no fsync per write, O_DIRECT reads, 8 MiB block cache, 64 MiB
# memtable, 4 KiB blocks, 10 bloom bits per key, lz4 tables (ringkv's table defaults).
# ringkv also reports readrandom while a compaction runs; target: its p99.9 at most
# 1.5 x the quiet readrandom p99.9. And updaterandom on both (read the key, then write
# it). ringkv runs twice, once per conflict mode: `--conflicts lww` writes blind, as
# RocksDB's put does (the like-for-like fillrandom); `--conflicts dvv` (the server's
# default) reads the key's versions before every write (it needs them to make the new
# version's dot), so its fillrandom is a read-then-write against RocksDB's blind put.
# Targets (issue 3): ringkv/RocksDB >= 1.0 on fillrandom (lww: blind on both) and on
# readrandom (both modes) ops/s; dvv's fillrandom and updaterandom are reported.
# Both run on the core that takes the data disk's interrupts (db_bench under taskset,
# ringkv pinned there with --cpu). ringkv's shard polls for up to --idle-poll-us (the
# server's default, 200 us) before it sleeps, as a pinned server shard does; RocksDB
# sleeps in pread. The table shows each side's process CPU per operation, so what the
# polling costs is in the figures.
#
# Usage: perf/engine-vs-rocksdb.sh [--rocksdb-only]
#   --rocksdb-only   measure RocksDB alone (no cargo build, no ringkv run, no ratios)
# Environment:
#   ENGINE_BENCH_DIR   where the data dirs go (default target/perf-engine; must be a
#                      real disk, tmpfs is refused because O_DIRECT and fsync mean nothing)
#   MIN_FILL_RATIO, MIN_READ_RATIO   targets for ringkv/RocksDB ops/s (default 1.0)
# Installs rocksdb-tools (db_bench) with apt-get if missing. Writes
# perf/results/engine-vs-rocksdb-<UTC time>.txt with the machine, the commands, both
# systems' output and the table, and prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."
source perf/lib.sh

rocksdb_only=0
case "${1:-}" in
  "") ;;
  --rocksdb-only) rocksdb_only=1 ;;
  *) echo "usage: $0 [--rocksdb-only]" >&2; exit 2 ;;
esac

keys=1000000
key_bytes=16
value_bytes=100
cache_bytes=8388608     # 8 MiB block cache
memtable_bytes=67108864 # 64 MiB memtable
p999_target=1.5
bin=target/release/ringkv

fail() { echo "error: $*" >&2; exit 1; }

# --- db_bench --------------------------------------------------------------------
find_db_bench() { command -v db_bench || command -v rocksdb_db_bench; }
if ! find_db_bench >/dev/null; then
  echo "installing rocksdb-tools (db_bench) ..." >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y -qq rocksdb-tools >/dev/null 2>&1 \
    || { $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq rocksdb-tools >/dev/null; } \
    || fail "could not install rocksdb-tools"
fi
db_bench="$(find_db_bench)" || fail "rocksdb-tools installed but no db_bench binary found"
rocksdb_version="$(dpkg-query -W -f='${Version}' rocksdb-tools 2>/dev/null || echo unknown)"
db_help="$("$db_bench" --help 2>&1 || true)"

# --- ringkv ----------------------------------------------------------------------
if [ "$rocksdb_only" -eq 0 ]; then
  cargo build --release --quiet
  if ! "$bin" bench-engine --help >/dev/null 2>&1; then
    fail "$bin has no 'bench-engine' subcommand (it is not written yet?); nothing was measured. Run with --rocksdb-only to measure RocksDB alone."
  fi
fi

# --- data dirs -------------------------------------------------------------------
root="${ENGINE_BENCH_DIR:-target/perf-engine}"
mkdir -p "$root"
work="$(mktemp -d "$root/run.XXXXXX")"
out=""
finished=0
cleanup() {
  rm -rf "$work"
  # a run that failed part-way leaves no half-written result file behind
  if [ "$finished" -eq 0 ] && [ -n "$out" ]; then rm -f "$out"; fi
}
trap cleanup EXIT
fstype="$(df -T "$work" | awk 'NR==2 {print $2}')"
device="$(df -T "$work" | awk 'NR==2 {print $1}')"
case "$fstype" in
  tmpfs|ramfs) fail "$work is on $fstype; set ENGINE_BENCH_DIR to a directory on a real disk" ;;
esac
# The core both systems run on: the one that takes the data disk's completion
# interrupts (perf/lib.sh). ringkv, pinned, polls for completions on its own core;
# db_bench runs there too (taskset), like for like.
cpu="$(disk_irq_cpu "$work")"
rocks_dir="$work/rocksdb"
ringkv_dir="$work/ringkv"

out="perf/results/engine-vs-rocksdb-$(date -u +%Y%m%dT%H%M%SZ).txt"
mkdir -p perf/results

# db_bench options. --compression_ratio=0.5 (db_bench's default, spelled out) makes values
# that compress to half, as bench-engine's half-random, half-zero values do.
# --sync=0 with the WAL on: every write goes to the log, none waits for an fsync (the
# log is only synced when a memtable is flushed) — like ringkv's periodic sync mode.
db_opts=(--db="$rocks_dir" --num="$keys" --key_size="$key_bytes" --value_size="$value_bytes"
  --threads=1 --compression_type=lz4 --compression_ratio=0.5
  --cache_size="$cache_bytes" --write_buffer_size="$memtable_bytes"
  --block_size=4096 --bloom_bits=10
  --disable_wal=0 --sync=0 --histogram=1)
if grep -q -- '-use_direct_reads' <<<"$db_help"; then
  db_opts+=(--use_direct_reads=1 --use_direct_io_for_flush_and_compaction=1)
fi
# Different seeds, so readrandom does not replay fillrandom's exact key sequence (with
# the same seed every read hits, in write order). fillrandom draws keys with repeats:
# about 63% of the key space ends up written, and about 63% of reads find their key.
fill_cmd=(taskset -c "$cpu" "$db_bench" "${db_opts[@]}" --seed=1 "--benchmarks=fillrandom,levelstats")
wait_bench=""
grep -q waitforcompaction <<<"$db_help" && wait_bench="waitforcompaction,"
read_cmd=(taskset -c "$cpu" "$db_bench" "${db_opts[@]}" --seed=2 --use_existing_db=1
  --benchmarks="${wait_bench}readrandom,levelstats")
update_cmd=(taskset -c "$cpu" "$db_bench" "${db_opts[@]}" --seed=3 --use_existing_db=1
  --benchmarks="${wait_bench}updaterandom")
ringkv_cmd=("$bin" bench-engine --keys "$keys" --key-bytes "$key_bytes"
  --value-bytes "$value_bytes" --cache-bytes "$cache_bytes" --memtable-bytes "$memtable_bytes"
  --cpu "$cpu")

# "ops p50 p99 p99.9" of benchmark $1 from db_bench output $2 (micros, as printed)
rocks_stats() {
  awk -v b="$1" '
    $1 == b && $2 == ":" {
      for (i = 1; i <= NF; i++) if ($i == "ops/sec") ops = $(i - 1)
      want = 1; next
    }
    want && /^Percentiles:/ {
      for (i = 1; i < NF; i++) {
        if ($i == "P50:") p50 = $(i + 1)
        if ($i == "P99:") p99 = $(i + 1)
        if ($i == "P99.9:") p999 = $(i + 1)
      }
      want = 0
    }
    END { if (ops == "" || p999 == "") exit 1; print ops, p50, p99, p999 }' "$2"
}

# "ops p50 p99 p99.9 cpu" from a ringkv line "$1: ops_per_sec=.. p50_us=.. p99_us=.. p999_us=..
# .. cpu_us_per_op=.."
ringkv_stats() {
  awk -v b="$1:" '
    $1 == b {
      for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      seen = 1
    }
    END {
      if (!seen || v["ops_per_sec"] == "" || v["p50_us"] == "" || v["p99_us"] == "" || v["p999_us"] == "" || v["cpu_us_per_op"] == "") exit 1
      print v["ops_per_sec"], v["p50_us"], v["p99_us"], v["p999_us"], v["cpu_us_per_op"]
    }' "$2"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "inf"; else printf "%.2f", a / b }'; }
# "met" / "NOT met" for value $1 compared with target $3 by $2 (le or ge)
verdict() {
  awk -v x="$1" -v op="$2" -v t="$3" 'BEGIN {
    ok = (op == "le") ? (x + 0 <= t + 0) : (x + 0 >= t + 0)
    print (ok ? "met" : "NOT met") }'
}

# cores' worth of non-idle CPU time over 2 seconds, from /proc/stat
busy_cores() {
  local a b
  a="$(head -n1 /proc/stat)"
  sleep 2
  b="$(head -n1 /proc/stat)"
  printf '%s\n%s\n' "$a" "$b" | awk -v n="$(nproc)" '
    { idle[NR] = $5 + $6; tot[NR] = 0; for (i = 2; i <= NF; i++) tot[NR] += $i }
    END { d = tot[2] - tot[1]; printf "%.2f", (d > 0 ? (d - (idle[2] - idle[1])) / d * n : 0) }'
}

commit="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
if [ -n "$(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
  commit="$commit (plus uncommitted changes)"
fi
{
  echo "# ringkv engine vs RocksDB db_bench, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
  echo "cpu: $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ //')"
  echo "data dir: $work on $device ($fstype); both systems on core $cpu (the disk's interrupts)"
  echo "rocksdb: $db_bench (rocksdb-tools $rocksdb_version)"
  echo "ringkv commit: $commit"
  # other work on the machine (a compiler, say) skews everything below; check this
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  busy="$(busy_cores)"
  echo "cores busy over the 2 s before the runs: $busy"
  if awk -v b="$busy" 'BEGIN { exit !(b > 0.3) }'; then
    echo "WARNING: something else is using the CPU; figures will be low and noisy"
  fi
  echo
} | tee "$out"

# --- RocksDB -----------------------------------------------------------------------
rocks_fill_log="$work/db_bench-fill.out"
rocks_read_log="$work/db_bench-read.out"
rocks_update_log="$work/db_bench-update.out"
# run_db_bench BENCHMARK LOG COMMAND...: runs COMMAND with its output in LOG; on failure
# shows its stderr and stops
run_db_bench() {
  local name="$1" log="$2"
  shift 2
  echo "running db_bench $name ..." >&2
  local TIMEFORMAT='%U %S'
  { time "$@" >"$log" 2>"$log.err"; } 2>"$log.cpu" || { cat "$log.err" >&2; fail "db_bench $name failed"; }
}
# CPU microseconds per operation of the db_bench run that wrote LOG: the whole process
# (user and system, every thread, its background compactions too) over $keys operations
rocks_cpu() { awk -v n="$keys" '{ printf "%.1f", ($1 + $2) * 1e6 / n }' "$1.cpu"; }
run_db_bench fillrandom "$rocks_fill_log" "${fill_cmd[@]}"
run_db_bench "readrandom (a few minutes with O_DIRECT)" "$rocks_read_log" "${read_cmd[@]}"
run_db_bench updaterandom "$rocks_update_log" "${update_cmd[@]}"
read -r r_upd_ops r_upd_p50 r_upd_p99 r_upd_p999 < <(rocks_stats updaterandom "$rocks_update_log") \
  || { cat "$rocks_update_log" >&2; fail "could not parse the db_bench updaterandom output above"; }
read -r r_fill_ops r_fill_p50 r_fill_p99 r_fill_p999 < <(rocks_stats fillrandom "$rocks_fill_log") \
  || { cat "$rocks_fill_log" >&2; fail "could not parse the db_bench fillrandom output above"; }
read -r r_read_ops r_read_p50 r_read_p99 r_read_p999 < <(rocks_stats readrandom "$rocks_read_log") \
  || { cat "$rocks_read_log" >&2; fail "could not parse the db_bench readrandom output above"; }
{
  echo "## RocksDB"
  echo "fill: ${fill_cmd[*]}"
  echo "read: ${read_cmd[*]}"
  echo "update: ${update_cmd[*]}"
  echo "(output below without the histogram buckets)"
  grep -v -E '^[[(]|^-+$' "$rocks_fill_log" | sed -n '/^DB path/,$p' || true
  grep -v -E '^[[(]|^-+$' "$rocks_read_log" | sed -n '/^DB path/,$p' || true
  grep -v -E '^[[(]|^-+$' "$rocks_update_log" | sed -n '/^DB path/,$p' || true
  grep -h '^WARNING' "$rocks_fill_log" "$rocks_read_log" "$rocks_update_log" | sort -u || true
  echo
} >>"$out"

# --- ringkv ------------------------------------------------------------------------
# run_ringkv MODE: bench-engine with --conflicts MODE in its own data dir; its output
# goes to the result file and its figures to k_<mode>_<phase>_{ops,p50,p99,p999}
run_ringkv() {
  local mode="$1" log="$work/ringkv-$1.out" phase
  local cmd=("${ringkv_cmd[@]}" --dir "$ringkv_dir-$mode" --conflicts "$mode")
  echo "running ringkv bench-engine --conflicts $mode ..." >&2
  "${cmd[@]}" >"$log" 2>&1 || { cat "$log" >&2; fail "ringkv bench-engine --conflicts $mode failed"; }
  for phase in fillrandom readrandom readrandom_during_compaction updaterandom; do
    local ops p50 p99 p999 cpu_per_op
    read -r ops p50 p99 p999 cpu_per_op < <(ringkv_stats "$phase" "$log") \
      || { cat "$log" >&2; fail "no parseable '$phase:' line in the ringkv output above"; }
    printf -v "k_${mode}_${phase}_ops" '%s' "$ops"
    printf -v "k_${mode}_${phase}_p50" '%s' "$p50"
    printf -v "k_${mode}_${phase}_p99" '%s' "$p99"
    printf -v "k_${mode}_${phase}_p999" '%s' "$p999"
    printf -v "k_${mode}_${phase}_cpu" '%s' "$cpu_per_op"
  done
  {
    echo "## ringkv, --conflicts $mode"
    echo "run: ${cmd[*]}"
    cat "$log"
    echo
  } >>"$out"
}
modes=(lww dvv)
if [ "$rocksdb_only" -eq 0 ]; then
  for mode in "${modes[@]}"; do run_ringkv "$mode"; done
fi

# --- table -------------------------------------------------------------------------
row() { printf '%-30s %-12s %10s %9s %9s %9s %11s\n' "$@"; }
# k MODE PHASE FIELD: one figure run_ringkv stored
k() { local v="k_$1_$2_$3"; echo "${!v}"; }
{
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "## Summary (latencies in microseconds; cpu/op: process CPU microseconds per operation,"
  echo "## every thread; a polling ringkv shard spends its disk waits on the CPU; both on core $cpu)"
  row benchmark system ops/s p50 p99 p99.9 cpu/op
  row fillrandom RocksDB "$r_fill_ops" "$r_fill_p50" "$r_fill_p99" "$r_fill_p999" "$(rocks_cpu "$rocks_fill_log")"
  row readrandom RocksDB "$r_read_ops" "$r_read_p50" "$r_read_p99" "$r_read_p999" "$(rocks_cpu "$rocks_read_log")"
  row updaterandom RocksDB "$r_upd_ops" "$r_upd_p50" "$r_upd_p99" "$r_upd_p999" "$(rocks_cpu "$rocks_update_log")"
  if [ "$rocksdb_only" -eq 0 ]; then
    for mode in "${modes[@]}"; do
      for phase in fillrandom readrandom readrandom_during_compaction updaterandom; do
        row "$phase" "ringkv $mode" "$(k "$mode" "$phase" ops)" "$(k "$mode" "$phase" p50)" \
          "$(k "$mode" "$phase" p99)" "$(k "$mode" "$phase" p999)" "$(k "$mode" "$phase" cpu)"
      done
    done
    echo
    min_fill="${MIN_FILL_RATIO:-1.0}"
    min_read="${MIN_READ_RATIO:-1.0}"
    fill_ratio="$(ratio "$(k lww fillrandom ops)" "$r_fill_ops")"
    echo "fillrandom ops/s ringkv lww/RocksDB: $fill_ratio (blind writes on both; target >= $min_fill: $(verdict "$fill_ratio" ge "$min_fill"))"
    echo "fillrandom ops/s ringkv dvv/RocksDB: $(ratio "$(k dvv fillrandom ops)" "$r_fill_ops") (a read before every ringkv write; no target)"
    for mode in "${modes[@]}"; do
      read_ratio="$(ratio "$(k "$mode" readrandom ops)" "$r_read_ops")"
      echo "readrandom ops/s ringkv $mode/RocksDB: $read_ratio (target >= $min_read: $(verdict "$read_ratio" ge "$min_read"))"
    done
    for mode in "${modes[@]}"; do
      echo "updaterandom ops/s ringkv $mode/RocksDB: $(ratio "$(k "$mode" updaterandom ops)" "$r_upd_ops") (read-then-write on both; no target)"
    done
    for mode in "${modes[@]}"; do
      p999_ratio="$(ratio "$(k "$mode" readrandom_during_compaction p999)" "$(k "$mode" readrandom p999)")"
      echo "ringkv $mode readrandom p99.9 during compaction / quiet: $p999_ratio (target <= $p999_target: $(verdict "$p999_ratio" le "$p999_target"))"
    done
  else
    echo
    echo "(--rocksdb-only: ringkv not run, no ratios, targets not evaluated)"
  fi
} | tee -a "$out"
finished=1
echo "results in $out"
