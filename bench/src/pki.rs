//! Certificates for the benchmark, all from trustmesh's own CA (`trustmesh-certs`).
//!
//! The nginx pair gets a fresh CA made here; its leaves carry a DNS SAN beside the SPIFFE ID so
//! that nginx's `proxy_ssl_verify` (a hostname check) works. The handshake client against the
//! trustmesh pair uses the control plane's CA, read from its `--data-dir`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};
use trustmesh_certs::{CertificateAuthority, CertificateDer, PrivateKey, SpiffeId, TrustDomain};

/// The trust domain of every identity in the benchmark.
pub const TRUST_DOMAIN: &str = "cluster.local";
/// Lifetime of the benchmark's leaves: longer than any run.
const LEAF_TTL: Duration = Duration::from_secs(3600);

/// A certificate chain and its key, issued by the benchmark's CA.
pub struct Leaf {
    /// The leaf first, as rustls wants it.
    pub chain: Vec<CertificateDer<'static>>,
    /// The chain as PEM (nginx reads files).
    pub chain_pem: String,
    /// The private key.
    pub key: PrivateKey,
}

/// The CA the benchmark issues from.
pub struct Pki {
    ca: CertificateAuthority,
}

impl Pki {
    /// A new CA for `cluster.local`.
    pub fn generate() -> Result<Self> {
        let td = TrustDomain::parse(TRUST_DOMAIN)?;
        Ok(Self {
            ca: CertificateAuthority::generate(&td, SystemTime::now())?,
        })
    }

    /// The control plane's CA from its data dir (`ca-cert.pem`, `ca-key.pem`).
    pub fn load(data_dir: &Path) -> Result<Self> {
        let cert = std::fs::read_to_string(data_dir.join("ca-cert.pem"))
            .with_context(|| format!("reading the CA certificate in {}", data_dir.display()))?;
        let key = std::fs::read_to_string(data_dir.join("ca-key.pem"))
            .with_context(|| format!("reading the CA key in {}", data_dir.display()))?;
        Ok(Self {
            ca: CertificateAuthority::from_pem(&cert, &key)?,
        })
    }

    /// The CA certificate as PEM (the trust bundle).
    pub fn ca_pem(&self) -> &str {
        self.ca.cert_pem()
    }

    /// Issues a leaf for `spiffe://cluster.local/ns/bench/sa/<sa>` with the given DNS SANs.
    pub fn issue(&self, sa: &str, dns: &[&str]) -> Result<Leaf> {
        let id = spiffe_id(sa)?;
        let dns: Vec<String> = dns.iter().map(|s| (*s).to_owned()).collect();
        let (cert, key) = self.ca.issue(&id, &dns, &[], LEAF_TTL, SystemTime::now())?;
        Ok(Leaf {
            chain: cert.chain,
            chain_pem: cert.chain_pem,
            key,
        })
    }
}

/// `spiffe://cluster.local/ns/bench/sa/<sa>`.
pub fn spiffe_id(sa: &str) -> Result<SpiffeId> {
    Ok(SpiffeId::parse(&format!(
        "spiffe://{TRUST_DOMAIN}/ns/bench/sa/{sa}"
    ))?)
}

/// Writes `leaf` as `<dir>/<name>.crt` and `<dir>/<name>.key` (mode 0600); returns both paths.
pub fn write_leaf(leaf: &Leaf, dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let crt = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&crt, &leaf.chain_pem).with_context(|| format!("writing {}", crt.display()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&key)
        .with_context(|| format!("writing {}", key.display()))?;
    f.write_all(leaf.key.to_pem().as_bytes())?;
    Ok((crt, key))
}
