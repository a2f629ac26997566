//! When B's app is down or slow, the caller gets a clear 502 or 504 instead of a hang or a
//! reset.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use trustmesh_e2e::client::http1_get;
use trustmesh_e2e::mesh::{Mesh, MeshOptions};
use trustmesh_e2e::ports::closed_addr;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_refused_gets_502() {
    let opts = MeshOptions {
        b_app: Some(closed_addr().expect("port")),
        ..MeshOptions::default()
    };
    let mesh = Mesh::start("refused", opts).await.expect("mesh starts");
    let resp = http1_get(mesh.a.outbound(), "b.test", "/anything", &[])
        .await
        .expect("A answers");
    assert_eq!(resp.status, 502, "body: {}", resp.text());
    assert!(
        !resp.body.is_empty(),
        "the 502 needs a short body that says why"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_gets_504() {
    let opts = MeshOptions {
        b_extra: vec!["--upstream-timeout".into(), "1s".into()],
        ..MeshOptions::default()
    };
    let mesh = Mesh::start("timeout", opts).await.expect("mesh starts");
    let started = Instant::now();
    // The app sleeps 5 s; B's sidecar gives up after 1 s.
    let resp = http1_get(mesh.a.outbound(), "b.test", "/sleep/5000", &[])
        .await
        .expect("A answers");
    let took = started.elapsed();
    assert_eq!(resp.status, 504, "body: {}", resp.text());
    assert!(
        !resp.body.is_empty(),
        "the 504 needs a short body that says why"
    );
    assert!(
        took < Duration::from_millis(4500),
        "the 504 should come at the 1 s upstream timeout, took {took:?}"
    );
    assert_eq!(
        mesh.app_b.request_count(),
        1,
        "the request did reach the slow app"
    );
}
