//! Which `HTTPRoute`s reach a proxy: routes apply on the caller's sidecar, so a proxy gets the
//! routes whose parent is a Service its workload may call (least privilege, as for the
//! registry), each with only those parentRefs. Used by the snapshot and by
//! `trustmesh route check`, so both see the same routes.

use trustmesh_certs::SpiffeId;
use trustmesh_policies::route::HttpRoute;
use trustmesh_policies::{CompiledPolicies, PolicySet};

/// The routes of `set` for the sidecar of `identity`, sorted as in the set.
pub fn for_caller(
    set: &PolicySet,
    compiled: &CompiledPolicies,
    identity: &SpiffeId,
) -> Vec<HttpRoute> {
    for_callable(set, |namespace, name| {
        set.registry
            .entries()
            .iter()
            .find(|e| e.namespace == namespace && e.name == name)
            .is_some_and(|e| compiled.policies_for(e).may_be_called_by(identity))
    })
}

/// The routes of `set` whose parents pass `callable(namespace, name)`, each with only those
/// parentRefs, sorted as in the set (what [`for_caller`] computes, with the question of which
/// Services the caller may call answered by the caller of this function).
pub fn for_callable(set: &PolicySet, callable: impl Fn(&str, &str) -> bool) -> Vec<HttpRoute> {
    set.routes
        .iter()
        .filter_map(|r| {
            let mut route = r.clone();
            route
                .spec
                .parent_refs
                .retain(|p| callable(&r.namespace, &p.name));
            (!route.spec.parent_refs.is_empty()).then_some(route)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy_source::PolicySource;

    const SERVICES: &str = "\
apiVersion: trustmesh.io/v1
kind: Service
metadata: {name: web, namespace: t, labels: {app: web}}
spec: {identity: spiffe://cluster.local/ns/t/sa/web}
---
apiVersion: trustmesh.io/v1
kind: Service
metadata: {name: batch, namespace: t, labels: {app: batch}}
spec: {identity: spiffe://cluster.local/ns/t/sa/batch}
---
apiVersion: trustmesh.io/v1
kind: Service
metadata: {name: orders, namespace: t, labels: {app: orders}}
spec: {identity: spiffe://cluster.local/ns/t/sa/orders, ports: [{port: 80, protocol: http}]}
---
apiVersion: trustmesh.io/v1
kind: Service
metadata: {name: billing, namespace: t, labels: {app: billing}}
spec: {identity: spiffe://cluster.local/ns/t/sa/billing, ports: [{port: 80, protocol: http}]}
---
apiVersion: trustmesh.io/v1
kind: AuthorizationPolicy
metadata: {name: orders-from-web, namespace: t}
spec: {selector: {matchLabels: {app: orders}}, rules: [{from: [{source: {principals: [cluster.local/ns/t/sa/web]}}]}]}
---
apiVersion: trustmesh.io/v1
kind: AuthorizationPolicy
metadata: {name: billing-from-batch, namespace: t}
spec: {selector: {matchLabels: {app: billing}}, rules: [{from: [{source: {principals: [cluster.local/ns/t/sa/batch]}}]}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: both, namespace: t}
spec:
  parentRefs: [{kind: Service, name: orders, port: 80}, {kind: Service, name: billing, port: 80}]
  rules: [{timeouts: {request: 5s}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: orders, namespace: t}
spec:
  parentRefs: [{kind: Service, name: orders}]
";

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::parse(&format!("spiffe://cluster.local/ns/t/sa/{sa}")).unwrap()
    }

    /// (route, its parents) in the snapshot of `sa`.
    fn routes_of(
        state: &std::sync::Arc<crate::domain::policy_source::PolicyState>,
        trust: &crate::domain::trust::TrustView,
        sa: &str,
    ) -> Vec<(String, Vec<String>)> {
        let snapshot = crate::domain::snapshot::build(state, trust, &id(sa), None);
        snapshot
            .routes
            .iter()
            .map(|r| {
                (
                    r.name.clone(),
                    r.spec.parent_refs.iter().map(|p| p.name.clone()).collect(),
                )
            })
            .collect()
    }

    #[test]
    fn a_snapshot_carries_only_the_routes_of_services_the_caller_may_call() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mesh.yaml"), "default_action: deny\n").unwrap();
        std::fs::write(dir.path().join("all.yaml"), SERVICES).unwrap();
        let state = PolicySource::load(dir.path()).unwrap().current();
        let (_data, trust) = crate::domain::trust::test_trust();
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            routes_of(&state, &trust, "web"),
            [
                ("both".to_string(), s(&["orders"])),
                ("orders".to_string(), s(&["orders"]))
            ]
        );
        assert_eq!(
            routes_of(&state, &trust, "batch"),
            [("both".to_string(), s(&["billing"]))]
        );
        // orders may call nobody (not even itself): no routes, and the field is left out.
        assert!(routes_of(&state, &trust, "orders").is_empty());
        let json = serde_json::to_value(crate::domain::snapshot::build(
            &state,
            &trust,
            &id("orders"),
            None,
        ))
        .unwrap();
        assert!(json.get("routes").is_none(), "{json}");
        let json = serde_json::to_value(crate::domain::snapshot::build(
            &state,
            &trust,
            &id("web"),
            None,
        ))
        .unwrap();
        assert_eq!(
            json["routes"][0]["spec"]["rules"][0]["timeouts"]["request"],
            "5s"
        );
    }
}
