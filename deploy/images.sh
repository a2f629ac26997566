#!/usr/bin/env bash
# Builds the trustmesh container images with podman and proves them, on a machine with no
# image registry (what CI has):
#
#   1. the base image the Dockerfiles name, debian:bookworm-slim, made with debootstrap (with
#      iptables, curl and python3 in it, so that no build step downloads anything);
#   2. the binaries, built on the host (`cargo build --profile dist`), fed into the
#      Dockerfiles' runtime stages with `--build-context build=DIR` in place of their
#      `rust:1-bookworm` build stage (a `docker build` runs the whole multi-stage build);
#   3. trustmesh/control-plane, trustmesh/proxy (each at most 40 MB, no shell, non-root),
#      trustmesh/tools and CI's stand-in for the example's app images, all `--pull=never`;
#   4. a run: the control plane answers /healthz, a proxy bootstraps with a token and answers
#      /ready 200, both with a read-only root, every capability dropped;
#   5. deploy/ci/compose-e2e.sh: deploy/docker/compose.yaml with podman-compose.
#
# Runs as root. Installs podman, runc, debootstrap (Debian packages) and podman-compose (PyPI,
# into a virtualenv) when missing. Removes every container, network and volume it made, also
# on failure; every wait is bounded.
#
#   deploy/images.sh                    # all of the above
#   TRUSTMESH_IMAGES_NO_RUN=1 deploy/images.sh   # steps 1-3 only
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
t0=$(date +%s)
export CARGO_INCREMENTAL=0
export CONTAINERS_CONF=${CONTAINERS_CONF:-$root/deploy/ci/containers.conf}
max_bytes=$((40 * 1000 * 1000))
tag=0.1.0
run_id=tm-ci-$$
log() { echo "images.sh [$(($(date +%s) - t0))s]: $*"; }
# die MESSAGE: fail, showing the end of the logs of this run's containers.
die() {
  echo "images.sh: FAIL: $*" >&2
  for c in $(podman ps -a --format '{{.Names}}' --filter "name=^$run_id" 2>/dev/null); do
    echo "--- logs of $c" >&2
    podman logs --tail 20 "$c" >&2 2>&1
  done
  exit 1
}

need=()
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v runc >/dev/null 2>&1 || need+=(runc)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
[ -x /usr/lib/podman/aardvark-dns ] || need+=(aardvark-dns)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

