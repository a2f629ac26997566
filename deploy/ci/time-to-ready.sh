#!/usr/bin/env bash
# Time from container start to sidecar ready, with the images `deploy/images.sh` built: a new
# sidecar (bootstrap with a token) and the same sidecar restarted with its --state-dir volume
# and its token spent. A poller in the sidecar's pod asks /ready every 5 ms; the figure is its
# first 200 minus the proxy container's StartedAt (podman, nanoseconds). Prints both; removes
# everything it made. Everything runs on an --internal network this script creates.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/ci/containers.conf}
tag=0.1.0
id=tm-ttr-$$
work=$(mktemp -d /var/tmp/trustmesh-ttr.XXXXXX)
cleanup() {
  podman pod rm -f -t 0 "$id-pod" >/dev/null 2>&1 || true
  podman rm -f -t 0 "$id-cp" >/dev/null 2>&1 || true
  podman network rm -f "$id-net" >/dev/null 2>&1 || true
  podman volume rm -f "$id-state" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
[ -n "${KEEP:-}" ] && trap - EXIT
podman network create --internal "$id-net" >/dev/null
install -d -m 0700 -o 10001 -g 10001 "$work/cp-data"
cp -r deploy/docker/policies "$work/policies"; chmod -R a+rX "$work/policies"
podman run -d --name "$id-cp" --network "$id-net" --network-alias control-plane --read-only \
  -v "$work/policies:/policies:ro" -v "$work/cp-data:/var/lib/trustmesh" \
  "trustmesh/control-plane:$tag" serve --listen 0.0.0.0:15012 --data-dir /var/lib/trustmesh \
  --policies /policies --server-name control-plane >/dev/null
for _ in $(seq 60); do [ -s "$work/cp-data/trust-bundle.pem" ] && break; sleep 0.5; done
mkdir -p "$work/boot"; cp "$work/cp-data/trust-bundle.pem" "$work/boot/"
podman run --rm --user 10001 -v "$work/cp-data:/var/lib/trustmesh" "trustmesh/control-plane:$tag" \
  token create --identity spiffe://cluster.local/ns/shop/sa/orders --data-dir /var/lib/trustmesh \
  >"$work/boot/orders.token"
chown -R 1337:1337 "$work/boot"; chmod 0444 "$work/boot/trust-bundle.pem"
podman volume create "$id-state" >/dev/null
podman pod create --name "$id-pod" --network "$id-net" >/dev/null
# The poller: prints the wall clock (ns) of the first /ready 200, then exits.
poll() {
  podman run -d --pod "$id-pod" --name "$id-poll" --entrypoint sh trustmesh-ci/example-app:latest -c \
    'until curl -sf -o /dev/null --max-time 1 http://127.0.0.1:15000/ready; do sleep 0.005; done; date +%s%N' >/dev/null
}
measure() { # $1: label
  podman rm -f -t 0 "$id-poll" >/dev/null 2>&1 || true
  poll
  sleep 1
  podman run -d --pod "$id-pod" --name "$id-proxy" --read-only --cap-drop ALL \
    -v "$work/boot:/bootstrap:ro" -v "$id-state:/var/lib/trustmesh-proxy" "trustmesh/proxy:$tag" \
    --control-plane https://control-plane:15012 --trust-bundle /bootstrap/trust-bundle.pem \
    --token-file /bootstrap/orders.token --state-dir /var/lib/trustmesh-proxy/state \
    --identity spiffe://cluster.local/ns/shop/sa/orders >/dev/null
  timeout 60 podman wait "$id-poll" >/dev/null || { podman logs "$id-proxy" | tail -5; exit 1; }
  local ready started
  ready=$(podman logs "$id-poll" | tail -1)
  started=$(date -d "$(podman inspect --format '{{.State.StartedAt}}' "$id-proxy" | sed 's/ [A-Z]*$//')" +%s%N)
  echo "$1: container start -> /ready 200: $(( (ready - started) / 1000000 )) ms"
}
measure "new sidecar (bootstrap with a token)"
podman rm -f -t 2 "$id-proxy" >/dev/null
measure "restarted sidecar (--state-dir, token spent)"
