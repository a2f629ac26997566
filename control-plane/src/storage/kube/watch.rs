//! Storage: the watches of Kubernetes mode. One `kube::runtime::watcher` per resource
//! (Namespaces, Services, EndpointSlices, Pods, cluster-wide) feeds a reflector store, the
//! control plane's cache of the cluster. kube-rs' watcher lists, then watches from the list's
//! `resourceVersion`; a watch the server ends is resumed from the last version seen, and a
//! `410 Gone` (history compacted) makes it list again, the store swapped whole only once the
//! new list is complete. Errors are retried with kube-rs' default backoff and counted in
//! `trustmesh_kube_watch_errors_total{resource}`; `trustmesh_kube_objects{resource}` is the
//! size of each store. Every change is announced on [`ClusterCache::subscribe`].

use std::sync::Arc;

use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt as _;
use kube::Api;
use tokio::sync::watch;

use super::Kube;

/// The control plane's view of the cluster: one store per watched resource.
#[derive(Clone)]
pub struct ClusterCache {
    /// Every Namespace (their labels say which are meshed).
    pub namespaces: Store<Namespace>,
    /// Every Service.
    pub services: Store<Service>,
    /// Every EndpointSlice.
    pub slices: Store<EndpointSlice>,
    /// Every Pod.
    pub pods: Store<Pod>,
    changes: watch::Receiver<u64>,
    /// `trustmesh_kube_watch_errors_total{resource}`.
    pub watch_errors: prometheus::IntCounterVec,
    /// `trustmesh_kube_objects{resource}`.
    pub objects: prometheus::IntGaugeVec,
}

/// The resource label of each watch, as metrics name it.
pub const RESOURCES: [&str; 4] = ["namespaces", "services", "endpointslices", "pods"];

impl ClusterCache {
    /// Starts the four watches on `kube`'s client (tasks on the current runtime that run as
    /// long as the process).
    pub fn start(kube: &Kube) -> anyhow::Result<Self> {
        let watch_errors = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "trustmesh_kube_watch_errors_total",
                "Failed lists and watches of the Kubernetes API by resource (each is retried with backoff).",
            ),
            &["resource"],
        )?;
        let objects = prometheus::IntGaugeVec::new(
            prometheus::Opts::new(
                "trustmesh_kube_objects",
                "Objects in the control plane's cache of the cluster by resource.",
            ),
            &["resource"],
        )?;
        for r in RESOURCES {
            watch_errors.with_label_values(&[r]);
            objects.with_label_values(&[r]);
        }
        let (tx, changes) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let metrics = (watch_errors.clone(), objects.clone());
        let client = &kube.client;
        Ok(Self {
            namespaces: spawn(Api::all(client.clone()), RESOURCES[0], &tx, &metrics),
            services: spawn(Api::all(client.clone()), RESOURCES[1], &tx, &metrics),
            slices: spawn(Api::all(client.clone()), RESOURCES[2], &tx, &metrics),
            pods: spawn(Api::all(client.clone()), RESOURCES[3], &tx, &metrics),
            changes,
            watch_errors,
            objects,
        })
    }

    /// A receiver that sees a new value after every change of any store.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Waits until every store has had its first complete list.
    pub async fn wait_ready(&self) {
        let _ = self.namespaces.wait_until_ready().await;
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
        let _ = self.pods.wait_until_ready().await;
    }
}

/// Runs the reflector of one resource and returns its store.
fn spawn<K>(
    api: Api<K>,
    resource: &'static str,
    tx: &Arc<watch::Sender<u64>>,
    (errors, objects): &(prometheus::IntCounterVec, prometheus::IntGaugeVec),
) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let reader = store.clone();
    let (tx, errors, objects) = (tx.clone(), errors.clone(), objects.clone());
    tokio::spawn(async move {
        // Managed fields are large and never read: drop them before they reach the store.
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .modify(|o: &mut K| o.meta_mut().managed_fields = None);
        let mut events = reflector::reflector(writer, stream).boxed();
        while let Some(event) = events.next().await {
            match event {
                // A list in progress: the store changes only when it is complete.
                Ok(Event::Init | Event::InitApply(_)) => continue,
                Ok(_) => {
                    objects
                        .with_label_values(&[resource])
                        .set(i64::try_from(reader.len()).unwrap_or(i64::MAX));
                    tx.send_modify(|n| *n = n.wrapping_add(1));
                }
                Err(e) => {
                    errors.with_label_values(&[resource]).inc();
                    tracing::warn!(target: "kube", resource, "watch failed, retrying: {e}");
                }
            }
        }
    });
    store
}
