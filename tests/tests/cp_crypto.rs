//! The control plane's TLS runs on aws-lc-rs while the sidecar runs on ring (the smaller
//! library, for its memory): a client that offers only the hybrid post-quantum group
//! X25519MLKEM768, which ring does not have, completes its handshake with the control plane.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use rustls::ClientConfig;
use trustmesh_certs::TrustBundle;
use trustmesh_e2e::control_plane::ControlPlane;
use trustmesh_e2e::policies::{write_policies, ServiceEntry};
use trustmesh_e2e::workdir::WorkDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_agrees_x25519mlkem768_with_a_client_that_offers_only_it() {
    let work = WorkDir::new("cp-crypto-mlkem").unwrap();
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    let policies = write_policies(
        &work.path().join("policies"),
        &[ServiceEntry::new("a", "crypto", unused)],
    )
    .unwrap();
    let cp = ControlPlane::start(work.path(), &policies).await.unwrap();

    let bundle = TrustBundle::from_pem(&cp.trust_bundle_pem().unwrap()).unwrap();
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768];
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(bundle.root_store())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];

    let req = Request::get("/healthz")
        .header(
            http::header::HOST,
            format!("127.0.0.1:{}", cp.addr().port()),
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = trustmesh_e2e::https::request(Arc::new(config), cp.addr(), req)
        .await
        .expect("a handshake offering only X25519MLKEM768");
    assert_eq!(resp.status, 200, "{}", resp.text());
}
