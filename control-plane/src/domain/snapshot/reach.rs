//! Domain: one policy version made ready for building many snapshots. What every snapshot of
//! a version shares is worked out once: which callers each registry entry admits (an index
//! from exact principals to entries, so that a caller's callable entries are found without
//! asking every entry), the addresses of the whole registry as ranges, and the policies that
//! apply to each kind of workload (namespace and labels). Building one proxy's snapshot then
//! costs about what it carries, not the size of the mesh.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use trustmesh_certs::SpiffeId;
use trustmesh_policies::{IpRanges, Registry, ServiceEntry};

use crate::domain::policy_source::PolicyState;

/// Distinct kinds of workload (namespace and labels) whose policy lists are kept per version;
/// past it, the list is worked out for each snapshot (still correct, only slower).
const MAX_KINDS: usize = 65_536;

/// A workload kind: what decides which policies apply to it.
type Kind = (String, BTreeMap<String, String>);

/// One policy version, indexed for building snapshots.
pub struct Prepared {
    /// The state this index was made from (kept so that its address cannot be reused while
    /// the index is in use, and to compare with the state in force).
    pub state: Arc<PolicyState>,
    /// Principal (SPIFFE ID without `spiffe://`) → the entries that admit exactly it.
    by_principal: HashMap<Box<str>, Vec<usize>>,
    /// Entries whose callers are not a list of exact principals: asked per caller.
    evaluate: Vec<usize>,
    /// Identity → the entries of that identity (a workload always gets its own).
    own: HashMap<SpiffeId, Vec<usize>>,
    /// Namespace → name → the first entry of that name (for the routes' parents).
    by_name: HashMap<String, HashMap<String, usize>>,
    /// The IP addresses of every entry's endpoints.
    ips: Vec<Vec<IpAddr>>,
    /// The IP addresses of the whole registry.
    all_ips: IpRanges,
    /// Workload kind → indices into the set's policies that apply to it.
    applied: Mutex<HashMap<Kind, Arc<[usize]>>>,
}

/// What one caller may reach, in registry order.
pub struct Reach {
    /// The entries it may call, and its own (made only by [`Prepared::reach`]: the encoder
    /// takes `sent`).
    #[cfg(test)]
    pub registry: Registry,
    /// The addresses of the others that are not also an address of one it may call.
    pub withheld_ips: IpRanges,
    /// Indices (in the set's registry, sorted) of the entries its policies let it call (its
    /// own only when they do): what decides which routes it gets.
    callable: Vec<usize>,
    /// Indices (in the set's registry, sorted) of the entries in `registry`.
    pub sent: Vec<usize>,
}

