#!/usr/bin/env bash
# Single-node figures for perf/README.md: `ringkv bench` against one `ringkv server`
# (2 shards) on this machine, 100-byte values, 50 connections, closed loop, 50% reads
# over 100k prefilled keys, each configuration run 3 times. Runs: batch vs periodic sync, and shard-aware vs direct
# vs forced-forwarding routing (the cost of the cross-core hop), unpipelined and with
# 32 requests in flight per connection (where the hop stands out from the syscalls).
#
# Usage: perf/single-node.sh [seconds per run, default 10]
# Writes perf/results/single-node-<date>.txt with the machine, the commands and output.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
cargo build --release --quiet
bin=target/release/ringkv
port=27700
data=target/perf-data
out="perf/results/single-node-$(date -u +%Y%m%dT%H%M%SZ).txt"
mkdir -p perf/results
ulimit -l unlimited 2>/dev/null || true

server_pid=""
stop_server() {
  if [ -n "$server_pid" ]; then
    kill -TERM "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap stop_server EXIT

start_server() { # sync args...
  stop_server
  rm -rf "$data"
  "$bin" server --data-dir "$data" --port "$port" --shards 2 "$@" >"$data.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    "$bin" ping --port "$port" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "server did not start:"; cat "$data.log"; exit 1
}

run() { # title, server args (quoted), bench args...
  local title="$1" server_args="$2"; shift 2
  start_server $server_args
  "$bin" bench --port "$port" --keys 100000 --value-size 100 --connections 50 --prefill --ops 1 >/dev/null
  local cmd="$bin bench --port $port --value-size 100 --keys 100000 --read-ratio 0.5 --duration $seconds $*"
  {
    echo "### $title"
    echo "server: $bin server --data-dir $data --port $port --shards 2 $server_args"
    echo "prefill: $bin bench --port $port --keys 100000 --value-size 100 --connections 50 --prefill --ops 1"
    echo "bench (3 runs):  $cmd"
    for _ in 1 2 3; do $cmd; done
    echo
  } | tee -a "$out"
}

{
  echo "# ringkv single-node benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
  echo "cpu: $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ //')"
  echo "disk: $(df -T "$PWD" | awk 'NR==2 {print $1, $2}')"
  echo "commit: $(git rev-parse --short HEAD)"
  echo
} | tee "$out"

run "batch sync, shard-aware" "--sync batch" --routing aware --connections 50
run "periodic sync (10 ms), shard-aware" "--sync periodic --sync-period-ms 10" --routing aware --connections 50
run "periodic sync, direct (SO_REUSEPORT spreads connections; ~1/2 of keys hop)" "--sync periodic --sync-period-ms 10" --routing direct --connections 50
run "periodic sync, forced forwarding (every request hops a core)" "--sync periodic --sync-period-ms 10" --routing forward --connections 50
run "batch sync, forced forwarding" "--sync batch" --routing forward --connections 50
run "pipelined (8 connections x 32 in flight), periodic sync, shard-aware" "--sync periodic --sync-period-ms 10" --routing aware --connections 8 --pipeline 32
run "pipelined (8 connections x 32 in flight), periodic sync, forced forwarding" "--sync periodic --sync-period-ms 10" --routing forward --connections 8 --pipeline 32
echo "results in $out"
