//! An mTLS client as a mesh workload would be one, from inside a namespace: `curl` with the
//! admin identity's certificate (any mesh certificate passes B's handshake), so that the test
//! reaches B's inbound through B's interception on a port of its choosing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::topology::Topology;

/// `trustmesh admin-cert` for the control plane's `data` folder, written into `dir`.
pub fn admin_cert(cp_bin: &str, data: &Path, dir: &Path) -> PathBuf {
    let pem = dir.join("admin.pem");
    let out = Command::new(cp_bin)
        .arg("admin-cert")
        .arg("--data-dir")
        .arg(data)
        .arg("--out")
        .arg(&pem)
        .output()
        .unwrap();
    assert!(out.status.success(), "admin-cert: {out:?}");
    pem
}

/// The status of HTTP/1.1 `GET url` over mTLS with `cert` from inside `pod` (the server's
/// certificate names a SPIFFE ID, not the address, so it is not checked: `-k`).
fn mtls_status(topo: &Topology, pod: &str, cert: &Path, url: &str) -> u16 {
    let cert = cert.to_str().unwrap();
    let args = [
        "-sk",
        "--http1.1",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--cert",
        cert,
        url,
    ];
    let out = topo.run(pod, "curl", &args).unwrap();
    let code = String::from_utf8_lossy(&out.stdout);
    code.trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl {url}: {out:?}"))
}

/// Over mTLS from the outsider's namespace: `GET /mtls-PORT` on each `declared` port of `ip`
/// answers 200, on each `undeclared` one 403.
pub fn only_declared_ports(
    topo: &Topology,
    cert: &Path,
    ip: &str,
    declared: &[u16],
    undeclared: &[u16],
) {
    let cases = declared
        .iter()
        .map(|p| (*p, 200))
        .chain(undeclared.iter().map(|p| (*p, 403)));
    for (port, want) in cases {
        let url = format!("https://{ip}:{port}/mtls-{port}");
        assert_eq!(mtls_status(topo, "out", cert, &url), want, "{url}");
    }
}
