//! The example policy folders, loaded and evaluated through the public API exactly as the
//! control plane and the proxy use it.

// Test helpers outside `#[test]` functions: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use trustmesh_certs::SpiffeId;
use trustmesh_policies::{
    load_dir, normalize_path, CompiledPolicies, Decision, Reason, Request, ServiceEntry,
};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn compiled(name: &str) -> CompiledPolicies {
    let set = load_dir(&example(name)).expect("example is valid");
    CompiledPolicies::from_set(&set).expect("example compiles")
}

fn target(p: &CompiledPolicies, name: &str) -> ServiceEntry {
    let id = SpiffeId::parse(&format!("spiffe://cluster.local/ns/production/sa/{name}")).unwrap();
    p.registry().find_by_identity(&id).unwrap().clone()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster.local/{s}")).unwrap()
}

fn http(
    p: &CompiledPolicies,
    to: &ServiceEntry,
    from: Option<&str>,
    method: &str,
    path: &str,
) -> Decision {
    let source = from.map(id);
    let path = normalize_path(path).unwrap();
    p.authorize(to, &Request::http(source.as_ref(), method, &path, 80))
}

fn tcp(p: &CompiledPolicies, to: &ServiceEntry, from: &str, port: u16) -> Decision {
    let source = id(from);
    p.authorize(to, &Request::tcp(Some(&source), None, port))
}

#[test]
fn production_example_allows_only_gateway_and_checkout_to_use_orders() {
    let p = compiled("production");
    let orders = target(&p, "order-service");
    assert_eq!(orders.endpoints, ["127.0.0.1:15106"]);
    let gw = Some("ns/production/sa/api-gateway");
    let checkout = Some("ns/production/sa/checkout-service");
    // (caller, method, path, allowed)
    let cases = [
        (gw, "GET", "/orders/1", true),
        (gw, "POST", "/orders/new", true),
        (checkout, "GET", "/orders/1?expand=items", true),
        (checkout, "DELETE", "/orders/1", false),
        (gw, "GET", "/orders", false),
        (gw, "GET", "/orders/../admin", false),
        (
            Some("ns/production/sa/order-service"),
            "GET",
            "/orders/1",
            false,
        ),
        (Some("ns/staging/sa/api-gateway"), "GET", "/orders/1", false),
        (None, "GET", "/orders/1", false),
    ];
    for (from, method, path, allowed) in cases {
        let d = http(&p, &orders, from, method, path);
        assert_eq!(d.allowed, allowed, "{from:?} {method} {path}: {d:?}");
        if allowed {
            assert_eq!(d.policy.as_deref(), Some("production/orders-api"));
            assert_eq!(d.rule, Some(0));
        }
    }
    // The gateway itself has no ALLOW policy: the mesh default (deny) applies.
    let gateway = target(&p, "api-gateway");
    let d = http(&p, &gateway, checkout, "GET", "/");
    assert_eq!((d.allowed, d.reason), (false, Reason::DefaultDeny));
}

#[test]
fn deny_example_closes_what_it_names_and_leaves_the_rest_open() {
    let p = compiled("deny");
    let orders = target(&p, "order-service");
    let gw = "ns/production/sa/api-gateway";
    let reporting = "ns/analytics/sa/reporting";
    // (caller, method, path, decision label, deciding policy, rule)
    let cases = [
        (gw, "POST", "/orders", "allow", None, None),
        (reporting, "GET", "/orders/1", "allow", None, None),
        (
            reporting,
            "POST",
            "/orders",
            "deny",
            Some("production/protect-orders"),
            Some(0),
        ),
        (
            gw,
            "DELETE",
            "/orders/1",
            "deny",
            Some("production/protect-orders"),
            Some(1),
        ),
        (
            gw,
            "GET",
            "/debug/vars",
            "deny",
            Some("trustmesh-system/no-debug-endpoints"),
            Some(0),
        ),
        (
            gw,
            "GET",
            "/actuator/health/liveness",
            "deny",
            Some("trustmesh-system/no-debug-endpoints"),
            Some(0),
        ),
        (
            reporting,
            "GET",
            "/orders/export",
            "would_deny",
            Some("production/export-needs-reason"),
            Some(0),
        ),
    ];
    for (from, method, path, label, policy, rule) in cases {
        let d = http(&p, &orders, Some(from), method, path);
        assert_eq!(
            (d.label(), d.policy.as_deref(), d.rule),
            (label, policy, rule),
            "{from} {method} {path}"
        );
    }
    // The database port: closed to analytics, open to production.
    let d = tcp(&p, &orders, reporting, 5432);
    assert_eq!((d.label(), d.rule), ("deny", Some(2)));
    assert!(tcp(&p, &orders, gw, 5432).allowed);
}
