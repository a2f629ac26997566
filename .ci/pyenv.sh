#!/bin/bash
# The Python clients and servers the real-client tests drive (tests/real/ and tests/tests/real_*.rs), in a virtualenv
# at $TRUSTMESH_PYENV (default target/pyenv). Idempotent: an existing venv with everything in it
# is left alone. Prints the venv's python.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${TRUSTMESH_PYENV:-$root/target/pyenv}
pkgs=(grpcio==1.76.0 grpcio-tools==1.76.0 websockets==15.0.1 requests==2.32.5 aiohttp==3.13.2)
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -c 'import grpc, grpc_tools, websockets, requests, aiohttp' 2>/dev/null; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check "${pkgs[@]}" >&2
fi
echo "$venv/bin/python"
