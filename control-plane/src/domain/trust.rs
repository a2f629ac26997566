//! Domain: what a replica trusts and refuses right now: the CA that issues, the trust bundle and the
//! blocked identities, read from the shared state every replica follows, and kept current.
//! The shared state is a [`Backend`]: the data folder (outside Kubernetes, shared by replicas)
//! or the Kubernetes API (Kubernetes mode, [`kube`]).
//!
//! On the data folder, [`TrustStore::watch`] looks at the folder's files every [`RELOAD`] (a
//! `stat` of a few files) and reloads, under the data folder's lock, when one changed; in the
//! API it watches the three objects and reads them again on every event. Either way an
//! `identity block` or a `ca rotate` from the CLI, or a step taken by another replica, is in
//! force here within a fraction of a second. It also drives the CA rotation
//! ([`crate::domain::ca::rotation`]) forward: [`due`] decides the next step, the same on both.
//! Each new [`TrustView`] is published on a watch channel: the snapshot long polls wake on it
//! and the control plane's serving certificate is re-issued from it.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use trustmesh_certs::{CertificateAuthority, SpiffeId, TrustBundle, TrustDomain};

use crate::domain::blocklist::{self, Blocked};
use crate::domain::ca::rotation::{self, Rotation, DROP_MARGIN};
use crate::domain::ca::store::{self as ca_store, ImportFrom, CA_CERT, CA_KEY, TRUST_BUNDLE};
use crate::storage::kube::Kube;
use crate::storage::lock::DataDirLock;

mod kube;
mod steps;

use steps::{due, log_finish, log_switch, log_waiting, Due};

/// How often the data folder is looked at.
pub const RELOAD: Duration = Duration::from_millis(200);

/// The trust state in force at one moment. Immutable; a change makes a new one.
#[derive(Debug)]
pub struct TrustView {
    /// The CA that issues.
    pub signer: Arc<CertificateAuthority>,
    /// The roots proxies must trust (two during a rotation).
    pub bundle: TrustBundle,
    /// Identities refused certificates, connections and requests.
    pub blocked: Blocked,
    /// The rotation under way, if any.
    pub rotation: Option<Rotation>,
    /// A short hash of the bundle and the blocklist: the part of the snapshot version that is
    /// not the policy version (see [`crate::domain::snapshot::version`]). Equal on every replica that
    /// reads the same folder.
    pub generation: String,
}

impl TrustView {
    fn new(
        signer: CertificateAuthority,
        bundle: TrustBundle,
        blocked: Blocked,
        rotation: Option<Rotation>,
    ) -> Self {
        let mut input = bundle.pem().as_bytes().to_vec();
        for id in blocked.keys() {
            input.push(b'\n');
            input.extend_from_slice(id.as_str().as_bytes());
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
        let generation = digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Self {
            signer: Arc::new(signer),
            bundle,
            blocked,
            rotation,
            generation,
        }
    }

    /// Whether `id` is blocked.
    pub fn is_blocked(&self, id: &SpiffeId) -> bool {
        self.blocked.contains_key(id)
    }

    /// The blocked identities, sorted.
    pub fn blocked_ids(&self) -> Vec<SpiffeId> {
        self.blocked.keys().cloned().collect()
    }

    fn same_as(&self, other: &TrustView) -> bool {
        self.signer.cert_der() == other.signer.cert_der()
            && self.generation == other.generation
            && self.rotation == other.rotation
    }
}

/// Where the shared trust state lives.
pub enum Backend {
    /// The data folder (outside Kubernetes; replicas share it).
    Dir,
    /// The Kubernetes API: the `trustmesh-ca`, `trustmesh-ca-rotation` Secrets and the
    /// `trustmesh-blocklist` ConfigMap of the control plane's namespace.
    Kube(Kube),
}

/// The replica's trust state, where it comes from, and its data folder.
pub struct TrustStore {
    /// Watch requests of the shared objects that failed (Kubernetes mode).
    watch_errors: prometheus::IntCounter,
    /// The shared state: `dir` itself, or the API (then `dir` holds only this replica's copy
    /// of `trust-bundle.pem` and its token state).
    backend: Backend,
    dir: PathBuf,
    cert_ttl: Duration,
    tx: tokio::sync::watch::Sender<Arc<TrustView>>,
}

impl TrustStore {
    /// Loads (or creates, or imports) the CA of `dir` and reads the trust state.
    pub fn open(
        dir: &Path,
        td: &TrustDomain,
        cert_ttl: Duration,
        import: Option<ImportFrom<'_>>,
    ) -> anyhow::Result<Arc<Self>> {
        super::ca::load_or_create(dir, td, import)?;
        let view = load(dir)?;
        let (tx, _) = tokio::sync::watch::channel(Arc::new(view));
        Ok(Arc::new(Self {
            watch_errors: watch_errors_counter()?,
            backend: Backend::Dir,
            dir: dir.to_path_buf(),
            cert_ttl,
            tx,
        }))
    }

