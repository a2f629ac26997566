//! Command line: `trustmesh admin-cert --data-dir D --out FILE` (or `--kubernetes` / `--kubeconfig`
//! for the CA in the Kubernetes API): a client certificate for the mesh's admin
//! identity, `spiffe://<trust domain>/ns/trustmesh-system/sa/admin`, which alone may call
//! `GET /v1/proxies` (what `trustmesh status` shows). The certificate chain and its private
//! key are written together to one file of mode 0600; the key is made here and never leaves
//! that file.
//!
//! `--role kube-apiserver` writes instead the client certificate of
//! `spiffe://<trust domain>/ns/trustmesh-system/sa/kube-apiserver`, the only caller the
//! injection webhook (`POST /v1/inject`) answers: the API server presents it through its
//! admission kubeconfig.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Args;
use rustls::pki_types::pem::PemObject as _;
use trustmesh_certs::{CertificateDer, PrivateKey};

use crate::domain::reserved::admin_identity;

/// Flags of `trustmesh admin-cert`.
#[derive(Debug, Args)]
pub struct AdminCertArgs {
    /// The control plane's data folder (its CA signs the certificate).
    #[arg(long, env = "TRUSTMESH_DATA_DIR", default_value = ".trustmesh")]
    pub data_dir: PathBuf,
    /// Where to write the certificate chain and key (mode 0600).
    #[arg(long, default_value = ".trustmesh/admin.pem")]
    pub out: PathBuf,
    /// Lifetime of the certificate.
    #[arg(long, default_value = "8h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// Whose certificate: the operator's (`admin`) or the API server's for the injection
    /// webhook (`kube-apiserver`).
    #[arg(long, value_enum, default_value = "admin")]
    pub role: Role,
    /// In Kubernetes mode the CA is read from the `trustmesh-ca` Secret instead.
    #[command(flatten)]
    pub kube: crate::storage::kube::KubeArgs,
}

/// The reserved client identities `trustmesh admin-cert` issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// `.../sa/admin`: `GET /v1/proxies`.
    Admin,
    /// `.../sa/kube-apiserver`: `POST /v1/inject`.
    KubeApiserver,
}

/// Issues the certificate and writes the file.
pub fn run(args: &AdminCertArgs) -> anyhow::Result<()> {
    let ca = match args.kube.enabled() {
        false => crate::domain::ca::store::load_existing(&args.data_dir)?,
        true => super::runtime()?.block_on(async {
            let Some(kube) = args.kube.connect().await? else {
                anyhow::bail!("Kubernetes mode is off");
            };
            Ok(crate::domain::ca::kube_api::load(&kube, None).await?.signer)
        })?,
    };
    let id = match args.role {
        Role::Admin => admin_identity(ca.trust_domain())?,
        Role::KubeApiserver => {
            crate::domain::inject::caller_identity(ca.trust_domain()).map_err(anyhow::Error::msg)?
        }
    };
    let (cert, key) = ca
        .issue(&id, &[], &[], args.ttl, SystemTime::now())
        .with_context(|| format!("issuing the certificate of {id}"))?;
    let contents = format!("{}{}", cert.chain_pem, key.to_pem());
    crate::storage::files::write_atomic(&args.out, contents.as_bytes(), 0o600)
        .with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote the certificate and key of {id} to {} (mode 0600), valid until {}",
        args.out.display(),
        trustmesh_runtime::rfc3339(cert.not_after)
    );
    Ok(())
}

/// Reads an admin file: the chain (leaf first) and the key. Refuses a file others may read.
pub fn load(path: &Path) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKey)> {
    let pem = crate::storage::files::read_private(path)?;
    let chain = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("reading the certificates in {}", path.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no certificate", path.display());
    }
    let key = PrivateKey::from_pem(&pem)
        .with_context(|| format!("reading the key in {}", path.display()))?;
    Ok((chain, key))
}
