"""Schemathesis hooks for the trustmesh control-plane scan (tests/scans/run.sh).

The `pkcs10-pem` format of `POST /v1/certificates` cannot be drawn from a regular expression:
schema-valid requests get real PEM CSRs made by run.sh with openssl (one for the identity of
the client certificate in use, one for another identity, one with two URI SANs), so the
positive cases reach the signer and the identity checks, not only the PEM parser.
"""

import os
import re
import pathlib

import schemathesis
from hypothesis import strategies as st

_csr_dir = pathlib.Path(os.environ["TRUSTMESH_SCAN_CSRS"])
_csrs = sorted(p.read_text() for p in _csr_dir.glob("*.csr"))
if not _csrs:
    raise RuntimeError(f"no *.csr in {_csr_dir}")

schemathesis.openapi.format("pkcs10-pem", st.sampled_from(_csrs))


# A snapshot poll whose `version` is the one in force is held for `wait` (default 30s, at most
# 120s): by design, and longer than a request timeout. Polls that name a version are held for
# 1s at most here, so such a poll ends in its 304 instead of a client timeout.
_WAIT = re.compile(r"^(0|[0-9]{1,9}(ms|s|m|h))$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}


def _wait_ms(value):
    m = _WAIT.match(value)
    if not m:
        return None
    if value == "0":
        return 0
    return int(value[: -len(m.group(2))]) * _UNIT_MS[m.group(2)]


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path != "/v1/snapshot" or not isinstance(case.query, dict):
        return
    if "version" not in case.query:
        return
    wait = case.query.get("wait")
    if wait is None or (isinstance(wait, str) and (_wait_ms(wait) or 0) > 1000):
        case.query["wait"] = "1s"
