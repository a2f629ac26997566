//! trustmesh-certs: the mesh's identity layer.
//!
//! SPIFFE IDs ([`spiffe`]), the certificate authority that signs X.509-SVIDs ([`ca`]), key and
//! CSR creation in the workload's own process ([`csr`]), trust bundles ([`bundle`]), rustls
//! verifiers that check SPIFFE IDs on top of webpki's chain checks ([`verify`]), a certificate
//! resolver that rotates without dropping connections ([`resolver`]) and the rustls
//! configurations that sidecars and the control plane use ([`tls`]).
//!
//! This crate is pure: no sockets, no files, no clock it does not take as an argument.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

pub mod bundle;
pub mod ca;
pub mod csr;
pub mod error;
pub mod identity;
pub mod key;
mod pem;
pub mod provider;
pub mod resolver;
pub mod spiffe;
pub mod tls;
pub mod verify;

#[cfg(test)]
mod testing;

pub use bundle::TrustBundle;
pub use ca::{control_plane_identity, CertificateAuthority, IssuedCert};
pub use csr::{generate_csr, KeyAndCsr};
pub use error::CertError;
pub use identity::{
    cert_not_after, cert_not_before, cert_public_key, cert_serial_hex, identity_from_cert,
};
pub use key::PrivateKey;
pub use resolver::RotatingResolver;
pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
pub use verify::{peer_identity, SpiffeClientVerifier, SpiffeServerVerifier};

/// Re-exported so that callers name the same `CertificateDer` as this crate's API.
pub use rustls::pki_types::CertificateDer;
