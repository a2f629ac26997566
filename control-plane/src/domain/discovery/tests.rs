use std::sync::Arc;

use serde_json::json;

use super::*;

fn td() -> TrustDomain {
    TrustDomain::parse("cluster.local").unwrap()
}

fn obj<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Arc<T> {
    Arc::new(serde_json::from_value(v).unwrap())
}

fn ns(name: &str, meshed: bool) -> Arc<Namespace> {
    let labels = if meshed {
        json!({"trustmesh.io/inject": "enabled"})
    } else {
        json!({})
    };
    obj(json!({"metadata": {"name": name, "labels": labels}}))
}

fn pod(ns: &str, name: &str, sa: &str, ip: &str, labels: serde_json::Value) -> Arc<Pod> {
    obj(json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"), "labels": labels},
        "spec": {"serviceAccountName": sa, "containers": []},
        "status": {"podIP": ip},
    }))
}

fn service(ns: &str, name: &str) -> Arc<Service> {
    obj(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"ports": [{"name": "http-web", "port": 8080, "protocol": "TCP"},
                           {"name": "db", "port": 5432, "appProtocol": "tcp"},
                           {"name": "dns", "port": 53, "protocol": "UDP"}]},
    }))
}

fn slice(ns: &str, svc: &str, eps: &[(&str, &str, Option<bool>)]) -> Arc<EndpointSlice> {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(pod, ip, ready)| {
            json!({"addresses": [ip], "conditions": {"ready": ready},
                   "targetRef": {"kind": "Pod", "namespace": ns, "name": pod}})
        })
        .collect();
    obj(json!({
        "metadata": {"name": format!("{svc}-x"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "endpoints": endpoints,
    }))
}

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")).unwrap()
}

fn cluster() -> ClusterObjects {
    ClusterObjects {
        namespaces: vec![ns("shop", true), ns("plain", false)],
        services: vec![service("shop", "orders"), service("plain", "orders")],
        slices: vec![
            slice(
                "shop",
                "orders",
                &[
                    ("o-1", "10.0.0.1", Some(true)),
                    ("o-2", "10.0.0.2", None),
                    ("o-3", "10.0.0.3", Some(false)),
                    ("gone", "10.0.0.9", Some(true)),
                ],
            ),
            slice("plain", "orders", &[("p-1", "10.0.1.1", Some(true))]),
        ],
        pods: vec![
            pod(
                "shop",
                "o-1",
                "orders",
                "10.0.0.1",
                json!({"app": "orders", "v": "1"}),
            ),
            pod(
                "shop",
                "o-2",
                "orders-v2",
                "10.0.0.2",
                json!({"app": "orders", "v": "2"}),
            ),
            pod(
                "shop",
                "o-3",
                "orders",
                "10.0.0.3",
                json!({"app": "orders", "v": "1"}),
            ),
            pod(
                "plain",
                "p-1",
                "orders",
                "10.0.1.1",
                json!({"app": "orders"}),
            ),
        ],
    }
}

#[test]
fn a_meshed_service_has_its_ready_endpoints_each_with_its_pods_identity() {
    let d = discover(&cluster(), &td());
    assert_eq!(d.entries.len(), 1, "{:?}", d.entries);
    let e = &d.entries[0];
    assert_eq!((e.name.as_str(), e.namespace.as_str()), ("orders", "shop"));
    // Not-ready o-3 and the endpoint of an unknown pod are left out; unknown readiness is ready.
    assert_eq!(e.endpoints, ["10.0.0.1:15006", "10.0.0.2:15006"]);
    // One endpoint each: the tie goes to the smallest identity.
    assert_eq!(e.identity, id("shop", "orders"));
    assert_eq!(e.identity_of("10.0.0.2:15006"), &id("shop", "orders-v2"));
    assert_eq!(e.identity_of("10.0.0.1:15006"), &id("shop", "orders"));
    // Labels every ready pod carries.
    assert_eq!(e.labels, BTreeMap::from([("app".into(), "orders".into())]));
    // http-web → http, appProtocol tcp → tcp, UDP left out.
    let ports: Vec<_> = e.ports.iter().map(|p| (p.port, p.protocol)).collect();
    assert_eq!(
        ports,
        [
            (8080, trustmesh_policies::Protocol::Http),
            (5432, trustmesh_policies::Protocol::Tcp)
        ]
    );
}

#[test]
fn an_endpoint_change_changes_the_hash_and_nothing_else_does_not() {
    let a = discover(&cluster(), &td());
    assert_eq!(a, discover(&cluster(), &td()));
    let mut c = cluster();
    c.slices[0] = slice("shop", "orders", &[("o-1", "10.0.0.1", Some(false))]);
    let b = discover(&c, &td());
    assert_ne!(a.hash, b.hash);
    // No ready endpoint left: the Service is left out.
    assert!(b.entries.is_empty());
}

#[test]
fn a_sidecars_workload_has_its_pods_labels() {
    let d = discover(&cluster(), &td());
    let registry = trustmesh_policies::Registry::new(d.entries.clone());
    let ip = |s: &str| Some(s.parse().unwrap());
    let w = d
        .workload(&registry, &id("shop", "orders"), ip("10.0.0.3"))
        .unwrap();
    assert_eq!(w.labels.get("v").map(String::as_str), Some("1"));
    assert_eq!(w.name, "orders");
    // From an address that is not its pod's: the labels all its pods share.
    let w = d
        .workload(&registry, &id("shop", "orders"), ip("127.0.0.1"))
        .unwrap();
    assert_eq!(w.labels.get("v").map(String::as_str), Some("1"));
    // Found through its endpoint identity.
    let w = d
        .workload(&registry, &id("shop", "orders-v2"), None)
        .unwrap();
    assert_eq!(
        (w.name.as_str(), w.labels.get("v").map(String::as_str)),
        ("orders", Some("2"))
    );
    // Another pod's IP does not lend its labels to a caller of another identity.
    let w = d
        .workload(&registry, &id("shop", "orders-v2"), ip("10.0.0.1"))
        .unwrap();
    assert_eq!(w.labels.get("v").map(String::as_str), Some("2"));
    // No pod of that identity in a meshed namespace: nothing.
    assert!(d
        .workload(&registry, &id("plain", "orders"), None)
        .is_none());
}
