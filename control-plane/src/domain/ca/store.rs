//! Domain: the CA's files in `--data-dir`: `ca-key.pem` (mode 0600), `ca-cert.pem` (the signing
//! certificate, then, for a CA the operator brings, its intermediates and its root),
//! `trust-bundle.pem` and `trust-domain`. The CA is made on first start, or imported from
//! `--ca-cert` / `--ca-key` (an intermediate signed by an offline root, as Istio's plug-in CA),
//! and loaded afterwards; a key that group or others can read stops the start.
//!
//! Everything here happens under the data folder's lock ([`crate::storage::lock`]), so two replicas
//! starting on an empty folder make one CA, and nobody reads the files halfway through a
//! rotation's switch ([`super::rotation`]). Opening the data folder, which also completes a
//! rotation step a crash interrupted, is [`super::load_or_create`].

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use trustmesh_certs::{CertificateAuthority, TrustDomain};

use crate::storage::files;
use crate::storage::lock::DataDirLock;
pub use crate::storage::paths::{CA_CERT, CA_KEY, TRUST_BUNDLE, TRUST_DOMAIN};

/// A CA the operator brings: a certificate chain file and its key file.
#[derive(Debug, Clone, Copy)]
pub struct ImportFrom<'a> {
    /// The signing certificate, its intermediates, and its root last.
    pub cert: &'a Path,
    /// Its PKCS#8 P-256 key (mode 0600).
    pub key: &'a Path,
}

pub(super) fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (dir.join(CA_KEY), dir.join(CA_CERT), dir.join(TRUST_BUNDLE))
}

/// Reads a CA the operator brings: the key file must be private to its owner (and, for a
/// Kubernetes Secret, its group; see [`files::read_operator_key`]), the chain must verify (see
/// [`CertificateAuthority::from_pem_for_trust_domain`]) and be for `td`.
pub fn read_import(
    import: ImportFrom<'_>,
    td: &TrustDomain,
) -> anyhow::Result<CertificateAuthority> {
    let key = files::read_operator_key(import.key)
        .with_context(|| format!("--ca-key {}", import.key.display()))?;
    let cert = std::fs::read_to_string(import.cert)
        .with_context(|| format!("reading --ca-cert {}", import.cert.display()))?;
    CertificateAuthority::from_pem_for_trust_domain(&cert, &key, Some(td)).with_context(|| {
        format!(
            "--ca-cert {} / --ca-key {}",
            import.cert.display(),
            import.key.display()
        )
    })
}

/// Loads the CA from `dir`; fails when there is none.
pub fn load_existing(dir: &Path) -> anyhow::Result<CertificateAuthority> {
    if !dir.join(CA_KEY).exists() {
        anyhow::bail!(
            "no CA in {}: run `trustmesh serve --data-dir {}` once to create it",
            dir.display(),
            dir.display()
        );
    }
    let _lock = DataDirLock::acquire(dir)?;
    load_locked(dir)
}

/// The trust domain of the control plane on `dir`: its `trust-domain` file (which `serve`
/// writes, also in Kubernetes mode where the CA itself is not in the folder), else its CA's.
pub fn trust_domain_of(dir: &Path) -> anyhow::Result<TrustDomain> {
    let path = dir.join(TRUST_DOMAIN);
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            TrustDomain::parse(s.trim()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
        }
        Err(_) => Ok(load_existing(dir)?.trust_domain().clone()),
    }
}

/// Loads the CA from `dir`; the caller holds the data folder's lock.
pub fn load_locked(dir: &Path) -> anyhow::Result<CertificateAuthority> {
    let (key_path, cert_path, _) = paths(dir);
    load_pair(dir, &cert_path, &key_path)
}

/// Loads a CA from a certificate and key file of `dir` (the trust domain from the certificate,
/// else from `dir/trust-domain`).
pub fn load_pair(
    dir: &Path,
    cert_path: &Path,
    key_path: &Path,
) -> anyhow::Result<CertificateAuthority> {
    let key = files::read_private(key_path)?;
    let cert = std::fs::read_to_string(cert_path)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    let td = std::fs::read_to_string(dir.join(TRUST_DOMAIN))
        .ok()
        .and_then(|s| TrustDomain::parse(s.trim()).ok());
    CertificateAuthority::from_pem_for_trust_domain(&cert, &key, td.as_ref())
        .with_context(|| format!("loading the CA from {}", cert_path.display()))
}

