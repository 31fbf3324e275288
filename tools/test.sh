#!/usr/bin/env bash
# Runs every ringkv test on a fresh machine: formatting, lints, unit, property and
# integration tests (the integration tests start real `ringkv server` processes on
# loopback ports they reserve, with data under target/, and kill them when done).
#
# Needs the Rust toolchain, python3 with pip, and apt-get (or the tools already
# installed): tests/resp.rs runs real Redis clients, installed here when missing —
# redis-cli and redis-benchmark (redis-tools), redis-server (tests/loadgen.rs
# drives it with `ringkv bench --target redis://`; perf/ compares with it),
# and redis-py. An install that fails stops the run.
set -euo pipefail
shopt -s inherit_errexit 2>/dev/null || true
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

# glommio needs RLIMIT_MEMLOCK >= 512 KiB; raise the soft limit as far as allowed.
ulimit -l unlimited 2>/dev/null || ulimit -l "$(ulimit -Hl)" 2>/dev/null || true

step() { printf '\n== %s\n' "$*"; }

# Installs what the RESP tests run, if missing; quiet when everything is there.
install_redis_clients() {
    local packages=()
    command -v redis-cli >/dev/null && command -v redis-benchmark >/dev/null || packages+=(redis-tools)
    command -v redis-server >/dev/null || packages+=(redis-server)
    if ((${#packages[@]})); then
        step "apt-get install ${packages[*]} (for tests/resp.rs)"
        local sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
            ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
                apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; then
            echo "tools/test.sh: installing ${packages[*]} failed" >&2
            exit 1
        fi
    fi
    if ! python3 -c 'import redis' 2>/dev/null; then
        step "pip install redis (redis-py, for tests/resp.rs)"
        # A distribution's python may be "externally managed" (PEP 668): then say so.
        python3 -m pip install --quiet redis 2>/dev/null ||
            python3 -m pip install --quiet --break-system-packages redis || {
            echo "tools/test.sh: pip install redis failed" >&2
            exit 1
        }
        python3 -c 'import redis' || { echo "tools/test.sh: redis-py does not import" >&2; exit 1; }
    fi
}

install_redis_clients

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
