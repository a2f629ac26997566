//! Transparency (ARCHITECTURE "Transparency"): a keep-alive HTTP/1.1 connection from the app
//! lives as long as the app keeps it (the header timeout runs only while a head arrives), and a
//! slow head still gets `408`; a gRPC call's `grpc-timeout` is its deadline.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use trustmesh_e2e::client::{admin_get, h2c_get};
use trustmesh_e2e::mesh::{Mesh, MeshOptions, NAMESPACE};
use trustmesh_e2e::policies::spiffe_id;
use trustmesh_e2e::ports::ProxyPorts;
use trustmesh_e2e::proxy::Proxy;

/// Reads one response with a `content-length` body from `s`; returns its head and body, or
/// what arrived before the connection closed or 10 s passed.
async fn read_response(s: &mut TcpStream) -> (String, Vec<u8>) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if got.len() >= end + 4 + len {
                return (head, got[end + 4..end + 4 + len].to_vec());
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                return (
                    String::from_utf8_lossy(&got).to_ascii_lowercase(),
                    Vec::new(),
                )
            }
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_outlives_the_header_timeout() {
    let opts = MeshOptions {
        b_extra: vec!["--header-timeout".into(), "1s".into()],
        ..MeshOptions::default()
    };
    let mesh = Mesh::start("keep-alive", opts).await.expect("mesh starts");
    // A caller's sidecar with the same short header timeout, so both hops are held to it.
    let c = Proxy::start_with(
        &mesh.cp,
        "c",
        &spiffe_id(NAMESPACE, "c"),
        mesh.app_a.addr(),
        ProxyPorts::allocate().unwrap(),
        &["--header-timeout", "1s"],
    )
    .await
    .expect("C starts");

    // A pooling client: one connection, two requests, an idle pause longer than the header
    // timeout between them.
    let mut s = TcpStream::connect(c.outbound()).await.unwrap();
    let req = b"GET /first HTTP/1.1\r\nHost: b.test\r\n\r\n";
    s.write_all(req).await.unwrap();
    let (head, _) = read_response(&mut s).await;
    assert!(head.starts_with("http/1.1 200"), "first answer: {head:?}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let second = s
        .write_all(b"GET /second HTTP/1.1\r\nHost: b.test\r\n\r\n")
        .await;
    assert!(second.is_ok(), "the kept-alive connection was closed");
    let (head, body) = read_response(&mut s).await;
    assert!(
        head.starts_with("http/1.1 200"),
        "the second request on the same connection: {head:?}"
    );
    let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["path"], "/second");

    // A slow head is still cut: no end of head within the header timeout gets 408.
    let mut slow = TcpStream::connect(c.outbound()).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nHost: b.test\r\n")
        .await
        .unwrap();
    let (head, _) = read_response(&mut slow).await;
    assert!(head.starts_with("http/1.1 408"), "slow head: {head:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_timeout_is_the_deadline_in_place_of_the_upstream_timeout() {
    let opts = MeshOptions {
        b_extra: vec!["--upstream-timeout".into(), "2s".into()],
        ..MeshOptions::default()
    };
    let mesh = Mesh::start("grpc-deadline", opts)
        .await
        .expect("mesh starts");
    let c = Proxy::start_with(
        &mesh.cp,
        "c",
        &spiffe_id(NAMESPACE, "c"),
        mesh.app_a.addr(),
        ProxyPorts::allocate().unwrap(),
        &["--upstream-timeout", "2s"],
    )
    .await
    .expect("C starts");
    let grpc = |timeout| {
        [
            ("content-type", "application/grpc"),
            ("grpc-timeout", timeout),
        ]
    };

    // A 50 s deadline outlasts both sidecars' 2 s upstream timeout: the app's answer (3 s) arrives.
    let resp = h2c_get(c.outbound(), "b.test", "/sleep/3000", &grpc("50S"))
        .await
        .expect("C answers");
    assert_eq!(resp.status, 200, "body: {}", resp.text());
    assert_eq!(resp.headers.get("grpc-status"), None, "{:?}", resp.headers);
    assert_eq!(resp.json().unwrap()["path"], "/sleep/3000");

    // A 1 s deadline ends the call before the 2 s upstream timeout, as DEADLINE_EXCEEDED.
    let resp = h2c_get(c.outbound(), "b.test", "/sleep/3000", &grpc("1S"))
        .await
        .expect("C answers");
    assert_eq!(resp.status, 200, "trailers-only: {:?}", resp.headers);
    assert_eq!(resp.headers["grpc-status"], "4", "{:?}", resp.headers);
    let message = resp.headers["grpc-message"].to_str().unwrap();
    assert!(
        message.contains("within 1 s"),
        "the deadline is the call's 1 s, not the 2 s upstream timeout: {message:?}"
    );
}

/// `trustmesh_limits_exceeded_total{direction="outbound",limit}` of `proxy`.
async fn outbound_limit(proxy: &Proxy, limit: &str) -> u64 {
    let text = admin_get(proxy.admin(), "/metrics").await.unwrap().text();
    let prefix =
        format!("trustmesh_limits_exceeded_total{{direction=\"outbound\",limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_header_fields_than_max_headers_get_431_counted_as_header_count() {
    let mesh = Mesh::a_to_b("max-headers").await.expect("mesh starts");
    let head = |extra: usize| {
        let mut h = String::from("GET /many HTTP/1.1\r\nHost: b.test\r\n");
        for i in 0..extra {
            h.push_str(&format!("x-h-{i}: 1\r\n"));
        }
        h + "\r\n"
    };
    // 95 fields pass through both sidecars (which add a few of their own for the app).
    let mut s = TcpStream::connect(mesh.a.outbound()).await.unwrap();
    s.write_all(head(94).as_bytes()).await.unwrap();
    let (answer, _) = read_response(&mut s).await;
    assert!(answer.starts_with("http/1.1 200"), "95 fields: {answer:?}");
    // `Host` and 99 more: exactly the default --max-headers 100, which A accepts (the test
    // app, at hyper's own 100, may refuse it with the sidecars' fields added).
    let mut s = TcpStream::connect(mesh.a.outbound()).await.unwrap();
    s.write_all(head(99).as_bytes()).await.unwrap();
    let _ = read_response(&mut s).await;
    assert_eq!(
        outbound_limit(&mesh.a, "header_count").await,
        0,
        "100 fields"
    );

    // One more field (a small head, far under --max-header-bytes) gets 431.
    let mut s = TcpStream::connect(mesh.a.outbound()).await.unwrap();
    s.write_all(head(100).as_bytes()).await.unwrap();
    let (answer, _) = read_response(&mut s).await;
    assert!(answer.starts_with("http/1.1 431"), "101 fields: {answer:?}");
    assert_eq!(outbound_limit(&mesh.a, "header_count").await, 1);
    assert_eq!(outbound_limit(&mesh.a, "header_bytes").await, 0);

    // The same over h2c: 101 fields (with `:authority` standing for Host) get 431.
    let names: Vec<String> = (0..101).map(|i| format!("x-h-{i}")).collect();
    let fields: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    let resp = h2c_get(mesh.a.outbound(), "b.test", "/many", &fields)
        .await
        .expect("A answers");
    assert_eq!(resp.status, 431, "h2c, 101 fields: {}", resp.text());
    assert_eq!(outbound_limit(&mesh.a, "header_count").await, 2);
    let resp = h2c_get(mesh.a.outbound(), "b.test", "/many", &fields[..90])
        .await
        .expect("A answers");
    assert_eq!(resp.status, 200, "h2c, 90 fields: {}", resp.text());
}
