//! Domain: bootstrap bound to a live pod (Kubernetes mode). A projected ServiceAccount token
//! whose `kubernetes.io` claim names a pod enrolls only while the cluster cache holds that pod
//! with that UID, running as the token's ServiceAccount: a token copied out of a deleted pod
//! (or one of a pod since replaced under the same name) enrolls nothing, although its
//! signature and expiry are still good.

use std::time::Duration;

use kube::runtime::reflector::ObjectRef;
use trustmesh_certs::SpiffeId;

use super::PodInfo;
use crate::domain::k8s_jwt::{BoundPod, JwtError};
use crate::storage::kube::watch::ClusterCache;

/// How long a token of a pod the cache does not hold waits for the watch to catch up (a pod's
/// sidecar may ask before the Pod watch has seen the pod).
pub const CATCH_UP: Duration = Duration::from_secs(2);

/// Accepts `pod` for `identity` while the cache holds it; refuses it once the cache has had
/// [`CATCH_UP`] to see it.
pub async fn check(
    cache: &ClusterCache,
    identity: &SpiffeId,
    pod: &BoundPod,
) -> Result<(), JwtError> {
    let mut changes = cache.subscribe();
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        changes.borrow_and_update();
        if holds(cache, identity, pod) {
            return Ok(());
        }
        match tokio::time::timeout_at(deadline, changes.changed()).await {
            Ok(Ok(())) => continue,
            _ => {
                tracing::info!(target: "kube", pod = %pod, client.id = %identity, "refused a token bound to a pod that does not exist");
                return Err(JwtError::PodGone(pod.to_string()));
            }
        }
    }
}

fn holds(cache: &ClusterCache, identity: &SpiffeId, pod: &BoundPod) -> bool {
    let Some(obj) = cache
        .pods
        .get(&ObjectRef::new(&pod.name).within(&pod.namespace))
    else {
        return false;
    };
    obj.metadata.uid.as_deref() == Some(pod.uid.as_str())
        && PodInfo::of(&obj, &identity.trust_domain()).is_some_and(|p| &p.identity == identity)
}
