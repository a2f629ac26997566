//! rustls certificate verifiers for the mesh. Chains are verified by webpki through rustls
//! (signatures, validity at the handshake's time, EKU, basic constraints); on top, these
//! verifiers check the leaf's SPIFFE ID: the client checks the server is exactly the identity
//! the registry names, the server checks the client holds some identity of its trust domain
//! (authorization on that identity happens after the handshake).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};

use crate::bundle::TrustBundle;
use crate::error::CertError;
use crate::identity::identity_from_cert;
use crate::provider::provider;
use crate::spiffe::{SpiffeId, TrustDomain};

/// The SPIFFE ID of the peer's leaf certificate, for code after the handshake (pass
/// `conn.peer_certificates()`). `None` when the peer sent no certificate or its leaf has no
/// single valid SPIFFE ID; the verifiers below make the latter impossible on mesh connections.
pub fn peer_identity(conn_certs: Option<&[CertificateDer<'_>]>) -> Option<SpiffeId> {
    identity_from_cert(conn_certs?.first()?).ok()
}

/// The [`CertError`] inside a rustls error raised by these verifiers, if there is one: e.g.
/// [`CertError::PeerIdentityMismatch`] when a server is not the expected identity.
pub fn cert_error(err: &rustls::Error) -> Option<&CertError> {
    match err {
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            other.0.downcast_ref::<CertError>()
        }
        _ => None,
    }
}

fn invalid(e: CertError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// Verifies a server's certificate for a sidecar or control-plane client: the chain must lead
/// to a root of the bundle (webpki, serverAuth EKU, valid now) and the leaf's only URI SAN must
/// be exactly `expected`. The TLS server name is not checked: webpki's hostname check would
/// refuse URI-only certificates, and the SPIFFE ID is the name that matters. A mismatch is
/// `InvalidCertificate(Other(`[`CertError::PeerIdentityMismatch`]`))`, naming both IDs; see
/// [`cert_error`].
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
    algs: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    /// A verifier trusting `bundle`'s roots and accepting only the server `expected`.
    pub fn new(bundle: &TrustBundle, expected: SpiffeId) -> Self {
        Self {
            roots: bundle.root_store(),
            expected,
            algs: provider().signature_verification_algorithms,
        }
    }

    /// The identity this verifier accepts.
    pub fn expected(&self) -> &SpiffeId {
        &self.expected
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        let presented = identity_from_cert(end_entity).map_err(invalid)?;
        if presented != self.expected {
            return Err(invalid(CertError::PeerIdentityMismatch {
                expected: self.expected.clone(),
                presented,
            }));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Verifies a client's certificate for a sidecar's inbound listener or the control plane:
/// rustls' [`WebPkiClientVerifier`] checks the chain to the bundle (clientAuth EKU, valid now),
/// then the leaf must carry exactly one URI SAN, a valid SPIFFE ID in the trust domain `td`.
/// Which identity may do what is decided after the handshake, on [`peer_identity`].
#[derive(Debug)]
pub struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: TrustDomain,
}

impl SpiffeClientVerifier {
    /// A client certificate is required (sidecar inbound, STRICT mTLS).
    pub fn new(bundle: &TrustBundle, td: &TrustDomain) -> Result<Self, CertError> {
        Self::build(bundle, td, false)
    }

    /// A client certificate is checked when sent but not required: for the control plane API,
    /// where bootstrapping workloads have no certificate yet and authenticate with a token.
    pub fn optional(bundle: &TrustBundle, td: &TrustDomain) -> Result<Self, CertError> {
        Self::build(bundle, td, true)
    }

    fn build(bundle: &TrustBundle, td: &TrustDomain, optional: bool) -> Result<Self, CertError> {
        let mut builder =
            WebPkiClientVerifier::builder_with_provider(bundle.root_store(), provider());
        if optional {
            builder = builder.allow_unauthenticated();
        }
        let inner = builder
            .build()
            .map_err(|e| CertError::Rustls(format!("building the client verifier: {e}")))?;
        Ok(Self {
            inner,
            trust_domain: td.clone(),
        })
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let id = identity_from_cert(end_entity).map_err(invalid)?;
        if id.trust_domain_str() != self.trust_domain.as_str() {
            return Err(invalid(CertError::TrustDomainMismatch {
                id: id.to_string(),
                expected: self.trust_domain.clone(),
                actual: id.trust_domain(),
            }));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