#[cfg(test)]
mod tests {
    use super::super::load_or_create;
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, SystemTime};

    fn td() -> TrustDomain {
        TrustDomain::parse("cluster.local").unwrap()
    }

    #[test]
    fn creates_ca_with_0600_key_then_loads_it() {
        let dir = tempfile::tempdir().unwrap();
        let ca = load_or_create(dir.path(), &td(), None).unwrap();
        let mode = std::fs::metadata(dir.path().join(CA_KEY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(dir.path().join(TRUST_BUNDLE).exists());
        let again = load_or_create(dir.path(), &td(), None).unwrap();
        assert_eq!(again.cert_pem(), ca.cert_pem());
        let other = TrustDomain::parse("other.local").unwrap();
        assert!(load_or_create(dir.path(), &other, None).is_err());
    }

    #[test]
    fn refuses_a_key_readable_by_others() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), &td(), None).unwrap();
        let key = dir.path().join(CA_KEY);
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = format!("{:#}", load_or_create(dir.path(), &td(), None).unwrap_err());
        assert!(err.contains(CA_KEY) && err.contains("0640"), "{err}");
    }

    #[test]
    fn refuses_a_ca_certificate_altered_on_disk_or_not_matching_the_key() {
        let dir = tempfile::tempdir().unwrap();
        load_or_create(dir.path(), &td(), None).unwrap();
        let cert = dir.path().join(CA_CERT);
        let good = std::fs::read_to_string(&cert).unwrap();
        use rustls::pki_types::{pem::PemObject as _, CertificateDer};
        let der = CertificateDer::pem_slice_iter(good.as_bytes())
            .next()
            .unwrap()
            .unwrap();
        // Flip a bit of the signature (the last bytes of the DER): still parses, no longer
        // verifies.
        let mut bad = der.as_ref().to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bad);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        );
        std::fs::write(&cert, pem).unwrap();
        let err = format!("{:#}", load_or_create(dir.path(), &td(), None).unwrap_err());
        assert!(
            err.contains(&cert.display().to_string()) && err.contains("signature"),
            "{err}"
        );
        // Another CA's certificate beside this key.
        let other = CertificateAuthority::generate(&td(), SystemTime::now()).unwrap();
        std::fs::write(&cert, other.chain_pem()).unwrap();
        let err = format!("{:#}", load_or_create(dir.path(), &td(), None).unwrap_err());
        assert!(err.contains(&cert.display().to_string()), "{err}");
        assert!(err.contains("key"), "{err}");
    }

    #[test]
    fn imports_an_intermediate_and_keeps_it_with_its_chain() {
        let offline = tempfile::tempdir().unwrap();
        let root = CertificateAuthority::generate(&td(), SystemTime::now()).unwrap();
        let inter = root
            .new_intermediate(SystemTime::now(), Duration::from_secs(86400))
            .unwrap();
        let (cert, key) = (offline.path().join("ca.pem"), offline.path().join("ca.key"));
        std::fs::write(&cert, inter.chain_pem()).unwrap();
        files::write_atomic(&key, inter.key_pem().as_bytes(), 0o600).unwrap();
        let import = ImportFrom {
            cert: &cert,
            key: &key,
        };

        let dir = tempfile::tempdir().unwrap();
        let ca = load_or_create(dir.path(), &td(), Some(import)).unwrap();
        assert!(ca.is_intermediate());
        assert_eq!(ca.cert_der(), inter.cert_der());
        let bundle = std::fs::read_to_string(dir.path().join(TRUST_BUNDLE)).unwrap();
        assert_eq!(
            bundle,
            root.trust_bundle().pem(),
            "only the offline root is trusted"
        );
        // Restarting with the same flags is fine, and so is restarting without them.
        load_or_create(dir.path(), &td(), Some(import)).unwrap();
        assert_eq!(
            load_existing(dir.path()).unwrap().cert_der(),
            inter.cert_der()
        );
        // Another CA over an existing one is refused.
        let other = CertificateAuthority::generate(&td(), SystemTime::now()).unwrap();
        std::fs::write(&cert, other.chain_pem()).unwrap();
        files::write_atomic(&key, other.key_pem().as_bytes(), 0o600).unwrap();
        let err = format!(
            "{:#}",
            load_or_create(dir.path(), &td(), Some(import)).unwrap_err()
        );
        assert!(err.contains("ca rotate"), "{err}");
        // A key file others can read is refused.
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let fresh = tempfile::tempdir().unwrap();
        assert!(load_or_create(fresh.path(), &td(), Some(import)).is_err());
    }
}
