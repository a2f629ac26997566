//! Trust bundles: the root certificates a workload trusts for its trust domain (SPIFFE Trust
//! Domain and Bundle §4). The proxy receives one from the control plane and builds its verifiers
//! from it; the rustls root store is built once, when the bundle is made.

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use crate::error::CertError;
use crate::pem;

/// One or more trusted root certificates, in a normalized PEM form and as a rustls root store.
/// Cheap to clone (the root store is shared).
#[derive(Clone)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
    pem: String,
    store: Arc<RootCertStore>,
}

impl TrustBundle {
    /// Reads every `CERTIFICATE` block of `pem` (other block kinds are skipped). Fails on bad
    /// PEM, on a certificate webpki cannot use as a trust anchor, and when there is none.
    /// Duplicates are dropped.
    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        Self::from_roots(pem::decode_certs(pem)?)
    }

    /// Builds a bundle from DER root certificates, with the same checks as [`Self::from_pem`].
    pub fn from_roots(certs: Vec<CertificateDer<'static>>) -> Result<Self, CertError> {
        let mut roots: Vec<CertificateDer<'static>> = Vec::with_capacity(certs.len());
        for cert in certs {
            if !roots.contains(&cert) {
                roots.push(cert);
            }
        }
        if roots.is_empty() {
            return Err(CertError::EmptyBundle);
        }
        let mut store = RootCertStore::empty();
        for (i, root) in roots.iter().enumerate() {
            store.add(root.clone()).map_err(|e| {
                CertError::Parse(format!("trust bundle certificate #{}: {e}", i + 1))
            })?;
        }
        Ok(Self {
            pem: pem::encode_certs(&roots),
            roots,
            store: Arc::new(store),
        })
    }

    /// All roots as PEM, one `CERTIFICATE` block each, 64-column base64, `\n` line ends.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The root certificates, in the order first seen.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// The rustls root store for these roots (shared, built once).
    pub fn root_store(&self) -> Arc<RootCertStore> {
        Arc::clone(&self.store)
    }

    /// The union of both bundles, without duplicates; `self`'s roots come first. Used while a CA
    /// rotates, when workloads must trust the old and the new root.
    pub fn merge(&self, other: &TrustBundle) -> TrustBundle {
        let mut roots = self.roots.clone();
        let mut store = (*self.store).clone();
        for root in &other.roots {
            // `other` already passed the same checks, so `add` cannot fail here; a root it
            // nevertheless refused is left out rather than failing the merge.
            if !roots.contains(root) && store.add(root.clone()).is_ok() {
                roots.push(root.clone());
            }
        }
        TrustBundle {
            pem: pem::encode_certs(&roots),
            roots,
            store: Arc::new(store),
        }
    }

    /// How many roots the bundle holds (at least one).
    pub fn len(&self) -> usize {
        self.roots.len()
    }

    /// Whether the bundle is empty; never true for a bundle built by this crate.
    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }
}

impl PartialEq for TrustBundle {
    fn eq(&self, other: &Self) -> bool {
        self.roots == other.roots
    }
}

impl Eq for TrustBundle {}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("roots", &self.roots.len())
            .finish()
    }
}

#[cfg(test)]
mod tests;
