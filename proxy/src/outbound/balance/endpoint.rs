//! One endpoint of a service as the balancer holds it: its latency estimate, its requests
//! in flight and its health, behind one lock; and [`InFlight`], a request counted in its load.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::eject::Health;
use super::ewma::PeakEwma;
use super::Clock;

/// One endpoint of one service, with its load and health.
pub struct Endpoint {
    pub(super) addr: String,
    pub(super) service: String,
    pub(super) state: Mutex<State>,
}

/// What the lock of an endpoint guards.
pub(super) struct State {
    pub(super) ewma: PeakEwma,
    pub(super) in_flight: usize,
    pub(super) health: Health,
}

impl Endpoint {
    /// Its address (`host:port` of the sidecar's inbound listener).
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Whether it is in rotation now.
    pub fn in_rotation(&self) -> bool {
        self.state.lock().is_ok_and(|s| s.health.in_rotation())
    }

    /// Its ejection, when out of rotation.
    #[cfg(test)]
    pub fn ejection(&self) -> Option<super::eject::Ejection> {
        self.state.lock().ok()?.health.ejection().cloned()
    }

    /// Requests sent to it and not answered yet.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.state.lock().map(|s| s.in_flight).unwrap_or(0)
    }
}

/// What [`Balancer::pick`] chose: the endpoint for the request (none when the service has
/// none left to try) and the ejected endpoints whose probe is due now.
pub struct Picked {
    /// The endpoint to send to.
    pub endpoint: Option<Arc<Endpoint>>,
    /// Probes to start (each marked as running).
    pub probes: Vec<Arc<Endpoint>>,
}

/// A request in flight to an endpoint: counted in its load until [`Balancer::finish`] (or
/// until dropped, which records the latency and no outcome).
pub struct InFlight {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) started: Instant,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) done: bool,
    /// Requests in flight to the endpoint when this one started, itself included.
    pub(super) concurrent: usize,
}

impl InFlight {
    /// Requests that were in flight to its endpoint when this one started, itself included.
    pub fn concurrent(&self) -> usize {
        self.concurrent
    }

    /// Ends it: no longer in flight, and its latency measured unless `measure` is false.
    pub(super) fn end(&mut self, measure: bool) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let now = self.clock.now();
        if let Ok(mut s) = self.endpoint.state.lock() {
            s.in_flight = s.in_flight.saturating_sub(1);
            if measure {
                s.ewma
                    .observe(now.saturating_duration_since(self.started), now);
            }
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.end(true);
    }
}
