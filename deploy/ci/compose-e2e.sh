# shellcheck shell=bash disable=SC2154
# Sourced by deploy/images.sh after the images are built (it defines work, run_id, log,
# die, wait_for and cleanups): runs deploy/docker/compose.yaml, unchanged, with podman-compose
# and checks what its README promises:
#
#   - frontend -> orders GET /orders/1 answers 200 and orders sees frontend's SPIFFE ID;
#   - GET /admin answers 403 (the policy allows only GET /orders/*);
#   - a container on the same network without a sidecar cannot reach orders' app in
#     plaintext (while it can reach orders' probe port, so the network itself works);
#   - a policy change in the mounted folder takes effect (/admin allowed: 200).
#
# The project is named after this run, so its containers, network and volumes are its own;
# they are removed on exit. Its network is internal: traffic stays on this machine.

compose_venv=${TRUSTMESH_PODMAN_COMPOSE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/trustmesh-podman-compose}
compose_version=1.6.0
if [ "$("$compose_venv/bin/podman-compose" --version 2>/dev/null | head -1)" \
  != "podman-compose version $compose_version" ]; then
  log "installing podman-compose $compose_version into $compose_venv"
  python3 -m venv "$compose_venv"
  "$compose_venv/bin/pip" install --quiet --disable-pip-version-check \
    "podman-compose==$compose_version"
fi

cp -r deploy/docker/policies "$work/compose-policies"
chmod -R a+rX "$work/compose-policies"
export TRUSTMESH_POLICY_CHECKOUT=$work/compose-policies
export TRUSTMESH_EXAMPLE_APP_IMAGE=localhost/trustmesh-ci/example-app:latest
export TRUSTMESH_EXAMPLE_CLIENT_IMAGE=localhost/trustmesh-ci/example-app:latest
compose=("$compose_venv/bin/podman-compose" --project-name "$run_id" -f deploy/docker/compose.yaml)
compose_down() {
  timeout 120 "${compose[@]}" down -v -t 1
  podman ps -aq --filter "label=io.podman.compose.project=$run_id" | xargs -r podman rm -f -t 0
  podman volume ls -q --filter "label=io.podman.compose.project=$run_id" | xargs -r podman volume rm -f
  podman network rm -f "${run_id}_default"
}
cleanups+=(compose_down)

# In two steps, the one-shot jobs before the sidecars that need them: podman-compose turns
# depends_on into `podman --requires`, and podman 4.3 (Debian 12's) cannot start a container
# whose requirement has requirements of its own ("not found in input list").
up() {
  timeout 300 "${compose[@]}" up -d --no-build --no-deps "$@" >>"$work/compose-up.log" 2>&1 \
    || { tail -30 "$work/compose-up.log"; die "podman-compose up $*"; }
}
log "podman-compose up (deploy/docker/compose.yaml)"
# The project's network, made here --internal (no route off this machine); podman-compose
# uses a network that exists.
podman network create --internal "${run_id}_default" >/dev/null
up control-plane orders frontend
up bootstrap orders-init frontend-init
timeout 120 podman wait "${run_id}_bootstrap_1" "${run_id}_orders-init_1" "${run_id}_frontend-init_1" \
  >/dev/null || die "the one-shot jobs did not finish within 120s"
for svc in bootstrap orders-init frontend-init; do
  code=$(podman inspect --format '{{.State.ExitCode}} {{.State.Status}}' "${run_id}_${svc}_1")
  [ "$code" = "0 exited" ] || die "$svc: $code"
done
up orders-proxy frontend-proxy
frontend=${run_id}_frontend_1
orders=${run_id}_orders_1
# The apps share their pod's network namespace with its sidecar, whose admin port is there.
wait_for 60 "orders' sidecar /ready" podman exec "$orders" curl -sf -o /dev/null http://127.0.0.1:15000/ready
wait_for 60 "frontend's sidecar /ready" podman exec "$frontend" curl -sf -o /dev/null http://127.0.0.1:15000/ready

# get CONTAINER URL: the body, then the status code on the last line.
get() { podman exec "$1" curl -s -m 10 -w '\n%{http_code}' "$2"; }
out=$(get "$frontend" http://orders:8080/orders/1)
[ "${out##*$'\n'}" = 200 ] || die "GET /orders/1 from frontend: ${out##*$'\n'}, want 200: $out"
grep -qi '^x-trustmesh-peer-identity: spiffe://cluster.local/ns/shop/sa/frontend' <<<"$out" \
  || die "orders did not receive frontend's identity: $out"
log "compose: frontend -> orders GET /orders/1: 200, with frontend's SPIFFE ID"
out=$(get "$frontend" http://orders:8080/admin)
[ "${out##*$'\n'}" = 403 ] || die "GET /admin from frontend: ${out##*$'\n'}, want 403: $out"
log "compose: frontend -> orders GET /admin: 403"

# A container without a sidecar on the same network.
outsider() {
  podman run --rm --network "${run_id}_default" --entrypoint curl \
    localhost/trustmesh-ci/example-app:latest -s -m 10 -w '\n%{http_code}' "$@"
}
out=$(outsider http://orders:15020/app-health/orders/livez) \
  || die "a container without a sidecar cannot reach orders' probe port at all: $out"
[ "${out##*$'\n'}" = 200 ] || die "orders' probe port: ${out##*$'\n'}, want 200"
if out=$(outsider http://orders:8080/orders/1); then
  die "a container without a sidecar reached orders' app in plaintext: $out"
fi
grep -q 'GET /orders/1' <<<"$out" && die "orders' app answered plaintext: $out"
log "compose: no sidecar, plaintext to orders:8080: refused (the probe port answers: 200)"

# A policy change in the mounted folder: allow /admin as well.
sed -i 's|paths: \["/orders/\*"\]|paths: ["/orders/*", "/admin"]|' \
  "$work/compose-policies/authorization.yaml"
grep -q '"/admin"' "$work/compose-policies/authorization.yaml" || die "policy edit did not apply"
admin_allowed() { [ "$(get "$frontend" http://orders:8080/admin | tail -1)" = 200 ]; }
wait_for 60 "the policy change (GET /admin allowed)" admin_allowed
log "compose: after the policy change, GET /admin: 200"
