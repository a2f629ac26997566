//! `mesh.yaml`: the settings that hold for the whole mesh (trust domain, what happens when no
//! policy allows, the root namespace whose policies apply everywhere, and dry-run enforcement).

use serde::{Deserialize, Serialize};
use trustmesh_certs::TrustDomain;

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
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            trust_domain: default_trust_domain(),
            default_action: DefaultAction::Deny,
            root_namespace: DEFAULT_ROOT_NAMESPACE.to_string(),
            enforcement: Enforcement::Enforce,
        }
    }
}

fn default_trust_domain() -> TrustDomain {
    match TrustDomain::parse(DEFAULT_TRUST_DOMAIN) {
        Ok(td) => td,
        // A constant the tests prove valid (`default_mesh_config_is_valid`).
        Err(e) => unreachable!("{DEFAULT_TRUST_DOMAIN} is a valid trust domain: {e}"),
    }
}
