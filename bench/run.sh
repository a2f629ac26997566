#!/usr/bin/env bash
# Runs the trustmesh vs nginx benchmark: installs nginx if missing, builds the release
# binaries, runs the harness. Extra arguments go to trustmesh-bench (see --help), e.g.
# --pinned (servers on CPU 0, load generator on CPU 1, closed loop at 1 and 32 connections).
# Takes about 90 seconds; everything listens on 127.0.0.1 only.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
    echo "[run.sh] installing nginx from Debian" >&2
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y nginx
    # The package may start a system nginx on port 80; the benchmark does not use it.
    $SUDO systemctl stop nginx >/dev/null 2>&1 || $SUDO service nginx stop >/dev/null 2>&1 || true
fi

echo "[run.sh] building release binaries" >&2
cargo build --release -p trustmesh-control-plane -p trustmesh-proxy -p trustmesh-bench

# As root, run the harness (and so every process it starts: load generator, backend, both
# pairs alike) at a higher priority than anything else on the machine, so that unrelated
# work such as builds disturbs the measurement less. Set BENCH_NICE=0 to turn this off.
NICE="${BENCH_NICE:--10}"
if [ "$(id -u)" -eq 0 ] && [ "$NICE" != "0" ]; then
    exec nice -n "$NICE" target/release/trustmesh-bench "$@"
fi
exec target/release/trustmesh-bench "$@"
