//! What each proxy is sent: its snapshot (registry, mesh settings, trust bundle), built from the
//! policy set in force for the caller's verified identity, and the book of proxies seen.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use trustmesh_certs::SpiffeId;
use trustmesh_policies::snapshot::{workload_entry, Snapshot};

use crate::policy_source::PolicyState;

/// Builds the snapshot that concerns `identity`.
/// Only the policies that apply to the caller's workload travel; the registry travels whole
/// (the caller needs every destination's identity to verify it).
pub fn build(state: &PolicyState, identity: &SpiffeId, trust_bundle: &str) -> Snapshot {
    let set = &state.set;
    let workload = workload_entry(&set.registry, identity);
    let policies = set
        .policies
        .iter()
        .filter(|p| p.applies_to(&workload, &set.mesh.root_namespace))
        .cloned()
        .collect();
    Snapshot {
        version: state.version.clone(),
        identity: identity.clone(),
        mesh: set.mesh.clone(),
        registry: set.registry.clone(),
        trust_bundle: trust_bundle.to_string(),
        policies,
    }
}

/// One proxy as last seen by this control plane.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProxyRecord {
    /// The proxy's verified identity.
    pub identity: SpiffeId,
    /// The peer address of its last request.
    pub address: String,
    /// The policy version it last asked with.
    pub policy_version: Option<String>,
    /// Expiry of the certificate it presented, RFC 3339.
    pub certificate_expiry: Option<String>,
    /// When it was last seen, RFC 3339.
    pub last_seen: String,
}

/// Proxies seen by this replica, keyed by identity and address.
#[derive(Default)]
pub struct ProxyBook {
    seen: Mutex<HashMap<(SpiffeId, String), ProxyRecord>>,
}

impl ProxyBook {
    /// Records a proxy's request.
    pub fn record(
        &self,
        identity: &SpiffeId,
        address: String,
        policy_version: Option<String>,
        certificate_expiry: Option<SystemTime>,
    ) {
        let rec = ProxyRecord {
            identity: identity.clone(),
            address: address.clone(),
            policy_version,
            certificate_expiry: certificate_expiry.map(crate::api::rfc3339),
            last_seen: crate::api::rfc3339(SystemTime::now()),
        };
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert((identity.clone(), address), rec);
        }
    }

    /// Number of distinct proxies seen.
    pub fn len(&self) -> usize {
        self.seen.lock().map(|s| s.len()).unwrap_or(0)
    }
}
