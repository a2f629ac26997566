//! WebSockets through two sidecars with the real Python `websockets` library on both ends
//! (`tests/real/ws_echo.py` behind B, `tests/real/ws_client.py` as A's app), ARCHITECTURE
//! "Transparency": the HTTP/1.1 upgrade completes, messages pass both ways, an idle tunnel
//! outlives the header timeout and is closed at the idle timeout, a denied path is refused
//! with 403 before anything reaches the app; and an h2c client's RFC 8441 extended CONNECT
//! reaches an h2c app as one (a Rust hyper client and server: Python has no h2 WebSocket);
//! and an open tunnel keeps its connection counted against `--max-connections`.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "real_websocket/conns.rs"]
mod conns;
#[path = "real_websocket/support.rs"]
mod support;

use std::time::Duration;

use support::{
    metric, put_policy, run_client, start_mesh, tunnels_open, wait_tunnels_closed, WsEcho,
};
use trustmesh_e2e::mesh::NAMESPACE;
use trustmesh_e2e::mtls::Knock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echoes_through_two_sidecars_and_outlives_the_header_timeout() {
    let echo = WsEcho::start().expect("the echo server starts");
    let (mut mesh, mut c) = start_mesh("ws-echo", &echo, &[]).await;
    // Idle for three header timeouts (1 s on both sidecars) between messages.
    let mut client = support::Client::start(c.outbound(), "ws://b.test/chat", &["--idle", "3"]);
    assert_eq!(
        client.next_line().await["open"],
        true,
        "the upgrade completed"
    );
    assert_eq!(tunnels_open(c.admin(), "outbound").await, 1);
    assert_eq!(tunnels_open(mesh.b.admin(), "inbound").await, 1);
    let done = client.next_line().await;
    assert_eq!(
        done["echoes"],
        serde_json::json!(["hello", "000162696e617279", "after idle"]),
        "{done}"
    );
    let seen = echo.handshakes();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["path"], "/chat");
    let h = &seen[0]["headers"];
    assert_eq!(h["upgrade"], "websocket", "{h}");
    assert!(h["sec-websocket-key"].is_string(), "{h}");
    assert_eq!(
        h["x-trustmesh-peer-identity"],
        trustmesh_e2e::policies::spiffe_id(NAMESPACE, "c")
    );

    wait_tunnels_closed(c.admin(), "outbound").await;
    wait_tunnels_closed(mesh.b.admin(), "inbound").await;
    // One line per tunnel, written when it closed, with what it carried.
    for (log, status) in [
        (c.wait_access_log(1).await, 101),
        (mesh.b.wait_access_log(1).await, 200),
    ] {
        let line = log
            .iter()
            .find(|l| l["upgrade"] == "websocket")
            .unwrap_or_else(|| panic!("no upgrade line in {log:?}"));
        assert_eq!(line["status"], status, "{line}");
        assert_eq!(line["path"], "/chat", "{line}");
        assert_eq!(line["method"], "GET", "{line}");
        let (up, down) = (
            line["tunnel_bytes_up"].as_u64(),
            line["tunnel_bytes_down"].as_u64(),
        );
        // Three masked client frames up, three echoes down, and the closing handshake.
        assert!(up.unwrap_or(0) > 30 && down.unwrap_or(0) > 20, "{line}");
        assert!(
            line["duration_ms"].as_f64().unwrap_or(0.0) >= 3000.0,
            "{line}"
        );
    }
    assert_eq!(
        metric(
            mesh.b.admin(),
            "trustmesh_limits_exceeded_total{direction=\"inbound\",limit=\"header_timeout\"}"
        )
        .await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_websocket_path_gets_403_and_nothing_reaches_the_app() {
    let echo = WsEcho::start().expect("the echo server starts");
    let (mesh, c) = start_mesh("ws-deny", &echo, &[]).await;
    put_policy(
        &mesh,
        &format!(
            "apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: no-admin, namespace: {NAMESPACE}}}\n\
             spec:\n  selector: {{matchLabels: {{app: b}}}}\n  action: DENY\n  rules:\n\
             \x20 - to: [{{operation: {{paths: [\"/admin\"], methods: [GET]}}}}]\n"
        ),
    )
    .await;
    // `/chat/../admin` is the same path once normalized: the app would get `/admin`.
    for uri in ["ws://b.test/admin", "ws://b.test/chat/../admin"] {
        let got = run_client(c.outbound(), uri, &[]).await;
        assert_eq!(got["error"], "InvalidStatus", "{uri}: {got}");
        assert_eq!(got["status"], 403, "{uri}: {got}");
    }
    assert!(echo.handshakes().is_empty(), "{:?}", echo.handshakes());
    // The app is there: an allowed path opens.
    let got = run_client(c.outbound(), "ws://b.test/chat", &[]).await;
    assert!(got["echoes"].is_array(), "{got}");
    let seen: Vec<_> = echo
        .handshakes()
        .iter()
        .map(|h| h["path"].clone())
        .collect();
    assert_eq!(seen, ["/chat"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_at_the_idle_timeout() {
    let echo = WsEcho::start().expect("the echo server starts");
    let (mesh, _c) = start_mesh("ws-idle", &echo, &["--idle-timeout", "2s"]).await;
    let got = run_client(
        mesh.a.outbound(),
        "ws://b.test/chat",
        &["--idle", "5", "--expect-close"],
    )
    .await;
    assert_eq!(
        got["closed"], true,
        "the tunnel outlived --idle-timeout: {got}"
    );
    let closed = metric(
        mesh.b.admin(),
        "trustmesh_limits_exceeded_total{direction=\"inbound\",limit=\"idle_timeout\"}",
    )
    .await;
    assert!(closed >= 1.0, "not counted as idle_timeout: {closed}");
    wait_tunnels_closed(mesh.b.admin(), "inbound").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_extended_connect_reaches_an_h2c_app_as_extended_connect() {
    let app = support::H2cTunnelApp::start().await;
    let (mesh, _c) = support::start_mesh_at("ws-h2c-h2c", app.addr(), &[]).await;
    let mut ws = support::h2c_connect(mesh.a.outbound(), "b.test", "/raw")
        .await
        .expect("the extended CONNECT is answered 200");
    tokio::io::AsyncWriteExt::write_all(&mut ws, b"ping")
        .await
        .unwrap();
    let mut got = [0u8; 4];
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_exact(&mut ws, &mut got),
    )
    .await
    .expect("an echo within 10 s")
    .unwrap();
    assert_eq!(&got, b"ping");
    let seen = app.seen();
    assert_eq!(
        seen,
        [(
            "CONNECT".to_string(),
            "websocket".to_string(),
            "/raw".to_string()
        )]
    );
}

/// A switched HTTP/1.1 connection is still a connection: its tunnel holds its
/// `--max-connections` permit until it closes, so tunnels cannot pile up past the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_counts_against_max_connections_until_it_closes() {
    let echo = WsEcho::start().expect("the echo server starts");
    let (_mesh, c) = support::start_mesh_with(
        "ws-max-conns",
        echo.addr(),
        &[],
        &["--max-connections", "2"],
    )
    .await;
    // Two tunnels, each on a connection of its own, held open for up to 60 s.
    let mut first = support::Client::start(c.outbound(), "ws://b.test/one", &["--idle", "60"]);
    let mut second = support::Client::start(c.outbound(), "ws://b.test/two", &["--idle", "60"]);
    for client in [&mut first, &mut second] {
        assert_eq!(
            client.next_line().await["open"],
            true,
            "the upgrade completed"
        );
    }
    assert_eq!(tunnels_open(c.admin(), "outbound").await, 2);
    let refused = "trustmesh_limits_exceeded_total{direction=\"outbound\",limit=\"connections\"}";
    assert_eq!(metric(c.admin(), refused).await, 0.0);

    // A third connection is over the limit: closed at once, unanswered, and counted.
    let got = conns::raw_get(c.outbound()).await;
    assert_eq!(
        got, "",
        "a third connection was served while two tunnels were open"
    );
    assert_eq!(metric(c.admin(), refused).await, 1.0);

    // Once one tunnel has closed, its connection's permit is free again.
    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = conns::raw_get(c.outbound()).await;
        if got.starts_with("HTTP/1.1 ") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no connection was accepted within 10 s of a tunnel closing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tunnels_open(c.admin(), "outbound").await, 1);
    drop(second);
}

/// The same on the inbound side: an HTTP/1.1 upgrade over mTLS straight to B's inbound
/// listener (a mesh workload may speak HTTP/1.1 there) holds B's permit until its tunnel closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inbound_tunnel_counts_against_max_connections_until_it_closes() {
    let echo = WsEcho::start().expect("the echo server starts");
    let flags = [
        "--max-connections",
        "2",
        "--max-connections-per-identity",
        "2",
    ];
    let (mesh, _c) = start_mesh("ws-max-conns-in", &echo, &flags).await;
    let caller = conns::caller(&mesh, "c");
    let inbound = mesh.b.inbound();
    let first = conns::mtls_upgrade(caller.clone(), inbound, "/one").await;
    let second = conns::mtls_upgrade(caller.clone(), inbound, "/two").await;
    assert_eq!(tunnels_open(mesh.b.admin(), "inbound").await, 2);
    let refused = "trustmesh_limits_exceeded_total{direction=\"inbound\",limit=\"connections\"}";
    assert_eq!(metric(mesh.b.admin(), refused).await, 0.0);

    let third = conns::knock(caller.clone(), inbound).await;
    assert!(matches!(third, Knock::Refused(_)), "{third:?}");
    assert_eq!(metric(mesh.b.admin(), refused).await, 1.0);

    drop(first);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while conns::knock(caller.clone(), inbound).await != Knock::Accepted {
        assert!(
            std::time::Instant::now() < deadline,
            "no connection was accepted within 10 s of a tunnel closing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(tunnels_open(mesh.b.admin(), "inbound").await, 1);
    drop(second);
}
