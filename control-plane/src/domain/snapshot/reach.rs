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
mod tests;
