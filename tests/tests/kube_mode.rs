//! Kubernetes mode end to end: the real `trustmesh serve --kubeconfig` against
//! **`trustmesh_e2e::kube_api`, a stand-in for the Kubernetes API server** (no real API server
//! runs on these machines; the stub speaks the API's list/watch protocol with real object
//! JSON, see `tests/src/kube_api.rs`). Pods are real sidecars on their own loopback addresses
//! (`127.a.b.c:15006`, what discovery dials), bootstrapped with projected ServiceAccount
//! tokens bound to their Pod objects.
//!
//! Proved here: a Service whose pods run as two ServiceAccounts is reached on both, each
//! endpoint verified as its own identity; a pod turning not ready leaves rotation within a
//! second with no failed request; a Service in a namespace without `trustmesh.io/inject:
//! enabled` is not meshed (and is once the label comes); a watch the API server cuts after
//! compacting its history, with the server failing for a moment, recovers (relist) and
//! discovery still converges; a token of a deleted pod no longer bootstraps.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use trustmesh_e2e::client::{http1_get, Resp};
use trustmesh_e2e::kube_api::Resource;
use trustmesh_e2e::policies::spiffe_id;

#[path = "kube_mode/cluster.rs"]
mod cluster;
use cluster::{namespace, service, slice, slice_of, Cluster, PodRun, NS};

/// Every wait is bounded.
const WAIT: Duration = Duration::from_secs(20);
/// What the contract promises for an endpoint change.
const WITHIN: Duration = Duration::from_secs(1);

async fn get(caller: &PodRun, host: &str) -> Resp {
    http1_get(caller.proxy.outbound(), host, "/", &[])
        .await
        .expect("the caller's sidecar answers")
}

