#!/usr/bin/env bash
# TLS scans and API-schema fuzzing against the live binaries, on loopback only.
#
# Starts a control plane (`trustmesh serve`, temp data folder, policies/examples/production) and
# one sidecar (order-service) on ephemeral 127.0.0.1 ports, then:
#   1. testssl.sh against the sidecar's inbound mTLS listener and the control plane's API
#      listener: protocols, cipher suites per protocol, key exchange groups, server defaults,
#      known vulnerabilities (the mesh CA is added, so the chain is checked too);
#   2. curl against the inbound listener for what testssl.sh 3.0 cannot do (it has no client
#      certificate option): no certificate is refused, a mesh certificate gets TLS 1.3 with
#      ALPN h2, and TLS 1.2 is refused even with the certificate;
#   3. schemathesis (every check) against control-plane/openapi.yaml, three times: with no
#      client certificate (a bootstrap token as bearer), with a workload's mesh certificate, and
#      with the admin certificate (`trustmesh admin-cert`).
# Prints a summary and exits non-zero on any finding that summarize.py does not accept (each
# accepted finding is listed there with its reason).
#
#   tests/scans/run.sh [--release]
#   TRUSTMESH_SCAN_EXAMPLES=N  schemathesis examples per operation and run (default 40)
#   TRUSTMESH_SCAN_KEEP=1      keep the work folder (logs, testssl JSON, schemathesis reports)
#   TRUSTMESH_SCAN_VENV=DIR    the schemathesis virtualenv (default ~/.cache/trustmesh-scans)
#
# Needs openssl, curl and python3 (with venv); installs testssl.sh from Debian (as root) and
# schemathesis from PyPI into the virtualenv when they are missing.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
profile=debug
cargo_flags=()
if [ "${1:-}" = "--release" ]; then
  profile=release
  cargo_flags=(--release)
fi
examples=${TRUSTMESH_SCAN_EXAMPLES:-40}
venv=${TRUSTMESH_SCAN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/trustmesh-scans}
schemathesis_version=4.32.5
td=cluster.local

say() { printf 'scans: %s\n' "$*"; }

# --- tools ---------------------------------------------------------------------------------
for tool in openssl curl python3; do
  command -v "$tool" >/dev/null 2>&1 || { say "$tool is required"; exit 2; }
done
if ! command -v testssl >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    say "testssl.sh is missing: apt-get install testssl.sh"
    exit 2
  fi
  say "installing testssl.sh (Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq testssl.sh >/dev/null
fi
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $schemathesis_version" ]; then
  say "installing schemathesis $schemathesis_version into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$schemathesis_version"
fi

# --- binaries ------------------------------------------------------------------------------
say "building trustmesh and trustmesh-proxy ($profile)"
(cd "$root" && CARGO_INCREMENTAL=0 cargo build -q "${cargo_flags[@]}" \
  -p trustmesh-control-plane -p trustmesh-proxy)
cp_bin=$root/target/$profile/trustmesh
proxy_bin=$root/target/$profile/trustmesh-proxy

# --- processes -----------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/trustmesh-scans.XXXXXX")
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${TRUSTMESH_SCAN_KEEP:-0}" = 1 ]; then
    say "work folder kept: $work"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
# Waits (at most 30 s) until "$@" succeeds.
wait_for() {
  local what=$1 _
  shift
  for _ in $(seq 1 150); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  say "$what did not come up; its log:"
  tail -n 30 "$work/$what.log" >&2 || true
  exit 1
}

cp_port=$(free_port)
inbound_port=$(free_port)
cp_data=$work/cp-data
bundle=$cp_data/trust-bundle.pem
cp_url=https://127.0.0.1:$cp_port
cp -r "$root/policies/examples/production" "$work/policies"

# The injection webhook reads TRUSTMESH_DATA_DIR and TRUSTMESH_TRUST_DOMAIN from the
# environment, not serve's flags (with --data-dir alone POST /v1/inject answers 503), so both
# are given both ways.
say "starting the control plane on 127.0.0.1:$cp_port"
TRUSTMESH_DATA_DIR=$cp_data TRUSTMESH_TRUST_DOMAIN=$td "$cp_bin" serve \
  --listen "127.0.0.1:$cp_port" --data-dir "$cp_data" --policies "$work/policies" \
  --trust-domain "$td" >"$work/control-plane.log" 2>&1 &
pids+=($!)
wait_for control-plane test -s "$bundle"
wait_for control-plane curl -fsS --max-time 2 --cacert "$bundle" "$cp_url/healthz"

spiffe() { printf 'spiffe://%s/ns/production/sa/%s' "$td" "$1"; }
token() { "$cp_bin" token create --identity "$(spiffe "$1")" --data-dir "$cp_data"; }

say "starting the order-service sidecar, inbound 127.0.0.1:$inbound_port"
token order-service >"$work/proxy.token"
chmod 600 "$work/proxy.token"
admin_port=$(free_port)
"$proxy_bin" --control-plane "$cp_url" --trust-bundle "$bundle" \
  --token-file "$work/proxy.token" --identity "$(spiffe order-service)" \
  --app "127.0.0.1:$(free_port)" --inbound "127.0.0.1:$inbound_port" \
  --outbound "127.0.0.1:$(free_port)" --admin "127.0.0.1:$admin_port" \
  --probe-listen "127.0.0.1:$(free_port)" >"$work/proxy.log" 2>&1 &
