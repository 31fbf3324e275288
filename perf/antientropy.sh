#!/usr/bin/env bash
# Anti-entropy (issue 7): foreground latency while `ringkv repair` runs, for
# perf/README.md. Three `ringkv server` processes on loopback (2 shards each,
# --no-pin, N = 3, SYNC (batch) sync, --sync-interval 0: no round runs unless `ringkv repair`
# asks, --hint-bytes-max 0: no hints, so only anti-entropy can repair a replica that
# missed writes) and one `ringkv bench` through node 1: open loop at a fixed rate, 50%
# reads / 50% updates, uniform keys over the preloaded records, QUORUM, 100-byte values.
#
# Phases:
#   preload      RECORDS keys at ALL, `admin compact` on every node, then one repair of
#                node 1 (nothing to repair: it shows the trees are built and agree)
#   idle         the bench, no anti-entropy running
#   diverge      node 3 cut off both ways (`admin fault --drop-to` on every node),
#                DIVERGE_OPS of YCSB F (read, then read-modify-write with the read's
#                context: no siblings) at QUORUM through node 1, uniform keys: about
#                RECORDS * (1 - e^(-DIVERGE_OPS / 2 / RECORDS)) keys that node 3 misses;
#                heal, wait until every node sees every other Up, `admin compact` on
#                every node (the next phase does not inherit these writes' flushes)
#   repair       the same bench, with `ringkv repair` on node 1, 2, 3, 1, ... back to
#                back from the start of the measured window until the bench ends (each
#                round's time and report printed)
#   idle after   one more repair on every node (converged?), `admin compact`, then the
#                bench again on the repaired cluster, no anti-entropy running
# diverge, repair and idle after run CYCLES times (default 3): this machine stalls now
# and then for up to a second with nothing but the bench running, so one window's p99
# is not a verdict; the summary gives each cycle's ratio and their median.
# Open loop, so that every phase is offered the same work and stalls are counted.
#
# Usage: perf/antientropy.sh [seconds measured per phase, default 30]
#   RATE=2000 RECORDS=200000 DIVERGE_OPS=100000 CONNECTIONS=64 WARMUP=5 CYCLES=3
#   SYNC=batch|periodic  the nodes' --sync (default batch: every write waits for an
#                fdatasync, and this machine's fdatasync stalls for 100-400 ms now and
#                then, in every phase; periodic takes that noise out)
#   RINGKV_SERVER_FLAGS="..."  more flags for every node (e.g. --sync-bytes-per-sec N)
# Writes perf/results/antientropy-<date>.txt (machine, commands, every output) and the
# bench JSON and per-second progress lines next to it.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
rate="${RATE:-2000}"
records="${RECORDS:-200000}"
diverge_ops="${DIVERGE_OPS:-100000}"
connections="${CONNECTIONS:-64}"
warmup="${WARMUP:-5}"
cycles="${CYCLES:-3}"
cargo build --release --quiet
bin=target/release/ringkv
data=target/perf-ae
stamp="$(date -u +%Y%m%dT%H%M%SZ)"
out="perf/results/antientropy-$stamp.txt"
raw="perf/results/antientropy-$stamp"
mkdir -p perf/results
if [ "$(df --output=fstype "$(dirname "$data")" | tail -n1)" = tmpfs ]; then
  echo "$data is on tmpfs: the data must be on the real disk"; exit 1
fi
rm -rf "$data" && mkdir -p "$data"
ulimit -l unlimited 2>/dev/null || true

# A base port with base .. base+30 free on loopback (node i: base + 10 i, its shards
# the next two ports).
listening="$(ss -Htln | awk '{print $4}' | sed 's/.*://')"
base=""
for _ in $(seq 50); do
  candidate=$((20000 + RANDOM % 30000))
  busy=0
  for p in $(seq "$candidate" $((candidate + 30))); do
    if grep -qx "$p" <<<"$listening"; then busy=1; break; fi
  done
  if [ "$busy" = 0 ]; then base="$candidate"; break; fi
done
[ -n "$base" ] || { echo "no free port range found"; exit 1; }
port_of() { echo $((base + 10 * $1)); }

pids=(0 0 0)
bench_pid=0
stop_all() {
  [ "$bench_pid" != 0 ] && kill -9 "$bench_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do
    [ "$p" != 0 ] && kill -9 "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    [ "$p" != 0 ] && wait "$p" 2>/dev/null || true
  done
}
trap stop_all EXIT

