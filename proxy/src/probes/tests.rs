use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::declared::parse_app_probes;
use super::*;

/// The state `serve` reads: no certificate, no snapshot.
fn shared() -> Arc<Shared> {
    Arc::new(Shared {
        identity: trustmesh_certs::SpiffeId::parse("spiffe://cluster.local/ns/t/sa/probes")
            .unwrap(),
        resolver: Arc::new(trustmesh_certs::RotatingResolver::new()),
        cert: arc_swap::ArcSwapOption::empty(),
        mesh: arc_swap::ArcSwapOption::empty(),
        metrics: crate::observe::metrics::Metrics::new().unwrap(),
        drain: Default::default(),
        mesh_changes: tokio::sync::watch::channel(0).0,
        ports: crate::app_ports::SidecarPorts::new(&[], "127.0.0.1:8080".parse().unwrap()).unwrap(),
    })
}

#[test]
fn parses_istio_style_probers_and_refuses_bad_ones() {
    let p = parse_app_probes(
        r#"{"/app-health/orders/livez": {"httpGet": {"path": "/healthz", "port": 8080,
             "scheme": "HTTP", "httpHeaders": [{"name": "x-probe", "value": "1"}]},
             "timeoutSeconds": 2},
            "/app-health/orders/readyz": {"tcpSocket": {"port": 8080}}}"#,
    )
    .unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(
        p["/app-health/orders/livez"]
            .http_get
            .as_ref()
            .unwrap()
            .port,
        8080
    );
    for bad in [
        "not json",
        r#"{"/healthz": {"tcpSocket": {"port": 1}}}"#,
        r#"{"/app-health/": {"tcpSocket": {"port": 1}}}"#,
        r#"{"/app-health/a/livez": {}}"#,
        r#"{"/app-health/a/livez": {"tcpSocket": {"port": 1}, "httpGet": {"port": 1}}}"#,
        r#"{"/app-health/a/livez": {"httpGet": {"port": 1, "path": "healthz"}}}"#,
        r#"{"/app-health/a/livez": {"httpGet": {"port": 1, "scheme": "HTTPS"}}}"#,
        r#"{"/app-health/a/livez": {"exec": {"command": ["true"]}}}"#,
        r#"{"/app-health/a/livez": {"httpGet": {"port": 70000}}}"#,
    ] {
        assert!(parse_app_probes(bad).is_err(), "{bad}");
    }
}

/// A one-route app: `/healthz` is 200 (and echoes `x-probe` in its status: 204 when set),
/// everything else 500.
async fn app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_lowercase();
                let status = match (req.starts_with("get /healthz "), req.contains("x-probe: 1")) {
                    (true, true) => "204 No Content",
                    (true, false) => "200 OK",
                    _ => "500 Internal Server Error",
                };
                let resp =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

async fn get(addr: SocketAddr, path: &str) -> u16 {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn declared_probes_reach_the_app_and_nothing_else_does() {
    let app = app().await;
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap().port()
    };
    let json = format!(
        r#"{{"/app-health/orders/livez": {{"httpGet": {{"path": "/healthz", "port": {p}}}}},
            "/app-health/orders/readyz": {{"httpGet": {{"path": "/healthz", "port": {p},
                "httpHeaders": [{{"name": "x-probe", "value": "1"}}]}}}},
            "/app-health/orders/startupz": {{"httpGet": {{"path": "/other", "port": {p}}}}},
            "/app-health/orders/tcp": {{"tcpSocket": {{"port": {p}}}}},
            "/app-health/orders/down": {{"tcpSocket": {{"port": {closed}}}}}}}"#,
        p = app.port()
    );
    let probes = parse_app_probes(&json).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let mut config = Config::from_args(&crate::testing::args("probes", app));
    config.probes = probes;
    tokio::spawn(serve(l, config, shared()));

    assert_eq!(get(addr, "/app-health/orders/livez").await, 200);
    assert_eq!(get(addr, "/app-health/orders/readyz").await, 204);
    assert_eq!(get(addr, "/app-health/orders/startupz").await, 500);
    assert_eq!(get(addr, "/app-health/orders/tcp").await, 200);
    assert_eq!(get(addr, "/app-health/orders/down").await, 503);
    // Nothing but the declared probe paths: not the app's own paths, not other probes.
    assert_eq!(get(addr, "/healthz").await, 404);
    assert_eq!(get(addr, "/app-health/orders/livez/../readyz").await, 404);
    assert_eq!(get(addr, "/app-health/other/livez").await, 404);
}

#[tokio::test]
async fn the_listener_holds_requests_to_the_header_limits_of_its_config() {
    let app = app().await;
    let json = format!(
        r#"{{"/app-health/orders/livez": {{"httpGet": {{"path": "/healthz", "port": {p}}}}}}}"#,
        p = app.port()
    );
    let mut config = Config::from_args(&crate::testing::args("probes", app));
    config.probes = parse_app_probes(&json).unwrap();
    config.serve.max_headers = 4;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(serve(l, config, shared()));

    assert_eq!(get(addr, "/app-health/orders/livez").await, 200);
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = String::from("GET /app-health/orders/livez HTTP/1.1\r\nhost: probe\r\n");
    for i in 0..8 {
        req.push_str(&format!("x-extra-{i}: 1\r\n"));
    }
    req.push_str("connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
}
