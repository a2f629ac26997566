//! The control-plane client against a stand-in control plane on loopback: calls follow each
//! other on one kept connection until our certificate or the bundle changes or the answer says
//! `Connection: close`; new connections resume sessions, and never across a change of our
//! certificate; a control plane that is not listening is told apart from one that fails.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Method, StatusCode};
use trustmesh_certs::RotatingResolver;

use super::{Config, ControlClient, NotListening};
use crate::testing::control_plane::FakeControlPlane;
use crate::testing::{self, id};

async fn get(control: &ControlClient) -> StatusCode {
    get_path(control, "/v1/snapshot?wait=0s").await
}

async fn get_path(control: &ControlClient, path: &str) -> StatusCode {
    control
        .call(Method::GET, path, None, None, Duration::from_secs(10))
        .await
        .unwrap()
        .status
}

/// A new certificate for `api` from `ca`, presented through `resolver` from now on.
fn issue_to(ca: &trustmesh_certs::CertificateAuthority, resolver: &RotatingResolver) {
    let (cert, key) = ca
        .issue(
            &id("api"),
            &[],
            &[],
            Duration::from_secs(3600),
            SystemTime::now(),
        )
        .unwrap();
    resolver.set(cert.chain, &key).unwrap();
}

/// A stand-in control plane answering `200 {}` to every call, and a client of it presenting a
/// certificate just issued by `ca` through `resolver` (`issue_to` renews it).
struct Started {
    ca: Arc<trustmesh_certs::CertificateAuthority>,
    cp: FakeControlPlane,
    resolver: Arc<RotatingResolver>,
    control: Arc<ControlClient>,
}

async fn started() -> Started {
    let ca = Arc::new(testing::ca());
    let cp = FakeControlPlane::start(&ca, Arc::new(|_| (StatusCode::OK, "{}".to_string()))).await;
    let resolver = Arc::new(RotatingResolver::new());
    issue_to(&ca, &resolver);
    let control = cp.client(&ca, resolver.clone());
    Started {
        ca,
        cp,
        resolver,
        control,
    }
}

#[tokio::test]
async fn sessions_resume_until_our_certificate_changes_then_the_new_one_is_presented() {
    let Started {
        ca,
        cp,
        resolver,
        control,
    } = started().await;
    let issue = || issue_to(&ca, &resolver);
    // Each answer says `Connection: close`, so each call makes a new connection.
    let closing = "/v1/snapshot?wait=0s&close";
    for _ in 0..3 {
        assert_eq!(get_path(&control, closing).await, StatusCode::OK);
    }
    // A renewal: the next call must present the new certificate, so it cannot resume.
    issue();
    for _ in 0..2 {
        assert_eq!(get_path(&control, closing).await, StatusCode::OK);
    }
    let seen = cp.seen();
    let connections: Vec<usize> = seen.iter().map(|s| s.connection).collect();
    assert_eq!(
        connections,
        [0, 1, 2, 3, 4],
        "Connection: close drops the kept one"
    );
    let resumed: Vec<bool> = seen.iter().map(|s| s.resumed).collect();
    assert_eq!(resumed, [false, true, true, false, true]);
    let certs: Vec<_> = seen
        .iter()
        .map(|s| s.client_cert.clone().unwrap())
        .collect();
    assert!(certs[..3].iter().all(|c| *c == certs[0]));
    assert_ne!(certs[3], certs[0], "the renewed certificate is presented");
    assert_eq!(certs[4], certs[3]);
}

#[tokio::test]
async fn calls_share_one_kept_connection_until_our_certificate_or_the_bundle_changes() {
    let Started {
        ca,
        cp,
        resolver,
        control,
    } = started().await;
    let issue = || issue_to(&ca, &resolver);
    for _ in 0..3 {
        assert_eq!(get(&control).await, StatusCode::OK);
    }
    // A renewal makes a new TLS configuration: a new connection presents the new certificate.
    issue();
    for _ in 0..2 {
        assert_eq!(get(&control).await, StatusCode::OK);
    }
    // So does a new trust bundle (here the same roots, pushed again).
    let bundle = trustmesh_certs::TrustBundle::from_pem(ca.cert_pem()).unwrap();
    control.set_bundle(&bundle, ca.trust_domain());
    assert_eq!(get(&control).await, StatusCode::OK);
    let seen = cp.seen();
    let connections: Vec<usize> = seen.iter().map(|s| s.connection).collect();
    assert_eq!(connections, [0, 0, 0, 1, 1, 2]);
    let certs: Vec<_> = seen
        .iter()
        .map(|s| s.client_cert.clone().unwrap())
        .collect();
    assert_eq!(certs[0], certs[2]);
    assert_ne!(certs[3], certs[0], "the renewed certificate is presented");
    assert_eq!(certs[5], certs[3]);
}

#[tokio::test]
async fn a_get_on_a_kept_connection_the_server_closed_is_sent_again_on_a_new_one() {
    let Started { cp, control, .. } = started().await;
    // The second call on the kept connection gets no answer (the server closes it, as in a
    // race with its idle close): sent again on a new connection, it is answered.
    let dropping = "/v1/snapshot?wait=0s&drop";
    assert_eq!(get_path(&control, dropping).await, StatusCode::OK);
    assert_eq!(get_path(&control, dropping).await, StatusCode::OK);
    let connections: Vec<usize> = cp.seen().iter().map(|s| s.connection).collect();
    assert_eq!(connections, [0, 1]);
}

#[tokio::test]
async fn a_call_that_finds_the_kept_connection_busy_makes_its_own_and_one_is_kept_after() {
    let Started { cp, control, .. } = started().await;
    assert_eq!(get(&control).await, StatusCode::OK);
    // A long poll holds the kept connection; a call meanwhile cannot wait for it.
    let held = tokio::spawn({
        let control = control.clone();
        async move { get_path(&control, "/v1/snapshot?wait=30s&hold").await }
    });
    cp.holding().await;
    assert_eq!(get(&control).await, StatusCode::OK);
    cp.release();
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    // The second connection came back first and is the one kept; the first, back when the
    // slot was taken, is closed.
    assert_eq!(get(&control).await, StatusCode::OK);
    let connections: Vec<usize> = cp.seen().iter().map(|s| s.connection).collect();
    assert_eq!(connections, [0, 1, 0, 1]);
}

#[tokio::test]
async fn a_control_plane_nobody_listens_for_is_not_listening_and_a_failing_one_is_not() {
    let ca = testing::ca();
    // A port that was just free: nothing listens there.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let config = Config {
        control_plane: vec![format!("https://{addr}").parse().unwrap()],
        trust_domain: ca.trust_domain().clone(),
    };
    let bundle = trustmesh_certs::TrustBundle::from_pem(ca.cert_pem()).unwrap();
    let control = ControlClient::new(&config, &bundle, Arc::new(RotatingResolver::new())).unwrap();
    let err = control
        .call(
            Method::GET,
            "/v1/snapshot",
            None,
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(err.is::<NotListening>(), "{err:#}");

    // Listening but closing every connection at once: a failure, not "not listening".
    let closing = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closing.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = closing.accept().await {
            drop(tcp);
        }
    });
    let config = Config {
        control_plane: vec![format!("https://{addr}").parse().unwrap()],
        trust_domain: ca.trust_domain().clone(),
    };
    let control = ControlClient::new(&config, &bundle, Arc::new(RotatingResolver::new())).unwrap();
    let err = control
        .call(
            Method::GET,
            "/v1/snapshot",
            None,
            None,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(!err.is::<NotListening>(), "{err:#}");
}
