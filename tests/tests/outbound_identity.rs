//! A's outbound checks that the server at a service's endpoint is the identity the registry
//! names, so a workload that got a valid mesh certificate for another identity cannot
//! impersonate the service.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use trustmesh_e2e::client::http1_get;
use trustmesh_e2e::mesh::{Mesh, MeshOptions, NAMESPACE};
use trustmesh_e2e::policies::spiffe_id;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_refuses_peer_with_wrong_identity() {
    // The registry says service b is .../sa/b; the sidecar at b's endpoint bootstrapped (with
    // a genuine token and certificate) as .../sa/impostor.
    let opts = MeshOptions {
        b_identity: Some(spiffe_id(NAMESPACE, "impostor")),
        ..MeshOptions::default()
    };
    let mesh = Mesh::start("impostor", opts).await.expect("mesh starts");
    let resp = http1_get(mesh.a.outbound(), "b.test", "/secret", &[])
        .await
        .expect("A answers");
    assert_eq!(resp.status, 502, "body: {}", resp.text());
    let body = resp.text().to_lowercase();
    assert!(
        body.contains("identity"),
        "the 502 body should say the peer's identity did not match: {body:?}"
    );
    assert_eq!(
        mesh.app_b.request_count(),
        0,
        "nothing may reach the impostor's app: {:?}",
        mesh.app_b.requests()
    );
}
