//! Graceful drain: SIGTERM makes a sidecar report not ready and stop accepting, while the
//! request already in flight (a slow one, over HTTP/1.1 into A and HTTP/2 between the
//! sidecars) finishes with 200; then the process exits 0. Past `--drain-timeout` it exits 0
//! anyway.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use trustmesh_e2e::client::{admin_get, http1_get};
use trustmesh_e2e::mesh::{Mesh, MeshOptions};
use trustmesh_e2e::proxy::Proxy;

fn sigterm(proxy: &mut Proxy) {
    let pid = proxy.process().pid().expect("running");
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill(1)");
    assert!(ok.success());
}

/// Polls (bounded) until the sidecar has exited.
async fn exit_status(proxy: &mut Proxy, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = proxy.process().try_status().expect("poll") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "still running {within:?} after SIGTERM\n{}",
            proxy.process().tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until B's app has received `n` requests.
async fn app_saw(mesh: &Mesh, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while mesh.app_b.request_count() < n {
        assert!(Instant::now() < deadline, "B's app never saw the request");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let mut mesh = Mesh::a_to_b("drain").await.expect("mesh starts");
    let outbound = mesh.a.outbound();
    let slow = tokio::spawn(async move { http1_get(outbound, "b.test", "/sleep/2000", &[]).await });
    app_saw(&mesh, 1).await;

    // Both sidecars on the path are told to stop while the request is in flight.
    sigterm(&mut mesh.b);
    sigterm(&mut mesh.a);

    let ready = admin_get(mesh.b.admin(), "/ready").await.expect("/ready");
    assert_eq!(ready.status, 503, "/ready while draining: {}", ready.text());
    assert!(ready.text().contains("draining"), "{}", ready.text());
    // No new connections: the listeners are closed.
    let deadline = Instant::now() + Duration::from_secs(2);
    while tokio::net::TcpStream::connect(mesh.b.inbound())
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "B still accepts while draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let resp = slow.await.expect("task").expect("the slow request");
    assert_eq!(resp.status, 200, "in-flight request: {}", resp.text());

    for proxy in [&mut mesh.a, &mut mesh.b] {
        let status = exit_status(proxy, Duration::from_secs(10)).await;
        assert!(
            status.success(),
            "exit {status}\n{}",
            proxy.process().tail()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_bounds_the_wait() {
    let opts = MeshOptions {
        b_extra: vec!["--drain-timeout".into(), "500ms".into()],
        ..MeshOptions::default()
    };
    let mut mesh = Mesh::start("drain-timeout", opts)
        .await
        .expect("mesh starts");
    let outbound = mesh.a.outbound();
    let slow =
        tokio::spawn(async move { http1_get(outbound, "b.test", "/sleep/10000", &[]).await });
    app_saw(&mesh, 1).await;
    let start = Instant::now();
    sigterm(&mut mesh.b);
    let status = exit_status(&mut mesh.b, Duration::from_secs(5)).await;
    assert!(
        status.success(),
        "exit {status}\n{}",
        mesh.b.process().tail()
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "B waited past its drain timeout"
    );
    // The request that outlived the drain fails at A (B went away), as it must.
    let resp = slow.await.expect("task");
    assert!(
        resp.as_ref().map_or(true, |r| r.status != 200),
        "a request cut by the drain timeout cannot have succeeded"
    );
}
