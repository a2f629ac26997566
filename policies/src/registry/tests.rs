use std::collections::BTreeMap;

use super::*;
use crate::service::{Protocol, ServicePort};

fn entry(ns: &str, name: &str, endpoint: &str) -> ServiceEntry {
    ServiceEntry {
        name: name.to_string(),
        namespace: ns.to_string(),
        labels: BTreeMap::from([("app".to_string(), name.to_string())]),
        identity: SpiffeId::parse(&format!("spiffe://cluster.local/ns/{ns}/sa/{name}")).unwrap(),
        endpoints: vec![endpoint.to_string()],
        ports: vec![ServicePort {
            port: 80,
            protocol: Protocol::Http,
        }],
        endpoint_identities: BTreeMap::new(),
    }
}

fn registry() -> Registry {
    Registry::new(vec![
        entry("production", "orders", "10.0.0.12:15006"),
        entry("staging", "orders", "10.0.1.12:15006"),
        entry("production", "payments", "[fd00::7]:15006"),
        entry("production", "catalog", "catalog.internal:15006"),
    ])
}

#[test]
fn finds_by_host_forms() {
    let r = registry();
    // (host, caller namespace, expected "ns/name" or None)
    let cases: &[(&str, Option<&str>, Option<&str>)] = &[
        ("payments", None, Some("production/payments")),
        ("PAYMENTS:8080", None, Some("production/payments")),
        ("orders", None, None), // ambiguous across namespaces
        ("orders", Some("staging"), Some("staging/orders")),
        ("orders", Some("production"), Some("production/orders")),
        ("orders", Some("other"), None),
        ("orders.staging", None, Some("staging/orders")),
        ("orders.staging.svc", None, Some("staging/orders")),
        (
            "orders.staging.svc.cluster.local",
            None,
            Some("staging/orders"),
        ),
        (
            "Orders.Staging.SVC.Cluster.Local:80",
            None,
            Some("staging/orders"),
        ),
        (
            "orders.staging.svc.cluster.local.",
            None,
            Some("staging/orders"),
        ),
        ("orders.staging.example.com", None, None),
        ("orders.nowhere", None, None),
        ("10.0.1.12:15006", None, Some("staging/orders")),
        ("[fd00::7]:15006", None, Some("production/payments")),
        ("[fd00::7]", None, None),
        ("", None, None),
        (":80", None, None),
    ];
    for (host, ns, want) in cases {
        let got = r
            .find_by_host(host, *ns)
            .map(|e| format!("{}/{}", e.namespace, e.name));
        assert_eq!(got.as_deref(), *want, "host {host:?} caller ns {ns:?}");
    }
}

#[test]
fn finds_by_identity_and_endpoint() {
    let r = registry();
    let id = SpiffeId::parse("spiffe://cluster.local/ns/staging/sa/orders").unwrap();
    assert_eq!(
        r.find_by_identity(&id).map(|e| e.namespace.as_str()),
        Some("staging")
    );
    let other = SpiffeId::parse("spiffe://cluster.local/ns/staging/sa/nobody").unwrap();
    assert!(r.find_by_identity(&other).is_none());
    let addr: SocketAddr = "10.0.0.12:15006".parse().unwrap();
    assert_eq!(
        r.find_by_endpoint(&addr).map(|e| e.namespace.as_str()),
        Some("production")
    );
    let v6: SocketAddr = "[fd00::7]:15006".parse().unwrap();
    assert_eq!(
        r.find_by_endpoint(&v6).map(|e| e.name.as_str()),
        Some("payments")
    );
    let none: SocketAddr = "10.0.0.12:15007".parse().unwrap();
    assert!(r.find_by_endpoint(&none).is_none());
}

#[test]
fn strips_ports() {
    for (host, want) in [
        ("a.b:80", "a.b"),
        ("a.b", "a.b"),
        ("[::1]:80", "::1"),
        ("[::1]", "::1"),
        ("::1", "::1"),
    ] {
        assert_eq!(strip_port(host), want, "{host}");
    }
}

#[test]
fn byte_split_agrees_with_str_split_once() {
    for s in [
        "", ".", "a.b.c", "é.ü:x", "[::1]:80", "no-dot", "x.", ".x", "ö",
    ] {
        for c in [b'.', b':', b']'] {
            assert_eq!(
                split_once_byte(s, c),
                s.split_once(char::from(c)),
                "{s:?} {c}"
            );
        }
    }
}

#[test]
fn round_trips_as_a_json_list_sorted() {
    let r = registry();
    let json = serde_json::to_string(&r).unwrap();
    assert!(json.starts_with('['));
    let back: Registry = serde_json::from_str(&json).unwrap();
    assert_eq!(back, r);
    let names: Vec<_> = r
        .entries()
        .iter()
        .map(|e| format!("{}/{}", e.namespace, e.name))
        .collect();
    assert_eq!(
        names,
        [
            "production/catalog",
            "production/orders",
            "production/payments",
            "staging/orders"
        ]
    );
}

#[test]
fn an_endpoint_is_verified_as_its_own_identity_and_found_by_it() {
    let mut e = entry("shop", "orders", "10.0.0.1:15006");
    e.endpoints.push("10.0.0.2:15006".into());
    let v2 = SpiffeId::parse("spiffe://cluster.local/ns/shop/sa/orders-v2").unwrap();
    e.endpoint_identities
        .insert("10.0.0.2:15006".into(), v2.clone());
    assert_eq!(e.identity_of("10.0.0.1:15006"), &e.identity);
    assert_eq!(e.identity_of("10.0.0.2:15006"), &v2);
    assert_eq!(e.identities().count(), 2);
    let r = Registry::new(vec![e.clone()]);
    assert_eq!(
        r.find_by_identity(&v2).map(|f| f.name.as_str()),
        Some("orders")
    );
    // Without endpoint identities the field is left out of the JSON (older sidecars).
    let plain = entry("shop", "a", "10.0.0.3:15006");
    let json = serde_json::to_value(&plain).unwrap();
    assert!(json.get("endpoint_identities").is_none(), "{json}");
    let back: ServiceEntry = serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
    assert_eq!(back, e);
}
