//! The stand-in Kubernetes API server (`trustmesh_e2e::kube_api`) driven by the real kube-rs
//! client and `kube::runtime::watcher`: what the control plane's Kubernetes mode will see.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{Stream, StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt as _;
use kube::ResourceExt as _;
use serde_json::json;
use tokio::sync::mpsc;
use trustmesh_e2e::kube_api::scale::{self, Cluster};
use trustmesh_e2e::kube_api::{KubeApi, KubeApiOptions, Resource};

#[path = "kube_api_stub/requests.rs"]
mod requests;

/// Every wait is bounded: a stub that stops answering fails the test instead of hanging it.
const WAIT: Duration = Duration::from_secs(20);

async fn next<S: Stream + Unpin>(s: &mut S) -> S::Item {
    tokio::time::timeout(WAIT, s.next())
        .await
        .expect("stream stalled")
        .expect("stream ended")
}

fn config_map(name: &str, labels: serde_json::Value, data: serde_json::Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": data}))
        .unwrap()
}

async fn stub_with_namespace(ns: &str) -> KubeApi {
    let stub = KubeApi::start().await.unwrap();
    stub.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
        .unwrap();
    stub
}

type Events = mpsc::UnboundedReceiver<Result<Event<ConfigMap>, watcher::Error>>;

/// Runs a watcher in its own task, as a controller would (a watcher only moves when polled),
/// and hands over its events.
fn spawn_watcher(api: Api<ConfigMap>, config: watcher::Config) -> Events {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        while let Some(e) = events.next().await {
            if tx.send(e).is_err() {
                return;
            }
        }
    });
    rx
}

async fn recv(events: &mut Events) -> Result<Event<ConfigMap>, watcher::Error> {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("watcher stalled")
        .expect("watcher ended")
}

/// Reads a watcher's events until `InitDone`, returning the names it listed.
async fn initial_list(events: &mut Events) -> Vec<String> {
    let mut names = Vec::new();
    loop {
        match recv(events).await {
            Ok(Event::Init) => names.clear(),
            Ok(Event::InitApply(o)) => names.push(o.name_any()),
            Ok(Event::InitDone) => return names,
            Ok(other) => panic!("unexpected event before InitDone: {other:?}"),
            Err(_) => {} // retried by the backoff
        }
    }
}

/// The next event that is not an error (errors are retried by the watcher's backoff).
async fn next_event(events: &mut Events) -> Event<ConfigMap> {
    loop {
        if let Ok(e) = recv(events).await {
            return e;
        }
    }
}

/// Waits until the stub has `n` open watches.
async fn watches_open(stub: &KubeApi, n: usize) {
    tokio::time::timeout(WAIT, async {
        while stub.open_watches() != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the watch never opened");
}

fn describe(e: &Event<ConfigMap>) -> String {
    match e {
        Event::Apply(o) => format!(
            "apply {} {:?}",
            o.name_any(),
            o.data.as_ref().and_then(|d| d.get("v"))
        ),
        Event::Delete(o) => format!("delete {}", o.name_any()),
        Event::Init => "init".into(),
        Event::InitApply(o) => format!("init-apply {}", o.name_any()),
        Event::InitDone => "init-done".into(),
    }
}

#[tokio::test]
async fn watcher_sees_adds_updates_and_deletes_in_order() {
    let stub = stub_with_namespace("a").await;
    stub.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "old", "namespace": "a"}})).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(stub.client().unwrap(), "a");
    let mut events = spawn_watcher(api.clone(), watcher::Config::default());
    assert_eq!(initial_list(&mut events).await, ["old"]);

    api.create(
        &PostParams::default(),
        &config_map("c1", json!({}), json!({"v": "1"})),
    )
    .await
    .unwrap();
    let patch = Patch::Merge(json!({"data": {"v": "2"}}));
    api.patch("c1", &PatchParams::default(), &patch)
        .await
        .unwrap();
    api.delete("old", &DeleteParams::default()).await.unwrap();
    // A write elsewhere is not this watch's business.
    stub.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "namespace": "b"}})).unwrap();
    api.delete("c1", &DeleteParams::default()).await.unwrap();

    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(describe(&next_event(&mut events).await));
    }
    assert_eq!(
        seen,
        [
            "apply c1 Some(\"1\")",
            "apply c1 Some(\"2\")",
            "delete old",
            "delete c1"
        ]
    );
}

