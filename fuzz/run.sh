#!/usr/bin/env bash
# Builds every fuzz target (cargo-fuzz, libFuzzer, on the stable toolchain) and runs each one
# for a bounded time, starting from its checked-in seeds in corpus/<target>/. Exits non-zero
# if any target crashes, after running them all; a crash input lands in
# artifacts/<target>/ and its path is printed.
#
#   fuzz/run.sh                       # every target, FUZZ_SECONDS (default 8) each
#   FUZZ_SECONDS=180 fuzz/run.sh csr_sign k8s_jwt
#
# Sanitizer: none (`-s none`). The code under test forbids `unsafe`, so AddressSanitizer would
# only slow the search down; libFuzzer's coverage guidance and Rust's own checks (debug
# assertions and overflow checks are on) find the panics and broken properties.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_INCREMENTAL=0
export CARGO_TERM_COLOR=never
# cargo-fuzz asks rustc for flags it treats as unstable on some versions; this lets the
# machine's one (stable) toolchain take them.
export RUSTC_BOOTSTRAP=1
seconds="${FUZZ_SECONDS:-8}"

if ! command -v c++ >/dev/null 2>&1; then
  # libfuzzer-sys compiles libFuzzer (C++).
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
fi
if ! command -v openssl >/dev/null 2>&1; then
  # The CSR seeds are made at run time (below).
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssl
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --version 0.13.2
fi

echo "fuzz: building the targets"
cargo fuzz build -s none

if [ "$#" -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

# The CSR seeds are made here, each with a fresh key that is thrown away at once, so that no
# key material is checked in: the proven identity, another one, another trust domain; PEM and DER.
csr_seeds="$(mktemp -d)"
trap 'rm -rf "$csr_seeds"' EXIT
for seed in api:cluster.local/ns/prod/sa/api other:cluster.local/ns/prod/sa/other \
  foreign-td:example.org/ns/prod/sa/api; do
  name=${seed%%:*}
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
    -subj "/" -addext "subjectAltName=URI:spiffe://${seed#*:}" \
    -out "$csr_seeds/$name.pem" 2>/dev/null
  openssl req -in "$csr_seeds/$name.pem" -outform DER -out "$csr_seeds/$name.der"
done

failed=()
for target in "${targets[@]}"; do
  seeds="corpus/$target"
  [ "$target" = csr_sign ] && seeds="$csr_seeds"
  # New inputs go to a scratch folder, so a run never grows the checked-in seeds.
  scratch="$(mktemp -d)"
  echo "fuzz: $target for ${seconds}s"
  if cargo fuzz run -s none "$target" "$scratch" "$seeds" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    >"$scratch.log" 2>&1; then
    grep -E '^(stat::(number_of_executed_units|average_exec_per_sec|new_units_added)|#[0-9]+ +DONE)' \
      "$scratch.log" || true
  else
    tail -n 60 "$scratch.log" >&2
    failed+=("$target")
  fi
  rm -rf "$scratch" "$scratch.log"
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: crashes in ${failed[*]}; the inputs are under fuzz/artifacts/" >&2
  exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash"