work=$(mktemp -d /var/tmp/trustmesh-images.XXXXXX)
cleanups=()
cleanup() {
  local rc=$?
  set +e
  for ((i = ${#cleanups[@]} - 1; i >= 0; i--)); do eval "${cleanups[$i]}" >/dev/null 2>&1; done
  rm -rf "$work"
  if [ "$rc" -eq 0 ]; then log "done"; else log "failed (exit $rc)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# 1. The base image, unless it is already there (`FROM debian:bookworm-slim` finds it: podman
# looks up short names under localhost/ too).
base=localhost/debian:bookworm-slim
if ! podman image exists "$base"; then
  log "making $base with debootstrap"
  debootstrap --variant=minbase --include=iptables,curl,python3 bookworm "$work/rootfs" \
    http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; die "debootstrap"; }
  rm -f "$work"/rootfs/var/cache/apt/archives/*.deb
  tar -C "$work/rootfs" -c . | podman import -q - "$base" >/dev/null
  rm -rf "$work/rootfs"
fi

# 2. The binaries, as the Dockerfiles' build stage makes them.
log "cargo build --profile dist"
cargo build --profile dist --locked -p trustmesh-proxy -p trustmesh-control-plane
mkdir -p "$work/bin" "$work/empty"
install -m 0755 target/dist/trustmesh target/dist/trustmesh-proxy "$work/bin/"

# 3. The images. The main context is an empty folder: the stages that run here take only the
# `build` context.
build() {
  local file=$1 image=$2
  shift 2
  log "podman build $image"
  podman build -q --pull=never --build-context build="$work/bin" -f "$file" -t "$image" "$@" \
    "$work/empty" >/dev/null
}
build deploy/docker/trustmesh.Dockerfile "trustmesh/control-plane:$tag"
build deploy/docker/trustmesh.Dockerfile "trustmesh/tools:$tag" --target tools
build deploy/docker/trustmesh-proxy.Dockerfile "trustmesh/proxy:$tag"
log "podman build trustmesh-ci/example-app"
podman build -q --pull=never -f deploy/ci/example-app.Dockerfile \
  -t trustmesh-ci/example-app:latest deploy/ci >/dev/null

for image in control-plane proxy; do
  size=$(podman image inspect --format '{{.Size}}' "trustmesh/$image:$tag")
  log "trustmesh/$image:$tag is $((size / 1000)) kB"
  [ "$size" -le "$max_bytes" ] || die "trustmesh/$image:$tag is over $max_bytes bytes"
  if podman run --rm --entrypoint /bin/sh "trustmesh/$image:$tag" -c true >/dev/null 2>&1; then
    die "trustmesh/$image:$tag has a shell"
  fi
done
[ "$(podman image inspect --format '{{.Config.User}}' "trustmesh/proxy:$tag")" = 1337:1337 ] \
  || die "trustmesh/proxy does not run as 1337"
[ "$(podman image inspect --format '{{.Config.User}}' "trustmesh/control-plane:$tag")" = 10001:10001 ] \
  || die "trustmesh/control-plane does not run as 10001"

if [ -n "${TRUSTMESH_IMAGES_NO_RUN:-}" ]; then exit 0; fi

# wait_for SECONDS WHAT COMMAND...: run COMMAND every half second until it succeeds.
wait_for() {
  local secs=$1 what=$2
  local deadline=$(($(date +%s) + secs))
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || die "$what: not within ${secs}s"
    sleep 0.5
  done
}

# 4. The images on their own: a control plane, and a proxy that bootstraps from it.
log "running the images"
net=$run_id-net
# --internal: no route off this machine (the containers talk only to each other).
podman network create --internal "$net" >/dev/null
cleanups+=("podman network rm -f $net")
install -d -m 0700 -o 10001 -g 10001 "$work/cp-data"
cp -r deploy/docker/policies "$work/policies"
chmod -R a+rX "$work/policies"
harden=(--read-only --cap-drop ALL --security-opt no-new-privileges)
cleanups+=("podman rm -f -t 0 $run_id-cp $run_id-proxy $run_id-client")
podman run -d --name "$run_id-cp" --network "$net" --network-alias control-plane "${harden[@]}" \
  -v "$work/policies:/policies:ro" -v "$work/cp-data:/var/lib/trustmesh" \
  "trustmesh/control-plane:$tag" serve --listen 0.0.0.0:15012 --data-dir /var/lib/trustmesh \
  --policies /policies --server-name control-plane >/dev/null
mkdir -p "$work/boot"
podman run -d --name "$run_id-client" --network "$net" -v "$work/boot:/bootstrap:ro" \
  --entrypoint sleep trustmesh-ci/example-app:latest infinity >/dev/null
wait_for 30 "the trust bundle" test -s "$work/cp-data/trust-bundle.pem"
cp "$work/cp-data/trust-bundle.pem" "$work/boot/trust-bundle.pem"
wait_for 30 "control plane /healthz" podman exec "$run_id-client" curl -sf \
  --cacert /bootstrap/trust-bundle.pem https://control-plane:15012/healthz
log "control plane: /healthz 200"
podman run --rm --user 10001 -v "$work/cp-data:/var/lib/trustmesh" "trustmesh/control-plane:$tag" \
  token create --identity spiffe://cluster.local/ns/shop/sa/orders --data-dir /var/lib/trustmesh \
  >"$work/boot/orders.token"
chown 1337:1337 "$work/boot/orders.token"
chmod 0400 "$work/boot/orders.token"
chmod 0444 "$work/boot/trust-bundle.pem"
podman run -d --name "$run_id-proxy" --network "$net" "${harden[@]}" -v "$work/boot:/bootstrap:ro" \
  "trustmesh/proxy:$tag" --control-plane https://control-plane:15012 \
  --trust-bundle /bootstrap/trust-bundle.pem --token-file /bootstrap/orders.token \
  --identity spiffe://cluster.local/ns/shop/sa/orders >/dev/null
# The admin port is on the proxy's loopback: ask from a container in its network namespace.
ready() {
  podman run --rm --network "container:$run_id-proxy" --entrypoint curl \
    trustmesh-ci/example-app:latest -sf -o /dev/null http://127.0.0.1:15000/ready
}
wait_for 60 "proxy /ready" ready
[ "$(podman inspect --format '{{.State.Running}}' "$run_id-proxy")" = true ] || die "proxy exited"
log "proxy: bootstrapped, /ready 200 (uid 1337, read-only root)"
podman rm -f -t 0 "$run_id-cp" "$run_id-proxy" "$run_id-client" >/dev/null

# 5. The compose example.
# shellcheck source=deploy/ci/compose-e2e.sh
. deploy/ci/compose-e2e.sh
log "images built and proven in $(($(date +%s) - t0))s"
