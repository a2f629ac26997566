use std::path::Path;
use std::time::Duration;

use super::*;
use crate::normalize::normalize_path;
use crate::{load_dir, PolicySet};

const SERVICES: &str = "\
apiVersion: trustmesh.io/v1
kind: Service
metadata: {name: orders, namespace: shop}
spec: {identity: spiffe://cluster.local/ns/shop/sa/orders, ports: [{port: 80, protocol: http}, {port: 5432, protocol: tcp}]}
---
apiVersion: trustmesh.io/v1
kind: Service
metadata: {name: orders-v2, namespace: shop}
spec: {identity: spiffe://cluster.local/ns/shop/sa/orders-v2, ports: [{port: 80, protocol: http}]}
";

fn load(routes: &str) -> Result<PolicySet, Vec<String>> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("services.yaml"), SERVICES).unwrap();
    std::fs::write(dir.path().join("routes.yaml"), routes).unwrap();
    load_dir(dir.path()).map_err(|diags| {
        diags
            .iter()
            .map(|d| {
                let rel = d.file.strip_prefix(dir.path()).unwrap().display();
                format!("{rel}:{}:{}: {}", d.line, d.col, d.message)
            })
            .collect()
    })
}

fn compiled(routes: &str) -> CompiledRoutes {
    let set = load(routes).unwrap_or_else(|e| panic!("{}", e.join("\n")));
    CompiledRoutes::compile(&set.routes).unwrap()
}

/// (route, rule, backends and weights) a request takes.
type Taken = (String, usize, Vec<(String, u32)>);

/// (method, target, headers, route, rule).
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str, usize);

fn route(
    c: &CompiledRoutes,
    port: u16,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> Option<Taken> {
    let path = normalize_path(target).unwrap();
    let query = query_pairs(path.query());
    let req = RouteRequest {
        namespace: "shop",
        service: "orders",
        port,
        method,
        path: &path,
        headers: &headers,
        query: &query,
    };
    c.route(&req).map(|r| {
        let backends = r
            .action
            .backends
            .iter()
            .map(|b| (b.name.clone(), b.weight))
            .collect();
        (r.route.to_string(), r.rule, backends)
    })
}

fn doc(name: &str, spec: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  parentRefs: [{{kind: Service, name: orders, port: 80}}]\n{spec}"
    )
}

/// Rules whose precedence the Gateway API fixes, written in the reverse order.
fn precedence_routes() -> String {
    doc(
        "b",
        "  rules:
    - matches: [{path: {type: PathPrefix, value: /}}]
    - matches: [{path: {type: PathPrefix, value: /api}}]
    - matches: [{path: {type: PathPrefix, value: /api/v1}}]
    - matches: [{path: {type: PathPrefix, value: /api}, method: POST}]
    - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-a, value: '1'}]}]
    - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-a, value: '1'}, {name: X-B, type: RegularExpression, value: 'b+'}]}]
    - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-a, value: '1'}], queryParams: [{name: q, value: 'a b'}]}]
    - matches: [{path: {type: RegularExpression, value: '/api/[0-9]+'}}]
    - matches: [{path: {type: Exact, value: /api/1}}]
",
    ) + &doc("a", "  rules:\n    - matches: [{path: {type: PathPrefix, value: /api/v1}}]\n")
}

