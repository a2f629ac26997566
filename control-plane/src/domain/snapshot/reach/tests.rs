use super::*;
use crate::domain::policy_source::PolicySource;

/// Services in two namespaces whose callers are named every way a policy can name them.
const MESH: &str = "\
apiVersion: trustmesh.io/v1
kind: AuthorizationPolicy
metadata: {name: orders-exact, namespace: a}
spec: {selector: {matchLabels: {app: orders}}, rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/web, cluster.local/ns/b/sa/batch]}}]}]}
---
apiVersion: trustmesh.io/v1
kind: AuthorizationPolicy
metadata: {name: billing-wildcard, namespace: a}
spec: {selector: {matchLabels: {app: billing}}, rules: [{from: [{source: {principals: [\"*/sa/batch\"]}}]}]}
---
apiVersion: trustmesh.io/v1
kind: AuthorizationPolicy
metadata: {name: search-namespace, namespace: a}
spec: {selector: {matchLabels: {app: search}}, rules: [{from: [{source: {namespaces: [b]}}]}]}
---
apiVersion: trustmesh.io/v1
kind: AuthorizationPolicy
metadata: {name: admin-mixed, namespace: a}
spec: {selector: {matchLabels: {app: admin}}, rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/web]}}, {source: {notPrincipals: [cluster.local/ns/b/sa/batch]}}]}]}
---
apiVersion: trustmesh.io/v1
kind: AuthorizationPolicy
metadata: {name: open-to-all, namespace: a}
spec: {selector: {matchLabels: {app: open}}, rules: [{to: [{operation: {methods: [GET]}}]}]}
---
apiVersion: trustmesh.io/v1
kind: AuthorizationPolicy
metadata: {name: dry-allow, namespace: a}
spec: {selector: {matchLabels: {app: dry}}, mode: audit, rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/web]}}]}]}
---
apiVersion: trustmesh.io/v1
kind: AuthorizationPolicy
metadata: {name: shared-two, namespace: b}
spec: {selector: {matchLabels: {app: shared-two}}, rules: [{from: [{source: {principals: [cluster.local/ns/a/sa/web]}}]}]}
---
apiVersion: trustmesh.io/v1
kind: AuthorizationPolicy
metadata: {name: no-admin, namespace: trustmesh-system}
spec: {action: DENY, rules: [{to: [{operation: {methods: [DELETE]}}]}]}
";

fn services() -> String {
    let mut docs = String::new();
    let all = [
        ("a", "web", "10.0.0.1:15006"),
        ("a", "orders", "10.0.0.2:15006"),
        ("a", "billing", "10.0.0.3:15006"),
        ("a", "search", "10.0.0.4:15006"),
        ("a", "admin", "10.0.0.5:15006"),
        ("a", "open", "10.0.0.6:15006"),
        ("a", "dry", "10.0.0.7:15006"),
        ("b", "batch", "10.0.0.8:15006"),
        // Two services behind one address: callable through one, the address is not withheld.
        ("b", "shared-one", "10.0.0.9:15006"),
        ("b", "shared-two", "10.0.0.9:15007"),
        ("b", "v6", "[fd00::1]:15006"),
    ];
    for (ns, name, ip) in all {
        docs.push_str(&format!(
            "---\napiVersion: trustmesh.io/v1\nkind: Service\n\
             metadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}\n\
             spec: {{identity: spiffe://cluster.local/ns/{ns}/sa/{name}, endpoints: [\"{ip}\"]}}\n"
        ));
    }
    docs
}

