//! The balancer on a fake clock: no network, no timer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use trustmesh_policies::ServiceEntry;

use super::eject::{EjectConfig, Reason, CONNECT_BACKOFF_MAX};
use super::ewma::PeakEwma;
use super::*;

/// A clock that moves only when told.
struct FakeClock(Mutex<Instant>);

impl FakeClock {
    fn advance(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        *self.0.lock().unwrap()
    }
}

fn metrics() -> BalanceMetrics {
    BalanceMetrics {
        endpoints: prometheus::IntGaugeVec::new(
            prometheus::Opts::new("endpoints", "endpoints"),
            &["service", "state"],
        )
        .unwrap(),
        ejections: prometheus::IntCounterVec::new(
            prometheus::Opts::new("ejections", "ejections"),
            &["service", "reason"],
        )
        .unwrap(),
    }
}

fn balancer(kind: Kind) -> (Balancer, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock(Mutex::new(Instant::now())));
    let config = Config {
        kind,
        eject: EjectConfig::default(),
    };
    (Balancer::new(config, clock.clone(), metrics(), 7), clock)
}

fn service(endpoints: &[&str]) -> ServiceEntry {
    let mut s = crate::testing::service("orders", "10.0.0.1:15006".parse().unwrap());
    s.endpoints = endpoints.iter().map(|e| e.to_string()).collect();
    s
}

const ABC: [&str; 3] = ["10.0.0.1:15006", "10.0.0.2:15006", "10.0.0.3:15006"];

fn pick(b: &Balancer, s: &ServiceEntry) -> Arc<Endpoint> {
    b.pick(s, &[]).endpoint.unwrap()
}

/// Sends `n` requests one after the other; each takes its endpoint's latency on the clock.
fn run(
    b: &Balancer,
    clock: &FakeClock,
    s: &ServiceEntry,
    n: usize,
    latency: &dyn Fn(&str) -> Duration,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let ep = pick(b, s);
        let sent = b.start(&ep);
        clock.advance(latency(ep.addr()));
        b.finish(sent, Outcome::Success);
        *counts.entry(ep.addr().to_string()).or_default() += 1;
    }
    counts
}

fn gauge(b: &Balancer, state: &str) -> i64 {
    b.metrics
        .endpoints
        .with_label_values(&["orders.prod", state])
        .get()
}

#[test]
fn a_ten_times_slower_endpoint_gets_clearly_less_traffic() {
    let (b, clock) = balancer(Kind::Ewma);
    let s = service(&ABC);
    let latency = |addr: &str| Duration::from_millis(if addr == ABC[2] { 50 } else { 5 });
    let counts = run(&b, &clock, &s, 3000, &latency);
    let (fast_a, fast_b, slow) = (counts[ABC[0]], counts[ABC[1]], counts[ABC[2]]);
    assert!(slow * 5 < fast_a && slow * 5 < fast_b, "{counts:?}");
    // Round robin does not care.
    let (b, clock) = balancer(Kind::Rr);
    let counts = run(&b, &clock, &s, 300, &latency);
    assert_eq!(counts[ABC[2]], 100, "{counts:?}");
}

#[test]
fn requests_in_flight_weigh_on_an_endpoints_load() {
    let (b, _clock) = balancer(Kind::Ewma);
    let s = service(&ABC[..2]);
    pick(&b, &s);
    let eps = endpoints(&b);
    // Both at the same estimate; three requests hang on the first.
    let held: Vec<InFlight> = (0..3).map(|_| b.start(&eps[0])).collect();
    assert_eq!(eps[0].in_flight(), 3);
    // Every pick compares both: the one with three in flight always loses.
    for _ in 0..50 {
        let ep = pick(&b, &s);
        assert_eq!(ep.addr(), ABC[1]);
        b.finish(b.start(&ep), Outcome::Success);
    }
    drop(held);
    assert_eq!((eps[0].in_flight(), eps[1].in_flight()), (0, 0));
    let picks: Vec<_> = (0..50).map(|_| pick(&b, &s).addr().to_string()).collect();
    assert!(
        picks.iter().any(|a| a == ABC[0]),
        "picked again once answered"
    );
}

