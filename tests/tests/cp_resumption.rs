//! TLS session resumption on the real control plane: a client that kept its session resumes
//! it after a restart (the ticket keys are kept in the data folder), and a resumed session
//! gets no more than a full handshake would: a blocked identity is refused its snapshot, and a
//! certificate that has expired since the session began is refused at once.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use rustls::ClientConfig;
use trustmesh_e2e::client::{collect, send_http1_on, Resp};
use trustmesh_e2e::control_plane::{run_cli, ControlPlane};
use trustmesh_e2e::mtls::{connect_control_plane, control_plane_client};
use trustmesh_e2e::policies::{spiffe_id, write_policies, ServiceEntry};
use trustmesh_e2e::workdir::WorkDir;

const NS: &str = "resume";

async fn control_plane(work: &WorkDir) -> ControlPlane {
    let unused = "127.0.0.1:9".parse().unwrap();
    let policies = write_policies(
        &work.path().join("policies"),
        &[ServiceEntry::new("a", NS, unused)],
    )
    .unwrap();
    ControlPlane::start(work.path(), &policies).await.unwrap()
}

/// A client of the control plane as `id` (a certificate valid for `ttl`) that keeps its TLS
/// sessions, as the proxy's control-plane client does.
fn resuming_client(cp: &ControlPlane, id: &str, ttl: Duration) -> Arc<ClientConfig> {
    let mut tls = control_plane_client(cp, id, ttl).unwrap();
    tls.resumption = rustls::client::Resumption::in_memory_sessions(8);
    Arc::new(tls)
}

/// One `GET path` on a new connection: whether the handshake resumed a session, and the
/// answer (`Err` when the connection closed without one).
async fn get(
    tls: &Arc<ClientConfig>,
    cp: &ControlPlane,
    path: &str,
) -> (bool, anyhow::Result<Resp>) {
    let stream = connect_control_plane(cp, tls.clone()).await.unwrap();
    let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let req = Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let work = async { collect(send_http1_on(stream, req).await?).await };
    let resp = tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 10 s")));
    (resumed, resp)
}

/// The first answer to come with a resumed session (the client may hold a ticket from a
/// handshake whose tickets it had not read yet; bounded to 20 tries).
async fn get_resumed(
    tls: &Arc<ClientConfig>,
    cp: &ControlPlane,
    path: &str,
) -> anyhow::Result<Resp> {
    for _ in 0..20 {
        let (resumed, resp) = get(tls, cp, path).await;
        if resumed {
            return resp;
        }
    }
    panic!("no session was resumed in 20 connections");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_resumed_after_a_restart_is_refused_once_its_identity_is_blocked() {
    let work = WorkDir::new("resume-blocked").unwrap();
    let mut cp = control_plane(&work).await;
    let mode = std::fs::metadata(cp.data_dir().join("ticket-keys"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the ticket key file is private");
    let id_a = spiffe_id(NS, "a");
    let tls = resuming_client(&cp, &id_a, Duration::from_secs(600));
    let (resumed, first) = get(&tls, &cp, "/v1/snapshot?wait=0s").await;
    assert!(!resumed);
    assert_eq!(first.unwrap().status, 200);

    cp.restart().await.unwrap();
    let again = get_resumed(&tls, &cp, "/v1/snapshot?wait=0s")
        .await
        .unwrap();
    assert_eq!(
        again.status,
        200,
        "resumed after the restart: {}",
        again.text()
    );

    let data = cp.data_dir().display().to_string();
    let out = run_cli(&["identity", "block", &id_a, "--data-dir", &data])
        .await
        .unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    // The block reaches the control plane through its data folder watch: wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(10);
    let blocked = loop {
        let resp = get_resumed(&tls, &cp, "/v1/snapshot?wait=0s")
            .await
            .unwrap();
        if resp.status != 200 || Instant::now() > deadline {
            break resp;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(blocked.status, 403, "{}", blocked.text());
    assert_eq!(blocked.json().unwrap()["error"], "identity_blocked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_whose_certificate_has_expired_is_refused() {
    let work = WorkDir::new("resume-expired").unwrap();
    let cp = control_plane(&work).await;
    let tls = resuming_client(&cp, &spiffe_id(NS, "a"), Duration::from_secs(2));
    let (_, first) = get(&tls, &cp, "/v1/snapshot?wait=0s").await;
    assert_eq!(first.unwrap().status, 200);
    // While the certificate holds, the session resumes and is served.
    let resumed = get_resumed(&tls, &cp, "/v1/snapshot?wait=0s")
        .await
        .unwrap();
    assert_eq!(resumed.status, 200);
    // Once it has expired, a full handshake would refuse it; so is a resumed session.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let late = get_resumed(&tls, &cp, "/v1/snapshot?wait=0s").await;
    assert!(
        late.is_err(),
        "a resumed session with an expired certificate was served: {}",
        late.map(|r| r.status.to_string()).unwrap_or_default()
    );
}
