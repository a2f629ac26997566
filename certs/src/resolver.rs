//! The certificate a sidecar presents, swappable while it serves. The proxy renews past half
//! the certificate's life and calls [`RotatingResolver::set`]; the next handshake (as server or
//! as client) presents the new chain, while open connections keep the one they negotiated.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::client::ResolvesClientCert;
use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use crate::error::CertError;
use crate::identity;
use crate::key::PrivateKey;
use crate::provider::provider;

/// A lock-free, atomically swapped certificate and key for rustls, usable as both the server's
/// and the client's certificate resolver. Empty until the first [`set`](Self::set); while empty,
/// servers abort handshakes and clients send no certificate.
#[derive(Default)]
pub struct RotatingResolver {
    current: ArcSwapOption<CertifiedKey>,
}

impl RotatingResolver {
    /// An empty resolver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Installs `chain` (leaf first) with `key` for every handshake that starts from now on.
    /// Refuses an empty chain, a key the crypto provider cannot load and a key that does not
    /// match the leaf's public key; on error the previous certificate stays in place.
    pub fn set(
        &self,
        chain: Vec<CertificateDer<'static>>,
        key: &PrivateKey,
    ) -> Result<(), CertError> {
        if chain.is_empty() {
            return Err(CertError::EmptyChain);
        }
        // Loads the key through `provider().key_provider.load_private_key` and checks it
        // matches the leaf.
        let ck = CertifiedKey::from_der(chain, key.to_der(), &provider())
            .map_err(CertError::rustls("loading the certificate and key"))?;
        self.current.store(Some(Arc::new(ck)));
        Ok(())
    }

    /// The certificate and key new handshakes use, if any.
    pub fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load_full()
    }

    /// Whether a certificate has been set.
    pub fn has_cert(&self) -> bool {
        self.current.load().is_some()
    }
}

impl ResolvesServerCert for RotatingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current()
    }
}

impl ResolvesClientCert for RotatingResolver {
    // The mesh has one trust domain per bundle; whatever roots the server hints at, our one
    // certificate is the one to send.
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.current()
    }

    fn has_certs(&self) -> bool {
        self.has_cert()
    }
}

impl fmt::Debug for RotatingResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("RotatingResolver");
        match self
            .current
            .load()
            .as_deref()
            .and_then(|ck| ck.cert.first())
        {
            Some(leaf) => d
                .field("identity", &identity::identity_from_cert(leaf).ok())
                .field("serial", &identity::cert_serial_hex(leaf).ok()),
            None => d.field("identity", &None::<()>),
        };
        d.finish()
    }
}
