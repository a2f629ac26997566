use std::collections::BTreeMap;

use trustmesh_certs::SpiffeId;
use trustmesh_policies::{Protocol, ServicePort};

use super::*;

fn entry(name: &str, endpoint: &str, ports: &[u16]) -> ServiceEntry {
    ServiceEntry {
        name: name.to_string(),
        namespace: "prod".to_string(),
        labels: BTreeMap::new(),
        identity: SpiffeId::parse(&format!("spiffe://cluster.local/ns/prod/sa/{name}")).unwrap(),
        endpoints: vec![endpoint.to_string()],
        ports: ports
            .iter()
            .map(|&port| ServicePort {
                port,
                protocol: Protocol::Http,
            })
            .collect(),
        endpoint_identities: BTreeMap::new(),
    }
}

fn registry() -> Registry {
    Registry::new(vec![
        entry("orders", "10.0.0.12:15006", &[8080, 9090]),
        entry("users", "10.0.0.13:15006", &[80]),
    ])
}

fn addr(s: &str) -> Option<SocketAddr> {
    Some(s.parse().unwrap())
}

fn mesh_to(r: Result<Route<'_>, ProxyError>) -> (String, String) {
    match r {
        Ok(Route::Mesh { service, dial }) => (service.name.clone(), dial),
        // A service by Host: its endpoints are the balancer's to pick from.
        Ok(Route::Service(service)) => (service.name.clone(), service.endpoints.join(",")),
        other => panic!("expected a mesh route, got {other:?}"),
    }
}

#[test]
fn host_wins_and_routes_to_the_registry_service() {
    let r = registry();
    let got = route(
        &r,
        Some("orders:8080"),
        Some("prod"),
        addr("10.96.0.50:8080"),
        OutboundPolicy::Deny,
    );
    assert_eq!(mesh_to(got), ("orders".into(), "10.0.0.12:15006".into()));
}

#[test]
fn original_destination_on_a_declared_app_port_is_dialled_as_is() {
    let r = registry();
    for (orig, want) in [
        ("10.0.0.12:8080", "orders"),
        ("10.0.0.12:9090", "orders"),
        ("10.0.0.12:15006", "orders"),
        ("10.0.0.13:80", "users"),
    ] {
        // The Host is the bare IP the app dialled, which names no service.
        let got = route(
            &r,
            Some(orig),
            Some("prod"),
            addr(orig),
            OutboundPolicy::Deny,
        );
        assert_eq!(mesh_to(got), (want.to_string(), orig.to_string()), "{orig}");
    }
}

#[test]
fn an_undeclared_port_or_unknown_address_falls_to_outbound_policy() {
    let r = registry();
    for orig in ["10.0.0.12:22", "192.0.2.7:443"] {
        let denied = route(
            &r,
            Some("example.com"),
            None,
            addr(orig),
            OutboundPolicy::Deny,
        );
        assert!(
            matches!(denied, Err(ProxyError::OutsideMesh { addr: a }) if a.to_string() == orig),
            "{denied:?}"
        );
        let passed = route(&r, None, None, addr(orig), OutboundPolicy::Passthrough);
        assert!(
            matches!(passed, Ok(Route::Passthrough(a)) if a.to_string() == orig),
            "{passed:?}"
        );
    }
}

#[test]
fn without_a_redirect_nothing_leaves_in_plaintext() {
    let r = registry();
    let got = route(
        &r,
        Some("example.com"),
        None,
        None,
        OutboundPolicy::Passthrough,
    );
    assert!(
        matches!(got, Err(ProxyError::UnknownService { .. })),
        "{got:?}"
    );
    let got = route(&r, None, None, None, OutboundPolicy::Passthrough);
    assert!(matches!(got, Err(ProxyError::NoHost)), "{got:?}");
}