/// Sends requests until `done` holds (at most [`WAIT`]).
async fn until(caller: &PodRun, host: &str, what: &str, done: impl Fn(&Resp) -> bool) {
    let deadline = Instant::now() + WAIT;
    loop {
        let resp = get(caller, host).await;
        if done(&resp) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: last answer {} {}",
            resp.status,
            resp.text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_endpoint_is_verified_as_its_own_identity_and_a_not_ready_pod_leaves_rotation_within_a_second(
) {
    let c = Cluster::start("kube-identities", 1).await;
    let mut web = c.pod(NS, "web-1", "web", "web", 1).await;
    let a = c.pod(NS, "orders-a", "orders", "orders", 2).await;
    let b = c.pod(NS, "orders-b", "orders-v2", "orders", 3).await;
    c.api.apply(service(NS, "orders")).unwrap();
    c.api
        .apply(slice(NS, "orders", &[(&a, true), (&b, true)]))
        .unwrap();
    until(&web, "orders.shop", "both pods reached", |_| {
        a.app.request_count() > 0 && b.app.request_count() > 0
    })
    .await;

    // Both endpoints, one per ServiceAccount, answer every request: each is verified as the
    // identity of its own pod (verified as the Service's one identity, one would fail TLS).
    let before = (a.app.request_count(), b.app.request_count());
    for i in 0..20 {
        let resp = get(&web, "orders.shop").await;
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
    }
    assert!(a.app.request_count() > before.0 && b.app.request_count() > before.1);
    // The caller's access log names each endpoint's own identity as the destination (the
    // log is written in batches: read until both lines are out, bounded).
    let want = [spiffe_id(NS, "orders"), spiffe_id(NS, "orders-v2")];
    let deadline = Instant::now() + WAIT;
    loop {
        let destinations: std::collections::BTreeSet<String> = web
            .proxy
            .access_log()
            .iter()
            .filter(|l| l["direction"] == "outbound" && l["status"] == 200)
            .filter_map(|l| l["destination"].as_str().map(str::to_string))
            .collect();
        if want.iter().all(|w| destinations.contains(w)) {
            break;
        }
        assert!(Instant::now() < deadline, "{destinations:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Steady load (one request at a time, bounded in count and time); b turns not ready.
    let mut samples = Vec::new();
    let mut turned = None;
    let started = Instant::now();
    for i in 0..2000 {
        let resp = get(&web, "orders.shop").await;
        assert_eq!(resp.status, 200, "request {i} failed: {}", resp.text());
        let now = Instant::now();
        samples.push((now, b.app.request_count()));
        if turned.is_none() && now - started > Duration::from_millis(300) {
            c.api
                .apply(slice(NS, "orders", &[(&a, true), (&b, false)]))
                .unwrap();
            turned = Some((Instant::now(), b.app.request_count()));
        }
        if turned.is_some_and(|(t, _)| now - t > Duration::from_secs(3)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (t0, at_turn) = turned.expect("the pod was turned not ready");
    let final_b = b.app.request_count();
    let last_b = samples
        .iter()
        .filter(|(_, n)| *n == final_b)
        .map(|(t, _)| *t)
        .next()
        .unwrap();
    let left_after = last_b.saturating_duration_since(t0);
    eprintln!(
        "not-ready pod left rotation {left_after:?} after the change ({} requests to it since)",
        final_b - at_turn
    );
    assert!(
        left_after <= WITHIN,
        "still in rotation {left_after:?} after the change"
    );
    // And it stayed out for the rest of the run.
    assert!(samples.last().unwrap().0 - last_b >= Duration::from_secs(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_without_the_label_is_not_meshed() {
    let c = Cluster::start("kube-unlabelled", 2).await;
    let web = c.pod(NS, "web-1", "web", "web", 1).await;
    c.api.apply(namespace("plain", false)).unwrap();
    c.api.apply(service("plain", "legacy")).unwrap();
    // Its pod is running and ready, but the namespace is not meshed.
    c.pod_object("plain", "legacy-1", "legacy", "legacy", 2);
    c.api
        .apply(slice_of("plain", "legacy", &[("legacy-1", c.ip(2), true)]))
        .unwrap();
    c.api.apply(service(NS, "orders")).unwrap();
    let orders = c.pod(NS, "orders-1", "orders", "orders", 4).await;
    c.api
        .apply(slice(NS, "orders", &[(&orders, true)]))
        .unwrap();
    // Once the meshed Service is known, the unmeshed one is known to be left out.
    until(&web, "orders.shop", "the meshed Service is reached", |r| {
        r.status == 200
    })
    .await;
    let resp = get(&web, "legacy.plain").await;
    assert_eq!(resp.status, 404, "{}", resp.text());

    // Labelled, it is meshed.
    c.api.apply(namespace("plain", true)).unwrap();
    until(
        &web,
        "legacy.plain",
        "the Service of the newly meshed namespace is known",
        |r| r.status != 404,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_cut_after_compaction_recovers_and_discovery_converges() {
    let c = Cluster::start("kube-relist", 3).await;
    let web = c.pod(NS, "web-1", "web", "web", 1).await;
    let a = c.pod(NS, "orders-a", "orders", "orders", 2).await;
    let b = c.pod(NS, "orders-b", "orders", "orders", 3).await;
    c.api.apply(service(NS, "orders")).unwrap();
    c.api.apply(slice(NS, "orders", &[(&a, true)])).unwrap();
    until(&web, "orders.shop", "a reached", |_| {
        a.app.request_count() > 0
    })
    .await;
    let open = c.api.open_watches();
    assert!(open >= 4, "the four watches are open ({open})");

    // A write elsewhere puts every watch's last version behind; the API server then forgets
    // its history and ends every watch, so each resumes into 410 Gone and lists again. A
    // change lands while they do.
    c.api.apply(namespace("elsewhere", false)).unwrap();
    c.api.compact();
    // And the API server is down for a moment (as in a restart): the next requests get 503.
    c.api.fail_next(6, 503);
    assert!(c.api.cut_watches() >= 4);
    c.api
        .apply(slice(NS, "orders", &[(&a, true), (&b, true)]))
        .unwrap();
    until(&web, "orders.shop", "b reached after the cut", |_| {
        b.app.request_count() > 0
    })
    .await;
    trustmesh_e2e::wait::poll_until("EndpointSlices listed again", WAIT, || async {
        let lists = c.api.requests_for(Resource::EndpointSlices)["list"];
        Ok((lists >= 2).then_some(()))
    })
    .await
    .unwrap();
    let errors = metric_cp(
        &c,
        "trustmesh_kube_watch_errors_total{resource=\"endpointslices\"}",
    )
    .await;
    assert!(errors >= 1.0, "the 410 is counted ({errors})");
    // And the watches follow changes again.
    c.api.apply(slice(NS, "orders", &[(&b, true)])).unwrap();
    let seen_a = a.app.request_count();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..10 {
        assert_eq!(get(&web, "orders.shop").await.status, 200);
    }
    assert_eq!(a.app.request_count(), seen_a, "a left rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_a_deleted_pod_no_longer_bootstraps() {
    let c = Cluster::start("kube-bound-token", 4).await;
    let obj = c.pod_object(NS, "api-1", "api", "api", 1);
    let uid = obj["metadata"]["uid"].as_str().unwrap().to_string();
    let token = c.key.token(NS, "api", "api-1", &uid);
    let id = spiffe_id(NS, "api");
    let ok = post_csr(&c, &token, &id).await;
    assert_eq!(
        ok.status,
        200,
        "the live pod's token enrolls: {}",
        ok.text()
    );

    // Another UID under the same name (the pod was replaced) is not the pod the token names.
    let stranger = c
        .key
        .token(NS, "api", "api-1", "00000000-0000-4000-8000-ffffffffffff");
    assert_refused(&post_csr(&c, &stranger, &id).await);

    c.api.remove(Resource::Pods, Some(NS), "api-1");
    let gone = post_csr(&c, &token, &id).await;
    assert_refused(&gone);
    // A token naming a pod of another ServiceAccount is refused too.
    let other = c.pod_object(NS, "db-1", "db", "db", 2);
    let db_uid = other["metadata"]["uid"].as_str().unwrap().to_string();
    let borrowed = c.key.token(NS, "api", "db-1", &db_uid);
    assert_refused(&post_csr(&c, &borrowed, &id).await);
    let refused = metric_cp(
        &c,
        "trustmesh_cp_certificates_issued_total{result=\"jwt_pod_gone\"}",
    )
    .await;
    assert!(refused >= 3.0, "counted by reason ({refused})");
}

fn assert_refused(resp: &Resp) {
    assert_eq!(resp.status, 401, "{}", resp.text());
    let v = resp.json().unwrap();
    assert_eq!(v["error"], "jwt_pod_gone", "{v}");
}

async fn post_csr(c: &Cluster, bearer: &str, identity: &str) -> Resp {
    let id = trustmesh_e2e::mtls::spiffe(identity).unwrap();
    let csr = trustmesh_certs::generate_csr(&id).unwrap();
    let body = bytes::Bytes::from(serde_json::json!({ "csr": csr.csr_pem }).to_string());
    c.cp.request(http::Method::POST, "/v1/certificates", Some(bearer), body)
        .await
        .expect("the control plane answers")
}

async fn metric_cp(c: &Cluster, series: &str) -> f64 {
    let text = c.cp.get("/metrics").await.unwrap().text();
    trustmesh_e2e::lifecycle::sample(&text, series)
}
