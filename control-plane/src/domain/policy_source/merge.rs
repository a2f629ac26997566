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
