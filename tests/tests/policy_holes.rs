//! The policy library's holes, closed end to end with the real binaries: a dry-run ALLOW
//! never lets a request in under `default_action: deny`, and a path that servers behind the
//! sidecar read differently from the matcher (`/..;/`, `%00`, double encoding) gets 400 from
//! the inbound sidecar before it reaches the app.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use trustmesh_e2e::client::http1_get;
use trustmesh_e2e::mesh::Mesh;

/// `default_action: deny`; A may GET /public on b; two dry-run ALLOWs (one `mode: audit`, one
/// Istio's annotation) would let A reach /private-a and /private-b.
const DRY_RUN_ALLOWS: &str = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: public, namespace: test}
spec:
  selector: {matchLabels: {app: b}}
  rules:
    - from: [{source: {principals: [\"cluster.local/ns/test/sa/a\"]}}]
      to: [{operation: {paths: [\"/public\"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: try-private-a, namespace: test}
spec:
  selector: {matchLabels: {app: b}}
  mode: audit
  rules:
    - to: [{operation: {paths: [\"/private-a\"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: try-private-b
  namespace: test
  annotations: {istio.io/dry-run: \"true\"}
spec:
  selector: {matchLabels: {app: b}}
  rules:
    - to: [{operation: {paths: [\"/private-b\"]}}]
";

/// GET `path` on b through A; the status.
async fn status(mesh: &Mesh, path: &str) -> u16 {
    let resp = http1_get(mesh.a.outbound(), "b.test", path, &[])
        .await
        .expect("GET through A");
    resp.status.as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_allow_never_lets_a_request_in_under_default_deny() {
    let mesh = Mesh::a_to_b("dry-run-allow").await.expect("mesh starts");
    let dir = mesh.cp.policies().to_path_buf();
    std::fs::write(
        dir.join("mesh.yaml"),
        "trust_domain: cluster.local\ndefault_action: deny\n",
    )
    .unwrap();
    std::fs::write(dir.join("dry-run.yaml"), DRY_RUN_ALLOWS).unwrap();

    // The new set is in force once a path no policy names is denied (bounded to 10 s).
    let start = Instant::now();
    while status(&mesh, "/other").await != 403 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the new policies never reached B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        status(&mesh, "/public").await,
        200,
        "the enforced ALLOW allows"
    );
    let before = mesh.app_b.request_count();
    for path in ["/private-a", "/private-b"] {
        assert_eq!(
            status(&mesh, path).await,
            403,
            "{path}: a dry-run ALLOW must not allow"
        );
    }
    assert_eq!(
        mesh.app_b.request_count(),
        before,
        "nothing denied reached the app"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_servers_read_differently_get_400_before_the_app() {
    let mesh = Mesh::a_to_b("path-holes").await.expect("mesh starts");
    assert_eq!(status(&mesh, "/public/ok").await, 200);
    let before = mesh.app_b.request_count();
    for path in [
        "/public/..;/admin",
        "/debug;x/pprof",
        "/admin%00.png",
        "/%252e%252e/admin",
        "/%C0%AE%C0%AE/admin",
    ] {
        let resp = http1_get(mesh.a.outbound(), "b.test", path, &[])
            .await
            .expect("GET through A");
        assert_eq!(resp.status, 400, "{path}: {}", resp.text());
        assert!(
            resp.text().contains("bad request path"),
            "{path}: the inbound sidecar refused it: {}",
            resp.text()
        );
    }
    assert_eq!(
        mesh.app_b.request_count(),
        before,
        "no refused path reached the app: {:?}",
        mesh.app_b.requests()
    );
}

/// Several errors in one document, and in a second one, plus a warning.
const MANY_ERRORS: &str = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: p
  namespace: test
  annotations: {istio.io/dry-run: \"maybe\"}
spec:
  actoin: DENY
  rules:
    - from: [{source: {principal: [a]}}]
      when: [{key: \"request.headers[x-trustmesh-peer-identity]\", values: [x]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: q, namespace: test}
spec:
  action: DENY
  mode: dryrun
  rules:
    - to: [{operation: {paths: [\"/admin/*\"], verbs: [GET]}}]
---
apiVersion: trustmesh.io/v1
kind: Service
metadata: {name: s, namespace: test}
spec:
  identity: spiffe://cluster.local/ns/test/sa/s
  ports: [{port: 80, protocol: http}, {port: 81, protocol: foo}]
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_validate_prints_every_error_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.yaml"), MANY_ERRORS).unwrap();
    let out = trustmesh_e2e::control_plane::run_cli(&[
        "policy",
        "validate",
        dir.path().to_str().unwrap(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    for want in [
        "p.yaml:6:35: bad istio.io/dry-run annotation \"maybe\"",
        "p.yaml:8:3: spec: unknown field `actoin`",
        "p.yaml:10:24: spec.rules[0].from[0].source: unknown field `principal`",
        "p.yaml:11:20: key \"request.headers[x-trustmesh-peer-identity]\": conditions on x-trustmesh-* headers are refused",
        "p.yaml:18:9: spec.mode: unknown variant `dryrun`",
        "p.yaml:20:46: spec.rules[0].to[0].operation: unknown field `verbs`",
        "p.yaml:27:60: spec.ports[1].protocol: unknown variant `foo`, expected one of",
    ] {
        assert!(out.stderr.contains(want), "missing {want:?} in:\n{}", out.stderr);
    }
}
