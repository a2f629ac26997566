//! Whether an endpoint is in rotation: the failures that take it out, and when it is probed
//! to come back.
//!
//! - A request that never reached an app (connect refused or timed out, TLS refused, a closed
//!   pooled connection, a refused stream: [`Reason::Connect`]) takes the endpoint out at once.
//!   It is probed (a fresh mTLS connection) after 1 s, then after 2, 4, ... up to 30 s, and is
//!   back in rotation when a probe connects.
//! - Outlier detection, as Envoy's `consecutive_5xx`: `--eject-consecutive-failures` (5) 5xx
//!   answers, resets or timeouts in a row take it out for `--eject-base-time` (30 s), doubled
//!   at each ejection in a row up to ten times that (Envoy's `max_ejection_time`); then a
//!   probe, and a success forgets the count.
//!
//! [`Health`] is the state machine of one endpoint, with the time passed in; the balancer
//! ([`super::Balancer`]) decides whether an ejection may happen (never more than
//! `--eject-max-percent` of a service's endpoints out at once).

use std::time::{Duration, Instant};

/// The first probe after a connection failure.
pub const CONNECT_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two probes after connection failures.
pub const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What went wrong with one request to an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The request never reached the app: connect, TLS, a closed or refusing connection.
    Connect,
    /// The endpoint answered 5xx.
    Status5xx,
    /// The stream or connection was reset after the request was sent.
    Reset,
    /// No response head within the request's timeout.
    Timeout,
}

impl Reason {
    /// The `reason` label of `trustmesh_ejections_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Status5xx => "5xx",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
        }
    }
}

/// The thresholds of outlier ejection (the `--eject-*` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectConfig {
    /// `--eject-consecutive-failures`: 5xx, resets or timeouts in a row that eject.
    pub consecutive_failures: u32,
    /// `--eject-base-time`: the first outlier ejection's length.
    pub base_time: Duration,
    /// `--eject-max-percent`: the most of a service's endpoints out of rotation at once.
    pub max_percent: u8,
}

impl Default for EjectConfig {
    /// Envoy's outlier-detection defaults.
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            base_time: Duration::from_secs(30),
            max_percent: 50,
        }
    }
}

impl EjectConfig {
    /// How many of `n` endpoints may be out of rotation at once (rounded down, so one of
    /// one is never ejected: with every endpoint down, one is still tried).
    pub fn max_ejected(&self, n: usize) -> usize {
        n * usize::from(self.max_percent.min(100)) / 100
    }
}

/// Out of rotation: why, and when the next probe is due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ejection {
    /// What took it out.
    pub reason: Reason,
    /// When the next probe may start.
    pub probe_at: Instant,
    /// The wait that led to `probe_at`; the next one doubles it.
    pub delay: Duration,
    /// A probe is running.
    pub probing: bool,
}

/// One endpoint's failures and rotation state.
#[derive(Debug, Clone, Default)]
pub struct Health {
    consecutive: u32,
    /// Outlier ejections since the last success (the multiplier of the ejection time).
    outlier_ejections: u32,
    ejected: Option<Ejection>,
}

impl Health {
    /// Whether requests may be sent to it.
    pub fn in_rotation(&self) -> bool {
        self.ejected.is_none()
    }

    /// Its ejection, when out of rotation.
    #[cfg(test)]
    pub fn ejection(&self) -> Option<&Ejection> {
        self.ejected.as_ref()
    }

    /// A response that is not a failure: the run of failures ends.
    pub fn succeeded(&mut self) {
        self.consecutive = 0;
        if self.ejected.is_none() {
            self.outlier_ejections = 0;
        }
    }

    /// Counts a failure; whether it calls for an ejection (a connection failure always does,
    /// the others at the threshold). Failures of an endpoint already out change nothing.
    pub fn failed(&mut self, reason: Reason, config: &EjectConfig) -> bool {
        if self.ejected.is_some() {
            return false;
        }
        self.consecutive = self.consecutive.saturating_add(1);
        reason == Reason::Connect || self.consecutive >= config.consecutive_failures.max(1)
    }

    /// Takes it out of rotation at `now` for `reason`.
    pub fn eject(&mut self, reason: Reason, now: Instant, config: &EjectConfig) {
        let delay = match reason {
            Reason::Connect => CONNECT_BACKOFF,
            _ => {
                let doubling = 2u32.saturating_pow(self.outlier_ejections.min(16));
                self.outlier_ejections = self.outlier_ejections.saturating_add(1);
                config
                    .base_time
                    .saturating_mul(doubling)
                    .min(outlier_max(config))
            }
        };
        self.consecutive = 0;
        self.ejected = Some(Ejection {
            reason,
            probe_at: now + delay,
            delay,
            probing: false,
        });
    }

    /// Whether a probe is due at `now`; if so it is marked as running (one at a time).
    pub fn start_probe(&mut self, now: Instant) -> bool {
        match &mut self.ejected {
            Some(e) if !e.probing && e.probe_at <= now => {
                e.probing = true;
                true
            }
            _ => false,
        }
    }

    /// A probe ended at `now`: connected brings it back in rotation; else the next probe
    /// waits twice as long (up to the cap for its reason).
    pub fn probed(&mut self, connected: bool, now: Instant, config: &EjectConfig) {
        let Some(e) = &mut self.ejected else {
            return;
        };
        if connected {
            self.ejected = None;
            self.consecutive = 0;
            return;
        }
        let cap = match e.reason {
            Reason::Connect => CONNECT_BACKOFF_MAX,
            _ => outlier_max(config),
        };
        e.delay = e.delay.saturating_mul(2).min(cap);
        e.probe_at = now + e.delay;
        e.probing = false;
    }
}

/// The longest outlier ejection: ten times the base time (Envoy's 300 s for its 30 s).
fn outlier_max(config: &EjectConfig) -> Duration {
    config.base_time.saturating_mul(10)
}