/// What the control plane computed before the index: every entry's policies asked.
fn direct(state: &PolicyState, id: &SpiffeId) -> (Vec<String>, IpRanges, Vec<String>) {
    let set = &state.set;
    let (callable, others): (Vec<_>, Vec<_>) = set
        .registry
        .entries()
        .iter()
        .partition(|e| e.served_by(id) || state.compiled.policies_for(e).may_be_called_by(id));
    let reachable: std::collections::HashSet<_> = callable
        .iter()
        .flat_map(|e| e.socket_addrs())
        .map(|a| a.ip())
        .collect();
    let withheld = others
        .iter()
        .flat_map(|e| e.socket_addrs())
        .map(|a| a.ip())
        .filter(|ip| !reachable.contains(ip))
        .collect();
    let workload = trustmesh_policies::snapshot::workload_entry(&set.registry, id);
    let applied = set
        .policies
        .iter()
        .filter(|p| p.applies_to(&workload, &set.mesh.root_namespace))
        .map(|p| p.name.clone())
        .collect();
    let names = callable
        .iter()
        .map(|e| format!("{}/{}", e.namespace, e.name));
    (names.collect(), withheld, applied)
}

fn indexed(p: &Prepared, id: &SpiffeId) -> (Vec<String>, IpRanges, Vec<String>) {
    let r = p.reach(id);
    let names = r
        .registry
        .entries()
        .iter()
        .map(|e| format!("{}/{}", e.namespace, e.name));
    let applied = p
        .applied(&p.workload(id))
        .iter()
        .map(|&i| p.state.set.policies[i].name.clone())
        .collect();
    (names.collect(), r.withheld_ips, applied)
}

#[test]
fn the_index_gives_every_caller_what_asking_every_entry_gives() {
    for mesh in [
        "trust_domain: cluster.local\ndefault_action: deny\n",
        "trust_domain: cluster.local\ndefault_action: allow\n",
        "trust_domain: cluster.local\ndefault_action: deny\nenforcement: audit\n",
    ] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mesh.yaml"), mesh).unwrap();
        std::fs::write(dir.path().join("services.yaml"), services()).unwrap();
        std::fs::write(dir.path().join("policies.yaml"), MESH).unwrap();
        let state = PolicySource::load(dir.path()).unwrap().current();
        let prepared = Prepared::new(state.clone());
        let mut callers: Vec<String> = state
            .set
            .registry
            .entries()
            .iter()
            .map(|e| e.identity.to_string())
            .collect();
        callers.extend(
            [
                "spiffe://cluster.local/ns/a/sa/stranger",
                "spiffe://cluster.local/ns/c/sa/batch",
                "spiffe://cluster.local/ns/b/sa/other",
                "spiffe://cluster.local/workload/x",
            ]
            .map(String::from),
        );
        for c in &callers {
            let id = SpiffeId::parse(c).unwrap();
            assert_eq!(indexed(&prepared, &id), direct(&state, &id), "{mesh}: {c}");
            // Asked again (the kind's policy list now comes from the index's memo).
            assert_eq!(indexed(&prepared, &id), direct(&state, &id), "{mesh}: {c}");
        }
    }
}

#[test]
fn exact_principals_are_indexed_and_the_rest_is_asked_per_caller() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mesh.yaml"),
        "trust_domain: cluster.local\ndefault_action: deny\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("services.yaml"), services()).unwrap();
    std::fs::write(dir.path().join("policies.yaml"), MESH).unwrap();
    let prepared = Prepared::new(PolicySource::load(dir.path()).unwrap().current());
    let names = |v: &[usize]| -> Vec<String> {
        let e = prepared.state.set.registry.entries();
        v.iter().map(|&i| e[i].name.clone()).collect()
    };
    assert_eq!(
        names(&prepared.by_principal["cluster.local/ns/a/sa/web"]),
        ["orders", "shared-two"]
    );
    // Nobody may call what no enforced ALLOW admits under `default_action: deny`.
    for idle in ["batch", "dry", "web"] {
        let i = prepared
            .state
            .set
            .registry
            .entries()
            .iter()
            .position(|e| e.name == idle);
        assert!(!prepared.evaluate.contains(&i.unwrap()), "{idle}");
    }
    // Wildcards, namespaces, exclusions and open rules are asked per caller.
    let mut asked = names(&prepared.evaluate);
    asked.sort();
    assert_eq!(asked, ["admin", "billing", "open", "search"]);
}
