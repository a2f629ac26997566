//! The smaller holes of the security review, closed on the real control plane: a blocked
//! identity cannot read its snapshot, `/healthz` tells anyone only status and versions, the
//! injection webhook answers only its configured caller and uses `--data-dir`, and a
//! git-ignored policy file is never enforced behind a `git:` version.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::ClientConfig;
use trustmesh_certs::{control_plane_identity, TrustBundle};
use trustmesh_e2e::client::Resp;
use trustmesh_e2e::control_plane::{run_cli, ControlPlane};
use trustmesh_e2e::mtls::{client_with_cert, issue, mesh_ca, mtls_get, trust_domain};
use trustmesh_e2e::policies::{spiffe_id, write_policies, ServiceEntry};
use trustmesh_e2e::workdir::WorkDir;

const NS: &str = "hardening";

/// A control plane on a fresh work folder whose registry has service `a`.
async fn control_plane(work: &WorkDir) -> ControlPlane {
    let policies = work.path().join("policies");
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    write_policies(&policies, &[ServiceEntry::new("a", NS, unused)]).unwrap();
    ControlPlane::start(work.path(), &policies).await.unwrap()
}

/// An HTTP/1.1 mTLS client of the control plane presenting a mesh certificate for `id`.
fn client_as(cp: &ControlPlane, id: &str) -> Arc<ClientConfig> {
    let bundle = TrustBundle::from_pem(&cp.trust_bundle_pem().unwrap()).unwrap();
    let (cert, key) = issue(
        &mesh_ca(cp).unwrap(),
        id,
        Duration::from_secs(600),
        SystemTime::now(),
    )
    .unwrap();
    let cp_id = control_plane_identity(&trust_domain().unwrap());
    let mut tls = (*client_with_cert(&bundle, &cert, &key, cp_id.as_str()).unwrap()).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(tls)
}

fn code(r: &Resp) -> String {
    r.json().map(|v| v["error"].to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_identity_gets_403_on_the_snapshot_even_in_a_long_poll() {
    let work = WorkDir::new("hardening-snapshot").unwrap();
    let cp = control_plane(&work).await;
    let id_a = spiffe_id(NS, "a");
    let as_a = client_as(&cp, &id_a);
    let first = mtls_get(as_a.clone(), cp.addr(), "localhost", "/v1/snapshot?wait=0s")
        .await
        .unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    let version = first.json().unwrap()["version"]
        .as_str()
        .unwrap()
        .replace('+', "%2B");

    // A long poll with the version in force, held while the identity is blocked.
    let poll = tokio::spawn({
        let (tls, addr) = (as_a.clone(), cp.addr());
        let path = format!("/v1/snapshot?version={version}&wait=20s");
        async move { mtls_get(tls, addr, "localhost", &path).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let data = cp.data_dir().display().to_string();
    let out = run_cli(&["identity", "block", &id_a, "--data-dir", &data])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let held = poll.await.unwrap().unwrap();
    assert_eq!(held.status, 403, "the long poll answered {}", held.text());
    assert_eq!(code(&held), "\"identity_blocked\"");

    let again = mtls_get(as_a, cp.addr(), "localhost", "/v1/snapshot?wait=0s")
        .await
        .unwrap();
    assert_eq!(again.status, 403, "{}", again.text());
    assert_eq!(code(&again), "\"identity_blocked\"");
    // Another identity still reads its snapshot.
    let other = client_as(&cp, &spiffe_id(NS, "other"));
    let ok = mtls_get(other, cp.addr(), "localhost", "/v1/snapshot?wait=0s")
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
}