    /// The metrics of following the shared state, to register (Kubernetes mode only:
    /// `trustmesh_cp_shared_state_watch_errors_total`).
    pub fn collectors(&self) -> Vec<Box<dyn prometheus::core::Collector>> {
        match self.backend {
            Backend::Dir => Vec::new(),
            Backend::Kube(_) => vec![Box::new(self.watch_errors.clone())],
        }
    }

    /// Where the shared state lives, for the admin: `data-folder` or `kubernetes/<namespace>`.
    pub fn backend_name(&self) -> String {
        match &self.backend {
            Backend::Dir => "data-folder".to_string(),
            Backend::Kube(k) => format!("kubernetes/{}", k.namespace),
        }
    }

    /// The state in force.
    pub fn current(&self) -> Arc<TrustView> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every change.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<TrustView>> {
        self.tx.subscribe()
    }

    /// Follows the shared state until the process ends. `lagging(generation)` names the proxies
    /// this replica serves that do not hold the bundle of `generation` yet; a rotation switches
    /// to the new CA only when there are none.
    pub async fn watch<F>(self: Arc<Self>, lagging: F)
    where
        F: Fn(&str) -> Vec<String> + Send + Sync + 'static,
    {
        let lagging = Arc::new(lagging);
        if let Backend::Kube(k) = &self.backend {
            let k = k.clone();
            return kube::watch(self, k, lagging).await;
        }
        let mut last_fp = fingerprint(&self.dir);
        let mut noticed_switch = None;
        let mut last_wait_log = None::<tokio::time::Instant>;
        loop {
            tokio::time::sleep(RELOAD).await;
            let fp = fingerprint(&self.dir);
            let rotating = self.current().rotation.is_some();
            if fp == last_fp && !rotating {
                continue;
            }
            last_fp = fp;
            let this = self.clone();
            let lagging = lagging.clone();
            let step =
                tokio::task::spawn_blocking(move || this.step(noticed_switch, &*lagging)).await;
            match step {
                Ok(Ok(outcome)) => {
                    noticed_switch = outcome.noticed_switch;
                    if let Some(waiting) = outcome.waiting_for {
                        log_waiting(&waiting, &mut last_wait_log);
                    }
                }
                Ok(Err(e)) => tracing::warn!(
                    target: "ca",
                    "reading the data folder failed; the trust state in force stays: {e:#}"
                ),
                Err(e) => tracing::warn!(target: "ca", "trust reload task failed: {e}"),
            }
        }
    }

    /// One look at the folder: reload, then move a rotation on when it is due.
    fn step(
        &self,
        mut noticed_switch: Option<u64>,
        lagging: &dyn Fn(&str) -> Vec<String>,
    ) -> anyhow::Result<StepOutcome> {
        self.reload()?;
        let view = self.current();
        let now = SystemTime::now();
        let mut waiting_for = None;
        match due(&view, now, noticed_switch, lagging) {
            Due::Nothing => {
                if view.rotation.is_none() {
                    noticed_switch = None;
                }
            }
            Due::Waiting(behind) => waiting_for = Some(behind),
            Due::Switch => {
                let _lock = DataDirLock::acquire(&self.dir)?;
                rotation::switch_locked(&self.dir, now, self.cert_ttl)?;
                drop(_lock);
                log_switch();
                noticed_switch = None;
                self.reload()?;
            }
            Due::Extend(switched_at) => {
                // This replica signed with the old CA until its last reload; keep the old
                // root until those certificates have expired too.
                let _lock = DataDirLock::acquire(&self.dir)?;
                rotation::extend_locked(&self.dir, now + self.cert_ttl + DROP_MARGIN)?;
                noticed_switch = Some(switched_at);
            }
            Due::Finish => {
                let _lock = DataDirLock::acquire(&self.dir)?;
                // Read again under the lock: another replica may have extended it.
                if let Some(Rotation::Issuing { old_root_until, .. }) = rotation::read(&self.dir)? {
                    if rotation::unix(now) >= old_root_until {
                        rotation::finish_locked(&self.dir)?;
                        log_finish();
                    }
                }
                drop(_lock);
                self.reload()?;
            }
        }
        Ok(StepOutcome {
            noticed_switch,
            waiting_for,
        })
    }

    /// Reads the folder under the lock and publishes the state when it changed.
    fn reload(&self) -> anyhow::Result<()> {
        self.publish(load(&self.dir)?);
        Ok(())
    }

