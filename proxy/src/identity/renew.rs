//! Renewal: past `--renew-fraction` of each certificate's life the sidecar asks for the next
//! one over mTLS with the one it has, and keeps the one it has until then; once that has
//! expired, it falls back to the bootstrap token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use trustmesh_certs::csr::generate_csr;

use super::issue::{read_token, IssueError};
use super::{random_fraction, Backoff, Identity, BACKOFF_MAX, BACKOFF_MIN};
use crate::state::CertInfo;

impl Identity {
    /// Renews past `renew_fraction` of each certificate's life (counted from when we received
    /// it, up to 10% earlier at random so that a fleet started together spreads out), until
    /// the process ends. On failure the certificate in hand stays in use and the request is
    /// retried with jittered exponential backoff, capped at a tenth of the lifetime so that a
    /// control plane that comes back in time is found in time; past 80% of the lifetime a
    /// warning is logged once. Once the certificate has expired it can no longer authenticate
    /// a renewal, so the bootstrap token file is read again and used: a Kubernetes
    /// ServiceAccount token (which the kubelet keeps fresh) re-bootstraps the proxy, and so
    /// does a fresh `tm1` token written there; a spent one is refused and retried. With `now`,
    /// the first renewal is at once (a certificate loaded from `--state-dir`).
    pub async fn renew_forever(self: Arc<Self>, now: bool) {
        if now {
            if let Some(cert) = self.shared.cert.load_full() {
                self.renew_once(&cert, lifetime(&cert)).await;
            }
        }
        loop {
            let Some(cert) = self.shared.cert.load_full() else {
                tokio::time::sleep(BACKOFF_MIN).await;
                continue;
            };
            let life = lifetime(&cert);
            let jitter = life.mul_f64(0.1 * random_fraction());
            let due = cert.received_at + life.mul_f64(self.config.renew_fraction);
            let due = due.checked_sub(jitter).unwrap_or(due);
            if let Ok(wait) = due.duration_since(SystemTime::now()) {
                tokio::time::sleep(wait).await;
            }
            self.renew_once(&cert, life).await;
        }
    }

    /// Renews `cert` until a new certificate is installed, retrying with capped backoff.
    async fn renew_once(&self, cert: &CertInfo, life: Duration) {
        let shared = &self.shared;
        let token_file = &self.config.token_file;
        let mut backoff = Backoff::with_cap(retry_cap(life));
        let mut warned = false;
        let mut kc = None;
        loop {
            let now = SystemTime::now();
            let expired = now >= cert.not_after;
            let token = if expired {
                read_token(token_file)
            } else {
                None
            };
            let result = match &kc {
                _ if expired && token.is_none() => Err(IssueError::Unavailable(anyhow::anyhow!(
                    "--token-file {} is missing or empty",
                    token_file.display()
                ))),
                Some(kc) => self.request(token.as_deref(), kc).await,
                None => match generate_csr(&shared.identity) {
                    Ok(new) => self.request(token.as_deref(), kc.insert(new)).await,
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
