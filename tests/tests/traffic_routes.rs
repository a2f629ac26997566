//! `HTTPRoute`s applied by the caller's sidecar, with real processes on loopback: a control
//! plane, the caller `web` (the test plays its app) and two services, `orders` and
//! `orders-canary`, each a sidecar in front of a named test app that says who answered.
//!
//! ```text
//! test --HTTP, Host: orders--> web outbound --mTLS--> orders or orders-canary inbound --> app
//! ```

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use trustmesh_e2e::app::App;
use trustmesh_e2e::body::GeneratedBody;
use trustmesh_e2e::client::{admin_get, collect, connect, send_http1_on, Resp, REQUEST_TIMEOUT};
use trustmesh_e2e::control_plane::ControlPlane;
use trustmesh_e2e::policies::{spiffe_id, write_policies, ServiceEntry};
use trustmesh_e2e::ports::ProxyPorts;
use trustmesh_e2e::proxy::Proxy;
use trustmesh_e2e::workdir::WorkDir;

const NS: &str = "test";

/// One route on `orders` with a rule per behaviour under test (rule index in the comment).
const ROUTE: &str = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders, namespace: test}
spec:
  parentRefs: [{kind: Service, name: orders, port: 80}]
  rules:
    # 0: the canary split
    - matches: [{path: {type: PathPrefix, value: /split}}]
      backendRefs:
        - {name: orders, port: 80, weight: 90}
        - {name: orders-canary, port: 80, weight: 10}
    # 1: a tester's header sends /api to the canary, with header changes both ways
    - matches:
        - path: {type: PathPrefix, value: /api}
          headers: [{name: x-canary, value: always}]
      backendRefs: [{name: orders-canary, port: 80}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: x-route, value: canary}]
            add: [{name: x-tag, value: routed}]
            remove: [x-drop]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set: [{name: x-served-by, value: canary}]
    # 2: everything else under /api stays on orders
    - matches: [{path: {type: PathPrefix, value: /api}}]
      backendRefs: [{name: orders, port: 80}]
    # 3: a flaky path, retried
    - matches: [{path: {type: PathPrefix, value: /flaky}}]
      backendRefs: [{name: orders, port: 80}]
      retry: {attempts: 2, codes: [503], backoff: 10ms}
    # 4: a slow path, with a short request timeout
    - matches: [{path: {type: PathPrefix, value: /sleep}}]
      backendRefs: [{name: orders, port: 80}]
      timeouts: {request: 500ms}
    # 5: the same path, each attempt cut at 300ms and retried once
    - matches:
        - path: {type: PathPrefix, value: /sleep}
          headers: [{name: x-per-try, value: short}]
      backendRefs: [{name: orders, port: 80}]
      timeouts: {request: 3s, backendRequest: 300ms}
      retry: {attempts: 1, codes: [504]}
";

/// The running mesh. Fields drop in order: sidecars, control plane, apps, folder.
struct Traffic {
    web: Proxy,
    _orders: Proxy,
    _canary: Proxy,
    cp: ControlPlane,
    orders_app: App,
    _canary_app: App,
    _web_app: App,
    _dir: WorkDir,
}

impl Traffic {
    /// Starts it all; `web_flags` are extra flags for the caller's sidecar.
    async fn start(test: &str, web_flags: &[&str]) -> Self {
        let dir = WorkDir::new(test).unwrap();
        let (web_ports, orders_ports, canary_ports) = (
            ProxyPorts::allocate().unwrap(),
            ProxyPorts::allocate().unwrap(),
            ProxyPorts::allocate().unwrap(),
        );
        let policies = write_policies(
            &dir.path().join("policies"),
            &[
                ServiceEntry::new("web", NS, web_ports.inbound),
                ServiceEntry::new("orders", NS, orders_ports.inbound),
                ServiceEntry::new("orders-canary", NS, canary_ports.inbound),
            ],
        )
        .unwrap();
        std::fs::write(policies.join("routes.yaml"), ROUTE).unwrap();
        let cp = ControlPlane::start(dir.path(), &policies).await.unwrap();
        let orders_app = App::start_named("orders").await.unwrap();
        let canary_app = App::start_named("orders-canary").await.unwrap();
        let web_app = App::start().await.unwrap();
        let ids = [
            spiffe_id(NS, "orders"),
            spiffe_id(NS, "orders-canary"),
            spiffe_id(NS, "web"),
        ];
        let (orders, canary, web) = tokio::try_join!(
            Proxy::start(&cp, "orders", &ids[0], orders_app.addr(), orders_ports),
            Proxy::start(
                &cp,
                "orders-canary",
                &ids[1],
                canary_app.addr(),
                canary_ports
            ),
            Proxy::start_with(&cp, "web", &ids[2], web_app.addr(), web_ports, web_flags),
        )
        .unwrap();
        Self {
            web,
            _orders: orders,
            _canary: canary,
            cp,
            orders_app,
            _canary_app: canary_app,
            _web_app: web_app,
            _dir: dir,
        }
    }

