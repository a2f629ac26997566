//! Domain: the mesh CA in the data folder. [`store`] reads and writes the CA's files;
//! [`rotation`] replaces the CA without restarts and builds on [`store`] (never the other way
//! round); [`load_or_create`] opens the data folder with both.

use std::path::Path;
use std::time::SystemTime;

use anyhow::Context as _;
use trustmesh_certs::{CertificateAuthority, CertificateDer, TrustDomain};

use crate::storage::files;
use crate::storage::lock::DataDirLock;
use crate::storage::paths::TRUST_DOMAIN;
use store::ImportFrom;

pub mod kube_api;
pub mod rotation;
pub mod store;

/// Loads the CA from `dir`, or, when there is none, imports `import` or creates one for `td`.
/// Refuses a CA of another trust domain, a key file readable by group or others, and an
/// `import` other than the CA the folder already holds (changing the CA of a running mesh is
/// `trustmesh ca rotate`). Writes `trust-bundle.pem` when no rotation is under way (a rotation
/// keeps it in step itself).
pub fn load_or_create(
    dir: &Path,
    td: &TrustDomain,
    import: Option<ImportFrom<'_>>,
) -> anyhow::Result<CertificateAuthority> {
    files::ensure_private_dir(dir)?;
    let _lock = DataDirLock::acquire(dir)?;
    let td_path = dir.join(TRUST_DOMAIN);
    match std::fs::read_to_string(&td_path) {
        Ok(s) if s.trim() != td.as_str() => anyhow::bail!(
            "the data folder {} belongs to trust domain {}, but --trust-domain is {td}",
            dir.display(),
            s.trim()
        ),
        Ok(_) => {}
        Err(_) => files::write_atomic(&td_path, format!("{td}\n").as_bytes(), 0o644)?,
    }
    let (key_path, cert_path, bundle_path) = store::paths(dir);
    let ca = if key_path.exists() {
        rotation::recover_locked(dir)?;
        let ca = store::load_locked(dir)?;
        if ca.trust_domain() != td {
            anyhow::bail!(
                "the CA in {} is for trust domain {}, but --trust-domain is {}",
                dir.display(),
                ca.trust_domain(),
                td
            );
        }
        if let Some(import) = import {
            let wanted = store::read_import(import, td)?;
            if wanted.cert_der() != ca.cert_der() {
                anyhow::bail!(
                    "{} already holds another CA than --ca-cert {}; to change the CA of a \
                     running mesh use `trustmesh ca rotate --ca-cert ... --ca-key ...`",
                    dir.display(),
                    import.cert.display()
                );
            }
        }
        ca
    } else {
        let (ca, how) = match import {
            Some(import) => (store::read_import(import, td)?, "imported the mesh CA"),
            None => (
                CertificateAuthority::generate(td, SystemTime::now())
                    .context("generating the CA")?,
                "created a new mesh CA",
            ),
        };
        files::write_atomic(&key_path, ca.key_pem().as_bytes(), 0o600)?;
        files::write_atomic(&cert_path, ca.chain_pem().as_bytes(), 0o644)?;
        tracing::info!(
            dir = %dir.display(),
            trust_domain = %td,
            intermediate = ca.is_intermediate(),
            "{how}"
        );
        ca
    };
    if rotation::read(dir)?.is_none() {
        files::write_atomic(&bundle_path, ca.trust_bundle().pem().as_bytes(), 0o644)?;
    }
    Ok(ca)
}

/// `sha256:` and the first 16 hex digits of the certificate's SHA-256.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.as_ref());
    let hex: String = d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}
