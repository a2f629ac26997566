//! Gateway API `HTTPRoute`s in the policy folder, through the real `trustmesh` binary:
//! `trustmesh route check` says which rule a request takes and where it goes (exit 0), or that
//! none matches and default routing applies (exit 3); `trustmesh policy validate` reports every
//! route error at its `FILE:LINE:COL`.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use trustmesh_e2e::control_plane::{run_cli, CliOutput};

const WEB: &str = "spiffe://cluster.local/ns/shop/sa/web";

fn canary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/canary")
}

async fn check(policies: &Path, source: &str, extra: &[&str]) -> CliOutput {
    let mut args = vec![
        "route",
        "check",
        "--policies",
        policies.to_str().unwrap(),
        "--source",
        source,
    ];
    args.extend_from_slice(extra);
    run_cli(&args).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_check_prints_the_rule_its_backends_timeouts_and_retry() {
    let out = check(&canary(), WEB, &["--host", "orders", "--path", "/orders/7"]).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    for want in [
        "ROUTE  shop/orders-canary rules[1] matches[0]  (parent shop/orders port 80)",
        "  shop/orders:80  weight 90 (90.0%)",
        "  shop/orders-canary:80  weight 10 (10.0%)",
        "timeouts: request 10s, backendRequest 2s",
        "retry: attempts 2, codes [503], backoff 100ms",
        "request headers: set x-route: orders-canary",
    ] {
        assert!(
            out.stdout.contains(want),
            "missing {want:?} in:\n{}",
            out.stdout
        );
    }

    // A tester's header wins by precedence (same prefix, one header match more).
    let out = check(
        &canary(),
        WEB,
        &[
            "--host",
            "orders.shop:80",
            "--path",
            "/orders",
            "--header",
            "X-Canary=always",
        ],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("rules[0]"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("  shop/orders-canary:80  weight 1 (100.0%)"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_check_exits_3_when_no_route_applies() {
    // Another port of the parent: the route names port 80 only.
    let out = check(
        &canary(),
        WEB,
        &["--host", "orders:8080", "--path", "/orders"],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("default routing to shop/orders"),
        "{}",
        out.stdout
    );
    // A caller that may not call orders gets no routes for it in its snapshot.
    let out = check(
        &canary(),
        "spiffe://cluster.local/ns/shop/sa/orders-canary",
        &["--host", "orders", "--path", "/orders"],
    )
    .await;
    assert_eq!(out.status.code(), Some(3), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("may not call shop/orders"),
        "{}",
        out.stdout
    );
    let out = check(&canary(), WEB, &["--host", "nowhere", "--path", "/"]).await;
    assert_eq!(out.status.code(), Some(3), "{}{}", out.stdout, out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_check_matches_query_parameters_and_methods() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["mesh.yaml", "services.yaml", "orders-policy.yaml"] {
        std::fs::copy(canary().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("route.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: by-query, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: orders}]
  rules:
    - matches: [{queryParams: [{name: env, type: RegularExpression, value: 'canary|beta'}], method: POST}]
      backendRefs: [{name: orders-canary, port: 80}]
",
    )
    .unwrap();
    let args = |method: &'static str, query: &'static str| {
        [
            "--host", "orders", "--path", "/orders", "--method", method, "--query", query,
        ]
    };
    let out = check(dir.path(), WEB, &args("POST", "env=beta")).await;
    assert_eq!(out.status.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("ROUTE  shop/by-query rules[0]"),
        "{}",
        out.stdout
    );
    for (method, query) in [("GET", "env=beta"), ("POST", "env=betamax")] {
        let out = check(dir.path(), WEB, &args(method, query)).await;
        assert_eq!(
            out.status.code(),
            Some(3),
            "{method} {query}: {}",
            out.stdout
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_validate_reports_every_route_error_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        canary().join("services.yaml"),
        dir.path().join("services.yaml"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("route.yaml"),
        "apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad, namespace: shop}
spec:
  hostnames: [orders.example.com]
  parentRefs: [{kind: Service, name: order}]
  rules:
    - backendRefs:
        - {name: orders, port: 80, weight: 0}
        - {name: orders-canary, port: 80, weight: 0}
      timeouts: {request: 1s, backendRequest: 5s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shape, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: orders}]
  rules:
    - filters: [{type: URLRewrite}]
",
    )
    .unwrap();
    let out = run_cli(&["policy", "validate", dir.path().to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    for want in [
        "route.yaml:5:15: hostnames are not supported on mesh routes",
        "route.yaml:6:38: parentRef names no registry Service shop/order",
        "route.yaml:9:44: every backendRef of this rule has weight 0",
        "route.yaml:11:47: timeouts.backendRequest must not be longer than timeouts.request",
        "route.yaml:19:24: spec.rules[0].filters[0].type: unknown variant `URLRewrite`",
    ] {
        assert!(
            out.stderr.contains(want),
            "missing {want:?} in:\n{}",
            out.stderr
        );
    }
}
