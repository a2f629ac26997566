//! **A stand-in for the Kubernetes API server**, for the tests of Kubernetes mode: no real API
//! server runs on the machines these tests run on, so this one, in the test process, serves
//! the real API's list/watch protocol over plain HTTP on `127.0.0.1`, with real object JSON,
//! for `Namespace`s, `Service`s, `Pod`s, `ConfigMap`s, `Secret`s (`v1`) and `EndpointSlice`s
//! (`discovery.k8s.io/v1`). kube-rs' client and `kube::runtime::watcher` run against it
//! unchanged (`tests/tests/kube_api_stub.rs` proves it).
//!
//! What it does as the real server does:
//! - one global `resourceVersion`, incremented by every write (etcd's revision); a no-op update
//!   makes no new version;
//! - lists (cluster-wide and per namespace) with `labelSelector` (`=`, `==`, `!=`, `in`,
//!   `notin`, exists, `!`), `fieldSelector` (`metadata.name`, `metadata.namespace`, a few per
//!   type; others `400`), `limit`/`continue` pages that are a consistent snapshot;
//! - watches (`watch=1`) from a version, as a chunked stream of `{"type","object"}` lines:
//!   `ADDED`/`MODIFIED`/`DELETED` (an object leaving a selector is `DELETED`), `BOOKMARK`s when
//!   allowed, `sendInitialEvents`; from a version older than the retained history, a `200`
//!   stream whose one event is an `ERROR` carrying a `410` `Status` (or, by choice, HTTP `410`);
//!   `timeoutSeconds` ends the stream;
//! - `GET`, `POST` (`409 AlreadyExists`, `404` for a missing namespace), `PUT` with optimistic
//!   concurrency (`409 Conflict` for a stale `metadata.resourceVersion`), `PATCH` (merge, JSON
//!   patch), `DELETE` (with preconditions); errors are `Status` objects.
//!
//! What it does not: authentication and RBAC (every request is allowed), finalizers, graceful
//! deletion and garbage collection (a `DELETE` removes the object at once; deleting a namespace
//! leaves its objects), server-side apply, strategic merge of lists (a strategic merge patch is
//! applied as a merge patch), other types, protobuf, HTTP/2, TLS.
//!
//! Test controls on [`KubeApi`]: [`KubeApi::apply`] / [`KubeApi::remove`] write objects
//! directly, [`KubeApi::compact`] forgets the history (forcing `410`),
//! [`KubeApi::cut_watches`] ends every open watch, [`KubeApi::send_bookmarks`],
//! [`KubeApi::requests`] / [`KubeApi::requests_for`] count requests, [`KubeApi::fail_next`]
//! fails the next requests. [`scale`] fills it with many Services, Pods and EndpointSlices.

mod crud;
mod list;
pub mod object;
pub mod patch;
pub mod resources;
pub mod scale;
pub mod selector;
mod server;
pub mod status;
pub mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

pub use resources::Resource;
use server::Shared;
pub use status::ApiError;
use store::Store;

/// How the stub behaves; [`KubeApiOptions::default`] is what most tests want.
#[derive(Clone, Debug)]
pub struct KubeApiOptions {
    /// Writes kept for watches and paged lists from an older version (etcd compacts too).
    pub max_history: usize,
    /// How often every watch that allowed bookmarks gets one (`None`: only on
    /// [`KubeApi::send_bookmarks`]). The real server sends one about every minute.
    pub bookmark_interval: Option<Duration>,
}

impl Default for KubeApiOptions {
    fn default() -> Self {
        Self {
            max_history: 100_000,
            bookmark_interval: None,
        }
    }
}

/// The running stub API server on an ephemeral `127.0.0.1` port; stops when dropped.
pub struct KubeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

/// The current time as the API writes `creationTimestamp` (RFC 3339, seconds, UTC).
pub(crate) fn now() -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(fmt)
        .unwrap_or_default()
}

