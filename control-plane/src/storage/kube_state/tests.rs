//! The shared objects against the stand-in API server of the end-to-end tests
//! (`trustmesh_e2e::kube_api`, in this process: no real API server runs here): conditional
//! writes and the read-modify-write loop.

use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use trustmesh_e2e::kube_api::{KubeApi, Resource};

use super::*;

const NS: &str = "trustmesh-system";

async fn stub() -> (KubeApi, Kube) {
    let stub = KubeApi::start().await.unwrap();
    stub.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}))
        .unwrap();
    let kube = Kube {
        client: stub.client().unwrap(),
        namespace: NS.to_string(),
    };
    (stub, kube)
}

fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn a_create_of_an_existing_object_and_a_stale_replace_are_conflicts() {
    let (_stub, kube) = stub().await;
    assert_eq!(read(&kube, Object::Ca).await.unwrap(), Doc::default());
    let first = data(&[("ca-cert.pem", "one")]);
    assert_eq!(
        write(&kube, Object::Ca, first.clone(), &Doc::default())
            .await
            .unwrap(),
        Written::Done
    );
    // A second replica that also found none: its create loses, it reads the winner's.
    let second = data(&[("ca-cert.pem", "two")]);
    assert_eq!(
        write(&kube, Object::Ca, second.clone(), &Doc::default())
            .await
            .unwrap(),
        Written::Conflict
    );
    let doc = read(&kube, Object::Ca).await.unwrap();
    assert_eq!(doc.data, first);
    assert_eq!(
        write(&kube, Object::Ca, second.clone(), &doc)
            .await
            .unwrap(),
        Written::Done
    );
    // Written against the version that is no longer current: refused.
    assert_eq!(
        write(&kube, Object::Ca, first, &doc).await.unwrap(),
        Written::Conflict
    );
    assert_eq!(read(&kube, Object::Ca).await.unwrap().data, second);
    assert!(!format!("{doc:?}").contains("one"), "Debug names keys only");
}

#[tokio::test]
async fn update_reads_again_after_a_conflict_and_keeps_the_other_writers_change() {
    let (stub, kube) = stub().await;
    write(
        &kube,
        Object::Blocklist,
        data(&[("list", "a")]),
        &Doc::default(),
    )
    .await
    .unwrap();
    let calls = AtomicUsize::new(0);
    let out = update(&kube, Object::Blocklist, |doc| {
        if calls.fetch_add(1, Ordering::SeqCst) == 0 {
            // Another writer gets in between this read and this write.
            stub.apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "trustmesh-blocklist", "namespace": NS},
                "data": {"list": "a", "other": "x"}}))
                .unwrap();
        }
        let mut next = doc.data.clone();
        let list = next.get("list").cloned().unwrap_or_default();
        next.insert("list".into(), format!("{list},b"));
        Ok((Some(next), doc.data.len()))
    })
    .await
    .unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the stale write was made again"
    );
    assert_eq!(out, 2, "the second turn saw the other writer's key");
    let cm = stub
        .get(Resource::ConfigMaps, Some(NS), "trustmesh-blocklist")
        .unwrap();
    assert_eq!(cm["data"], json!({"list": "a,b", "other": "x"}));
}

#[tokio::test]
async fn an_object_shipped_empty_is_filled_by_a_replace() {
    let (stub, kube) = stub().await;
    stub.apply(json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "trustmesh-ca-rotation", "namespace": NS,
                     "labels": {"app.kubernetes.io/name": "trustmesh"}}}))
        .unwrap();
    let doc = read(&kube, Object::Rotation).await.unwrap();
    assert!(doc.data.is_empty() && doc.version.is_some());
    update(&kube, Object::Rotation, |_| {
        Ok((Some(data(&[("k", "v")])), ()))
    })
    .await
    .unwrap();
    assert_eq!(
        read(&kube, Object::Rotation).await.unwrap().data,
        data(&[("k", "v")])
    );
    assert_eq!(stub.requests_for(Resource::Secrets).get("create"), None);
    let secret = stub
        .get(Resource::Secrets, Some(NS), "trustmesh-ca-rotation")
        .unwrap();
    assert_eq!(
        secret["metadata"]["labels"]["app.kubernetes.io/name"], "trustmesh",
        "the manifest's labels stay"
    );
}
