//! Storage: the control plane's three shared objects in the Kubernetes API, in its own namespace:
//! the `trustmesh-ca` Secret, the `trustmesh-ca-rotation` Secret and the `trustmesh-blocklist`
//! ConfigMap. Each is read as a [`Doc`] (its `data`, and its `resourceVersion`) and written back
//! only if nobody wrote it meanwhile (optimistic concurrency: a `PUT` carrying the version read
//! gets `409 Conflict` when it is stale, a `POST` of an object that exists `409 AlreadyExists`).
//! [`update`] is the read-modify-write loop on top. [`watch`] wakes the caller on every change
//! of the three, after every reconnect of its watches too, so that nothing a cut watch missed
//! stays unseen.
//!
//! What this layer knows is names and strings; what they mean (a CA, a rotation phase, a
//! blocklist) is the domain's. A Secret's values are keys: [`Doc`]'s `Debug` prints only names.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams, WatchEvent, WatchParams};
use tokio::sync::Notify;

use super::kube::Kube;

/// One of the control plane's shared objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// The `trustmesh-ca` Secret: the CA that issues (certificate chain and key).
    Ca,
    /// The `trustmesh-ca-rotation` Secret: a rotation under way (phase, next CA, old root).
    Rotation,
    /// The `trustmesh-blocklist` ConfigMap: the blocked identities.
    Blocklist,
}

impl Object {
    /// Every shared object.
    pub const ALL: [Object; 3] = [Object::Ca, Object::Rotation, Object::Blocklist];

    /// The object's name.
    pub fn name(self) -> &'static str {
        match self {
            Object::Ca => "trustmesh-ca",
            Object::Rotation => "trustmesh-ca-rotation",
            Object::Blocklist => "trustmesh-blocklist",
        }
    }

    /// `Secret/NAME` or `ConfigMap/NAME`, for messages.
    pub fn describe(self) -> String {
        match self {
            Object::Blocklist => format!("ConfigMap/{}", self.name()),
            _ => format!("Secret/{}", self.name()),
        }
    }
}

/// An object's data as read, with the version to write it back against.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Doc {
    /// The object's `data` (a Secret's values decoded; they are PEM and JSON text).
    pub data: BTreeMap<String, String>,
    /// `metadata.resourceVersion`; `None` when the object does not exist.
    pub version: Option<String>,
    /// Its labels and annotations, kept by a replace (the manifests' labels stay).
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

impl std::fmt::Debug for Doc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doc")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("version", &self.version)
            .finish()
    }
}

/// How a conditional write went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The object now holds what was written.
    Done,
    /// Someone else wrote first (or created, or deleted it): read again.
    Conflict,
}

/// How many times [`update`] reads again after a conflict before it gives up.
const MAX_CONFLICTS: usize = 32;

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// Reads `obj`; a missing object is an empty [`Doc`] without a version.
pub async fn read(kube: &Kube, obj: Object) -> anyhow::Result<Doc> {
    let ctx = || format!("reading {} in {}", obj.describe(), kube.namespace);
    match obj {
        Object::Blocklist => {
            let api: Api<ConfigMap> = Api::namespaced(kube.client.clone(), &kube.namespace);
            Ok(match api.get_opt(obj.name()).await.with_context(ctx)? {
                None => Doc::default(),
                Some(cm) => Doc {
                    data: cm.data.unwrap_or_default(),
                    version: cm.metadata.resource_version,
                    labels: cm.metadata.labels.unwrap_or_default(),
                    annotations: cm.metadata.annotations.unwrap_or_default(),
                },
            })
        }
        _ => {
            let api: Api<Secret> = Api::namespaced(kube.client.clone(), &kube.namespace);
            let Some(secret) = api.get_opt(obj.name()).await.with_context(ctx)? else {
                return Ok(Doc::default());
            };
            let mut data = BTreeMap::new();
            for (k, v) in secret.data.unwrap_or_default() {
                let text = String::from_utf8(v.0)
                    .map_err(|_| anyhow::anyhow!("{}: {k:?} is not UTF-8 text", obj.describe()))?;
                data.insert(k, text);
            }
            Ok(Doc {
                data,
                version: secret.metadata.resource_version,
                labels: secret.metadata.labels.unwrap_or_default(),
                annotations: secret.metadata.annotations.unwrap_or_default(),
            })
        }
    }
}

