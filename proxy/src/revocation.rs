//! Blocked identities (`trustmesh identity block`), as the newest snapshot lists them.
//!
//! Revocation that does not wait for a certificate to expire: inbound checks the caller's
//! verified identity against the list right after the TLS handshake (a blocked caller's
//! connection is closed at once) and again on every request of an open connection (its
//! request is refused as a policy denial is: `403 RBAC: access denied`), so a block pushed by
//! the control plane takes effect on the next request. The list is a `HashSet` in the [`MeshView`], one lookup per request.

use trustmesh_certs::SpiffeId;

use crate::state::{MeshView, Shared};

/// Whether `peer` is blocked by the snapshot in `mesh`; a refusal at `stage` (`connection` or
/// `request`) is counted in `trustmesh_blocked_refusals_total{stage}` and logged.
pub fn refuses(shared: &Shared, mesh: &MeshView, peer: &SpiffeId, stage: &'static str) -> bool {
    if !mesh.blocked.contains(peer) {
        return false;
    }
    shared
        .metrics
        .blocked_refusals
        .with_label_values(&[stage])
        .inc();
    tracing::info!(client.id = %peer, stage, "refused a blocked identity");
    true
}
