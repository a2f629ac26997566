//! `mesh.yaml`: the settings that hold for the whole mesh (trust domain, what happens when no
//! policy allows, the root namespace whose policies apply everywhere, and dry-run enforcement).

use serde::{Deserialize, Serialize};
use trustmesh_certs::TrustDomain;

use crate::normalize::PathParameters;

/// The name of the mesh settings file at the root of the policy folder.
pub const MESH_FILE: &str = "mesh.yaml";

/// The root namespace when `mesh.yaml` names none.
pub const DEFAULT_ROOT_NAMESPACE: &str = "trustmesh-system";

/// The trust domain when `mesh.yaml` names none.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// The decision for a workload that no ALLOW policy selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultAction {
    /// Deny (the zero-trust default).
    #[default]
    Deny,
    /// Allow (Istio's behaviour).
    Allow,
}

/// Whether denials are enforced or only reported (a mesh-wide dry run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Denied requests are refused.
    #[default]
    Enforce,
    /// Denied requests pass and are reported as `would_deny`.
    Audit,
}

/// What an outbound sidecar does with a connection that iptables redirected to it when its
/// original destination is in no registry `Service` (and its Host names none either).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutboundPolicy {
    /// Refuse it (the zero-trust default): nothing leaves the pod unverified.
    #[default]
    Deny,
    /// Forward it in plaintext to its original destination, logged and counted.
    Passthrough,
}

/// The contents of `mesh.yaml`. Every key is optional; unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    /// The mesh's SPIFFE trust domain (default `cluster.local`).
    pub trust_domain: TrustDomain,
    /// What happens to a workload no ALLOW policy selects (default deny).
    pub default_action: DefaultAction,
    /// The namespace whose policies apply to every workload (default `trustmesh-system`).
    pub root_namespace: String,
    /// Enforce, or audit (dry run) for the whole mesh (default enforce).
    pub enforcement: Enforcement,
    /// Traffic to an address outside the registry: deny (default) or passthrough.
    #[serde(default)]
    pub outbound_policy: OutboundPolicy,
    /// `;` path parameters: reject (default, `400`) or strip (matched without them). Left out
    /// of a snapshot when it is the default, so that sidecars of the previous release (whose
    /// `MeshConfig` refuses unknown keys) still read it.
    #[serde(default, skip_serializing_if = "is_reject")]
    pub path_parameters: PathParameters,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            trust_domain: default_trust_domain(),
            default_action: DefaultAction::Deny,
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_string(),
            enforcement: Enforcement::Enforce,
            outbound_policy: OutboundPolicy::Deny,
            path_parameters: PathParameters::Reject,
        }
    }
}

fn is_reject(p: &PathParameters) -> bool {
    *p == PathParameters::Reject
}

fn default_trust_domain() -> TrustDomain {
    match TrustDomain::parse(DEFAULT_TRUST_DOMAIN) {
        Ok(td) => td,
        // A constant the tests prove valid (`default_mesh_config_is_valid`).
        Err(e) => unreachable!("{DEFAULT_TRUST_DOMAIN} is a valid trust domain: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_policy_defaults_to_deny_and_reads_passthrough() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MESH_FILE), "trust_domain: cluster.local\n").unwrap();
        let set = crate::load_dir(dir.path()).unwrap();
        assert_eq!(set.mesh.outbound_policy, OutboundPolicy::Deny);
        std::fs::write(
            dir.path().join(MESH_FILE),
            "trust_domain: cluster.local\noutbound_policy: passthrough\n",
        )
        .unwrap();
        let set = crate::load_dir(dir.path()).unwrap();
        assert_eq!(set.mesh.outbound_policy, OutboundPolicy::Passthrough);
        // The snapshot carries it as JSON; an older snapshot without the key still reads.
        let json = serde_json::to_value(&set.mesh).unwrap();
        assert_eq!(json["outbound_policy"], "passthrough");
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("outbound_policy");
        let back: MeshConfig = serde_json::from_value(old).unwrap();
        assert_eq!(back.outbound_policy, OutboundPolicy::Deny);
    }

    #[test]
    fn path_parameters_default_to_reject_and_read_strip() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MESH_FILE), "trust_domain: cluster.local\n").unwrap();
        let set = crate::load_dir(dir.path()).unwrap();
        assert_eq!(set.mesh.path_parameters, PathParameters::Reject);
        let json = serde_json::to_value(&set.mesh).unwrap();
        assert!(json.get("path_parameters").is_none(), "{json}");
        std::fs::write(dir.path().join(MESH_FILE), "path_parameters: strip\n").unwrap();
        let set = crate::load_dir(dir.path()).unwrap();
        assert_eq!(set.mesh.path_parameters, PathParameters::Strip);
        let json = serde_json::to_value(&set.mesh).unwrap();
        assert_eq!(json["path_parameters"], "strip");
        assert_eq!(
            serde_json::from_value::<MeshConfig>(json).unwrap(),
            set.mesh
        );
        std::fs::write(dir.path().join(MESH_FILE), "path_parameters: allow\n").unwrap();
        assert!(crate::load_dir(dir.path()).is_err());
    }

    #[test]
    fn unknown_outbound_policy_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MESH_FILE), "outbound_policy: allow\n").unwrap();
        assert!(crate::load_dir(dir.path()).is_err());
    }
}
