//! Domain: the trust state in the Kubernetes API (Kubernetes mode). [`TrustStore::open_kube`]
//! takes (or creates) the CA from the `trustmesh-ca` Secret; [`watch`] reads the three shared
//! objects again whenever their watch wakes it (and every [`RESYNC`] besides, and every
//! [`RELOAD`] while a rotation moves on with time), and takes the rotation's steps with writes
//! against the `resourceVersion`s read ([`crate::domain::ca::kube_api`]), so that of several
//! replicas due to take the same step one does and the others see it done.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::Notify;
use trustmesh_certs::TrustDomain;

use super::steps::{due, log_finish, log_switch, log_waiting, Due};
use super::{Backend, StepOutcome, TrustStore, TrustView, DROP_MARGIN, RELOAD, TRUST_BUNDLE};
use crate::domain::blocklist;
use crate::domain::ca::kube_api;
use crate::domain::ca::store::ImportFrom;
use crate::storage::files;
use crate::storage::kube::Kube;
use crate::storage::kube_state;
use crate::storage::paths::TRUST_DOMAIN;

/// How often the objects are read even when no watch event came (a safety net under the
/// watches, which already recover from cuts and `410 Gone` on their own).
const RESYNC: Duration = Duration::from_secs(30);
/// The longest pause between reads while they fail.
const MAX_RETRY: Duration = Duration::from_secs(5);

impl TrustStore {
    /// Takes the CA from the API (creating it, or importing `import`, when there is none) and
    /// reads the trust state. `dir` receives this replica's copy of `trust-bundle.pem`.
    pub async fn open_kube(
        kube: Kube,
        dir: &Path,
        td: &TrustDomain,
        cert_ttl: Duration,
        import: Option<ImportFrom<'_>>,
    ) -> anyhow::Result<Arc<Self>> {
        files::ensure_private_dir(dir)?;
        kube_api::load_or_create(&kube, td, import).await?;
        // `trustmesh token create --data-dir` reads the trust domain from here.
        files::write_atomic(&dir.join(TRUST_DOMAIN), format!("{td}\n").as_bytes(), 0o644)?;
        let view = load(&kube, td, dir).await?;
        let (tx, _) = tokio::sync::watch::channel(Arc::new(view));
        Ok(Arc::new(Self {
            watch_errors: super::watch_errors_counter()?,
            backend: Backend::Kube(kube),
            dir: dir.to_path_buf(),
            cert_ttl,
            tx,
        }))
    }
}

/// Reads the three objects into a view, and keeps `dir/trust-bundle.pem` in step.
async fn load(kube: &Kube, td: &TrustDomain, dir: &Path) -> anyhow::Result<TrustView> {
    let trust = kube_api::load(kube, Some(td)).await?;
    let blocked = blocklist::kube_api::read(kube).await?;
    let path = dir.join(TRUST_BUNDLE);
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    if on_disk != trust.bundle.pem() {
        files::write_atomic(&path, trust.bundle.pem().as_bytes(), 0o644)?;
    }
    Ok(TrustView::new(
        trust.signer,
        trust.bundle,
        blocked,
        trust.rotation,
    ))
}

/// Follows the API until the process ends (see [`TrustStore::watch`]).
pub(super) async fn watch<F>(store: Arc<TrustStore>, kube: Kube, lagging: Arc<F>)
where
    F: Fn(&str) -> Vec<String> + Send + Sync + 'static,
{
    let wake = Arc::new(Notify::new());
    let errors = store.watch_errors.clone();
    tokio::spawn(kube_state::watch(kube.clone(), wake.clone(), errors));
    let td = store.current().signer.trust_domain().clone();
    let mut noticed_switch = None;
    let mut last_wait_log = None;
    // After a failed read, the next comes sooner than a resync, doubling up to MAX_RETRY.
    let mut retry = None::<Duration>;
    loop {
        let every = match retry {
            Some(r) => r,
            None if store.current().rotation.is_some() => RELOAD,
            None => RESYNC,
        };
        tokio::select! {
            () = wake.notified() => {}
            () = tokio::time::sleep(every) => {}
        }
        match step(&store, &kube, &td, noticed_switch, &*lagging).await {
            Ok(outcome) => {
                if retry.take().is_some() {
                    tracing::info!(target: "ca", "reading the shared state in the Kubernetes API again");
                }
                noticed_switch = outcome.noticed_switch;
                if let Some(waiting) = outcome.waiting_for {
                    log_waiting(&waiting, &mut last_wait_log);
                }
            }
            Err(e) => {
                if retry.is_none() {
                    tracing::warn!(
                        target: "ca",
                        "reading the shared state in the Kubernetes API failed; the trust state in force stays: {e:#}"
                    );
                }
                retry = Some(retry.map_or(RELOAD, |r| (r * 2).min(MAX_RETRY)));
            }
        }
    }
}

/// One look at the API: reload, then move a rotation on when it is due.
async fn step(
    store: &TrustStore,
    kube: &Kube,
    td: &TrustDomain,
    mut noticed_switch: Option<u64>,
    lagging: &(dyn Fn(&str) -> Vec<String> + Send + Sync),
) -> anyhow::Result<StepOutcome> {
    store.publish(load(kube, td, &store.dir).await?);
    let view = store.current();
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
            if kube_api::switch(kube, now, store.cert_ttl).await? {
                log_switch();
            }
            noticed_switch = None;
            store.publish(load(kube, td, &store.dir).await?);
        }
        Due::Extend(switched_at) => {
            kube_api::extend(kube, now + store.cert_ttl + DROP_MARGIN).await?;
            noticed_switch = Some(switched_at);
        }
        Due::Finish => {
            if kube_api::finish_if_due(kube, now).await? {
                log_finish();
            }
            store.publish(load(kube, td, &store.dir).await?);
        }
    }
    Ok(StepOutcome {
        noticed_switch,
        waiting_for,
    })
}
