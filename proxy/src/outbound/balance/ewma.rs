//! Peak-EWMA of an endpoint's latency, as Finagle's and Linkerd's balancers (tower's
//! `load::peak_ewma`) keep it: a latency above the estimate replaces it at once (the peak),
//! one below pulls it down by how long ago the last update was, and the estimate also decays
//! towards zero while nothing is measured, so an endpoint that was slow once is tried again
//! later. The load of an endpoint is that estimate times (requests in flight + 1).

use std::time::{Duration, Instant};

/// The estimate an endpoint starts with before anything is measured (Linkerd's default):
/// high enough that a new endpoint is not flooded before it has a baseline.
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);

/// How fast an old measurement fades (Linkerd's default): after this long it weighs 1/e.
pub const DECAY: Duration = Duration::from_secs(10);

/// The latency estimate of one endpoint, in nanoseconds, and when it was last updated.
#[derive(Debug, Clone)]
pub struct PeakEwma {
    rtt_ns: f64,
    updated: Instant,
    decay_ns: f64,
}

impl PeakEwma {
    /// A new estimate of `default_rtt`, decaying over `decay`, as of `now`.
    pub fn new(now: Instant, default_rtt: Duration, decay: Duration) -> Self {
        Self {
            rtt_ns: nanos(default_rtt),
            updated: now,
            decay_ns: nanos(decay).max(1.0),
        }
    }

    /// Adds a measured latency `rtt`, observed at `now`: a peak replaces the estimate; a
    /// lower one is blended in by the time since the last update.
    pub fn observe(&mut self, rtt: Duration, now: Instant) {
        let rtt = nanos(rtt);
        if rtt > self.rtt_ns {
            self.rtt_ns = rtt;
        } else {
            let w = self.weight(now);
            self.rtt_ns = self.rtt_ns * w + rtt * (1.0 - w);
        }
        self.updated = self.updated.max(now);
    }

    /// The estimate at `now`, decayed towards zero since the last update (and recorded as
    /// decayed, as tower does, so that the decay is continuous).
    pub fn estimate(&mut self, now: Instant) -> f64 {
        let w = self.weight(now);
        self.rtt_ns *= w;
        self.updated = self.updated.max(now);
        self.rtt_ns
    }

    /// The weight the old estimate keeps at `now`: `e^(-elapsed / decay)`.
    fn weight(&self, now: Instant) -> f64 {
        let elapsed = nanos(now.saturating_duration_since(self.updated));
        (-elapsed / self.decay_ns).exp()
    }
}

/// The load of an endpoint: its latency estimate at `now` times (requests in flight + 1).
pub fn cost(ewma: &mut PeakEwma, in_flight: usize, now: Instant) -> f64 {
    ewma.estimate(now) * (in_flight as f64 + 1.0)
}

fn nanos(d: Duration) -> f64 {
    d.as_secs_f64() * 1e9
}