server_flags="--shards 2 --no-pin --sync ${SYNC:-batch} --sync-interval 0 --hint-bytes-max 0 ${RINGKV_SERVER_FLAGS:-}"
start_node() { # index (0-based)
  local i="$1" seeds=()
  [ "$i" -gt 0 ] && seeds=(--seeds "127.0.0.1:$(port_of 0)")
  if "$bin" ping --port "$(port_of "$i")" >/dev/null 2>&1; then
    echo "something already answers on port $(port_of "$i")"; exit 1
  fi
  # shellcheck disable=SC2086
  "$bin" server --port "$(port_of "$i")" --data-dir "$data/node$i" $server_flags \
    "${seeds[@]}" >>"$data/node$i.log" 2>&1 &
  pids[$i]=$!
  for _ in $(seq 300); do
    "$bin" ping --port "$(port_of "$i")" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node $i did not start:"; cat "$data/node$i.log"; exit 1
}

node_id() { "$bin" status --port "$(port_of "$1")" | sed -n 's/.*as node \([0-9a-f]*\) .*/\1/p'; }
# Every node sees all three nodes Up.
all_up() {
  local i
  for i in 0 1 2; do
    [ "$("$bin" status --port "$(port_of "$i")" 2>/dev/null | grep -c ' Up ')" -ge 3 ] || return 1
  done
}
wait_all_up() {
  local t0; t0="$(now)"
  until all_up; do
    sleep 0.2
    if [ "$(echo "$(since "$t0") > 120" | bc)" = 1 ]; then echo "nodes not all Up after 120 s"; exit 1; fi
  done
}
now() { date +%s.%N; }
# CPU seconds (user + system) each node has used so far, "n1 n2 n3".
cpu_now() {
  local p
  for p in "${pids[@]}"; do
    awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f ", ($14 + $15) / hz}' "/proc/$p/stat"
  done
}
cpu_since() { # the output of an earlier cpu_now
  local before=($1) after=($(cpu_now)) i
  for i in 0 1 2; do printf 'node %d %.1f s  ' $((i + 1)) "$(echo "${after[$i]} - ${before[$i]}" | bc)"; done
  echo
}
since() { printf '%.2f' "$(echo "$(now) - $1" | bc)"; }

repair_on() { # index; prints the round's time and report
  local t0 rc=0 report
  t0="$(now)"
  report="$("$bin" repair --port "$(port_of "$1")" 2>&1)" || rc=$?
  echo "repair node $(($1 + 1)) at +$(since "$window_start") s: $(since "$t0") s, exit $rc"
  sed 's/^/  /' <<<"$report"
}

bench_cmd() { # name
  echo "$bin bench --port $(port_of 0) --routing direct --consistency quorum --records $records --value-size 100 --read-ratio 0.5 --rate $rate --connections $connections --warmup $warmup --duration $seconds --progress --json $raw-$1.json"
}

# Everything below goes to the terminal and to $out; servers and the bench are started
# from this shell, so the exit trap knows every pid.
exec > >(tee "$out") 2>&1
echo "# ringkv anti-entropy: foreground latency during repair, $(date -u +%Y-%m-%dT%H:%MZ)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "cpu: $(awk -F: '/model name/ {print $2; exit}' /proc/cpuinfo | sed 's/^ //')"
echo "disk: $(df -T "$PWD" | awk 'NR==2 {print $1, $2}')"
echo "commit: $(git rev-parse --short HEAD)$([ -n "$(git status --porcelain -- src Cargo.toml)" ] && echo ' (plus uncommitted changes)')"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "nodes: $bin server --port P --data-dir $data/nodeI $server_flags [--seeds 127.0.0.1:$(port_of 0)], P = $(port_of 0), $(port_of 1), $(port_of 2)"
echo

# Flush and compact every node, so that no phase inherits the flushes and compactions
# of the writes before it (the preload, the diverging writes).
settle() {
  local t0 i; t0="$(now)"
  for i in 0 1 2; do "$bin" admin compact --port "$(port_of "$i")" >/dev/null; done
  echo "compacted every node in $(since "$t0") s"
}

for i in 0 1 2; do start_node "$i"; done
wait_all_up
ids=("$(node_id 0)" "$(node_id 1)" "$(node_id 2)")
echo "node ids: ${ids[*]}"

echo "### preload: $records keys at ALL"
t0="$(now)"
"$bin" bench --port "$(port_of 0)" --routing direct --records "$records" --value-size 100 \
  --connections 50 --prefill --ops 1 --consistency all | grep -Ei 'prefill|errors' || true
echo "preload took $(since "$t0") s"
settle
window_start="$(now)"
# Trees are built by a background scan at start; until then a shard skips syncs.
for _ in $(seq 60); do
  r="$(repair_on 0)"
  grep -q ' 0 skipped ' <<<"$r" && break
  sleep 1
done
echo "$r"
echo

if [ -n "${SWEEP:-}" ]; then # SWEEP=START:STEP:MAX: what rate this cluster sustains, then stop
  echo "### sweep"
  "$bin" bench --port "$(port_of 0)" --routing direct --consistency quorum --records "$records" \
    --value-size 100 --read-ratio 0.5 --connections "$connections" --sweep "$SWEEP" --warmup 2 --duration 5
  exit 0