impl KubeApi {
    /// Starts an empty server with the default options.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(KubeApiOptions::default()).await
    }

    /// Starts an empty server on the current tokio runtime.
    pub async fn start_with(opts: KubeApiOptions) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(opts.max_history)),
            requests: Mutex::new(HashMap::new()),
            fail: Mutex::new((0, 500)),
            gone_as_http: Mutex::new(false),
        });
        let mut tasks = vec![tokio::spawn(accept_loop(listener, shared.clone()))];
        if let Some(every) = opts.bookmark_interval {
            let weak = Arc::downgrade(&shared);
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                loop {
                    tick.tick().await;
                    match weak.upgrade() {
                        Some(shared) => shared.store().send_bookmarks(),
                        None => return,
                    }
                }
            }));
        }
        Ok(Self {
            addr,
            shared,
            tasks,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The server's URL (`http://127.0.0.1:PORT`), as a kubeconfig's `server`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube-rs `Config` for this server: no credentials, default namespace `default`.
    pub fn config(&self) -> anyhow::Result<kube::Config> {
        let mut config = kube::Config::new(self.url().parse()?);
        config.default_namespace = "default".into();
        Ok(config)
    }

    /// A kube-rs client for this server.
    pub fn client(&self) -> anyhow::Result<kube::Client> {
        Ok(kube::Client::try_from(self.config()?)?)
    }

    /// Writes a kubeconfig naming this server (context `trustmesh-stub`, no credentials), for
    /// a process started with `--kubeconfig FILE`.
    pub fn write_kubeconfig(&self, path: &Path) -> anyhow::Result<()> {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: trustmesh-stub\n  cluster:\n    server: {url}\n\
             users:\n- name: trustmesh-stub\n  user: {{}}\ncontexts:\n- name: trustmesh-stub\n  context:\n    \
             cluster: trustmesh-stub\n    user: trustmesh-stub\n    namespace: default\n\
             current-context: trustmesh-stub\n",
            url = self.url()
        );
        std::fs::write(path, yaml)?;
        Ok(())
    }

    /// Creates or replaces an object from test code (its type from `apiVersion`/`kind`, its
    /// namespace from `metadata.namespace`), bypassing concurrency checks and namespace
    /// existence; returns it as stored, with its new `resourceVersion`.
    pub fn apply(&self, obj: Value) -> Result<Value, ApiError> {
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        let resource = Resource::ALL
            .into_iter()
            .find(|r| r.api_version() == api_version && r.kind() == kind)
            .ok_or_else(|| {
                ApiError::BadRequest(format!("the stub serves no {api_version} {kind}"))
            })?;
        let ns = obj
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let name = object::name_of(&obj).unwrap_or("").to_owned();
        let target = resources::Target {
            resource,
            namespace: ns.clone(),
            name: Some(name.clone()),
        };
        let mut store = self.shared.store();
        let key = (ns.unwrap_or_default(), name);
        match store.get(resource, &key).cloned() {
            Some(old) => {
                let mut obj = obj;
                object::admit(&mut obj, resource, target.namespace.as_deref(), 0)?;
                object::keep_server_fields(&mut obj, &old)?;
                store
                    .write(resource, key, Some(obj))
                    .ok_or(ApiError::MethodNotAllowed)
            }
            None => {
                let mut obj = obj;
                let suffix = store.next_id();
                object::admit(&mut obj, resource, target.namespace.as_deref(), suffix)?;
                object::stamp_new(
                    &mut obj,
                    &format!("00000000-0000-4000-8000-{suffix:012x}"),
                    &now(),
                )?;
                store
                    .write(resource, key, Some(obj))
                    .ok_or(ApiError::MethodNotAllowed)
            }
        }
    }

    /// Deletes an object from test code; returns its last state, `None` if there was none.
    pub fn remove(&self, resource: Resource, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = (namespace.unwrap_or("").to_owned(), name.to_owned());
        self.shared.store().write(resource, key, None)
    }

    /// The stored object, if any.
    pub fn get(&self, resource: Resource, namespace: Option<&str>, name: &str) -> Option<Value> {
        let key = (namespace.unwrap_or("").to_owned(), name.to_owned());
        self.shared.store().get(resource, &key).cloned()
    }

    /// How many objects of a type exist.
    pub fn count(&self, resource: Resource) -> usize {
        self.shared.store().count(resource)
    }

    /// The current resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Forgets the history: lists and watches from any version before now get `410`.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Ends every open watch stream; returns how many were open.
    pub fn cut_watches(&self) -> usize {
        self.shared.store().cut_watches()
    }

    /// How many watch streams are open.
    pub fn open_watches(&self) -> usize {
        self.shared.store().open_watches()
    }

    /// Sends a `BOOKMARK` at the current version on every watch that allowed bookmarks.
    pub fn send_bookmarks(&self) {
        self.shared.store().send_bookmarks();
    }

    /// Requests seen so far by verb: `list`, `watch`, `get`, `create`, `update`, `patch`,
    /// `delete`, `other` (injected failures included).
    pub fn requests(&self) -> HashMap<&'static str, u64> {
        let mut by_verb = HashMap::new();
        if let Ok(counts) = self.shared.requests.lock() {
            for ((verb, _), n) in counts.iter() {
                *by_verb.entry(*verb).or_default() += n;
            }
        }
        by_verb
    }

    /// Requests seen so far for one resource type, by verb (as [`KubeApi::requests`]).
    pub fn requests_for(&self, resource: Resource) -> HashMap<&'static str, u64> {
        let mut by_verb = HashMap::new();
        if let Ok(counts) = self.shared.requests.lock() {
            for ((verb, r), n) in counts.iter() {
                if *r == Some(resource) {
                    *by_verb.entry(*verb).or_default() += n;
                }
            }
        }
        by_verb
    }

    /// Answers the next `n` requests (of any kind) with a `Status` of HTTP `code`
    /// (500 `InternalError`, 503 `ServiceUnavailable`, 429 `TooManyRequests`, ...).
    pub fn fail_next(&self, n: u32, code: u16) {
        if let Ok(mut fail) = self.shared.fail.lock() {
            *fail = (n, code);
        }
    }

    /// Whether a watch from a compacted version is refused with HTTP `410` on the request
    /// itself (`true`) or, as the real server does, with a `200` stream holding one `ERROR`
    /// event with a `410` `Status` (`false`, the default). kube-rs' watcher relists on the
    /// latter and retries the same version on the former.
    pub fn set_gone_as_http(&self, on: bool) {
        if let Ok(mut g) = self.shared.gone_as_http.lock() {
            *g = on;
        }
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        self.shared.store().cut_watches();
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut conns = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let shared = shared.clone();
        conns.spawn(async move {
            let svc = service_fn(move |req| server::handle(shared.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
        while conns.try_join_next().is_some() {}
    }
}