    /// Publishes `view` when it differs from the state in force.
    fn publish(&self, view: TrustView) {
        let current = self.current();
        if view.same_as(&current) {
            return;
        }
        tracing::info!(
            target: "ca",
            generation = %view.generation,
            roots = view.bundle.len(),
            blocked = view.blocked.len(),
            rotation = view.rotation.as_ref().map_or("none", Rotation::phase),
            signer_serial = %trustmesh_certs::cert_serial_hex(view.signer.cert_der()).unwrap_or_default(),
            "trust state changed"
        );
        self.tx.send_replace(Arc::new(view));
    }
}

fn watch_errors_counter() -> anyhow::Result<prometheus::IntCounter> {
    Ok(prometheus::IntCounter::new(
        "trustmesh_cp_shared_state_watch_errors_total",
        "Watch requests of the shared objects in the Kubernetes API (trustmesh-ca, \
         trustmesh-ca-rotation, trustmesh-blocklist) that failed.",
    )?)
}

struct StepOutcome {
    noticed_switch: Option<u64>,
    waiting_for: Option<Vec<String>>,
}

/// Reads the CA, the rotation state and the blocklist of `dir` under the lock, completing a
/// crash-interrupted rotation step first, and keeps `trust-bundle.pem` in step.
fn load(dir: &Path) -> anyhow::Result<TrustView> {
    let _lock = DataDirLock::acquire(dir)?;
    rotation::recover_locked(dir)?;
    let signer = ca_store::load_locked(dir)?;
    let rotation = rotation::read(dir)?;
    let bundle = rotation::bundle_locked(dir, &signer, rotation.as_ref())?;
    let on_disk = std::fs::read_to_string(dir.join(TRUST_BUNDLE)).unwrap_or_default();
    if on_disk != bundle.pem() {
        crate::storage::files::write_atomic(
            &dir.join(TRUST_BUNDLE),
            bundle.pem().as_bytes(),
            0o644,
        )?;
    }
    let blocked = blocklist::read(dir)?;
    Ok(TrustView::new(signer, bundle, blocked, rotation))
}

/// What decides whether the folder must be read again: size, modification time and inode of
/// each file of the trust state (a replaced file has a new inode).
fn fingerprint(dir: &Path) -> Vec<Option<(u64, i64, i64, u64)>> {
    [
        CA_CERT,
        CA_KEY,
        TRUST_BUNDLE,
        rotation::ROTATION_FILE,
        rotation::NEXT_CERT,
        rotation::PREV_ROOT,
        blocklist::BLOCKED_FILE,
    ]
    .iter()
    .map(|name| {
        std::fs::metadata(dir.join(name))
            .ok()
            .map(|m| (m.len(), m.mtime(), m.mtime_nsec(), m.ino()))
    })
    .collect()
}

/// The control plane's gauges of the trust state.
pub struct TrustMetrics {
    roots: prometheus::IntGauge,
    blocked: prometheus::IntGauge,
    rotation: prometheus::IntGauge,
}

impl TrustMetrics {
    /// Registers `trustmesh_cp_trust_bundle_roots`, `trustmesh_cp_blocked_identities` and
    /// `trustmesh_cp_ca_rotation_phase` in `registry`.
    pub fn register(registry: &prometheus::Registry) -> anyhow::Result<Self> {
        let roots = prometheus::IntGauge::new(
            "trustmesh_cp_trust_bundle_roots",
            "Roots in the trust bundle pushed to proxies (2 during a CA rotation).",
        )?;
        let blocked = prometheus::IntGauge::new(
            "trustmesh_cp_blocked_identities",
            "Identities blocked with `trustmesh identity block`.",
        )?;
        let rotation = prometheus::IntGauge::new(
            "trustmesh_cp_ca_rotation_phase",
            "CA rotation phase: 0 none, 1 propagating the new root, 2 issuing from the new CA.",
        )?;
        registry.register(Box::new(roots.clone()))?;
        registry.register(Box::new(blocked.clone()))?;
        registry.register(Box::new(rotation.clone()))?;
        Ok(Self {
            roots,
            blocked,
            rotation,
        })
    }

    /// Sets the gauges from `view`.
    pub fn set(&self, view: &TrustView) {
        self.roots.set(view.bundle.len() as i64);
        self.blocked.set(view.blocked.len() as i64);
        self.rotation.set(match view.rotation {
            None => 0,
            Some(Rotation::Propagating { .. }) => 1,
            Some(Rotation::Issuing { .. }) => 2,
        });
    }
}

/// The trust state for the admin's `GET /v1/proxies` (`control_plane.trust`): bundle roots,
/// the issuing CA, the rotation phase, the blocked identities.
pub fn health(view: &TrustView) -> serde_json::Value {
    serde_json::json!({
        "generation": view.generation,
        "trust_bundle_roots": view.bundle.roots().iter().map(super::ca::fingerprint).collect::<Vec<_>>(),
        "issuing_ca_serial": trustmesh_certs::cert_serial_hex(view.signer.cert_der()).unwrap_or_default(),
        "ca_rotation": view.rotation,
        "blocked_identities": view.blocked.keys().map(SpiffeId::as_str).collect::<Vec<_>>(),
    })
}

/// A trust state for unit tests: a new CA for `cluster.local` (1 h certificates) in a fresh
/// temporary folder, which lives as long as the returned guard.
#[cfg(test)]
pub(crate) fn test_trust() -> (tempfile::TempDir, Arc<TrustView>) {
    let data = tempfile::tempdir().unwrap();
    let td = TrustDomain::parse("cluster.local").unwrap();
    let store = TrustStore::open(data.path(), &td, Duration::from_secs(3600), None).unwrap();
    let trust = store.current();
    (data, trust)
}
