#!/usr/bin/env bash
# A node killed under load (issue 6), for perf/RESULTS.md: three `ringkv server`
# processes (1 shard each, N = 3, batch sync, default 1 s gossip), one `ringkv bench`
# at QUORUM through node 1 (50 connections, closed loop, 50% reads of 100k prefilled
# keys, 100-byte values).
#
# Phases:
#   all up     the bench with every node Up
#   1 down     node 3 killed (kill -9): the time until both others hold it Down (from
#              `ringkv status`), then the bench again, every write now also leaving
#              a hint for node 3 on its coordinator
#   restart    node 3 restarted: the hints pending for it, and the time until nodes 1
#              and 2 have handed every one over
#
# Usage: perf/failover.sh [seconds per bench run, default 10]
#        RINGKV_SERVER_FLAGS="..." perf/failover.sh   (more flags for every node)
# Writes perf/results/failover-<date>.txt (machine, commands, every output).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
cargo build --release --quiet
bin=target/release/ringkv
base=27850
data=target/perf-failover
out="perf/results/failover-$(date -u +%Y%m%dT%H%M%SZ).txt"
mkdir -p perf/results
rm -rf "$data" && mkdir -p "$data"
ulimit -l unlimited 2>/dev/null || true

pids=(0 0 0)
stop_all() {
  for p in "${pids[@]}"; do
    [ "$p" != 0 ] && kill -9 "$p" 2>/dev/null || true
  done
}
trap stop_all EXIT

port_of() { echo $((base + 10 * $1)); }

start_node() { # index (0-based)
  local i="$1" seeds=()
  [ "$i" -gt 0 ] && seeds=(--seeds "127.0.0.1:$(port_of 0)")
  if "$bin" ping --port "$(port_of "$i")" >/dev/null 2>&1; then
    echo "something already answers on port $(port_of "$i") (a leftover node?)"; exit 1
  fi
  "$bin" server --port "$(port_of "$i")" --shards 1 --no-pin --data-dir "$data/node$i" \
    --sync batch ${RINGKV_SERVER_FLAGS:-} "${seeds[@]}" >>"$data/node$i.log" 2>&1 &
  pids[$i]=$!
  for _ in $(seq 300); do
    "$bin" ping --port "$(port_of "$i")" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node $i did not start:"; cat "$data/node$i.log"; exit 1
}

# The status row of node `id` as node `observer` sees it.
row() { # observer index, node id
  "$bin" status --port "$(port_of "$1")" 2>/dev/null | grep "^$2" || true
}

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }

bench() { # title
  local cmd="$bin bench --port $(port_of 0) --routing direct --consistency quorum --records 100000 --value-size 100 --read-ratio 0.5 --connections 50 --duration $seconds"
  echo "### $1"
  echo "$cmd"
  $cmd
  echo
}

# Everything below goes to the terminal and to $out; no subshell, so that the exit trap
# knows every node's pid (the restarted one included).
exec > >(tee "$out") 2>&1
{
  echo "# ringkv failover, $(date -u +%Y-%m-%dT%H:%MZ)"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
  echo "cpu: $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ //')"
  echo "disk: $(df -T "$PWD" | awk 'NR==2 {print $1, $2}')"
  echo "commit: $(git rev-parse --short HEAD)$([ -n "$(git status --porcelain -- src Cargo.toml)" ] && echo ' (plus uncommitted changes)')"
  echo "nodes: $bin server --port P --shards 1 --no-pin --sync batch ${RINGKV_SERVER_FLAGS:-} [--seeds 127.0.0.1:$(port_of 0)], P = $(port_of 0), $(port_of 1), $(port_of 2)"
  echo
}

for i in 0 1 2; do start_node "$i"; done
sleep 5 # every node knows every other, a few heartbeats each
victim="$("$bin" status --port "$(port_of 2)" | sed -n 's/.*as node \([0-9a-f]*\) .*/\1/p')"
"$bin" bench --port "$(port_of 0)" --records 100000 --value-size 100 --connections 50 --prefill \
  --ops 1 --consistency all >/dev/null
bench "all up"
kill -9 "${pids[2]}"
pids[2]=0
killed="$(now)"
until row 0 "$victim" | grep -q " Down " && row 1 "$victim" | grep -q " Down "; do sleep 0.05; done
echo "### node 3 killed: Down on nodes 1 and 2 after $(since "$killed") s"
echo
bench "1 of 3 down"
hints=$(($(row 0 "$victim" | awk '{print $(NF-2)}') + $(row 1 "$victim" | awk '{print $(NF-2)}')))
start_node 2
restarted="$(now)"
until [ "$(row 0 "$victim" | awk '{print $(NF-2)}')" = 0 ] && [ "$(row 1 "$victim" | awk '{print $(NF-2)}')" = 0 ]; do
  sleep 0.05
done
echo "### node 3 restarted: $hints hints handed over $(since "$restarted") s after it answered"
echo
"$bin" status --port "$(port_of 0)"
echo "results in $out"
