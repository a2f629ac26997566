//! Domain: a snapshot's JSON made from parts. What every snapshot of one (policy state, trust
//! generation) carries alike (the version, the mesh settings, the trust bundle, the blocked
//! identities) is encoded once; the policies once per list of policies that apply (one per
//! kind of workload); each registry entry once, when a snapshot first carries it; and only
//! what is the caller's own (its identity, which entries, withheld addresses and routes) per
//! snapshot. The bytes are those `serde_json::to_vec` of
//! the whole [`trustmesh_policies::snapshot::Snapshot`] gives: the same fields in the same
//! order (a test holds them equal).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use trustmesh_certs::SpiffeId;
use trustmesh_policies::{AuthorizationPolicy, ServiceEntry};

use super::reach::Prepared;
use crate::domain::policy_source::PolicyState;
use crate::domain::trust::TrustView;

/// Most policy lists whose encoding is kept (past it, encoded per snapshot).
const MAX_LISTS: usize = 65_536;

/// Lists of policy indices and their JSON arrays.
type PolicyLists = HashMap<Arc<[usize]>, Arc<[u8]>>;

/// The parts shared by the snapshots of one (policy state, trust generation), encoded.
pub struct Common {
    /// The state they were made from (compared by address with the state in force).
    pub state: Arc<PolicyState>,
    /// The trust generation they were made with.
    pub generation: String,
    version: Vec<u8>,
    mesh: Vec<u8>,
    trust_bundle: Vec<u8>,
    blocked: Vec<u8>,
    /// Indices of the policies that apply → their JSON array.
    policies: Mutex<PolicyLists>,
    /// Each registry entry's JSON, made when first sent.
    entries: Vec<OnceLock<Box<[u8]>>>,
}

impl Common {
    /// Encodes the shared parts of `state`'s snapshots under `trust`.
    pub fn new(state: Arc<PolicyState>, trust: &TrustView) -> Result<Self, serde_json::Error> {
        Ok(Self {
            version: serde_json::to_vec(&super::version(&state.version, trust))?,
            mesh: serde_json::to_vec(&state.set.mesh)?,
            trust_bundle: serde_json::to_vec(trust.bundle.pem())?,
            blocked: serde_json::to_vec(&trust.blocked_ids())?,
            policies: Mutex::new(HashMap::new()),
            entries: (0..state.set.registry.entries().len())
                .map(|_| OnceLock::new())
                .collect(),
            generation: trust.generation.clone(),
            state,
        })
    }

    /// The JSON snapshot of `identity` (with `own`, its workload entry from
    /// [`super::own_workload`]), as [`super::build_with`] builds it.
    pub fn encode(
        &self,
        prepared: &Prepared,
        identity: &SpiffeId,
        own: Option<ServiceEntry>,
    ) -> Result<Vec<u8>, serde_json::Error> {
        let set = &prepared.state.set;
        let workload = own.clone().unwrap_or_else(|| prepared.workload(identity));
        let policies = self.policies(prepared, &prepared.applied(&workload))?;
        let reach = prepared.reach_indexed(identity);
        let routes = crate::domain::routes::for_callable(set, |namespace, name| {
            prepared.callable_by_name(&reach, namespace, name)
        });
        let registry = match own {
            Some(own) => serde_json::to_vec(&super::with_own_entry(
                prepared.registry_of(&reach),
                identity,
                own,
            ))?,
            None => self.registry(prepared, &reach.sent)?,
        };
        let mut out = Vec::with_capacity(
            512 + self.version.len() + self.mesh.len() + self.trust_bundle.len() + policies.len(),
        );
        part(&mut out, "version", &self.version);
        part(&mut out, "identity", &serde_json::to_vec(identity)?);
        part(&mut out, "mesh", &self.mesh);
        part(&mut out, "registry", &registry);
        part(&mut out, "trust_bundle", &self.trust_bundle);
        part(&mut out, "policies", &policies);
        part(&mut out, "blocked", &self.blocked);
        part(
            &mut out,
            "withheld_ips",
            &serde_json::to_vec(&reach.withheld_ips)?,
        );
        if !routes.is_empty() {
            part(&mut out, "routes", &serde_json::to_vec(&routes)?);
        }
        out.push(b'}');
        Ok(out)
    }

    /// The JSON array of the registry entries at `sent` (as a `Registry` encodes: an array of
    /// its entries), each entry encoded once.
    fn registry(&self, prepared: &Prepared, sent: &[usize]) -> Result<Vec<u8>, serde_json::Error> {
        let entries = prepared.state.set.registry.entries();
        let mut out = Vec::with_capacity(64 + 320 * sent.len());
        out.push(b'[');
        for &i in sent {
            let (Some(entry), Some(slot)) = (entries.get(i), self.entries.get(i)) else {
                continue;
            };
            let json = match slot.get() {
                Some(json) => json,
                None => {
                    let json = serde_json::to_vec(entry)?.into_boxed_slice();
                    slot.get_or_init(|| json)
                }
            };
            if out.len() > 1 {
                out.push(b',');
            }
            out.extend_from_slice(json);
        }
        out.push(b']');
        Ok(out)
    }

    /// The JSON array of the set's policies at `applied`, encoded once per list.
    fn policies(
        &self,
        prepared: &Prepared,
        applied: &Arc<[usize]>,
    ) -> Result<Arc<[u8]>, serde_json::Error> {
        if let Some(hit) = self
            .policies
            .lock()
            .ok()
            .and_then(|m| m.get(applied).cloned())
        {
            return Ok(hit);
        }
        let set = &prepared.state.set;
        let list: Vec<&AuthorizationPolicy> = applied
            .iter()
            .filter_map(|&i| set.policies.get(i))
            .collect();
        let bytes: Arc<[u8]> = serde_json::to_vec(&list)?.into();
        if let Ok(mut m) = self.policies.lock() {
            if m.len() < MAX_LISTS {
                m.insert(applied.clone(), bytes.clone());
            }
        }
        Ok(bytes)
    }
}

/// Appends the field `name` with its JSON `bytes` to the object being written to `out`.
fn part(out: &mut Vec<u8>, name: &str, bytes: &[u8]) {
    out.extend_from_slice(if out.is_empty() { b"{\"" } else { b",\"" });
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(bytes);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::domain::policy_source::PolicySource;

    /// Every workload of the canary example (routes, policies of several kinds) and one the
    /// registry does not know: the parts make exactly the bytes of the whole snapshot.
    #[test]
    fn the_parts_make_the_bytes_of_the_whole_snapshot() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/canary");
        let state = PolicySource::load(&dir).unwrap().current();
        let (_data, trust) = crate::domain::trust::test_trust();
        let prepared = Prepared::new(state.clone());
        let common = Common::new(state.clone(), &trust).unwrap();
        let mut ids: Vec<SpiffeId> = state
            .set
            .registry
            .entries()
            .iter()
            .map(|e| e.identity.clone())
            .collect();
        ids.push(SpiffeId::parse("spiffe://cluster.local/ns/elsewhere/sa/stranger").unwrap());
        let mut with_routes = 0;
        for id in &ids {
            let whole = super::super::build(&state, &trust, id, None);
            with_routes += usize::from(!whole.routes.is_empty());
            let want = serde_json::to_vec(&whole).unwrap();
            assert_eq!(
                String::from_utf8(common.encode(&prepared, id, None).unwrap()).unwrap(),
                String::from_utf8(want).unwrap(),
                "{id}"
            );
        }
        assert!(with_routes > 0, "no snapshot carried routes");
    }
}