    async fn metrics(&self) -> String {
        admin_get(self.web.admin(), "/metrics")
            .await
            .unwrap()
            .text()
    }
}

/// A keep-alive HTTP/1.1 connection of the app to its sidecar's outbound listener.
struct Client {
    addr: SocketAddr,
    send: Option<SendRequest<Empty<Bytes>>>,
}

impl Client {
    fn new(addr: SocketAddr) -> Self {
        Self { addr, send: None }
    }

    /// `GET path` with `Host: orders` and `headers`, read to the end.
    async fn get(&mut self, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = Request::get(path).header("host", "orders");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::new()).unwrap();
        let send = match self.send.take().filter(|s| !s.is_closed()) {
            Some(s) => s,
            None => {
                let io = TokioIo::new(connect(self.addr).await.unwrap());
                let (s, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                s
            }
        };
        let mut send = send;
        let work = async {
            send.ready().await.unwrap();
            collect(send.send_request(req).await.unwrap())
                .await
                .unwrap()
        };
        let resp = tokio::time::timeout(REQUEST_TIMEOUT, work)
            .await
            .unwrap_or_else(|_| panic!("GET {path} timed out"));
        self.send = Some(send);
        resp
    }
}

/// Which app answered.
fn app_of(resp: &Resp) -> String {
    let json = resp.json().unwrap();
    json["app"].as_str().unwrap_or("-").to_string()
}