impl Prepared {
    /// Indexes `state`.
    pub fn new(state: Arc<PolicyState>) -> Self {
        let entries = state.set.registry.entries();
        let mut by_principal: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut evaluate = Vec::new();
        let mut own: HashMap<SpiffeId, Vec<usize>> = HashMap::new();
        let mut by_name: HashMap<String, HashMap<String, usize>> = HashMap::new();
        let mut ips = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            match state.compiled.policies_for(e).exact_callers() {
                Some(principals) => {
                    for p in principals {
                        by_principal.entry(p.into()).or_default().push(i);
                    }
                }
                None => evaluate.push(i),
            }
            for id in e.identities() {
                own.entry(id.clone()).or_default().push(i);
            }
            by_name
                .entry(e.namespace.clone())
                .or_default()
                .entry(e.name.clone())
                .or_insert(i);
            ips.push(e.socket_addrs().map(|a| a.ip()).collect::<Vec<_>>());
        }
        let all_ips = ips.iter().flatten().copied().collect();
        Self {
            state,
            by_principal,
            evaluate,
            own,
            by_name,
            ips,
            all_ips,
            applied: Mutex::new(HashMap::new()),
        }
    }

    /// The registry entries `identity` could be allowed to call (and its own), and the
    /// addresses of the others that are not also the address of a callable one, so that its
    /// sidecar refuses them rather than pass traffic through. The same answer as asking
    /// every entry's policies (`may_be_called_by`), found through the index.
    #[cfg(test)]
    pub fn reach(&self, identity: &SpiffeId) -> Reach {
        let mut reach = self.reach_indexed(identity);
        reach.registry = self.registry_of(&reach);
        reach
    }

    /// What `identity` may reach, the entries sent given as `sent` (indices into the set's
    /// registry) for an encoder that has them encoded already; [`Prepared::registry_of`]
    /// makes them a registry.
    pub fn reach_indexed(&self, identity: &SpiffeId) -> Reach {
        let entries = self.state.set.registry.entries();
        let compiled = &self.state.compiled;
        let mut callable: Vec<usize> = self
            .evaluate
            .iter()
            .copied()
            .filter(|&i| {
                entries
                    .get(i)
                    .is_some_and(|e| compiled.policies_for(e).may_be_called_by(identity))
            })
            .collect();
        callable.extend(
            self.by_principal
                .get(identity.principal())
                .into_iter()
                .flatten(),
        );
        callable.sort_unstable();
        callable.dedup();
        let mut sent = callable.clone();
        sent.extend(self.own.get(identity).into_iter().flatten());
        sent.sort_unstable();
        sent.dedup();
        let holes: Vec<IpAddr> = sent
            .iter()
            .filter_map(|&i| self.ips.get(i))
            .flatten()
            .copied()
            .collect();
        Reach {
            #[cfg(test)]
            registry: Registry::default(),
            withheld_ips: self.all_ips.without(&holes),
            callable,
            sent,
        }
    }

    /// The registry of the entries `reach` sends.
    pub fn registry_of(&self, reach: &Reach) -> Registry {
        let entries = self.state.set.registry.entries();
        Registry::new(
            reach
                .sent
                .iter()
                .filter_map(|&i| entries.get(i))
                .cloned()
                .collect(),
        )
    }

    /// The registry entry of `identity`, or the label-less stand-in in its namespace (as
    /// [`trustmesh_policies::snapshot::workload_entry`] makes it).
    pub fn workload(&self, identity: &SpiffeId) -> ServiceEntry {
        let registry = &self.state.set.registry;
        match self
            .own
            .get(identity)
            .and_then(|v| v.first())
            .and_then(|&i| registry.entries().get(i))
        {
            Some(e) => e.clone(),
            None => {
                trustmesh_policies::snapshot::workload_entry(&Registry::new(Vec::new()), identity)
            }
        }
    }

    /// Indices into the set's policies of those that apply to `workload`, in set order.
    pub fn applied(&self, workload: &ServiceEntry) -> Arc<[usize]> {
        let kind: Kind = (workload.namespace.clone(), workload.labels.clone());
        if let Some(hit) = self.applied.lock().ok().and_then(|m| m.get(&kind).cloned()) {
            return hit;
        }
        let set = &self.state.set;
        let list: Arc<[usize]> = set
            .policies
            .iter()
            .enumerate()
            .filter(|(_, p)| p.applies_to(workload, &set.mesh.root_namespace))
            .map(|(i, _)| i)
            .collect();
        if let Ok(mut m) = self.applied.lock() {
            if m.len() < MAX_KINDS {
                m.insert(kind, list.clone());
            }
        }
        list
    }

    /// Whether the service `name` in `namespace` is one of `reach`'s callable entries.
    pub fn callable_by_name(&self, reach: &Reach, namespace: &str, name: &str) -> bool {
        self.by_name
            .get(namespace)
            .and_then(|n| n.get(name))
            .is_some_and(|i| reach.callable.binary_search(i).is_ok())
    }
}

#[cfg(test)]
mod tests {
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
        let (callable, others): (Vec<_>, Vec<_>) =
            set.registry.entries().iter().partition(|e| {
                e.served_by(id) || state.compiled.policies_for(e).may_be_called_by(id)
            });
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
}