#[test]
fn the_gateway_api_precedence_decides_across_rules_and_routes() {
    let c = compiled(&precedence_routes());
    let cases: &[Case<'_>] = &[
        ("GET", "/other", &[], "shop/b", 0),
        ("GET", "/apix", &[], "shop/b", 0), // a prefix matches whole segments only
        ("GET", "/api", &[], "shop/b", 1),
        ("GET", "/api/x", &[], "shop/b", 1),
        // the same prefix in two routes: the first by namespace/name wins
        ("GET", "/api/v1/x", &[], "shop/a", 0),
        ("POST", "/api/x", &[("x-a", "1")], "shop/b", 3), // method before headers
        ("GET", "/api/x", &[("x-a", "1")], "shop/b", 4),
        (
            "GET",
            "/api/x",
            &[("x-a", "1"), ("x-b", "bbb")],
            "shop/b",
            5,
        ),
        (
            "GET",
            "/api/x",
            &[("x-a", "1"), ("x-b", "bbc")],
            "shop/b",
            4,
        ), // regex is whole-value
        ("GET", "/api/x?q=a%20b", &[("x-a", "1")], "shop/b", 6),
        (
            "GET",
            "/api/x?q=a%20b&q=c",
            &[("x-a", "1"), ("x-b", "b")],
            "shop/b",
            5,
        ),
        ("GET", "/api/12", &[], "shop/b", 7),
        ("GET", "/api/1", &[], "shop/b", 8),
        ("GET", "/api/1/", &[], "shop/b", 1), // not Exact, and the regex is anchored
    ];
    for (method, target, headers, want_route, want_rule) in cases {
        let (r, rule, _) = route(&c, 80, method, target, headers).unwrap();
        assert_eq!(
            (r.as_str(), rule),
            (*want_route, *want_rule),
            "{method} {target} {headers:?}"
        );
    }
}

#[test]
fn a_route_applies_only_to_its_parent_service_and_port() {
    let c = compiled(&doc(
        "r",
        "  rules: [{backendRefs: [{name: orders-v2, port: 80}]}]\n",
    ));
    assert_eq!(
        route(&c, 80, "GET", "/", &[]).map(|r| r.2),
        Some(vec![("orders-v2".to_string(), 1)])
    );
    assert!(route(&c, 8080, "GET", "/", &[]).is_none());
    let path = normalize_path("/").unwrap();
    let other = RouteRequest {
        namespace: "shop",
        service: "orders-v2",
        port: 80,
        method: "GET",
        path: &path,
        headers: &crate::NoHeaders,
        query: &[],
    };
    assert!(c.route(&other).is_none());
}

#[test]
fn a_rule_without_backends_goes_to_its_parent_and_keeps_its_settings() {
    let c = compiled(&doc(
        "r",
        "  rules:
    - timeouts: {request: 1m30s, backendRequest: 500ms}
      retry: {attempts: 3, codes: [500, 503], backoff: 1s}
      filters:
        - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-a, value: b}], add: [{name: x-c, value: d}], remove: [x-e]}}
        - {type: ResponseHeaderModifier, responseHeaderModifier: {remove: [server]}}
",
    ));
    let path = normalize_path("/x").unwrap();
    let req = RouteRequest {
        namespace: "shop",
        service: "orders",
        port: 80,
        method: "GET",
        path: &path,
        headers: &crate::NoHeaders,
        query: &[],
    };
    let r = c.route(&req).unwrap();
    let a = r.action;
    assert_eq!(a.backends.len(), 1);
    assert_eq!(
        (a.backends[0].name.as_str(), a.backends[0].port),
        ("orders", Some(80))
    );
    assert_eq!(a.request_timeout, Some(Duration::from_secs(90)));
    assert_eq!(a.backend_request_timeout, Some(Duration::from_millis(500)));
    let retry = a.retry.as_ref().unwrap();
    assert_eq!(
        (retry.attempts, retry.codes.as_slice(), retry.backoff),
        (3, &[500, 503][..], Some(Duration::from_secs(1)))
    );
    assert_eq!(a.request_headers.set[0].0.as_str(), "x-a");
    assert_eq!(a.request_headers.add[0].1, "d");
    assert_eq!(a.request_headers.remove[0].as_str(), "x-e");
    assert_eq!(a.response_headers.remove[0].as_str(), "server");
}

#[test]
fn every_unsupported_or_bad_value_is_an_error_at_its_position() {
    // Shape errors (serde's, at serde_yaml's positions) stop their document's value checks, so
    // they are in a document of their own.
    let shape = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shape, namespace: shop}
spec:
  parentRefs:
    - {kind: Service, name: orders, sectionName: http}
  rules:
    - matches:
        - method: FETCH
      sessionPersistence: {}
