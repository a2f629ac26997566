//! Policies in git, pushed to running sidecars: a commit flips the same request from 200 to
//! 403 and back without a restart, and a bad commit keeps the last good set in force while the
//! control plane reports the error as FILE:LINE:COL.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use trustmesh_e2e::admin_api::control_plane_state;
use trustmesh_e2e::client::{admin_get, http1_get};
use trustmesh_e2e::control_plane::run_cli;
use trustmesh_e2e::lifecycle::metric;
use trustmesh_e2e::mesh::Mesh;

const DENY_ORDERS: &str = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-orders, namespace: test}
spec:
  selector: {matchLabels: {app: b}}
  action: DENY
  rules:
    - to: [{operation: {paths: [\"/orders/*\"]}}]
";

const BAD: &str = "\
apiVersion: trustmesh.io/v1
kind: AuthorizationPolicy
metadata: {name: broken, namespace: test}
spec:
  action: DENY
  rulez: []
";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=test",
            "-c",
            "user.email=test@example.invalid",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit(dir: &Path, msg: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", msg]);
    git(dir, &["rev-parse", "HEAD"])
}

/// Polls GET /orders/1 through A until it answers `want` (bounded to 10 s); returns how long.
async fn until_status(mesh: &Mesh, want: u16) -> Duration {
    let start = Instant::now();
    let mut last = 0;
    for _ in 0..1000 {
        let resp = http1_get(mesh.a.outbound(), "b.test", "/orders/1", &[])
            .await
            .expect("GET through A");
        last = resp.status.as_u16();
        if last == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "still {last} after 10 s, wanted {want}: {}",
            resp.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("still {last}, wanted {want}");
}

/// B's policy version: the snapshot version up to the trust generation (`+b...`).
async fn b_policy_version(mesh: &Mesh) -> String {
    policy_version(mesh.b.admin()).await
}

/// A sidecar's policy version (see [`b_policy_version`]).
async fn policy_version(admin: SocketAddr) -> String {
    let config = admin_get(admin, "/config").await.expect("/config");
    let version = config.json().expect("JSON")["policy_version"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    version.split("+b").next().unwrap_or_default().to_string()
}

/// Waits (bounded to 10 s) until B holds policy version `want`: a commit's version arrives
/// after the working tree's (an edit is seen before it is committed).
async fn until_version(mesh: &Mesh, want: &str) {
    until_version_on(mesh.b.admin(), want).await;
}

/// [`until_version`] on any sidecar.
async fn until_version_on(admin: SocketAddr, want: &str) {
    let start = Instant::now();
    loop {
        let have = policy_version(admin).await;
        if have == want {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{admin} holds {have}, not {want}, after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_commits_flip_a_decision_without_restarts_and_bad_commits_change_nothing() {
    let mesh = Mesh::a_to_b("policy-push").await.expect("mesh starts");
    let repo = mesh.cp.policies().to_path_buf();
    git(&repo, &["init", "-q", "-b", "main"]);
    let first = commit(&repo, "registry");
    until_status(&mesh, 200).await;

    // A DENY policy for /orders/* on b: the same request flips to 403.
    std::fs::write(repo.join("deny.yaml"), DENY_ORDERS).unwrap();
    let deny_commit = commit(&repo, "deny orders");
    assert_ne!(first, deny_commit);
    let took = until_status(&mesh, 403).await;
    eprintln!("commit -> 403 seen after {took:?}");
    let resp = http1_get(mesh.a.outbound(), "b.test", "/orders/1", &[])
        .await
        .unwrap();
    assert_eq!(
        resp.text(),
        "RBAC: access denied",
        "the body names no policy"
    );
    until_version(&mesh, &format!("git:{deny_commit}")).await;
    // Other paths are still allowed.
    let other = http1_get(mesh.a.outbound(), "b.test", "/status", &[])
        .await
        .unwrap();
    assert_eq!(other.status, 200, "{}", other.text());

    // Revert: back to 200.
    std::fs::remove_file(repo.join("deny.yaml")).unwrap();
    let revert = commit(&repo, "allow orders again");
    until_status(&mesh, 200).await;
    until_version(&mesh, &format!("git:{revert}")).await;

    // A bad commit (unknown field) together with the DENY policy: nothing changes.
    // The bad file first: every state of the folder from here on is invalid.
    std::fs::write(repo.join("bad.yaml"), BAD).unwrap();
    std::fs::write(repo.join("deny.yaml"), DENY_ORDERS).unwrap();
    commit(&repo, "broken");
    let deadline = Instant::now() + Duration::from_secs(10);
    let reported = loop {
        let health = control_plane_state(&mesh.cp).await.expect("/v1/proxies");
        if let Some(err) = health["policy_error"].as_str() {
            break err.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no policy error reported: {health}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        reported.contains("bad.yaml:6:3:") && reported.contains("rulez"),
        "the error names FILE:LINE:COL and the field: {reported}"
    );
    let health = mesh.cp.get("/healthz").await.unwrap().json().unwrap();
    assert_eq!(health["policy_version"], format!("git:{revert}"));
    // The last good set stays in force: still 200 (the DENY in the same commit is not applied).
    for _ in 0..5 {
        let resp = http1_get(mesh.a.outbound(), "b.test", "/orders/1", &[])
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    assert_eq!(b_policy_version(&mesh).await, format!("git:{revert}"));

    // The CLI reports the same error and exits 1.
    let out = run_cli(&["policy", "validate", repo.to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("bad.yaml:6:3:"), "{}", out.stderr);

    // Fixing the commit puts the DENY in force.
    std::fs::remove_file(repo.join("bad.yaml")).unwrap();
    commit(&repo, "fixed");
    until_status(&mesh, 403).await;
}

/// A policy commit keeps the trust bundle, so it must not cost a reconnect: A's pooled mTLS
/// connection to B carries the requests after it as it did before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_commit_keeps_the_pooled_upstream_connection() {
    let mesh = Mesh::a_to_b("policy-pool").await.expect("mesh starts");
    let repo = mesh.cp.policies().to_path_buf();
    git(&repo, &["init", "-q", "-b", "main"]);
    let first = commit(&repo, "registry");
    until_version_on(mesh.a.admin(), &format!("git:{first}")).await;
    until_status(&mesh, 200).await;
    let connects = "trustmesh_upstream_connections_total";
    let before = metric(mesh.a.admin(), connects).await.unwrap();
    assert!(before >= 1.0, "A made no connection to B");

    std::fs::write(repo.join("deny.yaml"), DENY_ORDERS).unwrap();
    let deny = commit(&repo, "deny orders");
    until_version_on(mesh.a.admin(), &format!("git:{deny}")).await;
    until_version(&mesh, &format!("git:{deny}")).await;
    for path in ["/orders/1", "/status"] {
        let resp = http1_get(mesh.a.outbound(), "b.test", path, &[])
            .await
            .unwrap();
        let want = if path == "/status" { 200 } else { 403 };
        assert_eq!(resp.status, want, "{path}: {}", resp.text());
    }
    assert_eq!(
        metric(mesh.a.admin(), connects).await.unwrap(),
        before,
        "the commit made A reconnect to B"
    );
}
