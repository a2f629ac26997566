//! The control plane's admin API as the admin identity sees it: `GET /v1/proxies` with a
//! client certificate for `spiffe://TD/ns/trustmesh-system/sa/admin` minted by the mesh CA
//! (what `trustmesh admin-cert` writes), for tests that read the policy error, the blocked
//! identities or the trust state, which `/healthz` no longer shows.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use rustls::ClientConfig;
use serde_json::Value;
use trustmesh_certs::{control_plane_identity, TrustBundle};

use crate::control_plane::ControlPlane;
use crate::mtls::{client_with_cert, issue, mesh_ca, mtls_get, trust_domain};
use crate::policies::spiffe_id;

/// An HTTP/1.1 mTLS client of `cp` that presents a fresh mesh certificate for `id`.
pub fn client_as(cp: &ControlPlane, id: &str) -> anyhow::Result<Arc<ClientConfig>> {
    let bundle = TrustBundle::from_pem(&cp.trust_bundle_pem()?).context("the trust bundle")?;
    let (cert, key) = issue(
        &mesh_ca(cp)?,
        id,
        Duration::from_secs(600),
        SystemTime::now(),
    )?;
    let cp_id = control_plane_identity(&trust_domain()?);
    let mut tls = (*client_with_cert(&bundle, &cert, &key, cp_id.as_str())?).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// `control_plane` of `GET /v1/proxies`, asked as the admin identity.
pub async fn control_plane_state(cp: &ControlPlane) -> anyhow::Result<Value> {
    let admin = client_as(cp, &spiffe_id("trustmesh-system", "admin"))?;
    let resp = mtls_get(admin, cp.addr(), "localhost", "/v1/proxies").await?;
    anyhow::ensure!(
        resp.status == 200,
        "/v1/proxies answered {}: {}",
        resp.status,
        resp.text()
    );
    Ok(resp.json()?["control_plane"].clone())
}
