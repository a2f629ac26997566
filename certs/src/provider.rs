//! The one crypto provider of the mesh's TLS and certificates, chosen once per process: the
//! process default if the binary installed one (`CryptoProvider::install_default`) before its
//! first TLS configuration, else ring. It sits below every module that makes or checks TLS
//! (`tls`, `resolver`, `verify`, `ca`), so none of them needs another to reach it.
//!
//! The sidecar installs none, so it runs on ring: its idle memory is mostly its code pages,
//! and ring is the smaller library for what the mesh uses (TLS 1.3; X25519, P-256, P-384;
//! AES-GCM and ChaCha20-Poly1305; ECDSA P-256 keys). The control plane installs aws-lc-rs,
//! which also offers X25519MLKEM768 to clients that prefer it. README "Benchmarks" has the
//! figures.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The crypto provider every configuration of this crate uses (see the module docs).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| {
        CryptoProvider::get_default()
            .cloned()
            .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
    }))
}
