//! Domain: the reserved identities of a trust domain, which no bootstrap token and no API call
//! ever gets a certificate for: the control plane's own, the admin's (`trustmesh admin-cert`)
//! and the injection webhook's caller (`trustmesh admin-cert --role kube-apiserver`).

use anyhow::Context as _;
use trustmesh_certs::{SpiffeId, TrustDomain};

/// The namespace and service account of the admin identity.
pub const ADMIN_NAMESPACE: &str = "trustmesh-system";
/// See [`ADMIN_NAMESPACE`].
pub const ADMIN_SERVICE_ACCOUNT: &str = "admin";

/// The admin identity of trust domain `td`.
pub fn admin_identity(td: &TrustDomain) -> anyhow::Result<SpiffeId> {
    SpiffeId::from_service_account(td, ADMIN_NAMESPACE, ADMIN_SERVICE_ACCOUNT)
        .context("making the admin SPIFFE ID")
}

/// Whether `id` is reserved: the control plane's own identity (which proxies trust as the
/// control plane, and replicas as a peer), the admin identity or the injection webhook's
/// caller. None is ever issued over the API or given a bootstrap token; the control plane
/// makes its own certificate, and `trustmesh admin-cert` the others.
pub fn is_reserved(td: &TrustDomain, id: &SpiffeId) -> bool {
    *id == trustmesh_certs::control_plane_identity(td)
        || admin_identity(td).is_ok_and(|admin| admin == *id)
        || super::inject::caller_identity(td).is_ok_and(|caller| caller == *id)
}