fi

run_phase() { # name, title; the bench in the foreground
  local cpu0 rc=0; cpu0="$(cpu_now)"
  echo "### $2"
  bench_cmd "$1"
  $(bench_cmd "$1") 2>"$raw-$1.progress" || rc=$?
  [ "$rc" = 0 ] || echo "(the bench exited $rc: it counted errors)"
  echo "server CPU during the bench (warm-up included): $(cpu_since "$cpu0")"
  echo
}

run_phase idle "idle (no anti-entropy)"

for cycle in $(seq "$cycles"); do
echo "## cycle $cycle of $cycles"
echo "### diverge: node 3 cut off, $diverge_ops YCSB F ops at QUORUM through node 1"
"$bin" admin fault --port "$(port_of 0)" --heal --drop-to "${ids[2]}" >/dev/null
"$bin" admin fault --port "$(port_of 1)" --heal --drop-to "${ids[2]}" >/dev/null
"$bin" admin fault --port "$(port_of 2)" --heal --drop-to "${ids[0]},${ids[1]}" >/dev/null
t0="$(now)"
"$bin" bench --port "$(port_of 0)" --routing direct --consistency quorum --records "$records" \
  --value-size 100 --workload f --distribution uniform --connections 50 --ops "$diverge_ops" \
  | grep -E 'ops/s|errors|^ *(read|rmw|all) ' || true
echo "diverge writes took $(since "$t0") s"
for i in 0 1 2; do "$bin" admin fault --port "$(port_of "$i")" --heal >/dev/null; done
t0="$(now)"
wait_all_up
echo "healed; every node sees every other Up after $(since "$t0") s"
settle
echo

echo "### during anti-entropy: ringkv repair on nodes 1, 2, 3, 1, ... during the window"
bench_cmd "repair-$cycle"
cpu0="$(cpu_now)"
$(bench_cmd "repair-$cycle") 2>"$raw-repair-$cycle.progress" >"$raw-repair-$cycle.bench" &
bench_pid=$!
sleep "$warmup"
window_start="$(now)"
rounds=0
node=0
while kill -0 "$bench_pid" 2>/dev/null; do
  repair_on "$node"
  rounds=$((rounds + 1))
  node=$(((node + 1) % 3))
done
cpu_loop="$(cpu_since "$cpu0")"
rc=0
wait "$bench_pid" || rc=$?
bench_pid=0
echo "server CPU from the bench's start to the last repair's end: $cpu_loop"
echo "repair rounds started in the window: $rounds (the last may have run past its end)"
[ "$rc" = 0 ] || echo "(the bench exited $rc: it counted errors)"
cat "$raw-repair-$cycle.bench"
echo

window_start="$(now)"
echo "### converged? one more repair on every node, no load"
for i in 0 1 2; do repair_on "$i"; done
echo

settle
echo
run_phase "after-$cycle" "idle after repair (no anti-entropy)"
done

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bin" status --port "$(port_of 0)"
echo
python3 - "$raw" "$cycles" "$warmup" <<'PY'
import json, statistics, sys
raw, cycles, warmup = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def p99(name):
    return json.load(open(f"{raw}-{name}.json"))["runs"][0]["operations"]["all"]["p99_us"] / 1000
def seconds(name):  # per-second p99s (ms) of the measured window
    out = []
    for line in open(f"{raw}-{name}.progress"):
        f = line.split()
        if len(f) >= 6 and f[1] == "s" and f[4] == "p99" and float(f[0]) > warmup + 0.5:
            out.append(float(f[5]))
    return out
print("### p99 per window, ms (median of the per-second p99s; seconds over 50 ms)")
rows = [("idle", "idle")] + [(f"repair-{c}", f"during repair, cycle {c}") for c in range(1, cycles + 1)] \
     + [(f"after-{c}", f"idle after, cycle {c}") for c in range(1, cycles + 1)]
for name, title in rows:
    s = seconds(name)
    print(f"  {title:26} p99 {p99(name):8.1f}  ({statistics.median(s):.1f}; {sum(x > 50 for x in s)} of {len(s)})")
ratios = [p99(f"repair-{c}") / p99(f"after-{c}") for c in range(1, cycles + 1)]
print("### p99 during repair / idle after, per cycle: " + ", ".join(f"{r:.2f}" for r in ratios)
      + f"; median {statistics.median(ratios):.2f} (target <= 1.5)")
during = [x for c in range(1, cycles + 1) for x in seconds(f"repair-{c}")]
idle = seconds("idle") + [x for c in range(1, cycles + 1) for x in seconds(f"after-{c}")]
print(f"### median per-second p99: during repair {statistics.median(during):.1f} ms, idle {statistics.median(idle):.1f} ms"
      f" ({statistics.median(during) / statistics.median(idle):.2f}x)")
PY
echo "results in $out"
