//! Load balancing, failover and ejection on outbound, with real processes on loopback: a
//! caller's sidecar A in front of service `b`, which has two or three endpoints, each its own
//! sidecar (all as `b`'s identity) in front of its own test app.
//!
//! - kill -9 one endpoint's sidecar under steady load: not one request fails;
//! - SIGSTOP one of three: the requests it swallowed time out, at most the ejection
//!   threshold of them (plus one per other worker in flight), then none goes to it;
//! - one of three answers ten times slower: it receives clearly less traffic.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use trustmesh_e2e::app::App;
use trustmesh_e2e::control_plane::ControlPlane;
use trustmesh_e2e::lifecycle::{metric, Load, LoadReport};
use trustmesh_e2e::mesh::NAMESPACE;
use trustmesh_e2e::policies::{spiffe_id, write_policies, ServiceEntry};
use trustmesh_e2e::ports::ProxyPorts;
use trustmesh_e2e::proxy::Proxy;
use trustmesh_e2e::workdir::WorkDir;

/// A → `b.test` with several endpoints. Fields drop in order: sidecars, control plane, apps.
struct Fleet {
    a: Proxy,
    bs: Vec<Proxy>,
    _cp: ControlPlane,
    _app_a: App,
    apps: Vec<App>,
    _dir: WorkDir,
}

/// Starts the control plane, one sidecar of `b` per entry of `delays` (its app answering
/// after that delay), and A with `a_extra` flags.
async fn fleet(test: &str, delays: &[Duration], a_extra: &[&str]) -> Fleet {
    let dir = WorkDir::new(test).unwrap();
    let a_ports = ProxyPorts::allocate().unwrap();
    let b_ports: Vec<ProxyPorts> = delays
        .iter()
        .map(|_| ProxyPorts::allocate().unwrap())
        .collect();
    let inbounds: Vec<_> = b_ports.iter().map(|p| p.inbound).collect();
    let policies = write_policies(
        &dir.path().join("policies"),
        &[
            ServiceEntry::new("a", NAMESPACE, a_ports.inbound),
            ServiceEntry::new("b", NAMESPACE, inbounds[0]).with_endpoints(&inbounds[1..]),
        ],
    )
    .unwrap();
    let cp = ControlPlane::start(dir.path(), &policies).await.unwrap();
    let app_a = App::start().await.unwrap();
    let mut apps = Vec::new();
    for d in delays {
        apps.push(App::start_with_delay(*d).await.unwrap());
    }
    let id_b = spiffe_id(NAMESPACE, "b");
    let mut bs = Vec::new();
    for (i, (ports, app)) in b_ports.iter().zip(&apps).enumerate() {
        let name = format!("b{i}");
        let b = Proxy::start(&cp, &name, &id_b, app.addr(), *ports).await;
        bs.push(b.unwrap());
    }
    let id_a = spiffe_id(NAMESPACE, "a");
    let a = Proxy::start_with(&cp, "a", &id_a, app_a.addr(), a_ports, a_extra)
        .await
        .unwrap();
    Fleet {
        a,
        bs,
        _cp: cp,
        _app_a: app_a,
        apps,
        _dir: dir,
    }
}

/// A's `trustmesh_ejections_total` for `b.test` and `reason` (labels sort by name, as
/// exposed).
async fn ejections(f: &Fleet, reason: &str) -> f64 {
    let series = format!("trustmesh_ejections_total{{reason=\"{reason}\",service=\"b.test\"}}");
    metric(f.a.admin(), &series).await.unwrap()
}

/// A's `trustmesh_endpoints` of `b.test` in `state`.
async fn endpoints(f: &Fleet, state: &str) -> f64 {
    let series = format!("trustmesh_endpoints{{service=\"b.test\",state=\"{state}\"}}");
    metric(f.a.admin(), &series).await.unwrap()
}

