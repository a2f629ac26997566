//! Domain: snapshots encoded once. For the policy state and trust generation in force, an
//! identity's snapshot is built and encoded (JSON) and, once a second poll of that identity
//! asks for it (the replicas of a Deployment share their ServiceAccount's identity), its
//! bytes are kept and shared by every further poll. An identity asked for once (one sidecar
//! of its own) keeps no copy: at 10,000 sidecars that is tens of MB not held for nothing, and
//! building its snapshot again is cheap. The per-version index ([`Prepared`]) is built once
//! for all identities. A new policy state or trust generation starts afresh, so nothing stale
//! is ever served.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use trustmesh_certs::SpiffeId;

use super::encode::Common;
use super::reach::Prepared;
use crate::domain::policy_source::PolicyState;
use crate::domain::trust::TrustView;

/// Most identities whose encoded snapshot is kept per version (past it, a snapshot is built
/// for each poll: correct, only slower). Identities come only from certificates this CA
/// issued, so this is a bound on memory rather than a limit a mesh is expected to reach.
const MAX_IDENTITIES: usize = 200_000;

/// What a snapshot depends on besides the version: the identity, and in Kubernetes mode the
/// labels of the caller's pod (pods of one ServiceAccount may carry different labels, and so
/// be selected by different policies).
type Key = (SpiffeId, Option<BTreeMap<String, String>>);

/// Encoded snapshots of one (policy state, trust generation): per identity asked for, its
/// bytes once kept (`None`: asked once, nothing kept).
struct Encoded {
    state: Arc<PolicyState>,
    generation: String,
    by_identity: HashMap<Key, Option<Bytes>>,
}

/// The encoded snapshots of the version in force, and the index they are built from.
#[derive(Default)]
pub struct SnapshotCache {
    prepared: Mutex<Option<Arc<Prepared>>>,
    common: Mutex<Option<Arc<Common>>>,
    encoded: Mutex<Option<Encoded>>,
}

impl SnapshotCache {
    /// The JSON snapshot for `identity` (calling from `caller_ip`) under `state` and `trust`:
    /// the kept bytes when this identity's snapshot is kept for them, else built and encoded
    /// (and kept from the second ask on).
    pub fn get(
        &self,
        state: &Arc<PolicyState>,
        trust: &TrustView,
        identity: &SpiffeId,
        caller_ip: Option<IpAddr>,
    ) -> Result<Bytes, serde_json::Error> {
        let own = super::own_workload(state, identity, caller_ip);
        let key: Key = (identity.clone(), own.as_ref().map(|o| o.labels.clone()));
        if let Some(hit) = self.lookup(state, trust, &key) {
            tracing::trace!(target: "snapshot", version = %state.version, "served kept");
            return Ok(hit);
        }
        let prepared = self.prepared(state);
        let bytes = Bytes::from(
            self.common(state, trust)?
                .encode(&prepared, identity, own)?,
        );
        tracing::trace!(target: "snapshot", version = %state.version, "built");
        Ok(self.keep(state, trust, key, bytes))
    }

    /// The index for `state`, built once (the polls that arrive meanwhile wait for it rather
    /// than each build their own).
    pub fn prepared(&self, state: &Arc<PolicyState>) -> Arc<Prepared> {
        let Ok(mut slot) = self.prepared.lock() else {
            return Arc::new(Prepared::new(state.clone()));
        };
        match &*slot {
            Some(p) if Arc::ptr_eq(&p.state, state) => p.clone(),
            _ => {
                let started = std::time::Instant::now();
                let p = Arc::new(Prepared::new(state.clone()));
                tracing::debug!(target: "snapshot", version = %state.version, took = ?started.elapsed(), "version indexed");
                *slot = Some(p.clone());
                p
            }
        }
    }

    /// The parts shared by every snapshot of `state` under `trust`, encoded once.
    fn common(
        &self,
        state: &Arc<PolicyState>,
        trust: &TrustView,
    ) -> Result<Arc<Common>, serde_json::Error> {
        let Ok(mut slot) = self.common.lock() else {
            return Ok(Arc::new(Common::new(state.clone(), trust)?));
        };
        match &*slot {
            Some(c) if Arc::ptr_eq(&c.state, state) && c.generation == trust.generation => {
                Ok(c.clone())
            }
            _ => {
                let c = Arc::new(Common::new(state.clone(), trust)?);
                *slot = Some(c.clone());
                Ok(c)
            }
        }
    }

    fn lookup(&self, state: &Arc<PolicyState>, trust: &TrustView, key: &Key) -> Option<Bytes> {
        let enc = self.encoded.lock().ok()?;
        enc.as_ref()
            .filter(|e| Arc::ptr_eq(&e.state, state) && e.generation == trust.generation)
            .and_then(|e| e.by_identity.get(key).cloned().flatten())
    }

