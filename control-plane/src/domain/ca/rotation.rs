//! Domain: cA rotation without restarts, as files in the data folder that every replica follows.
//!
//! 1. `trustmesh ca rotate` makes (or imports) the next CA into `ca-next-cert.pem` /
//!    `ca-next-key.pem`, writes the union of both roots to `trust-bundle.pem` and the state
//!    [`Rotation::Propagating`] to `ca-rotation.json`. Replicas see the files change, push the
//!    new bundle in every snapshot, and proxies trust either root from then on.
//! 2. Once the propagation time has passed and every proxy a replica serves has acknowledged
//!    the new bundle (its snapshot version names the new bundle generation), that replica
//!    switches ([`switch_locked`]): the next CA becomes `ca-cert.pem` / `ca-key.pem`, the old
//!    root is kept in `ca-prev-root.pem` and the state becomes [`Rotation::Issuing`]. Every
//!    replica issues from the new CA from its next reload (a fraction of a second).
//! 3. The old root stays trusted until `old_root_until`: the switch time plus the longest
//!    certificate lifetime of any replica (each extends it with [`extend_locked`] when it
//!    notices the switch, so certificates it signed with the old CA just before are covered).
//!    Then [`finish_locked`] writes the new root alone to `trust-bundle.pem` and removes the
//!    state; replicas push the bundle and the old root is gone everywhere.
//!
//! Every step runs under the data folder's lock, and each leaves the folder in a state that
//! [`recover_locked`] can complete after a crash.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use trustmesh_certs::{CertificateAuthority, TrustBundle};

use crate::domain::ca::store::{self as ca_store, ImportFrom, CA_CERT, CA_KEY, TRUST_BUNDLE};
use crate::storage::files;
use crate::storage::lock::DataDirLock;
pub use crate::storage::paths::{NEXT_CERT, NEXT_KEY, PREV_ROOT, ROTATION_FILE};

/// Kept on top of the longest certificate lifetime before the old root is dropped: the reload
/// interval of the replicas and a little clock skew.
pub const DROP_MARGIN: Duration = Duration::from_secs(5);
/// How long the old root is kept when a crash hid when the switch happened.
const RECOVERY_KEEP: Duration = Duration::from_secs(24 * 3600);

/// Where a rotation stands. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rotation {
    /// Both roots are in the bundle; the old CA still issues.
    Propagating {
        /// When `ca rotate` ran.
        started_at: u64,
        /// The least time to leave proxies to receive the new bundle.
        propagate_secs: u64,
    },
    /// The new CA issues; the old root stays in the bundle until `old_root_until`.
    Issuing {
        /// When `ca rotate` ran.
        started_at: u64,
        /// When the new CA started issuing.
        switched_at: u64,
        /// When no certificate the old CA signed can still be valid.
        old_root_until: u64,
    },
}

impl Rotation {
    /// A short name of the phase.
    pub fn phase(&self) -> &'static str {
        match self {
            Rotation::Propagating { .. } => "propagating",
            Rotation::Issuing { .. } => "issuing",
        }
    }
}

