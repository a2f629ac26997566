//! Kept-alive connections to the real control plane serve no longer than the handshake's
//! checks hold: a request after the client certificate's NotAfter is refused
//! (`401 certificate_expired`) and the connection closes; a new trust bundle (a CA
//! rotation's first step) ends every open connection once the request in flight (a long poll,
//! which the change wakes) has been answered, and a block of another identity ends none.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use trustmesh_e2e::client::{collect, Resp};
use trustmesh_e2e::control_plane::{run_cli, ControlPlane};
use trustmesh_e2e::mtls::{connect_control_plane, control_plane_client};
use trustmesh_e2e::policies::{spiffe_id, write_policies, ServiceEntry};
use trustmesh_e2e::workdir::WorkDir;

const NS: &str = "keep";

async fn control_plane(work: &WorkDir) -> ControlPlane {
    let (unused_a, unused_b) = (
        "127.0.0.1:9".parse().unwrap(),
        "127.0.0.1:10".parse().unwrap(),
    );
    let policies = write_policies(
        &work.path().join("policies"),
        &[
            ServiceEntry::new("a", NS, unused_a),
            ServiceEntry::new("b", NS, unused_b),
        ],
    )
    .unwrap();
    ControlPlane::start(work.path(), &policies).await.unwrap()
}

/// A client of the control plane as `id`, with a certificate valid for `ttl`.
fn client(cp: &ControlPlane, id: &str, ttl: Duration) -> Arc<ClientConfig> {
    Arc::new(control_plane_client(cp, id, ttl).unwrap())
}

/// One kept-alive HTTP/1.1 connection over TLS, and the task that drives it (it ends when
/// the connection closes).
async fn keep(
    tls: &Arc<ClientConfig>,
    cp: &ControlPlane,
) -> (SendRequest<Empty<Bytes>>, tokio::task::JoinHandle<()>) {
    let stream = connect_control_plane(cp, tls.clone()).await.unwrap();
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, driver)
}

/// `GET path` on the kept connection (`Err` when it is closed or closes without an answer).
async fn get(send: &mut SendRequest<Empty<Bytes>>, path: &str) -> anyhow::Result<Resp> {
    let work = async {
        send.ready().await?;
        let req = Request::get(path)
            .header(http::header::HOST, "localhost")
            .body(Empty::<Bytes>::new())?;
        collect(send.send_request(req).await?).await
    };
    tokio::time::timeout(Duration::from_secs(30), work)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 30 s")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_whose_certificate_has_expired_is_refused_and_closed() {
    let work = WorkDir::new("keep-expired").unwrap();
    let cp = control_plane(&work).await;
    let tls = client(&cp, &spiffe_id(NS, "a"), Duration::from_secs(3));
    let (mut send, driver) = keep(&tls, &cp).await;
    let first = get(&mut send, "/v1/snapshot?wait=0s").await.unwrap();
    assert_eq!(first.status, 200, "{}", first.text());
    // Idle for less than --header-timeout (10 s), so only the expiry can end it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let late = get(&mut send, "/v1/snapshot?wait=0s").await.unwrap();
    assert_eq!(late.status, 401, "{}", late.text());
    assert_eq!(late.json().unwrap()["error"], "certificate_expired");
    assert_eq!(
        late.headers
            .get(http::header::CONNECTION)
            .map(|v| v.as_bytes()),
        Some(&b"close"[..])
    );
    // The server closes the connection after that answer.
    tokio::time::timeout(Duration::from_secs(5), driver)
        .await
        .expect("the connection stayed open after certificate_expired")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_bundle_answers_the_long_poll_then_closes_the_kept_connection_a_block_does_not() {
    let work = WorkDir::new("keep-trust").unwrap();
    let cp = control_plane(&work).await;
    let tls = client(&cp, &spiffe_id(NS, "a"), Duration::from_secs(600));
    let (send, _driver) = keep(&tls, &cp).await;
    let data = cp.data_dir().display().to_string();

    // A block of another identity: the long poll waiting on the kept connection is answered
    // (the blocklist is part of the snapshot version), and the connection stays: the
    // blocklist is checked per request.
    let (mut send, answer) =
        poll_during(send, &["identity", "block", &spiffe_id(NS, "b")], &data).await;
    assert_eq!(
        answer.status,
        200,
        "the long poll is answered with the new snapshot (woken by the block, not 304): {}",
        answer.text()
    );
    let again = get(&mut send, "/v1/snapshot?wait=0s").await;
    assert_eq!(
        again.as_ref().map(|r| r.status.as_u16()).ok(),
        Some(200),
        "a block closed the kept connection of an identity it does not name: {:?}",
        again.err()
    );

    // A new trust bundle (the rotation's first step adds the new root): the poll in flight is
    // answered, then the connection is closed: the next request on it gets no answer.
    let (mut send, answer) =
        poll_during(send, &["ca", "rotate", "--propagation", "30s"], &data).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let next = get(&mut send, "/v1/snapshot?wait=0s").await;
    assert!(
        next.is_err(),
        "a kept connection was served after a new trust bundle: {}",
        next.map(|r| r.status.to_string()).unwrap_or_default()
    );
}

/// Holds a long poll on `send` (at the version it is served now) while `trustmesh ARGS
/// --data-dir DATA` runs; the poll's answer.
async fn poll_during(
    mut send: SendRequest<Empty<Bytes>>,
    args: &[&str],
    data: &str,
) -> (SendRequest<Empty<Bytes>>, Resp) {
    let now = get(&mut send, "/v1/snapshot?wait=0s").await.unwrap();
    assert_eq!(now.status, 200, "{}", now.text());
    let version = now.json().unwrap()["version"].as_str().unwrap().to_string();
    let encoded: String = version
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let poll_path = format!("/v1/snapshot?version={encoded}&wait=25s");
    let poll = tokio::spawn(async move {
        let answer = get(&mut send, &poll_path).await;
        (send, answer)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut all = args.to_vec();
    all.extend(["--data-dir", data]);
    let out = run_cli(&all).await.unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let (send, answer) = poll.await.unwrap();
    (send, answer.unwrap())
}
