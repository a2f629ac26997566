//! The snapshot watch against a stand-in control plane on loopback, for a sidecar's state
//! built with no process.

use std::sync::Arc;

use http::StatusCode;

use super::poll_once;
use crate::testing::control_plane::{snapshot_json, FakeControlPlane};
use crate::testing::{self, id};

#[tokio::test]
async fn a_new_snapshot_is_put_in_force_and_a_304_or_a_bad_one_keeps_it() {
    let ca = Arc::new(testing::ca());
    let snapshot = snapshot_json(&ca, &id("api"), "git:abc+b1");
    let cp = FakeControlPlane::start(
        &ca,
        Arc::new(move |seen| match seen.path.as_str() {
            "/v1/snapshot?wait=0s" => (StatusCode::OK, snapshot.clone()),
            "/v1/snapshot?version=git:abc%2Bb1&wait=30s" => {
                (StatusCode::NOT_MODIFIED, String::new())
            }
            _ => (StatusCode::OK, "{not json".to_string()),
        }),
    )
    .await;
    let app = "127.0.0.1:8080".parse().unwrap();
    let shared = testing::shared(
        &ca,
        testing::args("api", app),
        Vec::new(),
        serde_json::json!([]),
    );
    shared.mesh.store(None);
    let control = cp.client(&ca, shared.resolver.clone());
    let changes = shared.mesh_changes.subscribe();

    assert!(poll_once(&shared, &control).await.unwrap());
    let view = shared.mesh.load_full().unwrap();
    assert_eq!(view.snapshot.version, "git:abc+b1");
    assert_eq!(*changes.borrow(), 1);
    let metrics = shared.metrics.encode();
    assert!(
        metrics.contains(r#"trustmesh_policy_version_info{version="git:abc"} 1"#),
        "{metrics}"
    );

    // Nothing new: the view in force stays, no tick.
    assert!(!poll_once(&shared, &control).await.unwrap());
    assert!(Arc::ptr_eq(&shared.mesh.load_full().unwrap(), &view));
    assert_eq!(*changes.borrow(), 1);

    // An answer that is no snapshot: an error, and the last snapshot is kept.
    shared.mesh.store(Some(Arc::new(
        crate::state::MeshView::new(
            serde_json::from_str(&snapshot_json(&ca, &id("api"), "other")).unwrap(),
            &shared.resolver,
            &shared.ports,
            None,
        )
        .unwrap(),
    )));
    let err = poll_once(&shared, &control).await.unwrap_err();
    assert!(format!("{err:#}").contains("not valid JSON"), "{err:#}");
    assert_eq!(shared.mesh.load_full().unwrap().snapshot.version, "other");
    let paths: Vec<String> = cp.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        [
            "/v1/snapshot?wait=0s",
            "/v1/snapshot?version=git:abc%2Bb1&wait=30s",
            "/v1/snapshot?version=other&wait=30s",
        ]
    );
}
