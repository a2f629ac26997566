//! B's inbound listener accepts only clients with a current certificate from the mesh CA.
//! Each test also makes the same request with a good certificate, so it cannot pass by the
//! listener refusing everything.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, SystemTime};

use serde_json::json;
use trustmesh_certs::TrustBundle;
use trustmesh_e2e::mesh::{Mesh, NAMESPACE};
use trustmesh_e2e::mtls::{
    client_with_cert, client_without_cert, foreign_ca, issue, knock, mesh_ca, mtls_get, Knock,
};
use trustmesh_e2e::policies::spiffe_id;

const HOUR: Duration = Duration::from_secs(3600);

fn tester() -> String {
    spiffe_id(NAMESPACE, "tester")
}

/// The control case: a client with a fresh certificate from the mesh CA gets through.
async fn good_client_gets_through(mesh: &Mesh, bundle: &TrustBundle) {
    let ca = mesh_ca(&mesh.cp).expect("mesh CA");
    let (cert, key) = issue(&ca, &tester(), HOUR, SystemTime::now()).expect("cert");
    let config = client_with_cert(bundle, &cert, &key, mesh.b.identity()).expect("config");
    let knocked = knock(config.clone(), mesh.b.inbound())
        .await
        .expect("knock");
    assert_eq!(
        knocked,
        Knock::Accepted,
        "a good mesh certificate must be accepted"
    );
    let resp = mtls_get(config, mesh.b.inbound(), "b.test", "/control")
        .await
        .expect("a client with a good mesh certificate gets through");
    assert_eq!(resp.status, 200, "body: {}", resp.text());
    let seen = resp.json().expect("JSON");
    assert_eq!(seen["path"], "/control");
    assert_eq!(seen["peer_identity"], json!([tester()]));
}

fn bundle(mesh: &Mesh) -> TrustBundle {
    TrustBundle::from_pem(&mesh.cp.trust_bundle_pem().expect("bundle")).expect("bundle parses")
}

/// The TLS handshake or the first read fails; then a full request fails as well.
async fn assert_refused(mesh: &Mesh, config: std::sync::Arc<rustls::ClientConfig>, what: &str) {
    match knock(config.clone(), mesh.b.inbound())
        .await
        .expect("knock")
    {
        Knock::Refused(reason) => eprintln!("{what}: refused ({reason})"),
        Knock::Accepted => panic!("{what}: B's inbound accepted the connection"),
    }
    let result = mtls_get(config, mesh.b.inbound(), "b.test", "/refused").await;
    assert!(result.is_err(), "{what}: a request got {result:?}");
}

fn assert_only_control_reached_app(mesh: &Mesh) {
    let paths: Vec<_> = mesh
        .app_b
        .requests()
        .iter()
        .map(|r| r["path"].clone())
        .collect();
    assert_eq!(
        paths,
        vec![json!("/control")],
        "only the control request may reach B's app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_refuses_client_without_certificate() {
    let mesh = Mesh::a_to_b("no-cert").await.expect("mesh starts");
    let bundle = bundle(&mesh);
    let config = client_without_cert(&bundle, mesh.b.identity()).expect("config");
    assert_refused(&mesh, config, "a client without a certificate").await;
    good_client_gets_through(&mesh, &bundle).await;
    assert_only_control_reached_app(&mesh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_refuses_certificate_from_another_ca() {
    let mesh = Mesh::a_to_b("other-ca").await.expect("mesh starts");
    let bundle = bundle(&mesh);
    let other = foreign_ca().expect("foreign CA");
    // Same trust domain and identity shape: only the signer differs.
    let (cert, key) = issue(&other, &tester(), HOUR, SystemTime::now()).expect("cert");
    let config = client_with_cert(&bundle, &cert, &key, mesh.b.identity()).expect("config");
    assert_refused(&mesh, config, "a certificate from another CA").await;
    good_client_gets_through(&mesh, &bundle).await;
    assert_only_control_reached_app(&mesh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_refuses_expired_certificate() {
    let mesh = Mesh::a_to_b("expired").await.expect("mesh starts");
    let bundle = bundle(&mesh);
    let ca = mesh_ca(&mesh.cp).expect("mesh CA");
    // Issued two hours ago for one hour: expired an hour ago, signed by the real mesh CA.
    let two_hours_ago = SystemTime::now() - 2 * HOUR;
    let (cert, key) = issue(&ca, &tester(), HOUR, two_hours_ago).expect("cert");
    assert!(
        cert.not_after < SystemTime::now(),
        "the certificate should be expired"
    );
    let config = client_with_cert(&bundle, &cert, &key, mesh.b.identity()).expect("config");
    assert_refused(&mesh, config, "an expired certificate").await;
    good_client_gets_through(&mesh, &bundle).await;
    assert_only_control_reached_app(&mesh);
}
