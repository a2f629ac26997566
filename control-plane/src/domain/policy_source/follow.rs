//! Domain: keeps the policy source's discovered registry in step with the cluster cache: after
//! every change of a watched store (gathered for [`SETTLE`], so a relist or a burst of pod
//! events is one rebuild), the registry is made again and, when it differs, put in force; the
//! policy source then wakes every waiting snapshot poll.

use std::sync::Arc;
use std::time::{Duration, Instant};

use trustmesh_certs::TrustDomain;

use super::PolicySource;
use crate::domain::discovery::{discover, ClusterObjects, Discovered};
use crate::storage::kube::watch::ClusterCache;

/// How long changes are gathered before the registry is made again.
pub const SETTLE: Duration = Duration::from_millis(20);

/// The cluster cache's contents now.
pub fn objects(cache: &ClusterCache) -> ClusterObjects {
    ClusterObjects {
        namespaces: cache.namespaces.state(),
        services: cache.services.state(),
        slices: cache.slices.state(),
        pods: cache.pods.state(),
    }
}

/// The registry discovered from `cache` now.
pub fn discover_now(cache: &ClusterCache, td: &TrustDomain) -> Discovered {
    discover(&objects(cache), td)
}

/// Waits for the first complete list of every watched resource, puts the first discovered
/// registry in force, then follows every change (runs as long as the cache).
pub async fn follow(cache: ClusterCache, source: Arc<PolicySource>, td: TrustDomain) {
    let mut changes = cache.subscribe();
    cache.wait_ready().await;
    let mut first = true;
    loop {
        let started = Instant::now();
        let found = discover_now(&cache, &td);
        let (services, pods) = (found.entries.len(), found.pods.len());
        source.set_discovered(found);
        if first {
            tracing::info!(target: "kube", services, pods, "first complete registry from the cluster");
        } else {
            tracing::debug!(target: "kube", services, pods, took = ?started.elapsed(), "registry rebuilt");
        }
        first = false;
        changes.borrow_and_update();
        if changes.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(SETTLE).await;
    }
}
