//! Certificate signing requests. The workload side ([`generate_csr`]) makes its key and a CSR
//! naming its SPIFFE ID; only the CSR travels to the CA. The CA side (`ParsedCsr`) parses a CSR,
//! checks its self-signature (proof of possession of the key) and keeps only what the CA uses:
//! the public key and the requested URI SANs.

use rcgen::{CertificateParams, DistinguishedName, SanType, SubjectPublicKeyInfo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateSigningRequestDer;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::error::X509Error;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::error::CertError;
use crate::key::PrivateKey;
use crate::spiffe::SpiffeId;

/// A fresh private key and the PEM CSR for it. Keep `key`; send `csr_pem` to the CA.
#[derive(Debug)]
pub struct KeyAndCsr {
    /// The new ECDSA P-256 private key. It never leaves this process.
    pub key: PrivateKey,
    /// A PEM `CERTIFICATE REQUEST` signed by `key`, whose only SAN is the URI of the identity.
    pub csr_pem: String,
}

/// Makes a new ECDSA P-256 key and a CSR whose only subject alternative name is the URI `id`
/// and whose subject is empty (SPIFFE X.509-SVID §2: the identity lives in the URI SAN).
pub fn generate_csr(id: &SpiffeId) -> Result<KeyAndCsr, CertError> {
    let key = PrivateKey::generate()?;
    let kp = key.key_pair()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![uri_san(id.as_str())?];
    let csr = params
        .serialize_request(&kp)
        .map_err(CertError::rcgen("building the CSR"))?;
    let csr_pem = csr.pem().map_err(CertError::rcgen("encoding the CSR"))?;
    Ok(KeyAndCsr { key, csr_pem })
}

/// A URI subject alternative name for rcgen.
pub(crate) fn uri_san(uri: &str) -> Result<SanType, CertError> {
    let s = rcgen::string::Ia5String::try_from(uri.to_string())
        .map_err(|e| CertError::Rcgen(format!("URI SAN {uri:?}: {e}")))?;
    Ok(SanType::URI(s))
}

/// What the CA takes from a CSR whose self-signature verified: the public key and the URI SANs
/// it asks for. Subject, other SAN types and other extensions are dropped on purpose.
#[derive(Debug)]
pub(crate) struct ParsedCsr {
    pub(crate) public_key: SubjectPublicKeyInfo,
    pub(crate) uri_sans: Vec<String>,
}

impl ParsedCsr {
    /// Parses a PEM CSR and verifies its signature with the key it carries (PKCS #10 §3,
    /// proof of possession). The check is x509-parser's `verify_signature`, backed by ring.
    pub(crate) fn from_pem(csr_pem: &str) -> Result<Self, CertError> {
        let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes())
            .map_err(|e| CertError::Pem(format!("CSR: {e}")))?;
        let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
            .map_err(|e| CertError::Parse(format!("CSR: {e}")))?;
        if !rest.is_empty() {
            return Err(CertError::Parse(
                "CSR: trailing bytes after the request".into(),
            ));
        }
        csr.verify_signature().map_err(|e| match e {
            X509Error::SignatureUnsupportedAlgorithm => {
                CertError::UnsupportedKey("CSR is signed with an unsupported algorithm".into())
            }
            _ => CertError::CsrSignature,
        })?;
        let public_key =
            SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
                .map_err(|e| CertError::UnsupportedKey(format!("CSR public key: {e}")))?;
        let mut uri_sans = Vec::new();
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    if let GeneralName::URI(uri) = name {
                        uri_sans.push((*uri).to_string());
                    }
                }
            }
        }
        Ok(Self {
            public_key,
            uri_sans,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_carries_only_the_uri_san_and_verifies() {
        let id = SpiffeId::parse("spiffe://cluster.local/ns/prod/sa/api").unwrap();
        let KeyAndCsr { csr_pem, .. } = generate_csr(&id).unwrap();
        assert!(csr_pem.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        let parsed = ParsedCsr::from_pem(&csr_pem).unwrap();
        assert_eq!(parsed.uri_sans, vec![id.as_str().to_string()]);
    }

    #[test]
    fn each_csr_has_its_own_key() {
        let id = SpiffeId::parse("spiffe://cluster.local/a").unwrap();
        let a = generate_csr(&id).unwrap();
        let b = generate_csr(&id).unwrap();
        assert_ne!(a.key.to_der().secret_der(), b.key.to_der().secret_der());
    }
}
