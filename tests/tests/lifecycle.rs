//! Certificate lifecycle under steady load, with real processes on loopback: certificates that
//! live 10 s rotate without a failed request, a control plane outage does not stop traffic,
//! the mesh CA rotates without restarts, and two replicas keep proxies renewing when either
//! dies. The tests of this file run in parallel (each about a minute or less).

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::Method;
use serde_json::json;
use trustmesh_certs::TrustBundle;
use trustmesh_e2e::lifecycle::{
    config, presented, probe_config, ready, renewals_ok, LifeMesh, LifeOptions, Load,
};
use trustmesh_e2e::mesh::NAMESPACE;
use trustmesh_e2e::mtls::{client_with_cert, issue, knock, mesh_ca, spiffe, Knock};
use trustmesh_e2e::policies::spiffe_id;
use trustmesh_e2e::wait::poll_until;

/// Two request loops, each pausing this long between requests (about 80 requests/s in all).
const PAUSE: Duration = Duration::from_millis(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_every_few_seconds_under_steady_load_without_a_failed_request() {
    let mesh = LifeMesh::start("lc-rotate", LifeOptions::ttl("10s"))
        .await
        .expect("mesh starts");
    let bundle = mesh.cps[0].trust_bundle_pem().expect("bundle");
    let probe_a = probe_config(&bundle, mesh.a.identity()).expect("probe");
    let probe_b = probe_config(&bundle, mesh.b.identity()).expect("probe");
    let before = (
        renewals_ok(mesh.a.admin()).await.expect("metrics"),
        renewals_ok(mesh.b.admin()).await.expect("metrics"),
    );

    let load = Load::start(mesh.a.outbound(), "b.test", 2, PAUSE);
    let (mut seen_a, mut seen_b) = (BTreeSet::new(), BTreeSet::new());
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end {
        // What a TLS client is shown now: the serial changes with every renewal.
        let (serial, _) = presented(probe_b.clone(), mesh.b.inbound())
            .await
            .expect("B presents a certificate that verifies");
        seen_b.insert(serial);
        let (serial, _) = presented(probe_a.clone(), mesh.a.inbound())
            .await
            .expect("A presents a certificate that verifies");
        seen_a.insert(serial);
        assert_eq!(ready(mesh.a.admin()).await.expect("ready"), 200);
        assert_eq!(ready(mesh.b.admin()).await.expect("ready"), 200);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let report = load.stop().await;
    let after = (
        renewals_ok(mesh.a.admin()).await.expect("metrics"),
        renewals_ok(mesh.b.admin()).await.expect("metrics"),
    );
    eprintln!(
        "60 s of load: {} ok, {} failed ({:.0} req/s); renewals A {} B {}; serials presented A {} B {}",
        report.ok,
        report.failed,
        report.ok as f64 / report.elapsed.as_secs_f64(),
        after.0 - before.0,
        after.1 - before.1,
        seen_a.len(),
        seen_b.len()
    );
    assert_eq!(report.failed, 0, "failed requests: {:#?}", report.failures);
    assert!(report.ok >= 1000, "the load barely ran: {report:?}");
    assert!(
        after.0 - before.0 >= 5,
        "A renewed {} times",
        after.0 - before.0
    );
    assert!(
        after.1 - before.1 >= 5,
        "B renewed {} times",
        after.1 - before.1
    );
    assert!(seen_b.len() >= 5, "B presented only {seen_b:?}");
    assert!(seen_a.len() >= 5, "A presented only {seen_a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_outage_keeps_traffic_flowing_and_renewals_resume_after_it() {
    let mut mesh = LifeMesh::start("lc-outage", LifeOptions::ttl("30s"))
        .await
        .expect("mesh starts");
    let load = Load::start(mesh.a.outbound(), "b.test", 2, PAUSE);
    let serial_a = config(mesh.a.admin()).await.expect("config")["certificate"]["serial"].clone();
    let before = (
        renewals_ok(mesh.a.admin()).await.expect("metrics"),
        renewals_ok(mesh.b.admin()).await.expect("metrics"),
    );

    // Kill the control plane outright; the proxies' renewals fall due (at about half of 30 s)
    // while it is away.
    mesh.cps[0].process().kill();
    let killed = Instant::now();
    // A change made while it is away (the CLI works on the data folder), to be caught up.
    mesh.cli(&["identity", "block", &spiffe_id(NAMESPACE, "nobody")])
        .await
        .expect("block");
    let snapshot_b = config(mesh.b.admin()).await.expect("config")["snapshot_version"].clone();
    while killed.elapsed() < Duration::from_secs(18) {
        assert_eq!(ready(mesh.a.admin()).await.expect("ready"), 200, "A");
        assert_eq!(ready(mesh.b.admin()).await.expect("ready"), 200, "B");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (ok_away, failed_away) = load.counts();
    let attempts = trustmesh_e2e::lifecycle::metric(
        mesh.a.admin(),
        "trustmesh_certificate_renewals_total{result=\"unavailable\"}",
    )
    .await
    .expect("metrics");
    assert_eq!(
        failed_away, 0,
        "requests failed while the control plane was away"
    );
    assert!(
        attempts >= 1.0,
        "A never tried to renew while the control plane was away"
    );
    assert_eq!(
        renewals_ok(mesh.a.admin()).await.expect("metrics"),
        before.0,
        "nothing to renew with"
    );

    mesh.cps[0]
        .restart()
        .await
        .expect("the control plane restarts");
    let back = Instant::now();
    poll_until(
        "renewals after the restart",
        Duration::from_secs(15),
        || async {
            let a = renewals_ok(mesh.a.admin()).await?;
            let b = renewals_ok(mesh.b.admin()).await?;
            Ok((a > before.0 && b > before.1).then_some(()))
        },
    )
    .await
    .expect("both proxies renew once the control plane is back");
    let renewed_after = back.elapsed();
    let serial_now = config(mesh.a.admin()).await.expect("config")["certificate"]["serial"].clone();
    assert_ne!(serial_now, serial_a, "A holds a new certificate");
    // The snapshot catches up too (its watch retries with capped backoff).
    poll_until(
        "the snapshot catches up",
        Duration::from_secs(40),
        || async {
            let now = config(mesh.b.admin()).await?["snapshot_version"].clone();
            Ok((now != snapshot_b).then_some(()))
        },
    )
    .await
    .expect("B receives the snapshot with the block made during the outage");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let report = load.stop().await;
    eprintln!(
        "outage of 18 s: {ok_away} requests ok while away, {attempts} failed renewal attempts on A; \
         renewed {renewed_after:?} after the restart; in all {} ok, {} failed",
        report.ok, report.failed
    );
    assert_eq!(report.failed, 0, "failed requests: {:#?}", report.failures);
    assert!(
        mesh.a.process().log().contains("failed"),
        "A logged its failed renewals"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_rotation_under_steady_load_ends_with_only_the_new_root() {
    let mesh = LifeMesh::start("lc-ca-rotate", LifeOptions::ttl("10s"))
        .await
        .expect("mesh starts");
    let old_pem = mesh.cps[0].trust_bundle_pem().expect("bundle");
    let old_bundle = TrustBundle::from_pem(&old_pem).expect("bundle");
    // A client with a certificate from the old CA: accepted before, refused at the end.
    let old_ca = mesh_ca(&mesh.cps[0]).expect("CA");
    let (cert, key) = issue(
        &old_ca,
        &spiffe_id(NAMESPACE, "old-client"),
        Duration::from_secs(3600),
        SystemTime::now(),
    )
    .expect("certificate");
    let old_client = client_with_cert(&old_bundle, &cert, &key, mesh.b.identity()).expect("client");
    assert_eq!(
        knock(old_client.clone(), mesh.b.inbound())
            .await
            .expect("knock"),
        Knock::Accepted
    );

    let load = Load::start(mesh.a.outbound(), "b.test", 2, PAUSE);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let out = mesh
        .cli(&["ca", "rotate", "--propagation", "3s"])
        .await
        .expect("ca rotate");
    eprintln!("{}", out.stdout);
    let rotation = mesh.data_dir().join("ca-rotation.json");
    poll_until(
        "both roots in the bundle",
        Duration::from_secs(5),
        || async {
            let pem = mesh.cps[0].trust_bundle_pem()?;
            Ok((TrustBundle::from_pem(&pem)?.len() == 2).then_some(()))
        },
    )
    .await
    .expect("the new root joins the old one");
    poll_until(
        "the rotation to finish",
        Duration::from_secs(60),
        || async {
            let pem = mesh.cps[0].trust_bundle_pem()?;
            let b = TrustBundle::from_pem(&pem)?;
            Ok((!rotation.exists() && b.len() == 1 && b != old_bundle).then_some(()))
        },
    )
    .await
    .expect("the rotation finishes");
    let finished = started.elapsed();
    let new_pem = mesh.cps[0].trust_bundle_pem().expect("bundle");
    let status = mesh.cli(&["ca", "status"]).await.expect("status").stdout;
    assert!(status.contains("rotation        none"), "{status}");

    // Every proxy presents a certificate of the new CA (it verifies with the new root alone)...
    for (who, identity, addr) in [
        ("A", mesh.a.identity(), mesh.a.inbound()),
        ("B", mesh.b.identity(), mesh.b.inbound()),
    ] {
        let probe = probe_config(&new_pem, identity).expect("probe");
        poll_until(who, Duration::from_secs(15), || async {
            Ok(presented(probe.clone(), addr).await.ok())
        })
        .await
        .unwrap_or_else(|e| panic!("{who} presents a certificate of the new CA: {e:#}"));
    }
    // ...and trusts the new root alone: the old CA's client is refused now.
    poll_until(
        "the old root to be dropped by B",
        Duration::from_secs(10),
        || async {
            Ok(matches!(
                knock(old_client.clone(), mesh.b.inbound()).await?,
                Knock::Refused(_)
            )
            .then_some(()))
        },
    )
    .await
    .expect("B no longer trusts the old root");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let report = load.stop().await;
    eprintln!(
        "CA rotation finished {finished:?} after `ca rotate`; load {} ok, {} failed",
        report.ok, report.failed
    );
    assert_eq!(report.failed, 0, "failed requests: {:#?}", report.failures);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_data_folder_keep_proxies_renewing_when_either_dies() {
    let mut opts = LifeOptions::ttl("10s");
    opts.replicas = 2;
    let mut mesh = LifeMesh::start("lc-replicas", opts)
        .await
        .expect("mesh starts");

    // Shared state: a token spent on one replica is refused by the other.
    let id = spiffe_id(NAMESPACE, "token-user");
    let token = mesh.cps[0].token(&id).await.expect("token");
    let csr = |id: &str| {
        let csr = trustmesh_certs::generate_csr(&spiffe(id).expect("id")).expect("CSR");
        Bytes::from(json!({ "csr": csr.csr_pem }).to_string())
    };
    let first = mesh.cps[1]
        .request(Method::POST, "/v1/certificates", Some(&token), csr(&id))
        .await
        .expect("replica 2 answers");
    assert_eq!(first.status, 200, "{}", first.text());
    let again = mesh.cps[0]
        .request(Method::POST, "/v1/certificates", Some(&token), csr(&id))
        .await
        .expect("replica 1 answers");
    assert_eq!(
        again.status,
        401,
        "spent on the other replica: {}",
        again.text()
    );

    let load = Load::start(mesh.a.outbound(), "b.test", 2, PAUSE);
    for (down, up) in [(0usize, 1usize), (1, 0)] {
        let before = (
            renewals_ok(mesh.a.admin()).await.expect("metrics"),
            renewals_ok(mesh.b.admin()).await.expect("metrics"),
        );
        mesh.cps[down].process().kill();
        let killed = Instant::now();
        poll_until(
            "two renewals through the other replica",
            Duration::from_secs(25),
            || async {
                let a = renewals_ok(mesh.a.admin()).await?;
                let b = renewals_ok(mesh.b.admin()).await?;
                Ok((a >= before.0 + 2 && b >= before.1 + 2).then_some(()))
            },
        )
        .await
        .unwrap_or_else(|e| panic!("replica {} down, replica {} up: {e:#}", down + 1, up + 1));
        eprintln!(
            "replica {} down: both proxies renewed twice through replica {} within {:?}",
            down + 1,
            up + 1,
            killed.elapsed()
        );
        assert_eq!(ready(mesh.a.admin()).await.expect("ready"), 200);
        assert_eq!(ready(mesh.b.admin()).await.expect("ready"), 200);
        mesh.cps[down]
            .restart()
            .await
            .expect("the replica restarts");
    }
    let report = load.stop().await;
    eprintln!("load {} ok, {} failed", report.ok, report.failed);
    assert_eq!(report.failed, 0, "failed requests: {:#?}", report.failures);
    assert!(
        mesh.a.process().log().contains("failed over"),
        "A says it failed over"
    );
}
