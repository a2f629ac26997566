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

pub mod spiffe;

pub use spiffe::{SpiffeId, SpiffeIdError, TrustDomain};