/// The balancer's endpoints of `orders.prod`.
fn endpoints(b: &Balancer) -> Vec<Arc<Endpoint>> {
    b.services.lock().unwrap()["orders.prod"].clone()
}

#[test]
fn the_estimate_takes_peaks_at_once_and_decays_towards_recent_latency() {
    let t0 = Instant::now();
    let mut e = PeakEwma::new(t0, Duration::from_millis(30), Duration::from_secs(10));
    e.observe(Duration::from_secs(1), t0);
    assert!(
        (e.estimate(t0) - 1e9).abs() < 1.0,
        "a peak replaces the estimate"
    );
    // Ten seconds later (one decay period) without a measurement: 1/e of it.
    let later = t0 + Duration::from_secs(10);
    let decayed = e.estimate(later);
    assert!(
        (decayed - 1e9 / std::f64::consts::E).abs() < 1e6,
        "{decayed}"
    );
    // A lower measurement right away moves it little; after a long gap, nearly all the way.
    let mut e = PeakEwma::new(t0, Duration::from_secs(1), Duration::from_secs(10));
    e.observe(Duration::from_millis(10), t0 + Duration::from_millis(1));
    assert!(e.estimate(t0 + Duration::from_millis(1)) > 0.99e9);
    let mut e = PeakEwma::new(t0, Duration::from_secs(1), Duration::from_secs(10));
    e.observe(Duration::from_millis(10), t0 + Duration::from_secs(60));
    assert!(e.estimate(t0 + Duration::from_secs(60)) < 20e6);
}

#[test]
fn a_slow_endpoint_is_tried_again_once_its_estimate_has_decayed() {
    let (b, clock) = balancer(Kind::Ewma);
    let s = service(&ABC);
    let slow = |addr: &str| Duration::from_millis(if addr == ABC[2] { 500 } else { 5 });
    run(&b, &clock, &s, 300, &slow);
    // It measures fast now; while its 500 ms peak fades it gets almost nothing, then its
    // share again.
    let fast = |_: &str| Duration::from_millis(5);
    let soon = run(&b, &clock, &s, 100, &fast);
    clock.advance(Duration::from_secs(120));
    let later = run(&b, &clock, &s, 600, &fast);
    let (soon, later) = (*soon.get(ABC[2]).unwrap_or(&0), later[ABC[2]]);
    assert!(soon <= 5, "{soon}");
    assert!(later >= 100, "{later}");
}

#[test]
fn consecutive_failures_eject_and_a_probe_that_connects_brings_back() {
    let (b, clock) = balancer(Kind::Rr);
    let s = service(&ABC);
    let bad = ABC[1];
    let mut failures = 0;
    while failures < 5 {
        let ep = pick(&b, &s);
        let outcome = if ep.addr() == bad {
            failures += 1;
            Outcome::Failed(if failures % 2 == 0 {
                Reason::Timeout
            } else {
                Reason::Status5xx
            })
        } else {
            Outcome::Success
        };
        assert!(ep.in_rotation(), "ejected before the threshold");
        b.finish(b.start(&ep), outcome);
    }
    let ejected = b.pick(&s, &[]).endpoint.map(|_| ()).and_then(|()| {
        let all: Vec<_> = (0..3).map(|_| pick(&b, &s)).collect();
        all.iter().find(|e| e.addr() == bad).cloned()
    });
    assert!(ejected.is_none(), "an ejected endpoint is not picked");
    assert_eq!((gauge(&b, "ready"), gauge(&b, "ejected")), (2, 1));
    let count = |reason| {
        b.metrics
            .ejections
            .with_label_values(&["orders.prod", reason])
            .get()
    };
    assert_eq!(
        count("5xx"),
        1,
        "the failure that reached the threshold names it"
    );
    // No probe before the base time; then one, and only one at a time.
    clock.advance(Duration::from_secs(29));
    assert!(b.pick(&s, &[]).probes.is_empty());
    clock.advance(Duration::from_secs(1));
    let probes = b.pick(&s, &[]).probes;
    assert_eq!(probes.len(), 1);
    assert_eq!(probes[0].addr(), bad);
    assert!(b.pick(&s, &[]).probes.is_empty());
    // It connects: back in rotation.
    b.probed(&probes[0], true);
    assert_eq!((gauge(&b, "ready"), gauge(&b, "ejected")), (3, 0));
    let picks: Vec<_> = (0..3).map(|_| pick(&b, &s).addr().to_string()).collect();
    assert!(picks.iter().any(|a| a == bad), "{picks:?}");
}

