//! A → B over mutual TLS: the request crosses, B's app sees A's verified identity (and never a
//! forged one), and every form of the registry name reaches B.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use http::Request;
use serde_json::json;
use trustmesh_e2e::app::PEER_IDENTITY_HEADER;
use trustmesh_e2e::body::GeneratedBody;
use trustmesh_e2e::client::{collect, connect, h2c_get, http1_get, send_http1_on};
use trustmesh_e2e::mesh::{Mesh, NAMESPACE};
use trustmesh_e2e::policies::spiffe_id;

const FORGED: &str = "spiffe://cluster.local/ns/test/sa/forged";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_request_crosses_mtls_between_sidecars() {
    let mesh = Mesh::a_to_b("http1").await.expect("mesh starts");
    let id_a = spiffe_id(NAMESPACE, "a");

    let resp = http1_get(
        mesh.a.outbound(),
        "b.test",
        "/hello/world?x=1",
        &[(PEER_IDENTITY_HEADER, FORGED)],
    )
    .await
    .expect("GET through A");
    assert_eq!(resp.status, 200, "body: {}", resp.text());
    let seen = resp.json().expect("B's app answered JSON");
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/hello/world?x=1");
    assert_eq!(
        seen["peer_identity"],
        json!([id_a]),
        "B's app must see exactly A's verified identity, not the forged header: {seen}"
    );

    // A body crosses too.
    let req = Request::post("/upload")
        .header(http::header::HOST, "b.test")
        .body(GeneratedBody::new(12_345))
        .expect("request");
    let resp = send_http1_on(connect(mesh.a.outbound()).await.expect("connect"), req)
        .await
        .expect("POST through A");
    let resp = collect(resp).await.expect("response");
    assert_eq!(resp.status, 200, "body: {}", resp.text());
    let seen = resp.json().expect("JSON");
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body_bytes"], 12_345);
    assert_eq!(seen["peer_identity"], json!([id_a]));

    assert_eq!(mesh.app_b.request_count(), 2, "{:?}", mesh.app_b.requests());
    assert_eq!(
        mesh.app_a.request_count(),
        0,
        "nothing should loop back to A's app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_request_crosses_mtls_between_sidecars() {
    let mesh = Mesh::a_to_b("h2c").await.expect("mesh starts");
    let id_a = spiffe_id(NAMESPACE, "a");

    for i in 0..3 {
        let path = format!("/h2/{i}?y=2");
        let resp = h2c_get(
            mesh.a.outbound(),
            "b.test",
            &path,
            &[(PEER_IDENTITY_HEADER, FORGED)],
        )
        .await
        .expect("h2c GET through A");
        assert_eq!(resp.status, 200, "body: {}", resp.text());
        let seen = resp.json().expect("B's app answered JSON");
        assert_eq!(seen["method"], "GET");
        assert_eq!(seen["path"], path.as_str());
        assert_eq!(
            seen["peer_identity"],
            json!([id_a]),
            "B's app must see exactly A's verified identity: {seen}"
        );
    }
    assert_eq!(mesh.app_b.request_count(), 3, "{:?}", mesh.app_b.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_forms_resolve() {
    let mesh = Mesh::a_to_b("hosts").await.expect("mesh starts");
    let hosts = [
        "b",
        "b.test",
        "b.test.svc.cluster.local",
        "b:80",
        "b.test:80",
        "b.test.svc.cluster.local:80",
    ];
    for host in hosts {
        let resp = http1_get(mesh.a.outbound(), host, "/hosts", &[])
            .await
            .unwrap_or_else(|e| panic!("GET with Host {host}: {e:#}"));
        assert_eq!(resp.status, 200, "Host {host}: {}", resp.text());
        let seen = resp.json().expect("JSON");
        assert_eq!(seen["path"], "/hosts", "Host {host}");
    }
    assert_eq!(mesh.app_b.request_count(), hosts.len());

    let resp = http1_get(mesh.a.outbound(), "nosuch.test", "/hosts", &[])
        .await
        .expect("GET with an unknown Host gets an answer");
    assert!(
        resp.status.is_client_error() || resp.status.is_server_error(),
        "an unknown Host must fail, got {}",
        resp.status
    );
    let body = resp.text().to_lowercase();
    assert!(
        body.contains("nosuch.test") && body.contains("registry"),
        "the body should name the host and say it is not in the registry: {body:?}"
    );
    assert_eq!(mesh.app_b.request_count(), hosts.len());
}
