//! The first certificate at start: the one kept in `--state-dir` ([`super::persist`]) when it
//! is still valid, else one got with the bootstrap token of `--token-file`. A sidecar that
//! cannot get one for now (control plane away, a refusal that says "later") keeps trying; one
//! that has no certificate and no token that can get one exits with [`NoCredential`].

use std::time::SystemTime;

use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier as _;
use trustmesh_certs::csr::generate_csr;
use trustmesh_certs::{SpiffeClientVerifier, TrustBundle, TrustDomain};

use super::issue::{install_chain, read_token};
use super::persist::{self, Saved};
use super::{Backoff, Identity};

/// The sidecar has no certificate it may use and no token that can get one: the process
/// exits with [`NoCredential::EXIT_CODE`].
#[derive(Debug, thiserror::Error)]
#[error("no usable credential: {0}")]
pub struct NoCredential(pub String);

impl NoCredential {
    /// The exit code (1 is any other error, 2 a bad flag or config file).
    pub const EXIT_CODE: u8 = 3;
}

impl Identity {
    /// Gets our first certificate with the bootstrap token of `--token-file`, read again at
    /// every try (a projected token is rotated in place). Retries with jittered, capped
    /// exponential backoff while the control plane is away or refuses for now; fails with
    /// [`NoCredential`] when the token file is missing or empty, or the token is refused for
    /// good. `why` says why a token is needed (for the message).
    pub async fn bootstrap(&self, why: &str) -> anyhow::Result<()> {
        let path = &self.config.token_file;
        let kc = generate_csr(&self.shared.identity).context("making a CSR")?;
        let mut backoff = Backoff::new();
        loop {
            let Some(token) = read_token(path) else {
                return Err(NoCredential(format!(
                    "{why}, and --token-file {} is missing or empty",
                    path.display()
                ))
                .into());
            };
            match self.request(Some(&token), &kc).await {
                Ok(()) => return Ok(()),
                Err(e) if e.is_retryable() => {
                    let wait = backoff.next();
                    tracing::warn!(target: "identity", "bootstrap failed, retrying in {wait:?}: {e}");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    return Err(NoCredential(format!(
                        "{why}, and the token in --token-file {} was refused: {e}",
                        path.display()
                    ))
                    .into())
                }
            }
        }
    }

    /// Puts the certificate kept in `--state-dir` in force, if it is for our identity,
    /// unexpired and chains to `bundle` (a CA rotation may have left it behind while we were
    /// away). `Err(why)` when there is none that can be used (no `--state-dir`, first start,
    /// expired, damaged): why a token is needed.
    pub fn restore(&self, bundle: &TrustBundle) -> anyhow::Result<Result<(), String>> {
        let shared = &self.shared;
        let Some(dir) = &self.config.state_dir else {
            return Ok(Err("no certificate yet".into()));
        };
        persist::prepare(dir)?;
        let why = match persist::load(dir, &shared.identity, SystemTime::now()) {
            Saved::Nothing => format!("no certificate in --state-dir {} yet", dir.display()),
            Saved::Valid { chain, key } => {
                match trusted(bundle, &shared.identity.trust_domain(), &chain)
                    .and_then(|()| install_chain(shared, chain, &key))
                {
                    Ok(()) => {
                        tracing::info!(target: "identity", state_dir = %dir.display(), "using the certificate kept in --state-dir");
                        return Ok(Ok(()));
                    }
                    Err(e) => format!("the certificate in --state-dir cannot be used ({e:#})"),
                }
            }
            Saved::Expired { not_after } => format!(
                "the certificate in --state-dir {} expired at {}",
                dir.display(),
                humantime::format_rfc3339_seconds(not_after)
            ),
            Saved::Unusable(e) => format!("the certificate in --state-dir cannot be used ({e})"),
        };
        tracing::info!(target: "identity", "{why}: bootstrapping with --token-file");
        Ok(Err(why))
    }
}

/// Whether peers (and the control plane) that trust `bundle` would accept `chain`.
fn trusted(
    bundle: &TrustBundle,
    td: &TrustDomain,
    chain: &[CertificateDer<'static>],
) -> anyhow::Result<()> {
    let verifier = SpiffeClientVerifier::new(bundle, td)?;
    let (leaf, intermediates) = chain.split_first().context("an empty chain")?;
    verifier
        .verify_client_cert(leaf, intermediates, UnixTime::now())
        .map_err(|e| anyhow::anyhow!("it does not verify against --trust-bundle: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustmesh_certs::{CertificateAuthority, SpiffeId};

    #[test]
    fn a_saved_certificate_of_another_ca_is_not_trusted() {
        let td = TrustDomain::parse("cluster.local").unwrap();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
        let now = SystemTime::now();
        let ca = CertificateAuthority::generate(&td, now).unwrap();
        let other = CertificateAuthority::generate(&td, now).unwrap();
        let kc = generate_csr(&id).unwrap();
        let issued = ca
            .sign_csr(&kc.csr_pem, &id, std::time::Duration::from_secs(600), now)
            .unwrap();
        assert!(trusted(&ca.trust_bundle(), &td, &issued.chain).is_ok());
        let err = trusted(&other.trust_bundle(), &td, &issued.chain).unwrap_err();
        assert!(format!("{err:#}").contains("--trust-bundle"), "{err:#}");
    }
}
