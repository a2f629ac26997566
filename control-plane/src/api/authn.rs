//! API layer: who may have a certificate, for `POST /v1/certificates`: a `tm1.` bootstrap token
//! ([`crate::domain::tokens`]), a projected Kubernetes ServiceAccount JWT
//! ([`crate::domain::k8s_jwt`], when
//! `--k8s-jwks` is set) or the caller's current mesh certificate (renewal). A bearer that is
//! not a `tm1.` token is tried as a JWT. Every refusal is counted in
//! `trustmesh_cp_certificates_issued_total{result}` by its reason.

use http::{header, Request};
use hyper::body::Incoming;
use rustls::pki_types::{pem::PemObject as _, CertificateDer};
use trustmesh_certs::{CertError, IssuedCert, SpiffeId};

use super::error::{ApiError, Code};
use super::metrics::refusal_label;
use super::state::{AppState, Caller};
use crate::domain::discovery::bound;
use crate::domain::k8s_jwt::JwtError;
use crate::domain::tokens::{self, Claims, TokenError};
use crate::domain::used_tokens::Enrolled;

/// What proved the caller's identity.
#[derive(Debug)]
pub enum Proof {
    /// A single-use bootstrap token, to be spent once the certificate is signed.
    Token(Claims),
    /// A projected ServiceAccount token for this service account's SPIFFE ID.
    Kubernetes(SpiffeId),
    /// A valid mesh certificate for this identity.
    Certificate(SpiffeId),
}

impl Proof {
    /// The identity the certificate is for.
    pub fn identity(&self) -> &SpiffeId {
        match self {
            Proof::Token(c) => &c.identity,
            Proof::Kubernetes(id) | Proof::Certificate(id) => id,
        }
    }

    /// How, for the log.
    pub fn via(&self) -> &'static str {
        match self {
            Proof::Token(_) => "token",
            Proof::Kubernetes(_) => "kubernetes",
            Proof::Certificate(_) => "certificate",
        }
    }
}

/// Establishes the caller's identity from `bearer` or its certificate; a bearer wins.
pub async fn authenticate(
    state: &AppState,
    caller: &Caller,
    bearer: Option<&str>,
) -> Result<Proof, ApiError> {
    let refused = |label: &'static str| state.metrics.refused(label);
    match bearer {
        Some(t) if t.starts_with("tm1.") || state.k8s.is_none() => {
            tokens::verify(&state.token_key, t, std::time::SystemTime::now())
                .map(Proof::Token)
                .map_err(|e| {
                    refused(refusal_label(&e));
                    e.into()
                })
        }
        Some(t) => {
            let Some(k8s) = &state.k8s else {
                return Err(ApiError::new(
                    Code::TokenMalformed,
                    "the bootstrap token is malformed",
                ));
            };
            let refuse = |e: JwtError| {
                refused(e.code());
                let code = if e == JwtError::KeysUnavailable {
                    Code::JwksUnavailable
                } else {
                    Code::Jwt(e.code())
                };
                ApiError::new(code, e.to_string())
            };
            let (id, pod) = k8s.verify_bound(t).await.map_err(refuse)?;
            // Kubernetes mode: a token bound to a pod is good only while that pod lives.
            if let (Some(cluster), Some(pod)) = (&state.cluster, &pod) {
                bound::check(cluster, &id, pod).await.map_err(refuse)?;
            }
            Ok(Proof::Kubernetes(id))
        }
        None => match &caller.identity {
            Some(id) => Ok(Proof::Certificate(id.clone())),
            None => {
                refused("unauthenticated");
                Err(ApiError::new(Code::Unauthenticated,
                    "a bootstrap token (Authorization: Bearer) or a mesh client certificate is required",
                ))
            }
        },
    }
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
pub fn bearer_token(req: &Request<Incoming>) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| TokenError::Malformed)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiError::new(
                Code::Unauthenticated,
                "the Authorization header must be `Bearer <token>`",
            )
        })?;
    Ok(Some(token.trim().to_string()))
}

/// Spends a bootstrap token on `issued`, or answers a retry of the same enrolment (same token,
/// same public key) with what it got the first time ([`crate::domain::used_tokens::UsedTokens::spend`]).
pub fn spend_token(
    state: &AppState,
    claims: &Claims,
    issued: IssuedCert,
) -> Result<IssuedCert, ApiError> {
    let internal = |e: CertError| ApiError::new(Code::Internal, e.to_string());
    let leaf = issued
        .chain
        .first()
        .ok_or_else(|| internal(CertError::EmptyChain))?;
    let spki = trustmesh_certs::cert_public_key(leaf).map_err(internal)?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &spki);
    let fresh = Enrolled {
        key_sha256: digest.as_ref().iter().map(|b| format!("{b:02x}")).collect(),
        chain_pem: issued.chain_pem.clone(),
        not_after: issued.not_after,
        serial_hex: issued.serial_hex.clone(),
    };
    let answer = state
        .used_tokens
        .spend(claims, fresh)
        .inspect_err(|e| state.metrics.refused(refusal_label(e)))?;
    if answer.serial_hex == issued.serial_hex {
        return Ok(issued);
    }
    tracing::info!(serial = %answer.serial_hex, "a retried enrolment gets the certificate it was issued");
    let chain = CertificateDer::pem_slice_iter(answer.chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| internal(CertError::Pem(e.to_string())))?;
    Ok(IssuedCert {
        chain,
        chain_pem: answer.chain_pem,
        not_after: answer.not_after,
        serial_hex: answer.serial_hex,
    })
}
