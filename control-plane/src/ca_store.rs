//! The CA's files in `--data-dir`: `ca-key.pem` (mode 0600), `ca-cert.pem` and
//! `trust-bundle.pem`. The CA is made on first start and loaded afterwards; a key that group or
//! others can read stops the start.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use trustmesh_certs::{CertificateAuthority, TrustDomain};

use crate::files;

/// The CA private key file name.
pub const CA_KEY: &str = "ca-key.pem";
/// The CA certificate file name.
pub const CA_CERT: &str = "ca-cert.pem";
/// The trust bundle file name (what proxies are given as `--trust-bundle`).
pub const TRUST_BUNDLE: &str = "trust-bundle.pem";

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (dir.join(CA_KEY), dir.join(CA_CERT), dir.join(TRUST_BUNDLE))
}

/// Loads the CA from `dir`, or creates one for `td` if there is none. Refuses a CA of another
/// trust domain and a key file readable by group or others. Rewrites `trust-bundle.pem`.
pub fn load_or_create(dir: &Path, td: &TrustDomain) -> anyhow::Result<CertificateAuthority> {
    files::ensure_private_dir(dir)?;
    let (key_path, cert_path, bundle_path) = paths(dir);
    let ca = if key_path.exists() {
        let ca = load_existing(dir)?;
        if ca.trust_domain() != td {
            anyhow::bail!(
                "the CA in {} is for trust domain {}, but --trust-domain is {}",
                dir.display(),
                ca.trust_domain(),
                td
            );
        }
        ca
    } else {
        let ca =
            CertificateAuthority::generate(td, SystemTime::now()).context("generating the CA")?;
        files::write_atomic(&key_path, ca.key_pem().as_bytes(), 0o600)?;
        files::write_atomic(&cert_path, ca.cert_pem().as_bytes(), 0o644)?;
        tracing::info!(dir = %dir.display(), trust_domain = %td, "created a new mesh CA");
        ca
    };
    files::write_atomic(&bundle_path, ca.trust_bundle().pem().as_bytes(), 0o644)?;
    Ok(ca)
}

/// Loads the CA from `dir`; fails when there is none.
pub fn load_existing(dir: &Path) -> anyhow::Result<CertificateAuthority> {
    let (key_path, cert_path, _) = paths(dir);
    if !key_path.exists() {
        anyhow::bail!(
            "no CA in {}: run `trustmesh serve --data-dir {}` once to create it",
            dir.display(),
            dir.display()
        );
    }
    let key = files::read_private(&key_path)?;
    let cert = std::fs::read_to_string(&cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    CertificateAuthority::from_pem(&cert, &key)
        .with_context(|| format!("loading the CA from {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_ca_with_0600_key_then_loads_it() {
        let dir = tempfile::tempdir().unwrap();
        let td = TrustDomain::parse("cluster.local").unwrap();
        let ca = load_or_create(dir.path(), &td).unwrap();
        let mode = std::fs::metadata(dir.path().join(CA_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(dir.path().join(TRUST_BUNDLE).exists());
        let again = load_or_create(dir.path(), &td).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        let other = TrustDomain::parse("other.local").unwrap();
        assert!(load_or_create(dir.path(), &other).is_err());
    }

    #[test]
    fn refuses_a_key_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        let td = TrustDomain::parse("cluster.local").unwrap();
        load_or_create(dir.path(), &td).unwrap();
        let key = dir.path().join(CA_KEY);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = format!("{:#}", load_or_create(dir.path(), &td).unwrap_err());
        assert!(err.contains(CA_KEY) && err.contains("0640"), "{err}");
    }
}
