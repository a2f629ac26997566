#!/usr/bin/env bash
# Usage: bench/scripts/cp_idle.sh BASE_BIN_DIR NEW_BIN_DIR [SECONDS]
# Idle CPU of `trustmesh serve` with 1,000 generated policy files and no proxies: base and
# new binaries side by side (same time, same machine), utime+stime over 60 s after a 5 s settle.
set -euo pipefail
BASE=$1 NEW=$2 SECS=${3:-60}
W=$(mktemp -d /tmp/tm-cpidle-XXXX)
gen() {
  local d=$1; mkdir -p "$d"
  printf 'trust_domain: cluster.local\ndefault_action: allow\n' > "$d/mesh.yaml"
  for ns in $(seq 0 9); do
    mkdir -p "$d/ns$ns"
    for i in $(seq 0 99); do
      n=$((ns*100+i))
      printf 'apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {name: s%d, namespace: ns%d}\nspec: {identity: spiffe://cluster.local/ns/ns%d/sa/s%d, endpoints: ["10.0.%d.%d:15006"]}\n' $n $ns $ns $n $ns $i > "$d/ns$ns/s$n.yaml"
    done
  done
}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
for v in base new; do
  gen "$W/$v/policies"
  bin=$BASE; [ $v = new ] && bin=$NEW
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  RUST_LOG=warn "$bin/trustmesh" serve --listen 127.0.0.1:$port --data-dir "$W/$v/data" --policies "$W/$v/policies" > "$W/$v.log" 2>&1 &
  pids+=($!)
done
sleep 5
ticks() { awk '{print $14+$15}' /proc/$1/stat; }
b0=$(ticks ${pids[0]}); n0=$(ticks ${pids[1]})
sleep "$SECS"
b1=$(ticks ${pids[0]}); n1=$(ticks ${pids[1]})
hz=$(getconf CLK_TCK)
echo "files: $(find "$W/base/policies" -name '*.yaml' | wc -l) per control plane; ${SECS}s idle"
awk -v b=$((b1-b0)) -v n=$((n1-n0)) -v hz=$hz -v s=$SECS 'BEGIN{printf "base: %.2f s CPU in %d s (%.1f%% of a core)\nnew:  %.2f s CPU in %d s (%.1f%% of a core)\n", b/hz, s, 100*b/hz/s, n/hz, s, 100*n/hz/s}'