pids+=($!)
wait_for proxy curl -fsS --max-time 2 "http://127.0.0.1:$admin_port/ready"

# --- credentials ---------------------------------------------------------------------------
# A workload certificate (api-gateway) through the real bootstrap: openssl makes the key and
# the CSR, a bootstrap token pays for it. The CSRs schemathesis sends come from the same key.
mkdir -p "$work/csrs"
openssl ecparam -name prime256v1 -genkey -noout 2>/dev/null |
  openssl pkcs8 -topk8 -nocrypt -out "$work/workload.key"
csr() { # NAME SAN
  openssl req -new -key "$work/workload.key" -subj / -addext "subjectAltName=$2" \
    -out "$work/csrs/$1.csr" 2>/dev/null
}
csr own "URI:$(spiffe api-gateway)"
csr other "URI:$(spiffe order-service)"
csr two "URI:$(spiffe api-gateway),URI:$(spiffe order-service)"
python3 -c 'import json, sys; print(json.dumps({"csr": open(sys.argv[1]).read()}))' \
  "$work/csrs/own.csr" >"$work/bootstrap.json"
curl -fsS --max-time 10 --cacert "$bundle" -H "Authorization: Bearer $(token api-gateway)" \
  -H 'content-type: application/json' --data @"$work/bootstrap.json" \
  "$cp_url/v1/certificates" >"$work/bootstrap-answer.json"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
answer = json.load(open(f"{work}/bootstrap-answer.json"))
key = open(f"{work}/workload.key").read()
open(f"{work}/workload.pem", "w").write(answer["certificate_chain"] + key)
PY
"$cp_bin" admin-cert --data-dir "$cp_data" --out "$work/admin.pem" 2>/dev/null

# --- 1. testssl.sh -------------------------------------------------------------------------
say "testssl.sh against both listeners, in the background (about a minute)"
testssl_run() { # NAME PORT; run with & (exec: the job's pid is timeout's, which cleanup kills)
  exec timeout 300 testssl --quiet --color 0 --warnings off --add-ca "$bundle" \
    -p -E -P -S -f -U -h --jsonfile "$work/testssl-$1.json" "127.0.0.1:$2" \
    >"$work/testssl-$1.txt" 2>&1
}
# Both scans and the steps below run side by side: testssl.sh mostly waits on handshakes.
testssl_run inbound "$inbound_port" &
t1=$!
testssl_run control-plane "$cp_port" &
t2=$!
pids+=("$t1" "$t2")

# --- 2. client certificates on the inbound listener ----------------------------------------
# -k: an SVID names no host for curl to check. Nothing listens behind the sidecar: a request
# that passes the handshake gets its 502 (or a
# policy 403), which is all these checks need.
inbound=https://127.0.0.1:$inbound_port/
{
  curl -sk --max-time 5 -o /dev/null "$inbound" && echo "no-cert handshake: accepted" ||
    echo "no-cert handshake: refused (curl $?)"
  curl -sk --max-time 5 -o /dev/null -w 'mesh-cert handshake: %{http_version} %{http_code}\n' \
    --cert "$work/workload.pem" "$inbound" || echo "mesh-cert handshake: refused (curl $?)"
  curl -sk --max-time 5 -o /dev/null --tlsv1.2 --tls-max 1.2 --cert "$work/workload.pem" \
    "$inbound" && echo "mesh-cert TLS 1.2: accepted" || echo "mesh-cert TLS 1.2: refused (curl $?)"
} >"$work/inbound-mtls.txt"

# --- 3. schemathesis -----------------------------------------------------------------------
say "schemathesis against control-plane/openapi.yaml ($examples examples per operation, 3 runs)"
export SCHEMATHESIS_HOOKS=hooks PYTHONPATH=$here TRUSTMESH_SCAN_CSRS=$work/csrs PYTHONDONTWRITEBYTECODE=1
st_run() { # NAME ARGS...
  local name=$1
  shift
  # From the work folder: schemathesis keeps a .schemathesis folder where it runs.
  (cd "$work" && timeout 300 "$venv/bin/schemathesis" run "$root/control-plane/openapi.yaml" \
    --url "$cp_url" --tls-verify "$bundle" --checks all --max-examples "$examples" \
    --seed 20261201 --generation-database none --request-timeout 10 \
    --generation-with-security-parameters false \
    --no-color --report json --report-json-path "$work/st-$name.json" \
    "$@" >"$work/st-$name.txt" 2>&1) || true
}
# No client certificate: the bearer token is real, so what passes it reaches the signer. The
# mesh-certificate runs skip `ignored_auth`: schemathesis drops the Authorization header to see
# a 401, but cannot drop the TLS client certificate, which authenticates on its own.
st_run anonymous --header "Authorization: Bearer $(token api-gateway)"
st_run workload --request-cert "$work/workload.pem" --exclude-checks ignored_auth
st_run admin --request-cert "$work/admin.pem" --exclude-checks ignored_auth

testssl_status=0
wait "$t1" || testssl_status=$?
wait "$t2" || testssl_status=$?
[ "$testssl_status" -eq 124 ] && say "testssl.sh timed out"

# --- summary -------------------------------------------------------------------------------
python3 "$here/summarize.py" "$work"
