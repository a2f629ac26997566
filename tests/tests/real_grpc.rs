//! The real-client suite, gRPC (grpcio client and grpcio server, stubs generated at test time
//! from `tests/real/echo.proto`): unary and server-streaming calls through A → B whose
//! deadline is longer than both sidecars' `--upstream-timeout` (the call's `grpc-timeout`
//! decides), and a call to an app that is down, which the client sees as `UNAVAILABLE`.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::Value;
use trustmesh_e2e::mesh::MeshOptions;
use trustmesh_e2e::policies::spiffe_id;
use trustmesh_e2e::real::{text, RealMesh, Server, B_HOST};

/// One grpcio call through A's outbound listener; the client's JSON line.
async fn call(real: &RealMesh, args: &[&str]) -> Value {
    let target = real.outbound().to_string();
    let mut all = vec!["client", "--target", &target, "--authority", B_HOST];
    all.extend_from_slice(args);
    let out = real.client("grpc_echo.py", &all).await.unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
}

fn short_upstream_timeout() -> MeshOptions {
    let flags = vec!["--upstream-timeout".to_string(), "1s".to_string()];
    MeshOptions {
        a_extra: flags.clone(),
        b_extra: flags,
        ..MeshOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_with_a_long_deadline_outlive_the_upstream_timeout() {
    let server = Server {
        args: vec!["grpc_echo.py", "server"],
        protocol: Some("grpc"),
        proto: Some("echo.proto"),
    };
    let real = RealMesh::start("real-grpc", server, short_upstream_timeout())
        .await
        .expect("mesh and server start");

    // Unary: the answer takes 2.5 s, past the 1 s upstream timeout, within the 30 s deadline.
    let got = call(&real, &["--call", "unary", "--sleep-ms", "2500"]).await;
    assert_eq!(got["code"], "OK", "{got}");
    let peer = spiffe_id("test", "a");
    assert_eq!(got["replies"][0], format!("hello|{peer}"), "{got}");

    // Server streaming: each of three replies 1.5 s apart.
    let got = call(
        &real,
        &["--call", "stream", "--count", "3", "--sleep-ms", "1500"],
    )
    .await;
    assert_eq!(got["code"], "OK", "{got}");
    assert_eq!(
        got["replies"],
        serde_json::json!(["hello-0", "hello-1", "hello-2"]),
        "{got}"
    );

    // A deadline shorter than the answer ends the call as DEADLINE_EXCEEDED.
    let got = call(
        &real,
        &["--call", "unary", "--sleep-ms", "3000", "--deadline", "0.5"],
    )
    .await;
    assert_eq!(got["code"], "DEADLINE_EXCEEDED", "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_to_an_app_that_is_down_is_unavailable() {
    let server = Server {
        args: vec![],
        protocol: Some("grpc"),
        proto: Some("echo.proto"),
    };
    let real = RealMesh::start("real-grpc-down", server, MeshOptions::default())
        .await
        .expect("mesh starts");
    for call_kind in ["unary", "stream"] {
        let got = call(&real, &["--call", call_kind]).await;
        assert_eq!(got["code"], "UNAVAILABLE", "{call_kind}: {got}");
        assert_eq!(got["replies"], serde_json::json!([]), "{call_kind}: {got}");
    }
}