/// Unix seconds.
pub fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The rotation under way in `dir`, if any.
pub fn read(dir: &Path) -> anyhow::Result<Option<Rotation>> {
    let path = dir.join(ROTATION_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("{} is not a valid rotation state", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write(dir: &Path, r: &Rotation) -> anyhow::Result<()> {
    let mut json = serde_json::to_vec_pretty(r)?;
    json.push(b'\n');
    files::write_atomic(&dir.join(ROTATION_FILE), &json, 0o644)
}

/// The trust bundle that the folder's state calls for: the active CA's root, and during a
/// rotation the other root too. The caller holds the lock.
pub fn bundle_locked(
    dir: &Path,
    active: &CertificateAuthority,
    rotation: Option<&Rotation>,
) -> anyhow::Result<TrustBundle> {
    let own = active.trust_bundle();
    Ok(match rotation {
        None => own,
        Some(Rotation::Propagating { .. }) => own.merge(&next_locked(dir)?.trust_bundle()),
        Some(Rotation::Issuing { .. }) => {
            let path = dir.join(PREV_ROOT);
            let pem = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            own.merge(&TrustBundle::from_pem(&pem).with_context(|| path.display().to_string())?)
        }
    })
}

/// The next CA of a rotation that is propagating. The caller holds the lock.
pub fn next_locked(dir: &Path) -> anyhow::Result<CertificateAuthority> {
    ca_store::load_pair(dir, &dir.join(NEXT_CERT), &dir.join(NEXT_KEY))
}

/// Starts a rotation (`trustmesh ca rotate`): the next CA is `import`ed or made here, both
/// roots go into `trust-bundle.pem`, and the state is [`Rotation::Propagating`]. Refuses when a
/// rotation is already under way. Returns the next CA.
pub fn start(
    dir: &Path,
    propagate: Duration,
    import: Option<ImportFrom<'_>>,
    now: SystemTime,
) -> anyhow::Result<CertificateAuthority> {
    let _lock = DataDirLock::acquire(dir)?;
    recover_locked(dir)?;
    if let Some(r) = read(dir)? {
        anyhow::bail!(
            "a CA rotation is already under way (phase {}); `trustmesh ca status` shows it",
            r.phase()
        );
    }
    let active = ca_store::load_locked(dir)?;
    let next = match import {
        Some(import) => ca_store::read_import(import, active.trust_domain())?,
        None => CertificateAuthority::generate(active.trust_domain(), now)
            .context("generating the new CA")?,
    };
    if next.cert_der() == active.cert_der() {
        anyhow::bail!("the new CA is the CA in force");
    }
    files::write_atomic(&dir.join(NEXT_KEY), next.key_pem().as_bytes(), 0o600)?;
    files::write_atomic(&dir.join(NEXT_CERT), next.chain_pem().as_bytes(), 0o644)?;
    let bundle = active.trust_bundle().merge(&next.trust_bundle());
    files::write_atomic(&dir.join(TRUST_BUNDLE), bundle.pem().as_bytes(), 0o644)?;
    write(
        dir,
        &Rotation::Propagating {
            started_at: unix(now),
            propagate_secs: propagate.as_secs(),
        },
    )?;
    Ok(next)
}

/// Makes the next CA the one that issues. The caller holds the lock and has checked that the
/// proxies hold the new bundle. `ttl` is this replica's certificate lifetime.
pub fn switch_locked(dir: &Path, now: SystemTime, ttl: Duration) -> anyhow::Result<()> {
    let Some(Rotation::Propagating { started_at, .. }) = read(dir)? else {
        return Ok(());
    };
    let active = ca_store::load_locked(dir)?;
    let next = next_locked(dir)?;
    if next.trust_domain() != active.trust_domain() {
        anyhow::bail!("the next CA is for another trust domain");
    }
    // The order lets `recover_locked` finish the switch after a crash at any point.
    files::write_atomic(
        &dir.join(PREV_ROOT),
        active.trust_bundle().pem().as_bytes(),
        0o644,
    )?;
    std::fs::rename(dir.join(NEXT_KEY), dir.join(CA_KEY)).context("installing the new CA key")?;
    std::fs::rename(dir.join(NEXT_CERT), dir.join(CA_CERT))
        .context("installing the new CA certificate")?;
    write(
        dir,
        &Rotation::Issuing {
            started_at,
            switched_at: unix(now),
            old_root_until: unix(now + ttl + DROP_MARGIN),
        },
    )
}

/// Keeps the old root at least until `until` (a replica that noticed the switch late may have
/// signed with the old CA until then). The caller holds the lock.
pub fn extend_locked(dir: &Path, until: SystemTime) -> anyhow::Result<()> {
    if let Some(Rotation::Issuing {
        started_at,
        switched_at,
        old_root_until,
    }) = read(dir)?
    {
        if old_root_until < unix(until) {
            write(
                dir,
                &Rotation::Issuing {
                    started_at,
                    switched_at,
                    old_root_until: unix(until),
                },
            )?;
        }
    }
    Ok(())
}

/// Drops the old root: the bundle is the active CA's root alone, and the rotation is over.
/// The caller holds the lock and has checked that `old_root_until` has passed.
pub fn finish_locked(dir: &Path) -> anyhow::Result<()> {
    let active = ca_store::load_locked(dir)?;
    files::write_atomic(
        &dir.join(TRUST_BUNDLE),
        active.trust_bundle().pem().as_bytes(),
        0o644,
    )?;
    remove_if_there(&dir.join(PREV_ROOT))?;
    remove_if_there(&dir.join(ROTATION_FILE))
}

/// Completes a step that a crash interrupted (see the order in [`switch_locked`] and
/// [`finish_locked`]). When a crash hid the switch time, the old root is kept a generous
/// [`RECOVERY_KEEP`] rather than too short. The caller holds the lock.
pub fn recover_locked(dir: &Path) -> anyhow::Result<()> {
    let (next_cert, next_key) = (dir.join(NEXT_CERT).exists(), dir.join(NEXT_KEY).exists());
    match read(dir)? {
        Some(Rotation::Propagating { started_at, .. }) if !next_key => {
            if next_cert {
                std::fs::rename(dir.join(NEXT_CERT), dir.join(CA_CERT))
                    .context("completing an interrupted CA switch")?;
            }
            let now = SystemTime::now();
            tracing::warn!("completing a CA switch that was interrupted");
            write(
                dir,
                &Rotation::Issuing {
                    started_at,
                    switched_at: unix(now),
                    old_root_until: unix(now + RECOVERY_KEEP),
                },
            )?;
        }
        Some(Rotation::Issuing { .. }) if !dir.join(PREV_ROOT).exists() => {
            remove_if_there(&dir.join(ROTATION_FILE))?;
        }
        _ => {}
    }
    Ok(())
}

fn remove_if_there(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustmesh_certs::TrustDomain;

    fn td() -> TrustDomain {
        TrustDomain::parse("cluster.local").unwrap()
    }

    fn bundle_file(dir: &Path) -> TrustBundle {
        TrustBundle::from_pem(&std::fs::read_to_string(dir.join(TRUST_BUNDLE)).unwrap()).unwrap()
    }

    #[test]
    fn rotation_adds_the_new_root_switches_then_drops_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let old = super::super::load_or_create(d, &td(), None).unwrap();
        let now = SystemTime::now();
        let next = start(d, Duration::from_secs(5), None, now).unwrap();
        assert!(
            start(d, Duration::from_secs(5), None, now).is_err(),
            "one at a time"
        );

        // Propagating: both roots trusted, the old CA still issues.
        let _lock = DataDirLock::acquire(d).unwrap();
        let r = read(d).unwrap();
        assert!(matches!(
            r,
            Some(Rotation::Propagating {
                propagate_secs: 5,
                ..
            })
        ));
        let both = old.trust_bundle().merge(&next.trust_bundle());
        assert_eq!(bundle_file(d), both);
        let active = ca_store::load_locked(d).unwrap();
        assert_eq!(active.cert_der(), old.cert_der());
        assert_eq!(bundle_locked(d, &active, r.as_ref()).unwrap(), both);

        // Issuing: the new CA signs, both roots still trusted.
        let ttl = Duration::from_secs(10);
        switch_locked(d, now, ttl).unwrap();
        let r = read(d).unwrap();
        let Some(Rotation::Issuing { old_root_until, .. }) = r else {
            panic!("{r:?}")
        };
        assert_eq!(old_root_until, unix(now + ttl + DROP_MARGIN));
        let active = ca_store::load_locked(d).unwrap();
        assert_eq!(active.cert_der(), next.cert_der());
        assert_eq!(bundle_locked(d, &active, r.as_ref()).unwrap().len(), 2);
        assert!(!d.join(NEXT_KEY).exists() && !d.join(NEXT_CERT).exists());

        // Another replica with a longer lifetime keeps the old root longer, never shorter.
        extend_locked(d, now + Duration::from_secs(60)).unwrap();
        extend_locked(d, now).unwrap();
        assert!(matches!(
            read(d).unwrap(),
            Some(Rotation::Issuing { old_root_until, .. }) if old_root_until == unix(now) + 60
        ));

        finish_locked(d).unwrap();
        assert_eq!(read(d).unwrap(), None);
        assert_eq!(bundle_file(d), next.trust_bundle());
        assert!(!d.join(PREV_ROOT).exists());
    }

    #[test]
    fn rotation_to_an_operators_intermediate_adds_only_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let old = super::super::load_or_create(d, &td(), None).unwrap();
        let offline = CertificateAuthority::generate(&td(), SystemTime::now()).unwrap();
        let inter = offline
            .new_intermediate(SystemTime::now(), Duration::from_secs(86400))
            .unwrap();
        let files_dir = tempfile::tempdir().unwrap();
        let (cert, key) = (
            files_dir.path().join("c.pem"),
            files_dir.path().join("k.pem"),
        );
        std::fs::write(&cert, inter.chain_pem()).unwrap();
        files::write_atomic(&key, inter.key_pem().as_bytes(), 0o600).unwrap();
        let import = ImportFrom {
            cert: &cert,
            key: &key,
        };
        let next = start(d, Duration::from_secs(1), Some(import), SystemTime::now()).unwrap();
        assert!(next.is_intermediate());
        assert_eq!(
            bundle_file(d),
            old.trust_bundle().merge(&offline.trust_bundle()),
            "the offline root joins, never the intermediate"
        );
        let _lock = DataDirLock::acquire(d).unwrap();
        switch_locked(d, SystemTime::now(), Duration::from_secs(10)).unwrap();
        finish_locked(d).unwrap();
        assert_eq!(bundle_file(d), offline.trust_bundle());
        assert_eq!(
            ca_store::load_locked(d).unwrap().cert_der(),
            inter.cert_der()
        );
    }

    #[test]
    fn a_switch_interrupted_by_a_crash_is_completed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        super::super::load_or_create(d, &td(), None).unwrap();
        let next = start(d, Duration::from_secs(1), None, SystemTime::now()).unwrap();
        let _lock = DataDirLock::acquire(d).unwrap();
        // The crash came after the key moved and before the certificate did.
        let old_root = ca_store::load_locked(d).unwrap().trust_bundle();
        files::write_atomic(&d.join(PREV_ROOT), old_root.pem().as_bytes(), 0o644).unwrap();
        std::fs::rename(d.join(NEXT_KEY), d.join(CA_KEY)).unwrap();
        assert!(
            ca_store::load_locked(d).is_err(),
            "key and certificate disagree"
        );
        recover_locked(d).unwrap();
        assert_eq!(
            ca_store::load_locked(d).unwrap().cert_der(),
            next.cert_der()
        );
        assert!(matches!(read(d).unwrap(), Some(Rotation::Issuing { .. })));
        let active = ca_store::load_locked(d).unwrap();
        let r = read(d).unwrap();
        assert_eq!(bundle_locked(d, &active, r.as_ref()).unwrap().len(), 2);
    }
}
