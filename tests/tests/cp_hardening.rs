//! The smaller holes of the security review, closed on the real control plane: a blocked
//! identity cannot read its snapshot, `/healthz` tells anyone only status and versions, the
//! injection webhook answers only its configured caller and uses `--data-dir`, and a
//! git-ignored policy file is never enforced behind a `git:` version.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::ClientConfig;
use serde_json::Value;
use trustmesh_e2e::admin_api::{client_as, control_plane_state};
use trustmesh_e2e::client::Resp;
use trustmesh_e2e::control_plane::{run_cli, ControlPlane};
use trustmesh_e2e::mtls::mtls_get;
use trustmesh_e2e::policies::{spiffe_id, write_policies, ServiceEntry};
use trustmesh_e2e::workdir::WorkDir;

const NS: &str = "hardening";

/// Writes a policy folder whose registry has service `a`; returns it.
fn policies(work: &WorkDir) -> std::path::PathBuf {
    let unused: SocketAddr = "127.0.0.1:9".parse().unwrap();
    write_policies(
        &work.path().join("policies"),
        &[ServiceEntry::new("a", NS, unused)],
    )
    .unwrap()
}

/// A control plane on a fresh work folder whose registry has service `a`.
async fn control_plane(work: &WorkDir) -> ControlPlane {
    ControlPlane::start(work.path(), &policies(work))
        .await
        .unwrap()
}

