//! Domain: the blocklist in the Kubernetes API (Kubernetes mode): the `trustmesh-blocklist`
//! ConfigMap, key `blocked-identities.json`, in the stored form of the data folder's file.
//! A block or an unblock is a read-modify-write against the ConfigMap's `resourceVersion`: of
//! two writers at once the second gets `409 Conflict`, reads the first one's list and applies
//! its change to it, so both land.

use std::collections::BTreeMap;
use std::time::SystemTime;

use trustmesh_certs::SpiffeId;

use super::{parse, render, Blocked, BLOCKED_FILE};
use crate::storage::kube::Kube;
use crate::storage::kube_state::{self, Doc, Object};

/// The blocked identities of a ConfigMap as read; none when it or its key is missing.
pub fn from_doc(doc: &Doc) -> anyhow::Result<Blocked> {
    match doc.data.get(BLOCKED_FILE) {
        None => Ok(Blocked::new()),
        Some(text) => parse(
            text,
            &format!("{} {BLOCKED_FILE}", Object::Blocklist.describe()),
        ),
    }
}

fn with_list(doc: &Doc, blocked: &Blocked) -> anyhow::Result<BTreeMap<String, String>> {
    let mut data = doc.data.clone();
    data.insert(BLOCKED_FILE.to_string(), render(blocked)?);
    Ok(data)
}

/// Reads the blocked identities.
pub async fn read(kube: &Kube) -> anyhow::Result<Blocked> {
    from_doc(&kube_state::read(kube, Object::Blocklist).await?)
}

/// Adds `id`; `false` when it was already there.
pub async fn block(kube: &Kube, id: &SpiffeId, now: SystemTime) -> anyhow::Result<bool> {
    let at = trustmesh_runtime::rfc3339_precise(now);
    kube_state::update(kube, Object::Blocklist, |doc| {
        let mut blocked = from_doc(doc)?;
        if blocked.contains_key(id) {
            return Ok((None, false));
        }
        blocked.insert(id.clone(), at.clone());
        Ok((Some(with_list(doc, &blocked)?), true))
    })
    .await
}

/// Removes `id`; `false` when it was not there.
pub async fn unblock(kube: &Kube, id: &SpiffeId) -> anyhow::Result<bool> {
    kube_state::update(kube, Object::Blocklist, |doc| {
        let mut blocked = from_doc(doc)?;
        if blocked.remove(id).is_none() {
            return Ok((None, false));
        }
        Ok((Some(with_list(doc, &blocked)?), true))
    })
    .await
}
