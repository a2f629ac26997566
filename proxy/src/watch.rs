//! The snapshot watch: a long poll to the control plane that returns as soon as the policy
//! version differs from ours. A new snapshot replaces the mesh view atomically; when the
//! control plane is away we keep the last snapshot and retry with backoff: capped at
//! [`REFUSED_BACKOFF_MAX`] while no replica listens (a refused connect costs the control plane
//! nothing, and a restarted one is then reached within a second of listening), at 30 s for
//! any other failure (one that is up but failing is not pressed harder).

use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use trustmesh_policies::snapshot::Snapshot;

use crate::control::{error_message, ControlClient, NotListening};
use crate::identity::Backoff;
use crate::state::{MeshView, Shared};

/// How long the control plane may hold a poll.
const WAIT: Duration = Duration::from_secs(30);
/// Longest wait between polls while every replica refuses the connection.
pub const REFUSED_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Fetches one snapshot newer than `have` (or the first one). `Ok(false)` means no change.
pub async fn poll_once(shared: &Shared, control: &ControlClient) -> anyhow::Result<bool> {
    let have = shared
        .mesh
        .load()
        .as_ref()
        .map(|m| m.snapshot.version.clone());
    let path = match &have {
        Some(v) => format!("/v1/snapshot?version={}&wait=30s", encode(v)),
        None => "/v1/snapshot?wait=0s".to_string(),
    };
    let answer = control
        .call(
            Method::GET,
            &path,
            None,
            None,
            WAIT + Duration::from_secs(10),
        )
        .await?;
    match answer.status {
        StatusCode::NOT_MODIFIED => Ok(false),
        StatusCode::OK => {
            let snap: Snapshot = serde_json::from_slice(&answer.body)
                .map_err(|e| anyhow::anyhow!("the snapshot is not valid JSON: {e}"))?;
            let previous = shared.mesh.load_full();
            let view = MeshView::new(snap, &shared.resolver, &shared.ports, previous.as_deref())?;
            let old_bundle = previous.as_ref().map(|p| &p.snapshot.trust_bundle);
            if old_bundle != Some(&view.snapshot.trust_bundle) {
                control.set_bundle(&view.bundle, &shared.identity.trust_domain());
            }
            let version = view.snapshot.version.clone();
            shared
                .metrics
                .set_policy_version(view.snapshot.policy_version());
            tracing::info!(
                target: "policy",
                version = %version,
                blocked = view.snapshot.blocked.len(),
                services = view.snapshot.registry.entries().len(),
                "snapshot in force"
            );
            shared.mesh.store(Some(Arc::new(view)));
            shared
                .mesh_changes
                .send_modify(|generation| *generation += 1);
            Ok(true)
        }
        s => anyhow::bail!(
            "the control plane answered {s} to the snapshot poll: {}",
            error_message(&answer.body)
        ),
    }
}

/// Keeps the snapshot current until the process ends.
pub async fn watch_forever(shared: Arc<Shared>, control: Arc<ControlClient>) {
    let mut backoff = Backoff::new();
    let mut refused = Backoff::with_cap(REFUSED_BACKOFF_MAX);
    loop {
        match poll_once(&shared, &control).await {
            Ok(_) => (backoff, refused) = (Backoff::new(), Backoff::with_cap(REFUSED_BACKOFF_MAX)),
            Err(e) => {
                let wait = if e.is::<NotListening>() {
                    refused.next()
                } else {
                    backoff.next()
                };
                tracing::warn!(target: "policy", "snapshot watch failed, keeping the last snapshot; retry in {wait:?}: {e:#}");
                tokio::time::sleep(wait).await;
            }
        }
    }
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests;