/// Polls the admin view until `done` holds of it (bounded to 10 s).
async fn admin_view_until(cp: &ControlPlane, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let state = control_plane_state(cp).await.unwrap();
        if done(&state) {
            return state;
        }
        assert!(Instant::now() < deadline, "{what}: never seen in {state}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

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

/// A mesh-wide ALLOW for every workload of the namespace.
const LOCAL_ALLOW: &str = "\
apiVersion: trustmesh.io/v1
kind: AuthorizationPolicy
metadata: {name: local-allow, namespace: hardening}
spec:
  action: ALLOW
  rules:
    - to: [{operation: {paths: [\"/*\"]}}]
";

fn code(r: &Resp) -> String {
    r.json().map(|v| v["error"].to_string()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_identity_gets_403_on_the_snapshot_even_in_a_long_poll() {
    let work = WorkDir::new("hardening-snapshot").unwrap();
    let cp = control_plane(&work).await;
    let id_a = spiffe_id(NS, "a");
    let as_a = client_as(&cp, &id_a).unwrap();
    let first = mtls_get(as_a.clone(), cp.addr(), "localhost", "/v1/snapshot?wait=0s")
        .await
        .unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    let version = first.json().unwrap()["version"]
        .as_str()
        .unwrap()
        .replace('+', "%2B");

    // A long poll with the version in force, held while the identity is blocked.
    let poll = tokio::spawn({
        let (tls, addr) = (as_a.clone(), cp.addr());
        let path = format!("/v1/snapshot?version={version}&wait=20s");
        async move { mtls_get(tls, addr, "localhost", &path).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let data = cp.data_dir().display().to_string();
    let out = run_cli(&["identity", "block", &id_a, "--data-dir", &data])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let held = poll.await.unwrap().unwrap();
    assert_eq!(held.status, 403, "the long poll answered {}", held.text());
    assert_eq!(code(&held), "\"identity_blocked\"");

    let again = mtls_get(as_a, cp.addr(), "localhost", "/v1/snapshot?wait=0s")
        .await
        .unwrap();
    assert_eq!(again.status, 403, "{}", again.text());
    assert_eq!(code(&again), "\"identity_blocked\"");
    // Another identity still reads its snapshot.
    let other = client_as(&cp, &spiffe_id(NS, "other")).unwrap();
    let ok = mtls_get(other, cp.addr(), "localhost", "/v1/snapshot?wait=0s")
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_shows_status_and_versions_only() {
    let work = WorkDir::new("hardening-healthz").unwrap();
    let cp = control_plane(&work).await;
    let id_a = spiffe_id(NS, "a");
    let data = cp.data_dir().display().to_string();
    let out = run_cli(&["identity", "block", &id_a, "--data-dir", &data])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    std::fs::write(cp.policies().join("broken.yaml"), "kind: Nonsense\n").unwrap();
    // The admin sees the error and the block...
    let admin = admin_view_until(&cp, "the policy error and the block", |s| {
        s["policy_error"]
            .as_str()
            .is_some_and(|e| e.contains("broken.yaml"))
            && s["trust"]["blocked_identities"] == serde_json::json!([id_a])
    })
    .await;
    assert!(admin["trust"]["trust_bundle_roots"].is_array(), "{admin}");

    // ...anyone else on the listener sees the status and the versions, nothing more.
    let health = cp.get("/healthz").await.unwrap();
    assert_eq!(health.status, 200, "{}", health.text());
    let v = health.json().unwrap();
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        ["policy_version", "status", "trust_generation"],
        "{v}"
    );
    assert_eq!(v["status"], "ok");
    assert_eq!(v["policy_version"], admin["policy_version"]);
    assert_eq!(v["trust_generation"], admin["trust_generation"]);
    let text = health.text();
    assert!(
        !text.contains("broken.yaml") && !text.contains(&id_a),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_ignored_policy_file_is_refused_not_enforced_behind_the_head_version() {
    let work = WorkDir::new("hardening-gitignored").unwrap();
    let repo = policies(&work);
    std::fs::write(repo.join(".gitignore"), "local-*.yaml\n").unwrap();
    git(&repo, &["init", "-q"]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "registry"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let cp = ControlPlane::start(work.path(), &repo).await.unwrap();
    let health = cp.get("/healthz").await.unwrap().json().unwrap();
    assert_eq!(health["policy_version"], format!("git:{head}"), "{health}");

    // A policy file git ignores: `git status` is clean, so HEAD would not show it.
    std::fs::write(repo.join("local-allow.yaml"), LOCAL_ALLOW).unwrap();
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    let state = admin_view_until(&cp, "the ignored file reported", |s| {
        s["policy_error"]
            .as_str()
            .is_some_and(|e| e.contains("local-allow.yaml") && e.contains("git-ignored"))
    })
    .await;
    assert_eq!(state["policy_version"], format!("git:{head}"), "{state}");
    // And it is not enforced: the workload's snapshot does not carry it.
    let as_a = client_as(&cp, &spiffe_id(NS, "a")).unwrap();
    let snap = mtls_get(as_a.clone(), cp.addr(), "localhost", "/v1/snapshot?wait=0s")
        .await
        .unwrap();
    assert_eq!(snap.status, 200, "{}", snap.text());
    assert!(!snap.text().contains("local-allow"), "{}", snap.text());
    // The CLI refuses it the same way.
    let out = run_cli(&["policy", "validate", repo.to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("local-allow.yaml:1:1:"),
        "{}",
        out.stderr
    );

    // Committed (forced past the ignore rule), it is part of the version and in force.
    git(&repo, &["add", "-f", "local-allow.yaml"]);
    git(&repo, &["commit", "-q", "-m", "allow"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let state = admin_view_until(&cp, "the committed policy in force", |s| {
        s["policy_version"] == format!("git:{head}").as_str()
    })
    .await;
    assert!(state["policy_error"].is_null(), "{state}");
    let snap = mtls_get(as_a, cp.addr(), "localhost", "/v1/snapshot?wait=0s")
        .await
        .unwrap();
    assert!(snap.text().contains("local-allow"), "{}", snap.text());
}

/// `POST /v1/inject` with `body`, presenting `tls`'s certificate (if any).
async fn inject(cp: &ControlPlane, tls: Arc<ClientConfig>, body: &str) -> Resp {
    let req = http::Request::post("/v1/inject")
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    trustmesh_e2e::https::request(tls, cp.addr(), req)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_injection_webhook_answers_the_api_server_only_with_the_data_dirs_bundle() {
    let work = WorkDir::new("hardening-inject").unwrap();
    // The data folder is not `.trustmesh` under the working directory (the old default).
    let data = work.path().join("elsewhere");
    let cp = ControlPlane::start_in(work.path(), &data, &policies(&work))
        .await
        .unwrap();
    let review = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../control-plane/src/domain/inject/testdata/pod-minimal.json"
    ))
    .unwrap();
    let bundle = cp.trust_bundle_pem().unwrap();

    let anonymous = trustmesh_e2e::https::client_config(&bundle).unwrap();
    let r = inject(&cp, anonymous, &review).await;
    assert_eq!(r.status, 401, "{}", r.text());
    for who in [spiffe_id(NS, "a"), spiffe_id("trustmesh-system", "admin")] {
        let r = inject(&cp, client_as(&cp, &who).unwrap(), &review).await;
        assert_eq!(r.status, 403, "{who}: {}", r.text());
    }

    // The API server's certificate comes from `trustmesh admin-cert --role kube-apiserver`.
    let file = work.path().join("apiserver.pem");
    let out = run_cli(&[
        "admin-cert",
        "--role",
        "kube-apiserver",
        "--data-dir",
        data.to_str().unwrap(),
        "--out",
        file.to_str().unwrap(),
    ])
    .await
    .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let caller = spiffe_id("trustmesh-system", "kube-apiserver");
    let pem = std::fs::read(&file).unwrap();
    let leaf = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(
        trustmesh_certs::identity_from_cert(&leaf).unwrap().as_str(),
        caller
    );
    // Never through the API: the identity is reserved.
    let data_dir = data.display().to_string();
    let out = run_cli(&[
        "token",
        "create",
        "--identity",
        &caller,
        "--data-dir",
        &data_dir,
    ])
    .await
    .unwrap();
    assert!(
        !out.status.success(),
        "a token for {caller}: {}",
        out.stdout
    );

    let apiserver = client_as(&cp, &caller).unwrap();
    for bad in ["not json", r#"{"kind": "Pod"}"#] {
        let r = inject(&cp, apiserver.clone(), bad).await;
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
    }
    let r = inject(&cp, apiserver, &review).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let answer = r.json().unwrap();
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let patch = base64_decode(answer["response"]["patch"].as_str().unwrap());
    let patch: Value = serde_json::from_slice(&patch).unwrap();
    let text = patch.to_string();
    assert!(
        text.contains(&serde_json::to_string(&bundle).unwrap()),
        "the pod gets the bundle of --data-dir: {text}"
    );
}

/// Standard base64 (RFC 4648 §4), for the AdmissionReview's patch.
fn base64_decode(s: &str) -> Vec<u8> {
    const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ABC.iter().position(|&x| x == c).unwrap() as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