#[tokio::test]
async fn compacted_history_makes_the_watcher_relist_and_lose_nothing() {
    let stub = stub_with_namespace("a").await;
    for name in ["keep", "gone"] {
        stub.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "a"}})).unwrap();
    }
    let api: Api<ConfigMap> = Api::namespaced(stub.client().unwrap(), "a");
    let mut events = spawn_watcher(api, watcher::Config::default());
    assert_eq!(initial_list(&mut events).await, ["gone", "keep"]);
    // Wait until the watch is open, then change things, forget the history, and cut the watch:
    // it comes back from a version the server no longer has.
    watches_open(&stub, 1).await;
    stub.remove(Resource::ConfigMaps, Some("a"), "gone")
        .unwrap();
    stub.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "new", "namespace": "a"}})).unwrap();
    assert_eq!(describe(&next_event(&mut events).await), "delete gone");
    assert_eq!(describe(&next_event(&mut events).await), "apply new None");
    // A write this watch sees, then one it does not (another namespace), then compaction: the
    // watch's last version is now older than the history, whether or not it read `later`
    // before the cut, so its reconnect gets a 410 and the watcher must relist.
    stub.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "later", "namespace": "a"}})).unwrap();
    stub.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}))
        .unwrap();
    let lists_before = stub.requests().get("list").copied().unwrap_or(0);
    stub.compact();
    assert_eq!(stub.cut_watches(), 1);
    // Either the watch delivered `later` before the cut, or the relist brings it: both end
    // with every object present and nothing deleted reappearing.
    let mut state = vec!["keep".to_string(), "new".to_string()];
    loop {
        match next_event(&mut events).await {
            Event::Apply(o) => state.push(o.name_any()),
            Event::Init => state.clear(),
            Event::InitApply(o) => state.push(o.name_any()),
            Event::InitDone => break,
            Event::Delete(o) => panic!("nothing was deleted, got a delete of {}", o.name_any()),
        }
    }
    state.sort();
    assert_eq!(state, ["keep", "later", "new"]);
    assert!(
        stub.requests().get("list").copied().unwrap_or(0) > lists_before,
        "the watcher relisted"
    );
}

#[tokio::test]
async fn cut_watches_reconnect_and_resume_without_a_relist() {
    let stub = stub_with_namespace("a").await;
    let api: Api<ConfigMap> = Api::namespaced(stub.client().unwrap(), "a");
    let mut events = spawn_watcher(api, watcher::Config::default());
    assert!(initial_list(&mut events).await.is_empty());
    for round in 0..3 {
        watches_open(&stub, 1).await;
        assert_eq!(stub.cut_watches(), 1);
        let name = format!("c{round}");
        stub.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "a"}})).unwrap();
        assert_eq!(
            describe(&next_event(&mut events).await),
            format!("apply {name} None")
        );
    }
    let requests = stub.requests_for(Resource::ConfigMaps);
    assert_eq!(
        requests.get("list"),
        Some(&1),
        "resumed from its version, never relisted"
    );
    assert!(requests.get("watch").copied().unwrap_or(0) >= 4);
}

#[tokio::test]
async fn a_stale_resource_version_replace_gets_409_and_a_fresh_one_succeeds() {
    let stub = stub_with_namespace("a").await;
    let api: Api<ConfigMap> = Api::namespaced(stub.client().unwrap(), "a");
    let first = api
        .create(
            &PostParams::default(),
            &config_map("c", json!({}), json!({"v": "1"})),
        )
        .await
        .unwrap();
    let mut second = first.clone();
    second.data = Some([("v".to_string(), "2".to_string())].into());
    let second = api
        .replace("c", &PostParams::default(), &second)
        .await
        .unwrap();
    assert_ne!(second.resource_version(), first.resource_version());

    let mut stale = first.clone();
    stale.data = Some([("v".to_string(), "3".to_string())].into());
    match api.replace("c", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
        }
        other => panic!("a stale replace must be a 409 Conflict, got {other:?}"),
    }
    let mut fresh = api.get("c").await.unwrap();
    assert_eq!(
        fresh
            .data
            .as_ref()
            .and_then(|d| d.get("v"))
            .map(String::as_str),
        Some("2")
    );
    fresh.data = Some([("v".to_string(), "3".to_string())].into());
    let done = api
        .replace("c", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_eq!(
        done.data.and_then(|d| d.get("v").cloned()).as_deref(),
        Some("3")
    );
    // A merge patch carrying a stale version is refused the same way.
    let stale_patch = Patch::Merge(
        json!({"metadata": {"resourceVersion": first.resource_version()}, "data": {"v": "4"}}),
    );
    let err = api
        .patch("c", &PatchParams::default(), &stale_patch)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409),
        "{err:?}"
    );
    // And creating it again is AlreadyExists.
    let err = api
        .create(
            &PostParams::default(),
            &config_map("c", json!({}), json!({})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );
}

#[tokio::test]
async fn bookmarks_arrive_on_watches_that_ask_for_them() {
    let stub = stub_with_namespace("a").await;
    let api: Api<ConfigMap> = Api::namespaced(stub.client().unwrap(), "a");
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(
            &WatchParams {
                bookmarks: true,
                ..WatchParams::default()
            },
            &rv,
        )
        .await
        .unwrap()
        .boxed();
    stub.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}))
        .unwrap();
    stub.send_bookmarks();
    match next(&mut stream).await.unwrap() {
        WatchEvent::Bookmark(b) => assert_eq!(
            b.metadata.resource_version,
            stub.resource_version().to_string()
        ),
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn a_streaming_list_watcher_gets_initial_events_then_changes() {
    let stub = stub_with_namespace("a").await;
    stub.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c0", "namespace": "a"}})).unwrap();
    let api: Api<ConfigMap> = Api::namespaced(stub.client().unwrap(), "a");
    // `sendInitialEvents=true`: the initial state arrives on the watch itself, ended by the
    // bookmark annotated `k8s.io/initial-events-end`; no list request at all.
    let mut events = spawn_watcher(api, watcher::Config::default().streaming_lists());
    assert_eq!(initial_list(&mut events).await, ["c0"]);
    stub.apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1", "namespace": "a"}})).unwrap();
    assert_eq!(describe(&next_event(&mut events).await), "apply c1 None");
    assert_eq!(stub.requests().get("list"), None);
}
