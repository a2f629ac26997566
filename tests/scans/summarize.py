"""Summary and verdict of tests/scans/run.sh: reads the work folder it is given (testssl.sh JSON,
the inbound client-certificate checks, schemathesis JSON reports), prints the figures per
listener and per run, and exits 1 on any finding not accepted below.

What the mesh must show on both TLS listeners: TLS 1.3 and nothing older, only the three
TLS 1.3 AEAD suites, no vulnerability. testssl.sh findings of severity LOW or above are
findings unless ACCEPTED names them for that listener, with the reason.
"""

import json
import pathlib
import sys

LISTENERS = ("inbound", "control-plane")
PROTOCOLS = ("SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3")
STRONG_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
SEVERE = {"LOW", "MEDIUM", "HIGH", "CRITICAL"}

_SHORT_LIVED = (
    "short-lived by design: workload X.509-SVIDs live --cert-ttl (1h), the control plane's "
    "serving certificate 24h, both renewed at half-life"
)
_NO_REVOCATION = (
    "no CRL or OCSP by design: short lifetimes, and `trustmesh identity block` pushed to every "
    "sidecar within a second, take revocation's place"
)
ACCEPTED = {
    "inbound": {
        "cert_expirationStatus": _SHORT_LIVED,
        "cert_notAfter": _SHORT_LIVED,
        "cert_revocation": _NO_REVOCATION,
        "cert_trust": "an X.509-SVID names a SPIFFE ID (URI SAN), no host; peers verify that ID",
        "DNS_CAArecord": "a loopback address: no DNS",
    },
    "control-plane": {
        "cert_expirationStatus": _SHORT_LIVED,
        "cert_notAfter": _SHORT_LIVED,
        "cert_revocation": _NO_REVOCATION,
        "DNS_CAArecord": "a loopback address: no DNS",
        "HSTS": (
            "an API for sidecars and tools, not a site: there is no plain-HTTP listener to "
            "downgrade to, and browsers ignore HSTS on IP addresses"
        ),
    },
}


VULNS = {
    "heartbleed", "CCS", "ticketbleed", "ROBOT", "secure_renego", "secure_client_renego",
    "CRIME_TLS", "BREACH", "POODLE_SSL", "fallback_SCSV", "SWEET32", "FREAK", "DROWN",
    "LOGJAM", "BEAST", "LUCKY13", "RC4",
}


def testssl(work, name):
    """Prints one listener's figures; returns its unaccepted findings."""
    path = work / f"testssl-{name}.json"
    if not path.is_file():
        return [f"{name}: testssl.sh wrote no report"]
    entries = json.loads(path.read_text())
    by_id = {e["id"]: e for e in entries}
    findings = []
    offered = [p for p in PROTOCOLS if by_id.get(p, {}).get("finding", "").startswith("offered")]
    if offered != ["TLS1_3"]:
        findings.append(f"{name}: protocols offered {offered}, expected TLS1_3 alone")
    # cipher-<protocol>_x<hex>: the IANA name is the finding's last word.
    suites = sorted({e["finding"].split()[-1] for e in entries if e["id"].startswith("cipher-")})
    weak = [s for s in suites if s not in STRONG_SUITES]
    if not suites:
        findings.append(f"{name}: testssl.sh listed no cipher suite")
    if weak:
        findings.append(f"{name}: suites beyond the TLS 1.3 AEADs: {weak}")
    accepted = []
    for e in entries:
        if e["severity"] not in SEVERE:
            continue
        reason = ACCEPTED[name].get(e["id"])
        if reason:
            accepted.append(f"{e['severity']} {e['id']} ({e['finding']}): {reason}")
        else:
            findings.append(f"{name}: {e['severity']} {e['id']}: {e['finding']}")

    def value(key):
        return by_id.get(key, {}).get("finding", "-")

    vulns = [e for e in entries if e["id"] in VULNS]
    clean = [e for e in vulns if e["severity"] in ("OK", "INFO")]
    print(f"testssl.sh {name}:")
    print(f"  protocols offered: {', '.join(offered) or 'none'}")
    print(f"  ALPN: {value('ALPN_HTTP2')} {value('ALPN')}")
    print(f"  suites: {', '.join(suites) or 'none'}")
    print(f"  groups: {value('PFS_ECDHE_curves')}; chain of trust: {value('cert_chain_of_trust')}")
    print(f"  vulnerability checks: {len(clean)} of {len(vulns)} not vulnerable")
    for a in accepted:
        print(f"  accepted: {a}")
    return findings


def inbound_mtls(work):
    """The curl checks of client certificates on the inbound listener."""
    path = work / "inbound-mtls.txt"
    lines = path.read_text().splitlines() if path.is_file() else []
    print("inbound client certificates (curl):")
    for line in lines:
        print(f"  {line}")
    want = {
        "no-cert handshake": "refused",
        "mesh-cert handshake": "2 ",
        "mesh-cert TLS 1.2": "refused",
    }
    findings = []
    for check, expected in want.items():
        got = next((l.split(": ", 1)[1] for l in lines if l.startswith(check + ":")), None)
        if got is None or not got.startswith(expected):
            findings.append(f"inbound: {check}: {got}, expected {expected.strip() or expected}")
    return findings


def schemathesis(work, name):
    """Prints one run's figures; returns its failures and errors."""
    path = work / f"st-{name}.json"
    if not path.is_file():
        return [f"schemathesis {name}: no report (see st-{name}.txt)"]
    r = json.loads(path.read_text())
    ops = r["operations"]
    cases = r["test_cases"]
    failures = r.get("failures") or []
    errors = r.get("errors") or []
    warnings = {k: v for k, v in (r.get("warnings") or {}).items() if v}
    print(
        f"schemathesis {name}: {ops['tested']}/{ops['total']} operations, "
        f"{cases['generated']} test cases, {cases['unique_failures']} unique failures, "
        f"{cases['errored']} errored"
    )
    for f in failures:
        print(f"  {f['code']} {f['title']}: {f['count']} ({', '.join(f['operations'])})")
    for e in errors:
        print(f"  error: {json.dumps(e)[:300]}")
    for k, v in warnings.items():
        print(f"  warning {k}: {', '.join(map(str, v))}")
    out = [
        f"schemathesis {name}: {f['code']} {f['title']} x{f['count']} in {', '.join(f['operations'])}"
        for f in failures
    ]
    out += [f"schemathesis {name}: error {json.dumps(e)[:200]}" for e in errors]
    if not r.get("complete", False):
        out.append(f"schemathesis {name}: run incomplete ({r.get('stop_reason')})")
    return out


def main():
    work = pathlib.Path(sys.argv[1])
    findings = []
    for name in LISTENERS:
        findings += testssl(work, name)
    findings += inbound_mtls(work)
    for name in ("anonymous", "workload", "admin"):
        findings += schemathesis(work, name)
    print()
    if findings:
        print(f"scans: {len(findings)} finding(s):")
        for f in findings:
            print(f"  - {f}")
        sys.exit(1)
    print("scans: no findings")


if __name__ == "__main__":
    main()