/// Sends a signal to a sidecar (`STOP`, `CONT`).
fn signal(p: &mut Proxy, sig: &str) {
    let pid = p.process().pid().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Waits (up to `limit`) until `done` holds.
async fn until<F: std::future::Future<Output = bool>>(limit: Duration, done: impl Fn() -> F) {
    let deadline = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < deadline, "not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report(r: &LoadReport) -> String {
    format!("{} ok, {} failed: {:#?}", r.ok, r.failed, r.failures)
}

/// Round robin sends every other request to the dead endpoint (the 502 for every other
/// request); EWMA may already have been avoiding it, which would prove nothing.
#[tokio::test]
async fn killing_one_of_two_endpoints_under_load_fails_no_request() {
    let mut f = fleet("lb-kill", &[Duration::ZERO; 2], &["--balancer", "rr"]).await;
    // About 20 requests a second: two workers, 100 ms apart.
    let load = Load::start(f.a.outbound(), "b", 2, Duration::from_millis(100));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = f.apps[1].request_count();
    assert!(f.apps[0].request_count() > 0 && before > 0, "both served");
    f.bs[0].process().kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = load.stop().await;
    assert_eq!(r.failed, 0, "{}", report(&r));
    assert!(r.ok >= 40, "{}", report(&r));
    assert!(
        f.apps[1].request_count() > before + 20,
        "the other took over"
    );
    let connect = ejections(&f, "connect").await;
    assert_eq!(connect, 1.0, "the dead endpoint left rotation once");
    let ejected = endpoints(&f, "ejected").await;
    let ready = endpoints(&f, "ready").await;
    assert_eq!((ready, ejected), (1.0, 1.0));
}

/// An HTTP/1.1 app's requests ride pooled HTTP/1.1 connections to both endpoints; killing one
/// endpoint closes its pooled connection under A: the next requests find it closed, cannot
/// connect, and go to the other endpoint without one failing.
#[tokio::test]
async fn a_pooled_http1_connection_to_a_killed_endpoint_fails_over() {
    let mut f = fleet("lb-h1-kill", &[Duration::ZERO; 2], &["--balancer", "rr"]).await;
    for i in 0..4 {
        let resp = trustmesh_e2e::client::http1_get(f.a.outbound(), "b", &format!("/w/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let h1 = "trustmesh_upstream_http1_connections_total";
    assert_eq!(
        metric(f.a.admin(), h1).await.unwrap(),
        2.0,
        "one per endpoint"
    );
    assert!(f.apps[0].request_count() > 0 && f.apps[1].request_count() > 0);
    f.bs[0].process().kill();
    let before = f.apps[1].request_count();
    for i in 0..6 {
        let resp = trustmesh_e2e::client::http1_get(f.a.outbound(), "b", &format!("/x/{i}"), &[])
            .await
            .unwrap();
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
    }
    assert_eq!(
        f.apps[1].request_count(),
        before + 6,
        "the other took every one"
    );
    assert_eq!(ejections(&f, "connect").await, 1.0);
}

/// With round robin, the frozen endpoint keeps getting its turn until the threshold ejects
/// it: what is proved is the threshold, not the balancer's avoidance. On the HTTP/2 hop every
/// request to it rides the one pooled connection and times out.
#[tokio::test]
async fn a_frozen_endpoint_costs_at_most_the_threshold_then_is_ejected() {
    frozen_endpoint("lb-stop", &["--hop-http1", "false"], &["timeout"]).await;
}

/// The same over the HTTP/1.1 hop: the request on the pooled connection times out, and the
/// next ones need new connections whose handshake a frozen peer never finishes (a connection
/// failure, which ejects at once): never more failures than the threshold.
#[tokio::test]
async fn over_http1_a_frozen_endpoint_costs_at_most_the_threshold_then_is_ejected() {
    frozen_endpoint("lb-stop-h1", &[], &["timeout", "connect"]).await;
}

/// SIGSTOPs one of three endpoints under load (A with `extra` flags), and checks that at most
/// the threshold of requests failed (504s), then none, and that it left rotation for one of
/// `reasons`.
async fn frozen_endpoint(test: &str, extra: &[&str], reasons: &[&str]) {
    let mut flags = vec![
        "--upstream-timeout",
        "1s",
        "--eject-consecutive-failures",
        "3",
        "--balancer",
        "rr",
    ];
    flags.extend_from_slice(extra);
    let mut f = fleet(test, &[Duration::ZERO; 3], &flags).await;
    let workers = 2;
    let load = Load::start(f.a.outbound(), "b", workers, Duration::from_millis(50));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(load.counts().1, 0);
    signal(&mut f.bs[1], "STOP");
    until(Duration::from_secs(20), || async {
        let mut n = 0.0;
        for reason in reasons {
            n += ejections(&f, reason).await;
        }
        n >= 1.0
    })
    .await;
    // Whatever was still in flight to it ends within one timeout.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (ok_then, failed_then) = load.counts();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ok_after, failed_after) = load.counts();
    let r = load.stop().await;
    // Read before it wakes: a probe that was waiting on its handshake then succeeds.
    let ejected = endpoints(&f, "ejected").await;
    signal(&mut f.bs[1], "CONT");
    let most = 3 + workers as u64 - 1;
    let least = if reasons.contains(&"connect") { 1 } else { 3 };
    assert!((least..=most).contains(&failed_then), "{}", report(&r));
    assert!(
        r.failures.iter().all(|e| e.contains("504")),
        "{}",
        report(&r)
    );
    assert_eq!(
        failed_after, failed_then,
        "no request went to it once ejected"
    );
    assert!(ok_after > ok_then + 20, "the two others carried on");
    assert_eq!(ejected, 1.0);
}

/// With the default balancer the frozen endpoint's pending requests and its peak latency
/// keep traffic away even before the threshold.
#[tokio::test]
async fn with_ewma_a_frozen_endpoint_costs_no_more_than_the_threshold() {
    let flags = ["--upstream-timeout", "1s"];
    let mut f = fleet("lb-stop-ewma", &[Duration::ZERO; 3], &flags).await;
    let load = Load::start(f.a.outbound(), "b", 2, Duration::from_millis(50));
    tokio::time::sleep(Duration::from_secs(1)).await;
    signal(&mut f.bs[2], "STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ok_then, failed_then) = load.counts();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ok_after, failed_after) = load.counts();
    let r = load.stop().await;
    signal(&mut f.bs[2], "CONT");
    assert!(failed_then <= 5, "{}", report(&r));
    assert!(
        r.failures.iter().all(|e| e.contains("504")),
        "{}",
        report(&r)
    );
    assert_eq!(failed_after, failed_then, "{}", report(&r));
    assert!(ok_after > ok_then + 20);
}

#[tokio::test]
async fn a_ten_times_slower_endpoint_receives_clearly_less_traffic() {
    let delays = [
        Duration::from_millis(10),
        Duration::from_millis(10),
        Duration::from_millis(100),
    ];
    let f = fleet("lb-slow", &delays, &[]).await;
    let load = Load::start(f.a.outbound(), "b", 2, Duration::from_millis(10));
    // Bounded by count (and by time, for a machine too loaded to get there).
    let deadline = Instant::now() + Duration::from_secs(20);
    while load.counts().0 < 400 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = load.stop().await;
    assert_eq!(r.failed, 0, "{}", report(&r));
    let counts: Vec<usize> = f.apps.iter().map(App::request_count).collect();
    assert!(r.ok >= 100, "{counts:?} {}", report(&r));
    // Round robin would give each a third; the slow one gets far less than either other.
    assert!(
        counts[2] * 4 < counts[0] && counts[2] * 4 < counts[1],
        "{counts:?}"
    );
}
