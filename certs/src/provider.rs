//! The one crypto provider of the mesh's TLS and certificates: ring, built once per process.
//! It sits below every module that makes or checks TLS (`tls`, `resolver`, `verify`, `ca`), so
//! none of them needs another to reach it.
//!
//! ring rather than aws-lc-rs: the sidecar's idle memory is mostly its code pages, and ring
//! is the smaller library for what the mesh uses (TLS 1.3; X25519, P-256, P-384; AES-GCM and
//! ChaCha20-Poly1305; ECDSA P-256 keys). README "Benchmarks" has the figures.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The ring crypto provider every configuration of this crate uses (built once per process).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}
