//! `HTTPRoute`s applied by the caller's sidecar, with real processes on loopback: a control
//! plane, the caller `web` (the test plays its app) and two services, `orders` and
//! `orders-canary`, each a sidecar in front of a named test app that says who answered.
//!
//! ```text
//! test --HTTP, Host: orders--> web outbound --mTLS--> orders or orders-canary inbound --> app
//! ```

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "traffic_routes/mesh.rs"]
mod mesh;

use std::time::{Duration, Instant};

use http::Request;
use mesh::{app_of, metric, Client, Traffic, NS};
use trustmesh_e2e::app::App;
use trustmesh_e2e::body::GeneratedBody;
use trustmesh_e2e::client::{admin_get, collect, connect, send_http1_on};
use trustmesh_e2e::policies::spiffe_id;
use trustmesh_e2e::ports::ProxyPorts;
use trustmesh_e2e::proxy::Proxy;

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
