//! The one crypto provider of the whole mesh: aws-lc-rs, built once per process (never ring).
//! It sits below every module that makes or checks TLS (`tls`, `resolver`, `verify`, `ca`), so
//! none of them needs another to reach it.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

/// The aws-lc-rs crypto provider every configuration of this crate uses (built once per
/// process; never ring).
pub fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider())))
}
