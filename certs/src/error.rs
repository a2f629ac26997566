//! The one error type of this crate. Every variant says what was wrong and with what, so that the
//! control plane can map it to a 4xx answer and the proxy can log it as is.

use crate::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

/// Why a certificate, key, CSR or TLS configuration operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// The input is not valid PEM, or lacks the expected PEM section.
    #[error("bad PEM: {0}")]
    Pem(String),
    /// A DER structure (certificate, CSR, key) could not be parsed.
    #[error("cannot parse {0}")]
    Parse(String),
    /// rcgen refused to build or sign a certificate or CSR.
    #[error("certificate generation failed: {0}")]
    Rcgen(String),
    /// rustls refused a key, certificate or configuration.
    #[error("TLS configuration failed: {0}")]
    Rustls(String),
    /// The CSR's self-signature does not verify against the public key it carries.
    #[error("CSR signature does not verify with the CSR's own public key")]
    CsrSignature,
    /// The CSR asks for a URI SAN other than the identity the caller is entitled to.
    #[error("CSR asks for identity {requested:?}, but the caller may only receive {allowed}")]
    CsrIdentityMismatch {
        /// The URI SAN the CSR asked for.
        requested: String,
        /// The identity established by the token or certificate of the caller.
        allowed: SpiffeId,
    },
    /// An identity belongs to a trust domain other than the expected one.
    #[error("identity {id} is in trust domain {actual}, expected {expected}")]
    TrustDomainMismatch {
        /// The identity in question.
        id: String,
        /// The trust domain that was required (the CA's, or the verifier's).
        expected: TrustDomain,
        /// The identity's trust domain.
        actual: TrustDomain,
    },
    /// A certificate or CSR carries no URI SAN (SPIFFE X.509-SVID §2 requires exactly one).
    #[error("no URI SAN: an X.509-SVID carries exactly one SPIFFE ID as URI SAN")]
    NoUriSan,
    /// A certificate or CSR carries more than one URI SAN (SPIFFE X.509-SVID §2).
    #[error("more than one URI SAN: an X.509-SVID carries exactly one SPIFFE ID")]
    MultipleUriSans,
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("URI SAN is not a valid SPIFFE ID: {0}")]
    BadSpiffeId(#[from] SpiffeIdError),
    /// A trust bundle PEM holds no certificate.
    #[error("trust bundle holds no certificate")]
    EmptyBundle,
    /// The private key is not of a supported kind (PKCS#8 ECDSA P-256 for our own keys).
    #[error("unsupported key: {0}")]
    UnsupportedKey(String),
    /// The CA private key does not belong to the CA certificate.
    #[error("the CA private key does not match the CA certificate's public key")]
    KeyMismatch,
    /// The certificate given as CA is not a CA certificate (basicConstraints CA:true).
    #[error("certificate {subject:?} is not a CA certificate (no basicConstraints CA:true)")]
    NotCa {
        /// The certificate's subject.
        subject: String,
    },
    /// The CA certificate carries no `spiffe://<trust-domain>` URI SAN.
    #[error("CA certificate has no URI SAN of the form spiffe://<trust-domain>: {0}")]
    CaTrustDomain(String),
    /// A CA certificate chain (an intermediate and its issuers) cannot be used.
    #[error("bad CA chain: {0}")]
    BadCaChain(String),
    /// The CA's validity ends before the certificate asked for could begin.
    #[error("the CA certificate expired or expires before the certificate's validity begins")]
    CaExpired,
    /// A time is out of the range X.509 or this platform can represent.
    #[error("time out of range: {0}")]
    Time(String),
    /// A certificate chain to install is empty.
    #[error("certificate chain is empty")]
    EmptyChain,
    /// A verified peer presented a SPIFFE ID other than the one expected.
    #[error("peer presented identity {presented}, expected {expected}")]
    PeerIdentityMismatch {
        /// The identity the caller asked for.
        expected: SpiffeId,
        /// The identity in the peer's certificate.
        presented: SpiffeId,
    },
}

impl CertError {
    pub(crate) fn rcgen(what: &str) -> impl FnOnce(rcgen::Error) -> CertError + '_ {
        move |e| CertError::Rcgen(format!("{what}: {e}"))
    }

    pub(crate) fn rustls(what: &str) -> impl FnOnce(rustls::Error) -> CertError + '_ {
        move |e| CertError::Rustls(format!("{what}: {e}"))
    }
}