/// Writes `data` as the whole of `obj`'s data on top of `base`, as read: created when `base`
/// has no version (the object did not exist), else replaced only if `obj` is still at that
/// version (its labels and annotations kept).
pub async fn write(
    kube: &Kube,
    obj: Object,
    data: BTreeMap<String, String>,
    base: &Doc,
) -> anyhow::Result<Written> {
    let version = base.version.as_deref();
    let mut labels = base.labels.clone();
    labels
        .entry("app.kubernetes.io/part-of".to_string())
        .or_insert_with(|| "trustmesh".to_string());
    let metadata = ObjectMeta {
        name: Some(obj.name().to_string()),
        namespace: Some(kube.namespace.clone()),
        resource_version: version.map(str::to_string),
        labels: Some(labels),
        annotations: (!base.annotations.is_empty()).then(|| base.annotations.clone()),
        ..Default::default()
    };
    let pp = PostParams::default();
    let result = match obj {
        Object::Blocklist => {
            let api: Api<ConfigMap> = Api::namespaced(kube.client.clone(), &kube.namespace);
            let cm = ConfigMap {
                metadata,
                data: Some(data),
                ..Default::default()
            };
            match version {
                None => api.create(&pp, &cm).await.map(drop),
                Some(_) => api.replace(obj.name(), &pp, &cm).await.map(drop),
            }
        }
        _ => {
            let api: Api<Secret> = Api::namespaced(kube.client.clone(), &kube.namespace);
            let secret = Secret {
                metadata,
                type_: Some("Opaque".to_string()),
                data: Some(
                    data.into_iter()
                        .map(|(k, v)| (k, ByteString(v.into_bytes())))
                        .collect(),
                ),
                ..Default::default()
            };
            match version {
                None => api.create(&pp, &secret).await.map(drop),
                Some(_) => api.replace(obj.name(), &pp, &secret).await.map(drop),
            }
        }
    };
    match result {
        Ok(()) => Ok(Written::Done),
        // 409: AlreadyExists on create, Conflict on a stale replace; 404: deleted meanwhile.
        Err(e) if is_status(&e, 409) || (version.is_some() && is_status(&e, 404)) => {
            Ok(Written::Conflict)
        }
        Err(e) => {
            Err(e).with_context(|| format!("writing {} in {}", obj.describe(), kube.namespace))
        }
    }
}

/// The read-modify-write loop: reads `obj`, asks `change` what its data should be (`None`:
/// leave it), writes that against the version read, and on a conflict starts again from a new
/// read. Returns what the last call of `change` returned beside the data.
pub async fn update<T>(
    kube: &Kube,
    obj: Object,
    mut change: impl FnMut(&Doc) -> anyhow::Result<(Option<BTreeMap<String, String>>, T)>,
) -> anyhow::Result<T> {
    for _ in 0..MAX_CONFLICTS {
        let doc = read(kube, obj).await?;
        let (data, out) = change(&doc)?;
        let Some(data) = data else {
            return Ok(out);
        };
        if data == doc.data && doc.version.is_some() {
            return Ok(out);
        }
        match write(kube, obj, data, &doc).await? {
            Written::Done => return Ok(out),
            Written::Conflict => continue,
        }
    }
    anyhow::bail!(
        "{} kept changing under this writer ({MAX_CONFLICTS} conflicts in a row)",
        obj.describe()
    )
}

/// How long one watch request may last before it is made again (the API server ends them too).
const WATCH_TIMEOUT_SECS: u32 = 290;
/// The pause before a watch that failed is made again.
const WATCH_RETRY: Duration = Duration::from_millis(500);

/// Watches the three objects until the process ends, notifying `wake` on every event and
/// every time a watch is (re)established. `errors` counts watches that failed.
pub async fn watch(kube: Kube, wake: Arc<Notify>, errors: prometheus::IntCounter) {
    let secrets: Api<Secret> = Api::namespaced(kube.client.clone(), &kube.namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(kube.client.clone(), &kube.namespace);
    let mut tasks = tokio::task::JoinSet::new();
    for obj in Object::ALL {
        let (wake, errors) = (wake.clone(), errors.clone());
        match obj {
            Object::Blocklist => {
                tasks.spawn(watch_one(config_maps.clone(), obj, wake, errors));
            }
            _ => {
                tasks.spawn(watch_one(secrets.clone(), obj, wake, errors));
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// One object's watch, by name (`fieldSelector=metadata.name=NAME`: RBAC's `resourceNames`
/// allow exactly that). Events carry no state here: each only wakes the reader, who reads
/// the objects again, so a watch cut, expired (`410 Gone`) or restarted loses nothing.
async fn watch_one<K>(api: Api<K>, obj: Object, wake: Arc<Notify>, errors: prometheus::IntCounter)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let params = WatchParams::default()
        .fields(&format!("metadata.name={}", obj.name()))
        .timeout(WATCH_TIMEOUT_SECS);
    let mut failing = false;
    loop {
        match api.watch(&params, "0").await {
            Ok(stream) => {
                if failing {
                    tracing::info!(object = %obj.describe(), "watching the shared state again");
                    failing = false;
                }
                // Established: whatever changed while it was down is read now.
                wake.notify_one();
                let mut stream = stream.boxed();
                while let Some(event) = stream.next().await {
                    match event {
                        Ok(WatchEvent::Error(status)) => {
                            tracing::debug!(object = %obj.describe(), code = status.code, "watch ended: {}", status.message);
                            break;
                        }
                        Ok(WatchEvent::Bookmark(_)) => {}
                        Ok(_) => wake.notify_one(),
                        Err(e) => {
                            tracing::debug!(object = %obj.describe(), "watch ended: {e}");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                errors.inc();
                if !failing {
                    tracing::warn!(object = %obj.describe(), "cannot watch the shared state: {e}");
                    failing = true;
                }
            }
        }
        tokio::time::sleep(WATCH_RETRY).await;
    }
}

#[cfg(test)]
mod tests;
