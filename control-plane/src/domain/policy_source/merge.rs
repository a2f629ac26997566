//! Domain: the registry of Kubernetes mode: the policy folder's `Service` entries and what
//! discovery found. A git entry wins over a discovered one of the same `name.namespace` (for
//! what runs outside the cluster, or a service pinned by hand); each such clash is logged once.

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

use trustmesh_policies::{CompiledPolicies, Registry};

use super::PolicyState;
use crate::domain::discovery::Discovered;

/// The clashes logged so far, so that each is logged once (not at every endpoint change).
static LOGGED: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());

/// `git`'s set with `discovered`'s entries added, recompiled; its version is `git`'s followed
/// by `+k` and the discovered registry's hash. Should the merged set not compile, the policy
/// folder's set stays in force (logged).
pub fn merge(git: &Arc<PolicyState>, discovered: Arc<Discovered>) -> Arc<PolicyState> {
    let named: HashSet<(&str, &str)> = git
        .set
        .registry
        .entries()
        .iter()
        .map(|e| (e.namespace.as_str(), e.name.as_str()))
        .collect();
    let mut entries = git.set.registry.entries().to_vec();
    for e in &discovered.entries {
        if named.contains(&(e.namespace.as_str(), e.name.as_str())) {
            let key = (e.namespace.clone(), e.name.clone());
            if LOGGED.lock().is_ok_and(|mut l| l.insert(key)) {
                tracing::warn!(
                    target: "policy",
                    service = %format!("{}.{}", e.name, e.namespace),
                    "a Service in git and a discovered Kubernetes Service share this name: \
                     the git entry is used"
                );
            }
            continue;
        }
        entries.push(e.clone());
    }
    let mut set = git.set.clone();
    set.registry = Registry::new(entries);
    let compiled = match CompiledPolicies::from_set(&set) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                tracing::warn!(target: "policy", "with the discovered registry: {e}");
            }
            return git.clone();
        }
    };
    Arc::new(PolicyState {
        version: format!("{}+k{}", git.version, discovered.hash),
        set,
        compiled,
        discovered: Some(discovered),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use trustmesh_certs::SpiffeId;
    use trustmesh_policies::ServiceEntry;

    use super::*;
    use crate::domain::discovery::PodInfo;
    use crate::domain::policy_source::PolicySource;

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::parse(&format!("spiffe://cluster.local/ns/shop/sa/{sa}")).unwrap()
    }

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn entry(name: &str, sa: &str, ep: &str) -> ServiceEntry {
        ServiceEntry {
            name: name.into(),
            namespace: "shop".into(),
            labels: labels(&[("app", name)]),
            identity: id(sa),
            endpoints: vec![ep.into()],
            ports: Vec::new(),
            endpoint_identities: BTreeMap::new(),
        }
    }

    #[test]
    fn git_wins_a_clash_and_policy_selectors_match_the_pods_labels() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mesh.yaml"), "default_action: deny\n").unwrap();
        std::fs::write(
            dir.path().join("all.yaml"),
            "apiVersion: trustmesh.io/v1\nkind: Service\nmetadata: {name: db, namespace: shop}\n\
             spec: {identity: spiffe://cluster.local/ns/shop/sa/db-vm, endpoints: [\"192.0.2.1:15006\"]}\n\
             ---\napiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {name: canary-from-web, namespace: shop}\n\
             spec: {selector: {matchLabels: {track: canary}}, rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/web]}}]}]}\n",
        )
        .unwrap();
        let git = PolicySource::load(dir.path()).unwrap().current();
        let pod = |name: &str, sa: &str, ip: &str, l: &[(&str, &str)]| {
            (
                ip.parse().unwrap(),
                PodInfo {
                    namespace: "shop".into(),
                    name: name.into(),
                    uid: format!("uid-{name}"),
                    identity: id(sa),
                    labels: labels(l),
                    ip: Some(ip.parse().unwrap()),
                },
            )
        };
        let discovered = Discovered {
            entries: vec![
                entry("db", "db", "10.0.0.9:15006"),
                entry("orders", "orders", "10.0.0.1:15006"),
            ],
            pods: [
                pod(
                    "orders-1",
                    "orders",
                    "10.0.0.1",
                    &[("app", "orders"), ("track", "canary")],
                ),
                pod("db-1", "db", "10.0.0.9", &[("app", "db")]),
            ]
            .into(),
            hash: "h1".into(),
        };
        let merged = merge(&git, Arc::new(discovered));
        assert_eq!(merged.version, format!("{}+kh1", git.version));
        let db: Vec<_> = merged
            .set
            .registry
            .entries()
            .iter()
            .filter(|e| e.name == "db")
            .collect();
        assert_eq!(db.len(), 1);
        assert_eq!(db[0].identity, id("db-vm"), "the git entry wins");

        let (_data, trust) = crate::domain::trust::test_trust();
        // The service's entry has only `app` (what all its pods share); the pod has `track`.
        let ip = "10.0.0.1".parse().ok();
        let snap = crate::domain::snapshot::build(&merged, &trust, &id("orders"), ip);
        let names: Vec<_> = snap.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["canary-from-web"]);
        assert_eq!(
            snap.workload().labels.get("track").map(String::as_str),
            Some("canary")
        );
        // A workload never takes labels from the git entry or from another identity's pod.
        let snap = crate::domain::snapshot::build(&merged, &trust, &id("db"), ip);
        assert!(snap.policies.is_empty());
    }
}
