//! Storage layer: the names of the files in the control plane's data folder (`--data-dir`),
//! which every replica shares. Today the data folder is the only storage; the Kubernetes API
//! would take its place behind the same names.

/// The CA private key file name.
pub const CA_KEY: &str = "ca-key.pem";
/// The CA certificate file name.
pub const CA_CERT: &str = "ca-cert.pem";
/// The trust bundle file name (what proxies are given as `--trust-bundle`).
pub const TRUST_BUNDLE: &str = "trust-bundle.pem";
/// The trust domain, for CAs whose certificate does not name it.
pub const TRUST_DOMAIN: &str = "trust-domain";
/// The state of a CA rotation under way.
pub const ROTATION_FILE: &str = "ca-rotation.json";
/// The next CA's certificate, during a rotation.
pub const NEXT_CERT: &str = "ca-next-cert.pem";
/// The next CA's key, during a rotation.
pub const NEXT_KEY: &str = "ca-next-key.pem";
/// The old root, trusted until the rotation ends.
pub const PREV_ROOT: &str = "ca-prev-root.pem";
/// The blocked identities and the dated unblocks.
pub const BLOCKED_FILE: &str = "blocked-identities.json";
/// The bootstrap token MAC key.
pub const TOKEN_KEY: &str = "token-key";
/// The used bootstrap tokens.
pub const USED_TOKENS: &str = "used-tokens";
/// The lock file that serializes writers across replicas.
pub const LOCK_FILE: &str = ".lock";
/// The TLS session ticket keys of the API listener.
pub const TICKET_KEYS: &str = "ticket-keys";
