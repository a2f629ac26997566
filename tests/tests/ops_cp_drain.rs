//! Graceful drain of the control plane: on SIGTERM a snapshot long poll in flight is answered
//! at once with 304 (so the proxy polls again, elsewhere) instead of being cut, and the server
//! exits 0 well before the long poll's own wait would have ended.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use trustmesh_certs::{control_plane_identity, TrustBundle};
use trustmesh_e2e::control_plane::ControlPlane;
use trustmesh_e2e::mtls::{client_with_cert, issue, mesh_ca, mtls_get, trust_domain};
use trustmesh_e2e::policies::{spiffe_id, write_policies, ServiceEntry};
use trustmesh_e2e::ports::free_addr;
use trustmesh_e2e::workdir::WorkDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_long_polls_and_exits_zero() {
    let dir = WorkDir::new("cp-drain").expect("work dir");
    let policies = write_policies(
        &dir.path().join("policies"),
        &[ServiceEntry::new("a", "test", free_addr().unwrap())],
    )
    .expect("policies");
    let mut cp = ControlPlane::start(dir.path(), &policies)
        .await
        .expect("control plane starts");
    let ca = mesh_ca(&cp).expect("CA");
    let id = spiffe_id("test", "a");
    let (cert, key) = issue(&ca, &id, Duration::from_secs(600), SystemTime::now()).unwrap();
    let bundle = TrustBundle::from_pem(&cp.trust_bundle_pem().unwrap()).unwrap();
    let cp_id = control_plane_identity(&trust_domain().unwrap());
    let mut tls = (*client_with_cert(&bundle, &cert, &key, cp_id.as_str()).unwrap()).clone();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tls = std::sync::Arc::new(tls);

    let first = mtls_get(tls.clone(), cp.addr(), "localhost", "/v1/snapshot")
        .await
        .expect("first snapshot");
    assert_eq!(first.status, 200, "{}", first.text());
    let version = first.json().unwrap()["version"]
        .as_str()
        .expect("version")
        .to_string();
    let path = format!("/v1/snapshot?version={version}&wait=60s");
    let addr = cp.addr();
    let poll = tokio::spawn(async move { mtls_get(tls, addr, "localhost", &path).await });
    // Let the long poll reach its wait.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!poll.is_finished(), "the long poll should be waiting");

    let pid = cp.process().pid().expect("running");
    let start = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let resp = poll
        .await
        .unwrap()
        .expect("the long poll is answered, not cut");
    assert_eq!(resp.status, 304, "{}", resp.text());
    let status = cp
        .process()
        .wait_exit(Duration::from_secs(10))
        .expect("exits");
    assert!(status.success(), "exit {status}\n{}", cp.process().tail());
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "draining took {:?}",
        start.elapsed()
    );
}