    /// Notes that `identity` was asked for, keeping `bytes` when it was asked for before
    /// (starting afresh when the version differs from the one kept); returns the bytes to
    /// serve (those kept for it, when another poll kept them first).
    fn keep(&self, state: &Arc<PolicyState>, trust: &TrustView, key: Key, bytes: Bytes) -> Bytes {
        let Ok(mut enc) = self.encoded.lock() else {
            return bytes;
        };
        let same = enc
            .as_ref()
            .is_some_and(|e| Arc::ptr_eq(&e.state, state) && e.generation == trust.generation);
        if !same {
            *enc = Some(Encoded {
                state: state.clone(),
                generation: trust.generation.clone(),
                by_identity: HashMap::new(),
            });
        }
        let Some(e) = enc.as_mut() else {
            return bytes;
        };
        if e.by_identity.len() >= MAX_IDENTITIES && !e.by_identity.contains_key(&key) {
            return bytes;
        }
        match e.by_identity.entry(key) {
            Entry::Vacant(v) => {
                v.insert(None);
                bytes
            }
            Entry::Occupied(mut o) => o.get_mut().get_or_insert(bytes).clone(),
        }
    }

    /// Identities whose encoded snapshot is kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.encoded
            .lock()
            .ok()
            .and_then(|e| {
                e.as_ref()
                    .map(|e| e.by_identity.values().filter(|b| b.is_some()).count())
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::policy_source::PolicySource;
    use trustmesh_policies::snapshot::Snapshot;

    fn id(sa: &str) -> SpiffeId {
        SpiffeId::parse(&format!("spiffe://cluster.local/ns/t/sa/{sa}")).unwrap()
    }

    fn folder(dir: &std::path::Path, path: &str) {
        std::fs::write(
            dir.join("mesh.yaml"),
            "trust_domain: cluster.local\ndefault_action: deny\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("all.yaml"),
            format!(
                "apiVersion: trustmesh.io/v1\nkind: Service\n\
                 metadata: {{name: a, namespace: t, labels: {{app: a}}}}\n\
                 spec: {{identity: spiffe://cluster.local/ns/t/sa/a, endpoints: [\"10.0.0.1:15006\"]}}\n\
                 ---\napiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
                 metadata: {{name: deny-path, namespace: t}}\n\
                 spec: {{action: DENY, rules: [{{to: [{{operation: {{paths: [\"{path}\"]}}}}]}}]}}\n"
            ),
        )
        .unwrap();
    }

    #[test]
    fn polls_of_one_identity_share_one_encoding_until_the_version_changes() {
        let dir = tempfile::tempdir().unwrap();
        folder(dir.path(), "/one");
        let state = PolicySource::load(dir.path()).unwrap().current();
        let (_data, trust) = crate::domain::trust::test_trust();
        let cache = SnapshotCache::default();

        let first = cache.get(&state, &trust, &id("a"), None).unwrap();
        let direct =
            serde_json::to_vec(&super::super::build(&state, &trust, &id("a"), None)).unwrap();
        assert_eq!(&first[..], &direct[..]);
        assert_eq!(cache.len(), 0, "one ask keeps nothing");
        let second = cache.get(&state, &trust, &id("a"), None).unwrap();
        let third = cache.get(&state, &trust, &id("a"), None).unwrap();
        // From the second ask on, the same bytes, not an equal copy: encoded once.
        assert_eq!(second, first);
        assert_eq!(second.as_ptr(), third.as_ptr());
        assert_eq!(cache.len(), 1);
        let other = cache.get(&state, &trust, &id("b"), None).unwrap();
        assert_ne!(other, first, "each identity has its own snapshot");
        assert_eq!(cache.get(&state, &trust, &id("b"), None).unwrap(), other);
        assert_eq!(cache.len(), 2);

        // A new policy version: built afresh, with the new content and version.
        folder(dir.path(), "/two");
        let next = PolicySource::load(dir.path()).unwrap().current();
        assert_ne!(next.version, state.version);
        let fresh = cache.get(&next, &trust, &id("a"), None).unwrap();
        let snap: Snapshot = serde_json::from_slice(&fresh).unwrap();
        assert!(snap.version.starts_with(&next.version), "{}", snap.version);
        assert!(String::from_utf8_lossy(&fresh).contains("/two"));
        assert_eq!(cache.len(), 0, "the old version's snapshots are dropped");
        assert_eq!(cache.get(&next, &trust, &id("a"), None).unwrap(), fresh);
        assert_eq!(cache.len(), 1);

        // A new trust generation (a block, a rotation step) under the same policy version.
        let moved = TrustView {
            signer: trust.signer.clone(),
            bundle: trust.bundle.clone(),
            blocked: trust.blocked.clone(),
            rotation: trust.rotation.clone(),
            generation: "0000000000000".into(),
        };
        let rotated = cache.get(&next, &moved, &id("a"), None).unwrap();
        let snap: Snapshot = serde_json::from_slice(&rotated).unwrap();
        assert!(
            snap.version.ends_with("+b0000000000000"),
            "{}",
            snap.version
        );
        assert_ne!(rotated, fresh);
    }
}
