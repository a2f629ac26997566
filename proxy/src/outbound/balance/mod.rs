//! Load balancing over a service's endpoints, per request, with failover and ejection (the
//! outbound stack's step between route and the mTLS pool; ARCHITECTURE.md "Traffic").
//!
//! Per service, over the endpoints its registry entry lists (kept in step with each snapshot;
//! an endpoint that stays keeps its state), the balancer picks, as Linkerd's does, by **power
//! of two choices**: two endpoints in rotation at random, and the one with the lower load,
//! the peak-EWMA of its latency times (requests in flight + 1) ([`ewma`]). A hidden
//! `--balancer rr` picks round robin instead (for the benchmark's comparison).
//!
//! Endpoints leave rotation on failures and are probed back ([`eject`]); never more than
//! `--eject-max-percent` of a service's endpoints are out at once. [`send`] carries one request
//! through it: a request that never reached an app goes to another endpoint at once.
//!
//! Metrics: `trustmesh_endpoints{service,state="ready|ejected"}` and
//! `trustmesh_ejections_total{service,reason}`.

pub mod eject;
mod endpoint;
pub mod ewma;
pub mod send;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use trustmesh_certs::SpiffeId;
use trustmesh_policies::{Registry, ServiceEntry};

use crate::outbound::pool::hash::FastMap;

use eject::{EjectConfig, Health, Reason};
use endpoint::State;
pub use endpoint::{Endpoint, InFlight, Picked};
use ewma::PeakEwma;

/// The identity `endpoint` of `service` must present. Today every endpoint of a service has
/// the service's identity; this is the one place that changes when endpoints get their own.
pub fn endpoint_identity<'a>(service: &'a ServiceEntry, endpoint: &str) -> &'a SpiffeId {
    service.identity_of(endpoint)
}

/// Put in a response's extensions by [`crate::outbound::Outbound::send_to_service`]: the identity the endpoint
/// that answered proved (one Service may have endpoints of several identities), for the
/// access log.
#[derive(Debug, Clone)]
pub struct ServedBy(pub SpiffeId);

/// Where the balancer reads the time, so that tests run on a fake clock.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The monotonic system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// `--balancer`: how an endpoint is picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Kind {
    /// Power of two choices over peak-EWMA latency × (in flight + 1).
    #[default]
    Ewma,
    /// Round robin over the endpoints in rotation.
    Rr,
}

/// What the balancer is configured with.
#[derive(Debug, Clone, Copy, Default)]
pub struct Config {
    /// How endpoints are picked.
    pub kind: Kind,
    /// When endpoints leave rotation.
    pub eject: EjectConfig,
}

/// How a request to an endpoint ended, as the balancer counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response that is not 5xx.
    Success,
    /// A failure of the endpoint's.
    Failed(Reason),
    /// Nothing to hold against the endpoint (the client's body failed, say).
    Neutral,
}

/// The balancer's metrics.
#[derive(Clone)]
pub struct BalanceMetrics {
    /// `trustmesh_endpoints{service,state}`.
    pub endpoints: prometheus::IntGaugeVec,
    /// `trustmesh_ejections_total{service,reason}`.
    pub ejections: prometheus::IntCounterVec,
}

/// The balancer of every service this sidecar sends to.
pub struct Balancer {
    config: Config,
    clock: Arc<dyn Clock>,
    services: Mutex<FastMap<String, Vec<Arc<Endpoint>>>>,
    rng: Mutex<fastrand::Rng>,
    next: AtomicUsize,
    metrics: BalanceMetrics,
    version: Mutex<String>,
}

/// The key of a service in the balancer and its `service` label: `name.namespace`.
pub fn service_key(service: &ServiceEntry) -> String {
    format!("{}.{}", service.name, service.namespace)
}