";
    let errors = load(shape).unwrap_err();
    for want in [
        "routes.yaml:6:37: spec.parentRefs[0]: unknown field `sectionName`",
        "routes.yaml:9:19: spec.rules[0].matches[0].method: unknown variant `FETCH`",
        "routes.yaml:10:7: spec.rules[0]: unknown field `sessionPersistence`",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in:\n{}",
            errors.join("\n")
        );
    }
    let errors = load(&doc(
        "w",
        "  rules: [{backendRefs: [{name: orders, port: 80, weight: -1}]}]\n",
    ))
    .unwrap_err();
    assert!(errors.iter().any(|e| e.starts_with("routes.yaml:7:59: spec.rules[0].backendRefs[0].weight: invalid type: integer `-1`, expected u32")), "{}", errors.join("\n"));
    let errors = load(&doc("p", "  rules: [{backendRefs: [{name: orders}]}]\n")).unwrap_err();
    assert!(
        errors[0].contains("backendRefs[0]: missing field `port`"),
        "{}",
        errors.join("\n")
    );
    assert!(
        load(&doc("f", "  rules: [{filters: [{type: RequestMirror}]}]\n")).unwrap_err()[0]
            .contains("unknown variant `RequestMirror`")
    );

    let values = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: shop}
spec:
  hostnames: [orders.example.com]
  parentRefs:
    - {kind: Gateway, name: orders}
    - {kind: Service, name: nowhere}
    - {kind: Service, name: orders, port: 5432}
  rules:
    - matches:
        - path: {type: PathPrefix, value: /a/../b}
        - path: {type: RegularExpression, value: '/(unclosed'}
      backendRefs:
        - {name: orders-v2, port: 80, weight: 0}
        - {name: ghost, port: 80}
      timeouts: {request: 1s, backendRequest: 2s}
      retry: {attempts: 11, codes: [200], backoff: 1.5s}
";
    let errors = load(values).unwrap_err();
    for want in [
        "routes.yaml:5:15: hostnames are not supported on mesh routes",
        "routes.yaml:7:14: only parentRefs of kind Service are supported",
        "routes.yaml:8:29: parentRef names no registry Service shop/nowhere",
        "routes.yaml:9:43: parentRef: port 5432 of Service shop/orders is opaque TCP",
        "routes.yaml:12:43: a path must start with / and be in normalized form",
        "routes.yaml:13:50: bad regular expression: error: unclosed group",
        "routes.yaml:16:18: backendRef names no registry Service shop/ghost",
        "routes.yaml:17:47: timeouts.backendRequest must not be longer than timeouts.request",
        "routes.yaml:18:25: at most 10 retries per request",
        "routes.yaml:18:37: retry codes are HTTP status codes from 400 to 599",
        "routes.yaml:18:52: \"1.5s\" is not a Gateway API duration",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(want)),
            "missing {want:?} in:\n{}",
            errors.join("\n")
        );
    }
}

#[test]
fn weights_all_zero_and_filters_on_protected_headers_are_refused() {
    let errors = load(&doc(
        "r",
        "  rules:
    - backendRefs: [{name: orders-v2, port: 80, weight: 0}]
      filters:
        - {type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: X-Trustmesh-Peer-Identity, value: x}]}}
        - {type: ResponseHeaderModifier, requestHeaderModifier: {remove: [content-length]}}
",
    ))
    .unwrap_err();
    let all = errors.join("\n");
    assert!(
        all.contains("every backendRef of this rule has weight 0"),
        "{all}"
    );
    assert!(
        all.contains("a route may not change trustmesh's own"),
        "{all}"
    );
    assert!(
        all.contains("a ResponseHeaderModifier filter takes responseHeaderModifier only"),
        "{all}"
    );
}

#[test]
fn the_canary_example_splits_ninety_ten_and_sends_testers_to_the_canary() {
    let set = load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/canary")).unwrap();
    let c = CompiledRoutes::compile(&set.routes).unwrap();
    let r = route(&c, 80, "GET", "/orders/7", &[]).unwrap();
    assert_eq!((r.0.as_str(), r.1), ("shop/orders-canary", 1));
    assert_eq!(
        r.2,
        [
            ("orders".to_string(), 90),
            ("orders-canary".to_string(), 10)
        ]
    );
    let r = route(&c, 80, "GET", "/orders/7", &[("x-canary", "always")]).unwrap();
    assert_eq!((r.1, r.2), (0, vec![("orders-canary".to_string(), 1)]));
    assert_eq!(route(&c, 80, "GET", "/health", &[]).map(|r| r.1), Some(2));
}
