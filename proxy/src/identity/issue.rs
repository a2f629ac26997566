//! One certificate request: the CSR of a key made in this process goes to
//! `POST /v1/certificates` (with the bootstrap token, or over mTLS with the certificate in
//! force), and the chain that comes back is checked to be for our identity, put in force in
//! the resolver and, with `--state-dir`, saved beside its key.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use rustls::pki_types::{pem::PemObject as _, CertificateDer};
use serde::Deserialize;
use trustmesh_certs::{identity as certid, KeyAndCsr};

use super::Identity;
use crate::control::error_message;
use crate::state::{CertInfo, Shared};

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct CertificateResponse {
    certificate_chain: String,
}

/// Why a certificate request failed.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The control plane refused (4xx).
    #[error("the control plane refused the certificate request ({status}): {message}")]
    Refused {
        /// The status.
        status: StatusCode,
        /// Its message.
        message: String,
    },
    /// The control plane could not be reached or failed.
    #[error("{0:#}")]
    Unavailable(anyhow::Error),
}

impl IssueError {
    /// Whether the same request may succeed later: the control plane away or failing, or a
    /// refusal that says "later" (408 Request Timeout, 429 Too Many Requests). Any other 4xx
    /// (a spent, expired or invalid token, a blocked or reserved identity) will not change.
    pub fn is_retryable(&self) -> bool {
        match self {
            IssueError::Refused { status, .. } => {
                *status == StatusCode::REQUEST_TIMEOUT || *status == StatusCode::TOO_MANY_REQUESTS
            }
            IssueError::Unavailable(_) => true,
        }
    }
}

/// The bootstrap token file's content, read again (a projected token is rotated in place).
pub(crate) fn read_token(path: &Path) -> Option<String> {
    let token = std::fs::read_to_string(path).ok()?.trim().to_string();
    (!token.is_empty()).then_some(token)
}

impl Identity {
    /// One certificate request for the key and CSR of `kc`: POST, install, save.
    pub(crate) async fn request(
        &self,
        token: Option<&str>,
        kc: &KeyAndCsr,
    ) -> Result<(), IssueError> {
        let body = serde_json::to_vec(&serde_json::json!({ "csr": kc.csr_pem }))
            .map_err(|e| IssueError::Unavailable(e.into()))?;
        let answer = self
            .control
            .call(
                Method::POST,
                "/v1/certificates",
                token,
                Some(Bytes::from(body)),
                CALL_TIMEOUT,
            )
            .await
            .map_err(IssueError::Unavailable)?;
        if answer.status.is_client_error() {
            return Err(IssueError::Refused {
                status: answer.status,
                message: error_message(&answer.body),
            });
        }
        if !answer.status.is_success() {
            return Err(IssueError::Unavailable(anyhow::anyhow!(
                "the control plane answered {}: {}",
                answer.status,
                error_message(&answer.body)
            )));
        }
        let resp: CertificateResponse = serde_json::from_slice(&answer.body)
            .context("the control plane's certificate response is not valid JSON")
            .map_err(IssueError::Unavailable)?;
        install(&self.shared, &resp.certificate_chain, &kc.key).map_err(IssueError::Unavailable)?;
        if let Some(dir) = &self.config.state_dir {
            if let Err(e) = super::persist::save(dir, &resp.certificate_chain, &kc.key) {
                tracing::warn!(target: "identity", "saving the certificate in --state-dir: {e:#}");
            }
        }
        Ok(())
    }
}

fn install(
    shared: &Shared,
    chain_pem: &str,
    key: &trustmesh_certs::PrivateKey,
) -> anyhow::Result<()> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("the issued certificate chain is not valid PEM")?;
    install_chain(shared, chain, key)
}

/// Puts `chain` (leaf first, for our identity) and `key` in force.
pub fn install_chain(
    shared: &Shared,
    chain: Vec<CertificateDer<'static>>,
    key: &trustmesh_certs::PrivateKey,
) -> anyhow::Result<()> {
    let leaf = chain
        .first()
        .context("the issued certificate chain is empty")?;
    let id = certid::identity_from_cert(leaf)?;
    if id != shared.identity {
        anyhow::bail!(
            "the control plane issued a certificate for {id}, not for {}",
            shared.identity
        );
    }
    let info = CertInfo {
        not_before: certid::cert_not_before(leaf)?,
        not_after: certid::cert_not_after(leaf)?,
        serial: certid::cert_serial_hex(leaf)?,
        received_at: SystemTime::now(),
    };
    shared.resolver.set(chain, key)?;
    let expiry = info
        .not_after
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    shared.metrics.cert_expiry.set(expiry);
    tracing::info!(client.id = %id, serial = %info.serial, "certificate installed");
    shared.cert.store(Some(Arc::new(info)));
    Ok(())
}
