//! Our identity: the key pair is made here and never leaves this process; only a CSR goes to
//! the control plane. Bootstrap spends the single-use token; renewal, past a fraction of the
//! certificate's life, authenticates with the current certificate. A new certificate is
//! swapped into the resolver atomically: new handshakes use it, open connections carry on.
//! When the control plane is away we keep the certificate we have and retry with jittered,
//! capped exponential backoff. One enrolment keeps its key and CSR across its retries, so that
//! a retry after a timeout is the same enrolment (the control plane answers it with the
//! certificate it already issued for the token). A request that carries a token never
//! presents a certificate ([`ControlClient::call`]): an expired one would make the control
//! plane refuse the handshake before it reads the token. With `--state-dir` every installed
//! certificate is saved there with its key ([`crate::persist`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, StatusCode};
use rustls::pki_types::{pem::PemObject as _, CertificateDer};
use serde::Deserialize;
use trustmesh_certs::{csr::generate_csr, identity as certid, KeyAndCsr};

use crate::control::{error_message, ControlClient};
use crate::state::{CertInfo, Shared};

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

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

/// Renews past `renew_fraction` of each certificate's life (counted from when we received it,
/// up to 10% earlier at random so that a fleet started together spreads out), until the
/// process ends. On failure the certificate in hand stays in use and the request is retried
/// with jittered exponential backoff, capped at a tenth of the lifetime so that a control
/// plane that comes back in time is found in time; past 80% of the lifetime a warning is
/// logged once. Once the certificate has expired it can no longer authenticate a renewal, so
/// the bootstrap token file is read again and used: a Kubernetes ServiceAccount token (which
/// the kubelet keeps fresh) re-bootstraps the proxy, and so does a fresh `tm1` token written
/// there; a spent one is refused and retried. With `now`, the first renewal is at once (a
/// certificate loaded from `--state-dir`).
pub async fn renew_forever(shared: Arc<Shared>, control: Arc<ControlClient>, now: bool) {
    if now {
        if let Some(cert) = shared.cert.load_full() {
            renew_once(&shared, &control, &cert, lifetime(&cert)).await;
        }
    }
    loop {
        let Some(cert) = shared.cert.load_full() else {
            tokio::time::sleep(BACKOFF_MIN).await;
            continue;
        };
        let life = lifetime(&cert);
        let jitter = life.mul_f64(0.1 * random_fraction());
        let due = cert.received_at + life.mul_f64(shared.args.renew_fraction);
        let due = due.checked_sub(jitter).unwrap_or(due);
        if let Ok(wait) = due.duration_since(SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        renew_once(&shared, &control, &cert, life).await;
    }
}

/// Renews `cert` until a new certificate is installed, retrying with capped backoff.
async fn renew_once(shared: &Shared, control: &ControlClient, cert: &CertInfo, life: Duration) {
    let mut backoff = Backoff::with_cap(retry_cap(life));
    let mut warned = false;
    let mut kc = None;
    loop {
        let now = SystemTime::now();
        let expired = now >= cert.not_after;
        let token = if expired {
            read_token(&shared.args.token_file)
        } else {
            None
        };
        let result = match &kc {
            _ if expired && token.is_none() => Err(IssueError::Unavailable(anyhow::anyhow!(
                "--token-file {} is missing or empty",
                shared.args.token_file.display()
            ))),
            Some(kc) => request(shared, control, token.as_deref(), kc).await,
            None => match generate_csr(&shared.identity) {
                Ok(new) => request(shared, control, token.as_deref(), kc.insert(new)).await,
                Err(e) => Err(IssueError::Unavailable(anyhow::anyhow!(
                    "making a CSR: {e}"
                ))),
            },
        };
        let label = match &result {
            Ok(()) => "ok",
            Err(IssueError::Refused { .. }) => "refused",
            Err(IssueError::Unavailable(_)) => "unavailable",
        };
        shared.metrics.renewals.with_label_values(&[label]).inc();
        let Err(e) = result else {
            return;
        };
        let used = now
            .duration_since(cert.received_at)
            .unwrap_or_default()
            .as_secs_f64()
            / life.as_secs_f64();
        if now >= cert.not_after {
            tracing::warn!(target: "identity", "certificate expired and could not be renewed; not ready: {e}");
        } else if used >= 0.8 && !warned {
            tracing::warn!(
                target: "identity",
                expires_in = ?cert.not_after.duration_since(now).unwrap_or_default(),
                "certificate is past 80% of its life and could not be renewed: {e}"
            );
            warned = true;
        } else {
            tracing::info!(target: "identity", "renewal failed, will retry: {e}");
        }
        tokio::time::sleep(backoff.next()).await;
        if shared
            .cert
            .load()
            .as_ref()
            .is_some_and(|c| c.serial != cert.serial)
        {
            return;
        }
    }
}

/// The lifetime renewal is planned over: from when we received the certificate to its
/// NotAfter (its NotBefore is back-dated a minute for clock skew, which would otherwise make a
/// short-lived certificate look due at once).
fn lifetime(cert: &CertInfo) -> Duration {
    cert.not_after
        .duration_since(cert.received_at)
        .unwrap_or_default()
        .max(Duration::from_secs(1))
}

/// The longest wait between two renewal attempts for a certificate living `life`.
fn retry_cap(life: Duration) -> Duration {
    (life / 10).clamp(BACKOFF_MIN, BACKOFF_MAX)
}

/// The bootstrap token file's content, read again (a projected token is rotated in place).
pub(crate) fn read_token(path: &std::path::Path) -> Option<String> {
    let token = std::fs::read_to_string(path).ok()?.trim().to_string();
    (!token.is_empty()).then_some(token)
}

/// One certificate request for the key and CSR of `kc`: POST, install, save.
pub(crate) async fn request(
    shared: &Shared,
    control: &ControlClient,
    token: Option<&str>,
    kc: &KeyAndCsr,
) -> Result<(), IssueError> {
    let body = serde_json::to_vec(&serde_json::json!({ "csr": kc.csr_pem }))
        .map_err(|e| IssueError::Unavailable(e.into()))?;
    let answer = control
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
    install(shared, &resp.certificate_chain, &kc.key).map_err(IssueError::Unavailable)?;
    if let Some(dir) = &shared.args.state_dir {
        if let Err(e) = crate::persist::save(dir, &resp.certificate_chain, &kc.key) {
            tracing::warn!(target: "identity", "saving the certificate in --state-dir: {e:#}");
        }
    }
    Ok(())
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

/// Capped exponential backoff with jitter.
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    /// Starts at the minimum; capped at 30 s.
    pub fn new() -> Self {
        Self::with_cap(BACKOFF_MAX)
    }

    /// Starts at the minimum; capped at `cap`.
    pub fn with_cap(cap: Duration) -> Self {
        Self {
            next: BACKOFF_MIN,
            cap: cap.max(BACKOFF_MIN),
        }
    }

    /// The next wait: uniform in [base/2, base], base doubling up to the cap.
    pub fn next(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.cap);
        base.mul_f64(0.5 + 0.5 * random_fraction())
    }
}

/// A random number in [0, 1).
pub fn random_fraction() -> f64 {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut b = [0u8; 4];
    if aws_lc_rs::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}
