//! The workload's private key: ECDSA P-256, made in the process that uses it and never sent
//! anywhere (only its CSR goes to the CA). Held as PKCS#8 DER, never `Debug`-printed, and zeroed
//! on drop as far as safe Rust allows.

use std::fmt;

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::CertError;
use crate::pem;

/// An ECDSA P-256 private key in PKCS#8 form. Not `Clone`: hand it to rustls with
/// [`PrivateKey::to_der`] and keep one owner.
pub struct PrivateKey {
    pkcs8: Vec<u8>,
}

impl PrivateKey {
    /// Generates a new ECDSA P-256 key with ring's system random source.
    pub fn generate() -> Result<Self, CertError> {
        let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(CertError::rcgen("generating a P-256 key"))?;
        Ok(Self {
            pkcs8: kp.serialize_der(),
        })
    }

    /// Reads a `PRIVATE KEY` (PKCS#8) PEM block holding an ECDSA P-256 key. Refuses other PEM
    /// kinds (`EC PRIVATE KEY`, `RSA PRIVATE KEY`) and other curves or algorithms.
    pub fn from_pem(pem: &str) -> Result<Self, CertError> {
        let der = PrivateKeyDer::from_pem_slice(pem.as_bytes())
            .map_err(|e| CertError::Pem(format!("private key: {e}")))?;
        match der {
            PrivateKeyDer::Pkcs8(k) => Self::from_pkcs8_der(k.secret_pkcs8_der().to_vec()),
            _ => Err(CertError::UnsupportedKey(
                "expected a PKCS#8 \"PRIVATE KEY\" PEM block".into(),
            )),
        }
    }

    /// Takes a PKCS#8 DER ECDSA P-256 key; refuses anything else.
    pub fn from_pkcs8_der(pkcs8: Vec<u8>) -> Result<Self, CertError> {
        let key = Self { pkcs8 };
        key.key_pair().map_err(|e| {
            CertError::UnsupportedKey(format!("not a PKCS#8 ECDSA P-256 private key ({e})"))
        })?;
        Ok(key)
    }

    /// The key as rustls takes it (PKCS#8). Each call makes a fresh copy.
    pub fn to_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.pkcs8.clone()))
    }

    /// The key as a PKCS#8 `PRIVATE KEY` PEM block: for the CA key file (mode 0600) and
    /// benchmark fixtures only. Workload keys never need to leave memory.
    pub fn to_pem(&self) -> String {
        pem::encode("PRIVATE KEY", &self.pkcs8)
    }

    /// The key as an rcgen signing key.
    pub(crate) fn key_pair(&self) -> Result<KeyPair, CertError> {
        let der = PrivatePkcs8KeyDer::from(self.pkcs8.as_slice());
        KeyPair::from_pkcs8_der_and_sign_algo(&der, &PKCS_ECDSA_P256_SHA256)
            .map_err(CertError::rcgen("loading a P-256 key"))
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<redacted>)")
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.pkcs8.iter_mut().for_each(|b| *b = 0);
        // Keep the zeroing from being optimised away as a dead store.
        std::hint::black_box(&self.pkcs8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_the_key() {
        let key = PrivateKey::generate().unwrap();
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        let back = PrivateKey::from_pem(&pem).unwrap();
        assert_eq!(back.to_der().secret_der(), key.to_der().secret_der());
    }

    #[test]
    fn debug_never_prints_key_material() {
        let key = PrivateKey::generate().unwrap();
        assert_eq!(format!("{key:?}"), "PrivateKey(<redacted>)");
    }

    #[test]
    fn refuses_garbage_and_non_p256_keys() {
        assert!(matches!(
            PrivateKey::from_pem("nope"),
            Err(CertError::Pem(_))
        ));
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        assert!(matches!(
            PrivateKey::from_pem(&p384.serialize_pem()),
            Err(CertError::UnsupportedKey(_))
        ));
    }
}
