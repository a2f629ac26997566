//! API layer: `GET /v1/proxies`, what the control plane knows about the mesh, for
//! `trustmesh status`.
//!
//! The endpoint answers only the admin identity (`trustmesh admin-cert`), since the list of
//! proxies, their addresses and versions is a map of the mesh: any other mesh certificate gets
//! 403, no certificate 401. It returns this replica's own state (CA expiry, policy version in
//! force, last policy error, trust generation) and the proxies it has seen.

use serde_json::Value;
use trustmesh_runtime::rfc3339;

use super::error::{ApiError, Code};
use super::state::{AppState, Caller};
use crate::domain::ca::rotation::Rotation;
use crate::domain::reserved::admin_identity;
use crate::domain::trust;

/// The `/v1/proxies` answer, for the admin identity only.
pub fn proxies(state: &AppState, caller: &Caller) -> Result<Value, ApiError> {
    let trust = state.trust.current();
    let Some(id) = caller.identity.as_ref() else {
        return Err(ApiError::new(
            Code::Unauthenticated,
            "an admin client certificate is required (trustmesh admin-cert)",
        ));
    };
    let admin = admin_identity(trust.signer.trust_domain())
        .map_err(|_| ApiError::new(Code::Forbidden, "no admin identity"))?;
    if *id != admin {
        return Err(ApiError::new(
            Code::Forbidden,
            format!("only {admin} may list proxies"),
        ));
    }
    let mut proxies = state.proxies.records();
    proxies
        .sort_by(|a, b| (a.identity.as_str(), &a.address).cmp(&(b.identity.as_str(), &b.address)));
    let policy = state.policies.current();
    Ok(serde_json::json!({
        "control_plane": {
            "policy_version": policy.version,
            "policy_error": state.policies.last_error(),
            "ca_expires_at": rfc3339(trust.signer.not_after()),
            "trust_generation": trust.generation,
            "trust_bundle_roots": trust.bundle.len(),
            "ca_rotation": trust.rotation.as_ref().map(Rotation::phase),
            "blocked_identities": trust.blocked.keys().map(|id| id.as_str()).collect::<Vec<_>>(),
            "draining": state.drain.is_draining(),
            "trust": trust::health(&trust),
            "shared_state": state.trust.backend_name(),
        },
        "proxies": proxies,
    }))
}
