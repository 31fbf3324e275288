#!/usr/bin/env bash
# Three-node figures for perf/README.md (issue 4): `ringkv local --nodes 3` (3 server
# processes, 1 shard each, N = 3, batch sync) and one `ringkv bench` on this machine,
# 100-byte values, 50 connections, closed loop, 50% reads over 100k prefilled keys.
# Cases: consistency ONE vs QUORUM (R = W), each with token-aware routing (every key
# to its primary replica's node and shard: no forwarding, coordinators spread over the
# nodes) and without (everything to node 1's port, which coordinates every read and,
# being a replica of every key at N = 3, every write). Each case runs 3 times.
#
# Usage: perf/cluster.sh [seconds per run, default 10]
# Writes perf/results/cluster-<date>.txt with the machine, the commands and output.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
cargo build --release --quiet
bin=target/release/ringkv
port=27800
data=target/perf-cluster
out="perf/results/cluster-$(date -u +%Y%m%dT%H%M%SZ).txt"
mkdir -p perf/results
ulimit -l unlimited 2>/dev/null || true

local_pid=""
stop_cluster() {
  if [ -n "$local_pid" ]; then
    kill -INT "$local_pid" 2>/dev/null || true
    wait "$local_pid" 2>/dev/null || true
    local_pid=""
  fi
}
trap stop_cluster EXIT

start_cluster() {
  stop_cluster
  rm -rf "$data"
  mkdir -p "$data"
  "$bin" local --nodes 3 --shards 1 --port "$port" --data-dir "$data" -- --sync batch >"$data.log" 2>&1 &
  local_pid=$!
  for _ in $(seq 600); do
    grep -q "Ctrl-C" "$data.log" 2>/dev/null && return 0
    kill -0 "$local_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "cluster did not start:"; cat "$data.log"; exit 1
}

run() { # title, bench args...
  local title="$1"; shift
  start_cluster
  "$bin" bench --port "$port" --keys 100000 --value-size 100 --connections 50 --prefill --ops 1 \
    --routing token --consistency all >/dev/null
  local cmd="$bin bench --port $port --value-size 100 --keys 100000 --read-ratio 0.5 --connections 50 --duration $seconds $*"
  {
    echo "### $title"
    echo "cluster: $bin local --nodes 3 --shards 1 --port $port --data-dir $data -- --sync batch"
    echo "prefill: $bin bench --port $port --keys 100000 --value-size 100 --connections 50 --prefill --ops 1 --routing token --consistency all"
    echo "bench (3 runs):  $cmd"
    for _ in 1 2 3; do $cmd; done
    echo
  } | tee -a "$out"
}

{
  echo "# ringkv 3-node benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
  echo "cpu: $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ //')"
  echo "disk: $(df -T "$PWD" | awk 'NR==2 {print $1, $2}')"
  echo "commit: $(git rev-parse --short HEAD)$([ -n "$(git status --porcelain -- src Cargo.toml)" ] && echo ' (plus uncommitted changes)')"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
} | tee "$out"

run "ONE, token-aware" --consistency one --routing token
run "ONE, all to node 1" --consistency one --routing direct
run "QUORUM, token-aware" --consistency quorum --routing token
run "QUORUM, all to node 1" --consistency quorum --routing direct
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$out"
echo "results in $out"
