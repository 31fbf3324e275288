#!/usr/bin/env bash
# Runs every ringkv test on a fresh machine: formatting, lints, unit, property and
# integration tests (the integration tests start real `ringkv server` processes on
# loopback ports they reserve, with data under target/, and kill them when done).
#
# Needs the Rust toolchain, and redis-server (tests/loadgen.rs drives a real Redis with
# `ringkv bench --target redis://`), installed here from Debian if missing.
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

if ! command -v redis-server >/dev/null; then
  printf '\n== installing redis-server\n'
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi

# glommio needs RLIMIT_MEMLOCK >= 512 KiB; raise the soft limit as far as allowed.
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -Hl)" 2>/dev/null || true

step() { printf '\n== %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy (warnings are errors)"
cargo clippy --all-targets -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
step "cargo test --doc"
cargo test --doc 2>&1 | tee -a "$log"
step "cargo test (unit, property, integration)"
cargo test --all-targets 2>&1 | tee -a "$log"

# One closing line with the totals of every test binary above.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\nringkv: %d passed, %d failed\n", p, f }' "$log"
