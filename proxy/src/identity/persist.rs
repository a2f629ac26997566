//! Sidecar state across restarts (`--state-dir`): the certificate chain and its private key,
//! in one file (`identity.pem`, mode 0600, in a folder of mode 0700), replaced atomically
//! (temporary file, fsync, rename) whenever a certificate is installed, so that a crash never
//! leaves a key beside another key's certificate. A sidecar restarted while that certificate
//! is valid loads it, serves at once and renews over mTLS with it, with no bootstrap token.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use rustls::pki_types::{pem::PemObject as _, CertificateDer};
use trustmesh_certs::{identity as certid, PrivateKey, SpiffeId};

/// The file in `--state-dir` that holds the chain (leaf first) and then the key.
pub const STATE_FILE: &str = "identity.pem";

/// What `--state-dir` held at start.
#[derive(Debug)]
pub enum Saved {
    /// Nothing yet (first start).
    Nothing,
    /// A certificate for our identity, still valid, and its key.
    Valid {
        /// The chain, leaf first.
        chain: Vec<CertificateDer<'static>>,
        /// Its key.
        key: PrivateKey,
    },
    /// A certificate for our identity that has expired: it cannot authenticate a renewal.
    Expired {
        /// Its NotAfter.
        not_after: SystemTime,
    },
    /// A file that cannot be used (damaged, or for another identity); the reason.
    Unusable(String),
}

/// Creates `dir` with mode 0700, or narrows an existing folder of ours to 0700. A folder we
/// do not own and cannot narrow (a volume's root) is used as it is, with a warning: the file
/// itself is 0600 (the injector points `--state-dir` at a folder inside the volume).
pub fn prepare(dir: &Path) -> anyhow::Result<()> {
    if !dir.is_dir() {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating --state-dir {}", dir.display()))?;
    }
    if let Err(e) = fs::set_permissions(dir, fs::Permissions::from_mode(0o700)) {
        tracing::warn!(
            target: "identity",
            "--state-dir {}: cannot set its mode to 0700 ({e}); the key file stays 0600",
            dir.display()
        );
    }
    Ok(())
}

/// Reads what `dir` holds for `identity` at `now`.
pub fn load(dir: &Path, identity: &SpiffeId, now: SystemTime) -> Saved {
    let path = dir.join(STATE_FILE);
    let pem = match fs::read_to_string(&path) {
        Ok(pem) => pem,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Saved::Nothing,
        Err(e) => return Saved::Unusable(format!("reading {}: {e}", path.display())),
    };
    match parse(&pem, identity) {
        Ok((chain, key, not_after)) if not_after > now => Saved::Valid { chain, key },
        Ok((_, _, not_after)) => Saved::Expired { not_after },
        Err(e) => Saved::Unusable(format!("{}: {e:#}", path.display())),
    }
}

fn parse(
    pem: &str,
    identity: &SpiffeId,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKey, SystemTime)> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("the certificate chain is not valid PEM")?;
    let leaf = chain.first().context("no certificate in it")?;
    let id = certid::identity_from_cert(leaf)?;
    if &id != identity {
        anyhow::bail!("its certificate is for {id}, not for --identity {identity}");
    }
    let not_after = certid::cert_not_after(leaf)?;
    let key = PrivateKey::from_pem(pem).context("its private key")?;
    Ok((chain, key, not_after))
}

/// Replaces the saved chain and key of `dir` (mode 0600, atomically).
pub fn save(dir: &Path, chain_pem: &str, key: &PrivateKey) -> anyhow::Result<()> {
    let path = dir.join(STATE_FILE);
    let mut text = chain_pem.trim_end().to_string();
    text.push('\n');
    text.push_str(&key.to_pem());
    write_atomic(&path, text.as_bytes())
}

fn write_atomic(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    let tmp: PathBuf = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    // The mode given to open() is filtered by the umask, and an old file keeps its own.
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .with_context(|| format!("setting the mode of {}", tmp.display()))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    // The rename itself is durable once the folder is synced.
    if let Some(parent) = path.parent() {
        if let Ok(d) = fs::File::open(parent) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use trustmesh_certs::{CertificateAuthority, TrustDomain};

    fn issue(id: &SpiffeId, ttl: Duration) -> (String, PrivateKey) {
        let td = TrustDomain::parse("cluster.local").unwrap();
        let ca = CertificateAuthority::generate(&td, SystemTime::now()).unwrap();
        let kc = trustmesh_certs::generate_csr(id).unwrap();
        let issued = ca
            .sign_csr(&kc.csr_pem, id, ttl, SystemTime::now())
            .unwrap();
        (issued.chain_pem, kc.key)
    }

    #[test]
    fn saves_privately_and_loads_back_only_for_its_identity_while_valid() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        prepare(&dir).unwrap();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
        assert!(matches!(load(&dir, &id, SystemTime::now()), Saved::Nothing));
        let (chain, key) = issue(&id, Duration::from_secs(600));
        save(&dir, &chain, &key).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(STATE_FILE)), 0o600);
        match load(&dir, &id, SystemTime::now()) {
            Saved::Valid { chain: c, key: k } => {
                assert_eq!(c.len(), 1);
                assert_eq!(k.to_der().secret_der(), key.to_der().secret_der());
            }
            other => panic!("{other:?}"),
        }
        let later = SystemTime::now() + Duration::from_secs(601);
        assert!(matches!(load(&dir, &id, later), Saved::Expired { .. }));
        let other = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/c").unwrap();
        assert!(matches!(
            load(&dir, &other, SystemTime::now()),
            Saved::Unusable(_)
        ));
        fs::write(dir.join(STATE_FILE), "garbage").unwrap();
        assert!(matches!(
            load(&dir, &id, SystemTime::now()),
            Saved::Unusable(_)
        ));
    }
}