#[test]
fn a_success_between_failures_restarts_the_count() {
    let (b, _clock) = balancer(Kind::Ewma);
    let s = service(&ABC);
    let ep = b.pick(&s, &[]).endpoint.unwrap();
    for round in 0..3 {
        for _ in 0..4 {
            b.finish(b.start(&ep), Outcome::Failed(Reason::Reset));
        }
        assert!(ep.in_rotation(), "round {round}");
        b.finish(b.start(&ep), Outcome::Success);
    }
    b.finish(b.start(&ep), Outcome::Neutral);
    assert!(ep.in_rotation());
}

#[test]
fn a_connection_failure_ejects_at_once_and_probes_back_off_to_30s() {
    let (b, clock) = balancer(Kind::Ewma);
    let s = service(&ABC[..2]);
    let ep = pick(&b, &s);
    b.finish(b.start(&ep), Outcome::Failed(Reason::Connect));
    assert!(!ep.in_rotation());
    // Failover: the other one, and nothing else once it was tried too.
    let other = b.pick(&s, std::slice::from_ref(&ep)).endpoint.unwrap();
    assert_ne!(other.addr(), ep.addr());
    assert!(b.pick(&s, &[ep.clone(), other.clone()]).endpoint.is_none());
    let mut waits = Vec::new();
    for _ in 0..7 {
        let e = ep.ejection().unwrap();
        assert_eq!(e.reason, Reason::Connect);
        waits.push(e.delay.as_secs());
        clock.advance(e.delay);
        let probes = b.pick(&s, &[]).probes;
        assert_eq!(probes.len(), 1);
        b.probed(&probes[0], false);
    }
    assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
    assert_eq!(ep.ejection().unwrap().delay, CONNECT_BACKOFF_MAX);
}

#[test]
fn never_more_than_half_of_a_services_endpoints_are_out() {
    let (b, _clock) = balancer(Kind::Ewma);
    let s = service(&ABC[..2]);
    pick(&b, &s);
    let eps = endpoints(&b);
    for ep in &eps {
        b.finish(b.start(ep), Outcome::Failed(Reason::Connect));
    }
    let out = eps.iter().filter(|e| !e.in_rotation()).count();
    assert_eq!(out, 1, "one of two may be out");
    // One endpoint alone is never out: with it down, it is still tried.
    let mut lone = service(&ABC[..1]);
    lone.name = "lone".to_string();
    let ep = pick(&b, &lone);
    b.finish(b.start(&ep), Outcome::Failed(Reason::Connect));
    assert!(ep.in_rotation());
    assert_eq!(pick(&b, &lone).addr(), ABC[0]);
    assert_eq!(EjectConfig::default().max_ejected(3), 1);
    assert_eq!(EjectConfig::default().max_ejected(10), 5);
}

#[test]
fn endpoints_that_stay_keep_their_state_across_registry_changes() {
    let (b, _clock) = balancer(Kind::Ewma);
    let s = service(&ABC);
    let ep = loop {
        let ep = pick(&b, &s);
        if ep.addr() == ABC[0] {
            break ep;
        }
    };
    b.finish(b.start(&ep), Outcome::Failed(Reason::Connect));
    assert!(!ep.in_rotation());
    // A new snapshot: ABC[2] gone, a fourth one new; ABC[0] is still out, with its backoff.
    let s2 = service(&[ABC[0], ABC[1], "10.0.0.4:15006"]);
    for _ in 0..20 {
        let picked = pick(&b, &s2);
        assert_ne!(picked.addr(), ABC[0]);
        assert_ne!(picked.addr(), ABC[2]);
    }
    assert_eq!((gauge(&b, "ready"), gauge(&b, "ejected")), (2, 1));
    // A registry without the service forgets it and its series.
    let registry = trustmesh_policies::Registry::new(Vec::new());
    b.retain(&registry, "v2");
    assert!(b.services.lock().unwrap().is_empty());
}