thread_local! {
    /// Where [`with_key`] writes a key: a lookup per request allocates nothing.
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// `f` of [`service_key`]`(service)`, written into a buffer kept per thread.
fn with_key<R>(service: &ServiceEntry, f: impl FnOnce(&str) -> R) -> R {
    KEY.with(|k| match k.try_borrow_mut() {
        Ok(mut k) => {
            k.clear();
            k.push_str(&service.name);
            k.push('.');
            k.push_str(&service.namespace);
            f(&k)
        }
        // Only if `f` itself looked a key up (it does not): a key of its own.
        Err(_) => f(&service_key(service)),
    })
}

impl Balancer {
    /// A balancer on `clock`, picking at random from `seed`.
    pub fn new(config: Config, clock: Arc<dyn Clock>, metrics: BalanceMetrics, seed: u64) -> Self {
        Self {
            config,
            clock,
            services: Mutex::default(),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            next: AtomicUsize::new(0),
            metrics,
            version: Mutex::default(),
        }
    }

    /// Forgets the services a new registry (snapshot `version`) no longer has, and their
    /// series; a no-op while the version stays.
    pub fn retain(&self, registry: &Registry, version: &str) {
        let Ok(mut seen) = self.version.lock() else {
            return;
        };
        if *seen == version {
            return;
        }
        *seen = version.to_string();
        let Ok(mut services) = self.services.lock() else {
            return;
        };
        let keep: std::collections::HashSet<String> =
            registry.entries().iter().map(service_key).collect();
        services.retain(|key, _| {
            let stays = keep.contains(key);
            if !stays {
                for state in ["ready", "ejected"] {
                    let _ = self.metrics.endpoints.remove_label_values(&[key, state]);
                }
            }
            stays
        });
    }

    /// Picks an endpoint of `service` for a request that already went to `tried` (see the
    /// module docs). With every endpoint out of rotation and none tried yet, one of them is
    /// still picked.
    pub fn pick(&self, service: &ServiceEntry, tried: &[Arc<Endpoint>]) -> Picked {
        let now = self.clock.now();
        let Ok(mut services) = self.services.lock() else {
            return Picked {
                endpoint: None,
                probes: Vec::new(),
            };
        };
        let endpoints = self.sync(&mut services, service);
        let mut probes = Vec::new();
        let mut candidates: Vec<(&Arc<Endpoint>, f64)> = Vec::with_capacity(endpoints.len());
        for ep in endpoints.iter() {
            let Ok(mut s) = ep.state.lock() else { continue };
            if s.health.start_probe(now) {
                probes.push(ep.clone());
            }
            let untried = !tried.iter().any(|t| Arc::ptr_eq(t, ep));
            if untried && s.health.in_rotation() {
                let in_flight = s.in_flight;
                candidates.push((ep, ewma::cost(&mut s.ewma, in_flight, now)));
            }
        }
        if candidates.is_empty() && tried.is_empty() {
            // Every endpoint is out: try one all the same rather than fail without trying.
            candidates = endpoints.iter().map(|ep| (ep, 0.0)).collect();
        }
        let endpoint = self.choose(&candidates).cloned();
        Picked { endpoint, probes }
    }

    /// One of `candidates`: the lower load of two at random, or the next in turn.
    fn choose<'a>(&self, candidates: &[(&'a Arc<Endpoint>, f64)]) -> Option<&'a Arc<Endpoint>> {
        match candidates.len() {
            0 => return None,
            1 => return Some(candidates[0].0),
            _ => {}
        }
        let n = candidates.len();
        if self.config.kind == Kind::Rr {
            return Some(candidates[self.next.fetch_add(1, Ordering::Relaxed) % n].0);
        }
        let (a, b) = match self.rng.lock() {
            Ok(mut rng) => {
                let a = rng.usize(..n);
                let b = (a + 1 + rng.usize(..n - 1)) % n;
                (a, b)
            }
            Err(_) => (0, 1),
        };
        let (ca, cb) = (candidates[a], candidates[b]);
        Some(if cb.1 < ca.1 { cb.0 } else { ca.0 })
    }

    /// The endpoints of `service`, brought in step with its registry entry.
    fn sync<'m>(
        &self,
        services: &'m mut FastMap<String, Vec<Arc<Endpoint>>>,
        service: &ServiceEntry,
    ) -> &'m [Arc<Endpoint>] {
        let same = with_key(service, |key| {
            services.get(key).is_some_and(|eps| {
                eps.len() == service.endpoints.len()
                    && eps
                        .iter()
                        .zip(&service.endpoints)
                        .all(|(e, a)| e.addr == *a)
            })
        });
        if !same {
            let key = service_key(service);
            let old = services.remove(&key).unwrap_or_default();
            let now = self.clock.now();
            let eps: Vec<Arc<Endpoint>> = service
                .endpoints
                .iter()
                .map(|addr| match old.iter().find(|e| e.addr == *addr) {
                    Some(e) => e.clone(),
                    None => Arc::new(Endpoint {
                        addr: addr.clone(),
                        service: key.clone(),
                        state: Mutex::new(State {
                            ewma: PeakEwma::new(now, ewma::DEFAULT_RTT, ewma::DECAY),
                            in_flight: 0,
                            health: Health::default(),
                        }),
                    }),
                })
                .collect();
            self.gauges(&key, &eps);
            services.insert(key, eps);
        }
        let services: &'m FastMap<String, Vec<Arc<Endpoint>>> = services;
        with_key(service, |key| services.get(key))
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Counts a request to `endpoint` as in flight from now.
    pub fn start(&self, endpoint: &Arc<Endpoint>) -> InFlight {
        let mut concurrent = 1;
        if let Ok(mut s) = endpoint.state.lock() {
            s.in_flight += 1;
            concurrent = s.in_flight;
        }
        InFlight {
            concurrent,
            endpoint: endpoint.clone(),
            started: self.clock.now(),
            clock: self.clock.clone(),
            done: false,
        }
    }

    /// Ends a request with `outcome`: its latency joins the endpoint's estimate (not for a
    /// request that never reached it), and a failure may eject the endpoint.
    pub fn finish(&self, mut in_flight: InFlight, outcome: Outcome) {
        in_flight.end(outcome != Outcome::Failed(Reason::Connect));
        let ep = in_flight.endpoint.clone();
        let reason = match outcome {
            Outcome::Neutral => return,
            Outcome::Success => {
                if let Ok(mut s) = ep.state.lock() {
                    s.health.succeeded();
                }
                return;
            }
            Outcome::Failed(reason) => reason,
        };
        let wants = ep
            .state
            .lock()
            .is_ok_and(|mut s| s.health.failed(reason, &self.config.eject));
        if wants {
            self.eject(&ep, reason);
        }
    }

    /// Takes `ep` out of rotation unless that would put more than the allowed share of its
    /// service's endpoints out at once.
    fn eject(&self, ep: &Arc<Endpoint>, reason: Reason) {
        // Under the services lock: ejections of one service are decided one at a time.
        let Ok(services) = self.services.lock() else {
            return;
        };
        let Some(eps) = services.get(&ep.service) else {
            return;
        };
        if !eps.iter().any(|e| Arc::ptr_eq(e, ep)) {
            return;
        }
        let out = eps.iter().filter(|e| !e.in_rotation()).count();
        if out + 1 > self.config.eject.max_ejected(eps.len()) {
            tracing::info!(service = %ep.service, endpoint = %ep.addr, reason = reason.label(), "not ejected: the most endpoints allowed are out of rotation already");
            return;
        }
        if let Ok(mut s) = ep.state.lock() {
            s.health.eject(reason, self.clock.now(), &self.config.eject);
        }
        tracing::warn!(service = %ep.service, endpoint = %ep.addr, reason = reason.label(), "endpoint out of rotation");
        self.metrics
            .ejections
            .with_label_values(&[&ep.service, reason.label()])
            .inc();
        self.gauges(&ep.service, eps);
    }

    /// A probe of `ep` ended: connected (back in rotation) or not (the next probe waits
    /// longer).
    pub fn probed(&self, ep: &Arc<Endpoint>, connected: bool) {
        let Ok(services) = self.services.lock() else {
            return;
        };
        if let Ok(mut s) = ep.state.lock() {
            s.health
                .probed(connected, self.clock.now(), &self.config.eject);
        }
        if connected {
            tracing::info!(service = %ep.service, endpoint = %ep.addr, "endpoint back in rotation");
        }
        if let Some(eps) = services.get(&ep.service) {
            self.gauges(&ep.service, eps);
        }
    }

    fn gauges(&self, key: &str, eps: &[Arc<Endpoint>]) {
        let ready = eps.iter().filter(|e| e.in_rotation()).count();
        let m = &self.metrics.endpoints;
        m.with_label_values(&[key, "ready"]).set(ready as i64);
        m.with_label_values(&[key, "ejected"])
            .set((eps.len() - ready) as i64);
    }
}
