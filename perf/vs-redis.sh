#!/usr/bin/env bash
# ringkv side by side with Redis 7 on this machine (issue 5), for perf/RESULTS.md.
#
# Both servers get one core: the one that takes the data disk's interrupts (ringkv
# `--shards 1 --cpus C`, Redis under `taskset -c C`); every client runs on the other
# cores (taskset). Both are driven by redis-benchmark (SET then GET, 100-byte values,
# 100 000 random keys) and by `ringkv bench --target redis://` (YCSB A: 50% GET, 50% SET,
# uniform keys, closed loop) through ringkv's RESP port, with the same client settings.
#
# Cases:
#   plain     50 connections, unpipelined: ringkv --sync periodic (10 ms) vs Redis
#             without persistence (--save '' --appendonly no)
#   durable   50 connections: ringkv --sync batch (ack after fdatasync) vs Redis
#             --appendonly yes --appendfsync always
#   pipeline  50 connections x 16 pipelined, as `plain`
#   cluster   `ringkv local --nodes 3 --shards 1` (N = 3, QUORUM, periodic), all three
#             processes on the same one core, vs Redis `plain`
#
# Usage: perf/vs-redis.sh [seconds per bench run, default 10]
# Writes perf/results/vs-redis-<date>.txt (machine, commands, every output) and prints
# the ratio table for perf/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
source perf/lib.sh
seconds="${1:-10}"
requests=$((seconds * 40000)) # redis-benchmark -n per test, about `seconds` for Redis
command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools >/dev/null
}
cargo build --release --quiet
bin=target/release/ringkv
work=target/perf-vs-redis
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="perf/results/vs-redis-$stamp.txt"
json="$work/json"
mkdir -p perf/results
rm -rf "$work" && mkdir -p "$json"
ulimit -l unlimited 2>/dev/null || true

rport=27960 # Redis
kport=27970 # ringkv client port; shard port 27971, RESP port below
kresp=27979

srv="$(disk_irq_cpu "$PWD")" # perf/lib.sh
cli="$(seq 0 $(($(nproc) - 1)) | grep -vx "$srv" | paste -sd, -)"
[ -n "$cli" ] || cli="$srv"

pids=()
stop_all() {
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] && kill -INT "$p" 2>/dev/null || true
  done
  for p in "${pids[@]:-}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null || true
  done
  pids=()
}
trap stop_all EXIT

# Waits (up to 10 s) until nothing listens on any of the given ports; fails otherwise.
# A server left over from an earlier run would otherwise answer in place of the one
# this script starts (Redis refuses the port and exits, the stale one is measured).
ports_free() { # port...
  local port
  for _ in $(seq 100); do
    local busy=""
    for port in "$@"; do
      ss -Hltn "sport = :$port" | grep -q . && busy="$port"
    done
    [ -z "$busy" ] && return 0
    sleep 0.1
  done
  echo "port $busy is taken by another process: stop it first"; ss -ltnp "sport = :$busy"; exit 1
}

wait_port() { # port
  for _ in $(seq 300); do
    redis-cli -p "$1" ping >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "nothing answers PING on port $1"; exit 1
}

start_redis() { # extra redis-server args...
  stop_all
  ports_free "$rport"
  rm -rf "$work/redis" && mkdir -p "$work/redis"
  taskset -c "$srv" redis-server --port "$rport" --dir "$work/redis" --save '' "$@" \
    >"$work/redis.log" 2>&1 &
  pids+=($!)
  wait_port "$rport"
  echo "server: taskset -c $srv redis-server --port $rport --save '' $*"
}

start_ringkv() { # extra ringkv server args...
  stop_all
  ports_free "$kport" "$((kport + 1))" "$kresp"
  rm -rf "$work/ringkv"
  "$bin" server --data-dir "$work/ringkv" --port "$kport" --resp-port "$kresp" --shards 1 \
    --cpus "$srv" "$@" >"$work/ringkv.log" 2>&1 &
  pids+=($!)
  wait_port "$kresp"
  echo "server: $bin server --data-dir $work/ringkv --port $kport --resp-port $kresp --shards 1 --cpus $srv $*"
}

start_cluster() {
  stop_all
  ports_free $(seq "$kport" "$((kport + 8))")
  rm -rf "$work/cluster"
  taskset -c "$srv" "$bin" local --nodes 3 --shards 1 --port "$kport" --data-dir "$work/cluster" \
    -- --sync periodic >"$work/cluster.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 600); do
    grep -q "Ctrl-C" "$work/cluster.log" 2>/dev/null && break
    sleep 0.1
  done
  # Node 1's RESP port comes right after its shard port.
  wait_port "$((kport + 2))"
  echo "server: taskset -c $srv $bin local --nodes 3 --shards 1 --port $kport --data-dir $work/cluster -- --sync periodic"
}

# Busy and total jiffies of core $1 so far (busy: all but idle and iowait).
core_ticks() {
  awk -v c="cpu$1" '$1 == c { busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6 }' /proc/stat
}

