//! The hop between sidecars follows the app's protocol: an HTTP/1.1 app's requests to a port
//! declared `http` ride pooled keep-alive HTTP/1.1 connections (ALPN `http/1.1`), one for a
//! client that sends one request at a time; h2 apps stay on HTTP/2; a pooled connection the
//! callee's sidecar closed while it was idle costs the app nothing.
//!
//! Which protocol was spoken is read from A's counters: `trustmesh_upstream_connections_total`
//! (every mTLS connection A made to a sidecar) and, of those,
//! `trustmesh_upstream_http1_connections_total`.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use http::Request;
use serde_json::json;
use trustmesh_e2e::body::GeneratedBody;
use trustmesh_e2e::client::{collect, connect, h2c_get, http1_get, send_http1_on};
use trustmesh_e2e::lifecycle::metric;
use trustmesh_e2e::mesh::{Mesh, MeshOptions, NAMESPACE};
use trustmesh_e2e::policies::spiffe_id;

const ALL: &str = "trustmesh_upstream_connections_total";
const HTTP1: &str = "trustmesh_upstream_http1_connections_total";

/// A's connections to sidecars so far: (all, HTTP/1.1).
async fn connects(mesh: &Mesh) -> (f64, f64) {
    let all = metric(mesh.a.admin(), ALL).await.unwrap();
    let http1 = metric(mesh.a.admin(), HTTP1).await.unwrap();
    (all, http1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_app_s_sequential_requests_share_one_http1_connection_between_sidecars() {
    let mesh = Mesh::a_to_b("hop-h1-reuse").await.expect("mesh starts");
    let id_a = spiffe_id(NAMESPACE, "a");
    for i in 0..20 {
        // Each on a new connection from the app: the hop's pool is what is re-used.
        let resp = http1_get(mesh.a.outbound(), "b.test", &format!("/seq/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
        let seen = resp.json().unwrap();
        assert_eq!(seen["path"], format!("/seq/{i}"));
        assert_eq!(seen["host"], "b.test");
        assert_eq!(seen["peer_identity"], json!([id_a]));
    }
    // A body crosses the HTTP/1.1 hop too, on the same connection.
    let req = Request::post("/upload")
        .header(http::header::HOST, "b.test")
        .body(GeneratedBody::new(100_000))
        .unwrap();
    let resp = send_http1_on(connect(mesh.a.outbound()).await.unwrap(), req)
        .await
        .unwrap();
    let resp = collect(resp).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json().unwrap()["body_bytes"], 100_000);
    assert_eq!(mesh.app_b.request_count(), 21);
    assert_eq!(
        connects(&mesh).await,
        (1.0, 1.0),
        "one HTTP/1.1 connection for all"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_apps_stay_on_http2_between_sidecars() {
    let mesh = Mesh::a_to_b("hop-h2-stays").await.expect("mesh starts");
    for i in 0..5 {
        let resp = h2c_get(mesh.a.outbound(), "b.test", &format!("/h2/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    assert_eq!(
        connects(&mesh).await,
        (1.0, 0.0),
        "one HTTP/2 connection, no HTTP/1.1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http1_app_to_a_port_declared_http2_takes_http2_between_sidecars() {
    let opts = MeshOptions {
        b_ports: vec![(80, "http2")],
        b_app_protocol: Some("http2"),
        ..MeshOptions::default()
    };
    let mesh = Mesh::start("hop-h1-to-h2", opts)
        .await
        .expect("mesh starts");
    let resp = http1_get(mesh.a.outbound(), "b.test", "/x", &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(resp.json().unwrap()["version"], "HTTP/2.0");
    assert_eq!(connects(&mesh).await, (1.0, 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pooled_http1_connection_the_callee_closed_while_idle_is_no_error() {
    // B closes an idle connection after 1 s; A (default --idle-timeout) would keep it 30 s.
    let opts = MeshOptions {
        b_extra: vec!["--idle-timeout".into(), "1s".into()],
        ..MeshOptions::default()
    };
    let mesh = Mesh::start("hop-h1-idle", opts).await.expect("mesh starts");
    let resp = http1_get(mesh.a.outbound(), "b.test", "/first", &[])
        .await
        .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(connects(&mesh).await, (1.0, 1.0));
    // Until B has closed it (no timing asserted: B's own gauge says when).
    let open = "trustmesh_connections_open{direction=\"inbound\"}";
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(mesh.b.admin(), open).await.unwrap() > 0.0 {
        assert!(
            Instant::now() < deadline,
            "B never closed the idle connection"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..3 {
        let resp = http1_get(mesh.a.outbound(), "b.test", &format!("/after/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    assert_eq!(
        connects(&mesh).await,
        (2.0, 2.0),
        "a new connection, then re-used"
    );
    assert_eq!(mesh.app_b.request_count(), 4);
}