/// The value of metric `name` on the series with all of `labels`, 0 when absent.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_90_10_split_over_1000_requests_lands_within_3_percent() {
    let mesh = Traffic::start("route-split", &["--access-log", "off"]).await;
    let mut client = Client::new(mesh.web.outbound());
    let mut canary = 0;
    for i in 0..1000 {
        let resp = client.get(&format!("/split/{i}"), &[]).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
        match app_of(&resp).as_str() {
            "orders-canary" => canary += 1,
            "orders" => {}
            other => panic!("answered by {other}: {}", resp.text()),
        }
    }
    assert!(
        (70..=130).contains(&canary),
        "{canary} of 1000 went to the canary, not 10 % ± 3 %"
    );
    // The route label names the rule taken, split by the backend's identity.
    let text = mesh.metrics().await;
    let rule = [("direction", "outbound"), ("route", "test/orders#0")];
    assert_eq!(metric(&text, "trustmesh_requests_total", &rule), 1000);
    let to_canary = [
        ("direction", "outbound"),
        ("route", "test/orders#0"),
        ("peer", "spiffe://cluster.local/ns/test/sa/orders-canary"),
    ];
    assert_eq!(
        metric(&text, "trustmesh_requests_total", &to_canary),
        canary
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_routes_to_the_second_service_and_the_modifiers_apply() {
    let mesh = Traffic::start("route-headers", &[]).await;
    let mut client = Client::new(mesh.web.outbound());
    let canary = client
        .get(
            "/api/items",
            &[
                ("x-canary", "always"),
                ("x-drop", "secret"),
                ("x-tag", "app"),
            ],
        )
        .await;
    assert_eq!(canary.status, 200, "{}", canary.text());
    assert_eq!(app_of(&canary), "orders-canary");
    let seen = canary.json().unwrap();
    let headers = &seen["headers"];
    assert_eq!(headers["x-route"], serde_json::json!(["canary"]), "{seen}");
    assert_eq!(
        headers["x-tag"],
        serde_json::json!(["app", "routed"]),
        "{seen}"
    );
    assert!(headers.get("x-drop").is_none(), "removed: {seen}");
    // The canary's own sidecar took it, and its app got the caller's verified identity.
    assert_eq!(
        seen["peer_identity"],
        serde_json::json!([spiffe_id(NS, "web")])
    );
    assert_eq!(canary.headers["x-served-by"], "canary");

    let stable = client.get("/api/items", &[("x-drop", "kept")]).await;
    assert_eq!(stable.status, 200, "{}", stable.text());
    assert_eq!(app_of(&stable), "orders");
    let seen = stable.json().unwrap();
    assert_eq!(seen["headers"]["x-drop"], serde_json::json!(["kept"]));
    assert!(seen["headers"].get("x-route").is_none(), "{seen}");
    assert!(stable.headers.get("x-served-by").is_none());

    // orders has routes and none matches /other: 404, and nothing reached an app.
    let before = mesh.orders_app.request_count();
    let none = client.get("/other", &[]).await;
    assert_eq!(none.status, 404, "{}", none.text());
    assert!(none.text().contains("no HTTPRoute rule"), "{}", none.text());
    assert_eq!(mesh.orders_app.request_count(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_hide_a_flaky_backend_until_the_budget_is_spent() {
    let mesh = Traffic::start("route-retries", &[]).await;
    let mut client = Client::new(mesh.web.outbound());
    // Every first attempt gets 503 (the app fails every other /flaky request).
    for i in 0..100 {
        let resp = client.get(&format!("/flaky/503?i={i}"), &[]).await;
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
    }
    assert_eq!(mesh.orders_app.request_count(), 200);
    let text = mesh.metrics().await;
    let orders = [("service", "orders.test")];
    assert_eq!(metric(&text, "trustmesh_retries_total", &orders), 100);
    assert_eq!(
        metric(&text, "trustmesh_retry_budget_exhausted_total", &orders),
        0
    );

    // A body of known length is buffered and sent again whole; a streamed (chunked) one is
    // sent once, so its failure reaches the client.
    let post = |body: GeneratedBody| {
        Request::post("/flaky/503")
            .header("host", "orders")
            .body(body)
            .unwrap()
    };
    let io = connect(mesh.web.outbound()).await.unwrap();
    let resp = collect(
        send_http1_on(io, post(GeneratedBody::new(20_000)))
            .await
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json().unwrap()["body_bytes"],
        20_000,
        "the retry's body"
    );
    assert_eq!(
        metric(&mesh.metrics().await, "trustmesh_retries_total", &orders),
        101
    );
    let io = connect(mesh.web.outbound()).await.unwrap();
    let chunked = post(GeneratedBody::chunked(20_000));
    let resp = collect(send_http1_on(io, chunked).await.unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status, 503, "not retried: {}", resp.text());
    assert_eq!(
        metric(&mesh.metrics().await, "trustmesh_retries_total", &orders),
        101
    );

    // A second caller sidecar whose budget allows no retry at all: the failures show.
    let ports = ProxyPorts::allocate().unwrap();
    let app = App::start().await.unwrap();
    let flags = [
        "--retry-budget-percent",
        "0",
        "--retry-budget-min-per-sec",
        "0",
    ];
    let stingy = Proxy::start_with(
        &mesh.cp,
        "web-2",
        &spiffe_id(NS, "web"),
        app.addr(),
        ports,
        &flags,
    )
    .await
    .unwrap();
    let mut client = Client::new(stingy.outbound());
    let mut failed = 0;
    for i in 0..20 {
        let resp = client.get(&format!("/flaky/503?j={i}"), &[]).await;
        match resp.status.as_u16() {
            200 => {}
            503 => failed += 1,
            other => panic!("{other}: {}", resp.text()),
        }
    }
    assert!(failed > 0, "no failure reached the client");
    let text = admin_get(stingy.admin(), "/metrics").await.unwrap().text();
    assert_eq!(
        metric(&text, "trustmesh_retry_budget_exhausted_total", &orders),
        failed
    );
    assert_eq!(metric(&text, "trustmesh_retries_total", &orders), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_request_timeout_answers_504_in_time() {
    let mesh = Traffic::start("route-timeout", &[]).await;
    let mut client = Client::new(mesh.web.outbound());
    let start = Instant::now();
    let resp = client.get("/sleep/5000", &[]).await;
    let took = start.elapsed();
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert!(
        resp.text()
            .contains("within 500ms (HTTPRoute timeouts.request)"),
        "{}",
        resp.text()
    );
    // Answered at the route's deadline, not when the app finally answered.
    assert!(took < Duration::from_secs(4), "took {took:?}");
    // A fast request on the same rule is untouched.
    let ok = client.get("/sleep/1", &[]).await;
    assert_eq!(ok.status, 200, "{}", ok.text());

    // backendRequest cuts each attempt; the one retry is cut too, well before `request`.
    let before = mesh.orders_app.request_count();
    let resp = client.get("/sleep/5000", &[("x-per-try", "short")]).await;
    assert_eq!(resp.status, 504, "{}", resp.text());
    assert!(
        resp.text()
            .contains("within 300ms (HTTPRoute timeouts.backendRequest)"),
        "{}",
        resp.text()
    );
    assert_eq!(mesh.orders_app.request_count() - before, 2, "two attempts");
}