# User and system CPU ticks of process $1 so far, all its threads.
process_ticks() {
  awk '{ print $14, $15 }' "/proc/$1/stat" 2>/dev/null || echo "0 0"
}

# measured NAME OP cmd...: runs cmd and appends "OP <busy fraction of the server core>"
# to $json/NAME.cpu (the "per server core" figures divide ops/s by it), and "OP <user
# ticks> <system ticks>" of the server process to $json/NAME.ticks (one process: not
# the cluster, whose nodes are processes of their own).
measured() {
  local name="$1" op="$2"; shift 2
  local before after server="${pids[-1]:-}" ticks_before="0 0"
  [ -n "$server" ] && ticks_before="$(process_ticks "$server")"
  before="$(core_ticks "$srv")"
  "$@"
  after="$(core_ticks "$srv")"
  echo "$op $before $after" | awk '{ printf "%s %.3f\n", $1, ($4 - $2) / ($5 - $3) }' >>"$json/$name.cpu"
  if [ -n "$server" ] && [ "$name" = "${name#cluster}" ]; then
    echo "$op $ticks_before $(process_ticks "$server")" |
      awk '{ print $1, $4 - $2, $5 - $3 }' >>"$json/$name.ticks"
  fi
}

# redis-benchmark: SET, then GET, each its own run (so each has its own server-core
# figure); the CSV lines go to $json/<name>.csv.
redis_benchmark() { # name port extra...
  local name="$1" port="$2"; shift 2
  local test
  for test in set get; do
    local cmd=(taskset -c "$cli" redis-benchmark -p "$port" -t "$test" -n "$requests" -c 50 -d 100
      -r 100000 --csv "$@")
    echo "redis-benchmark: ${cmd[*]}"
    measured "$name" "${test^^}" "${cmd[@]}" >"$json/$name.$test.csv"
    cat "$json/$name.$test.csv"
    if [ "$test" = set ]; then cat "$json/$name.$test.csv"; else tail -n +2 "$json/$name.$test.csv"; fi \
      >>"$json/$name.csv"
  done
}

# ringkv bench over RESP (redis://), YCSB A, closed loop; JSON to $json/<name>.json.
# The records are written first by a short run of its own, so that the measured run
# (and its server-core figure) is the workload alone.
ringkv_bench() { # name target extra...
  local name="$1" target="$2"; shift 2
  local common=(taskset -c "$cli" "$bin" bench --target "$target" --workload a
    --distribution uniform --records 100000 --value-size 100 --connections 50)
  echo "ringkv bench (load the records): ${common[*]} --prefill --duration 1"
  "${common[@]}" --prefill --duration 1 >/dev/null
  local cmd=("${common[@]}" --duration "$seconds" --json "$json/$name.json" "$@")
  echo "ringkv bench: ${cmd[*]}"
  measured "$name" all "${cmd[@]}"
}

case_run() { # title system name port
  local title="$1" system="$2" name="$3" port="$4"; shift 4
  echo "### $title ($system)"
  redis_benchmark "$name-rb" "$port" "$@"
  local pipe=()
  [ "${1:-}" = "-P" ] && pipe=(--pipeline "$2")
  ringkv_bench "$name-kb" "redis://127.0.0.1:$port" "${pipe[@]}"
  echo
}

{
  echo "# ringkv vs Redis, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
  echo "cpu: $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ //')"
  echo "disk: $(df -T "$PWD" | awk 'NR==2 {print $1, $2}')"
  echo "redis: $(redis-server --version)"
  echo "commit: $(git rev-parse --short HEAD)$([ -n "$(git status --porcelain -- src Cargo.toml)" ] && echo ' (plus uncommitted changes)')"
  echo "servers on core $srv (the disk's interrupts), clients on core(s) $cli"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  start_redis --appendonly no
  case_run "plain: 50 connections, unpipelined" redis plain-redis "$rport"
  start_ringkv --sync periodic
  case_run "plain: 50 connections, unpipelined" ringkv plain-ringkv "$kresp"
  start_redis --appendonly yes --appendfsync always
  case_run "durable: 50 connections, fsync before ack" redis durable-redis "$rport"
  start_ringkv --sync batch
  case_run "durable: 50 connections, fsync before ack" ringkv durable-ringkv "$kresp"
  start_redis --appendonly no
  case_run "pipeline: 50 connections x 16" redis pipeline-redis "$rport" -P 16
  start_ringkv --sync periodic
  case_run "pipeline: 50 connections x 16" ringkv pipeline-ringkv "$kresp" -P 16
  start_cluster
  case_run "cluster: 3 nodes on one core, N = 3, QUORUM" ringkv cluster-ringkv "$((kport + 2))"
  stop_all
  echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  python3 perf/vs_redis_table.py "$json" "$requests" "$(getconf CLK_TCK)"
} 2>&1 | tee "$out"
echo "results in $out"
