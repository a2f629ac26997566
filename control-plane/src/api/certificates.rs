//! API layer: `POST /v1/certificates`, bootstrap and renewal. The identity comes from the
//! bearer token or the caller's certificate ([`super::authn`]), never from the CSR.

use std::time::SystemTime;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use trustmesh_certs::CertError;

use super::authn;
use super::body::read_json;
use super::error::{ApiError, Code};
use super::respond::{json, Resp};
use super::state::{AppState, Caller};
use crate::domain::reserved;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateRequest {
    csr: String,
}

#[derive(Serialize)]
struct CertificateResponse {
    certificate_chain: String,
    expires_at: String,
    trust_bundle: String,
}

/// `POST /v1/certificates`: the identity comes from the bearer token or from the caller's
/// current certificate, never from the CSR. A token is spent only once a certificate has been
/// signed, so a malformed CSR does not burn it.
pub async fn certificates(
    state: &AppState,
    caller: &Caller,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let bearer = authn::bearer_token(&req)?;
    let proof = authn::authenticate(state, caller, bearer.as_deref()).await?;
    let identity = proof.identity().clone();
    let trust = state.trust.current();
    if reserved::is_reserved(trust.signer.trust_domain(), &identity) {
        state.metrics.refused("reserved_identity");
        tracing::warn!(client.id = %identity, via = proof.via(), "refused a certificate for a reserved identity");
        return Err(ApiError::new(
            Code::ReservedIdentity,
            format!("{identity} is reserved for the control plane and its operators"),
        ));
    }
    if trust.is_blocked(&identity) {
        state.metrics.refused("identity_blocked");
        tracing::info!(client.id = %identity, "refused a certificate to a blocked identity");
        return Err(ApiError::new(
            Code::IdentityBlocked,
            format!("{identity} is blocked (trustmesh identity block)"),
        ));
    }
    let body: CertificateRequest = read_json(&state.limits, req).await?;
    let issued = trust
        .signer
        .sign_csr(&body.csr, &identity, state.cert_ttl, SystemTime::now())
        .map_err(|e| {
            let code = csr_refusal(&e);
            state
                .metrics
                .issued
                .with_label_values(&[code.as_str()])
                .inc();
            ApiError::new(code, e.to_string())
        })?;
    let issued = match &proof {
        authn::Proof::Token(c) => authn::spend_token(state, c, issued)?,
        _ => issued,
    };
    state.metrics.issued.with_label_values(&["issued"]).inc();
    let via = proof.via();
    tracing::info!(
        client.id = %identity,
        via,
        serial = %issued.serial_hex,
        "issued a certificate"
    );
    Ok(json(
        StatusCode::OK,
        &CertificateResponse {
            certificate_chain: issued.chain_pem,
            expires_at: trustmesh_runtime::rfc3339(issued.not_after),
            trust_bundle: trust.bundle.pem().to_string(),
        },
    ))
}

/// The status and code of a CSR the CA refused to sign. One that names an identity beyond the
/// caller's (another SPIFFE ID, another trust domain, or a second URI SAN beside the caller's
/// own) is a `403`; one that does not parse or verify is a `400`.
fn csr_refusal(e: &CertError) -> Code {
    match e {
        CertError::CsrIdentityMismatch { .. }
        | CertError::TrustDomainMismatch { .. }
        | CertError::MultipleUriSans => Code::CsrIdentityMismatch,
        _ => Code::BadCsr,
    }
}

#[cfg(test)]
mod tests;
