//! The request metrics' series of one served connection, looked up once rather than per
//! request: `with_label_values` hashes every label value (SipHash over the peer's SPIFFE ID,
//! the route, the status) and takes the vector's lock, while the requests of one connection
//! nearly always share their labels (one caller, one route, one status). [`Series`] keeps the
//! last series a connection's requests counted in and compares the labels with it; a request
//! with other labels looks its series up and is remembered instead. The series of
//! `trustmesh_requests_total` and `trustmesh_request_duration_seconds` are never removed, so
//! a kept handle always counts in the exported series.

use std::sync::Mutex;

use http::StatusCode;
use prometheus::{Histogram, IntCounter};

use crate::observe::metrics::Metrics;
use crate::observe::request::Direction;

/// The last series of one connection's requests (one per connection, shared by its requests).
#[derive(Default)]
pub struct Series {
    last: Mutex<Option<Last>>,
}

struct Last {
    direction: Direction,
    status: StatusCode,
    peer: Box<str>,
    route: Box<str>,
    requests: IntCounter,
    /// Inbound only: outbound requests share [`Metrics::duration_outbound`].
    duration: Option<Histogram>,
}

impl Series {
    /// Counts one finished request in `trustmesh_requests_total{direction, status, peer,
    /// route}` and observes `seconds` in its duration histogram.
    pub fn record(
        &self,
        metrics: &Metrics,
        direction: Direction,
        status: StatusCode,
        peer: &str,
        route: &str,
        seconds: f64,
    ) {
        let Ok(mut last) = self.last.lock() else {
            // Poisoned by a panic elsewhere: count without the memo.
            return count(metrics, direction, status, peer, route).record(metrics, seconds);
        };
        let hit = last.as_ref().is_some_and(|l| {
            l.direction == direction && l.status == status && *l.peer == *peer && *l.route == *route
        });
        if !hit {
            *last = Some(count(metrics, direction, status, peer, route));
        }
        if let Some(l) = last.as_ref() {
            l.record(metrics, seconds);
        }
    }
}

impl Last {
    fn record(&self, metrics: &Metrics, seconds: f64) {
        self.requests.inc();
        match &self.duration {
            Some(h) => h.observe(seconds),
            None => metrics.duration_outbound.observe(seconds),
        }
    }
}

/// The series of one label set, looked up.
fn count(
    metrics: &Metrics,
    direction: Direction,
    status: StatusCode,
    peer: &str,
    route: &str,
) -> Last {
    let label = direction.label();
    let requests = metrics
        .requests
        .with_label_values(&[label, status.as_str(), peer, route]);
    let duration = match direction {
        Direction::Inbound => Some(metrics.duration.with_label_values(&[label, route])),
        Direction::Outbound => None,
    };
    Last {
        direction,
        status,
        peer: peer.into(),
        route: route.into(),
        requests,
        duration,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_with_the_same_labels_share_a_series_and_others_get_their_own() {
        let m = Metrics::new().unwrap();
        let s = Series::default();
        let ok = StatusCode::OK;
        let (peer, other) = ("spiffe://t/ns/a/sa/x", "spiffe://t/ns/a/sa/y");
        s.record(&m, Direction::Inbound, ok, peer, "a/p#0", 0.1);
        s.record(&m, Direction::Inbound, ok, peer, "a/p#0", 0.1);
        s.record(
            &m,
            Direction::Inbound,
            StatusCode::FORBIDDEN,
            peer,
            "a/p#0",
            0.1,
        );
        s.record(&m, Direction::Inbound, ok, peer, "a/p#1", 0.1);
        s.record(&m, Direction::Inbound, ok, other, "a/p#0", 0.1);
        s.record(&m, Direction::Outbound, ok, peer, "a/p#0", 0.1);
        s.record(&m, Direction::Inbound, ok, peer, "a/p#0", 0.1);
        let get = |l: &[&str]| m.requests.with_label_values(l).get();
        assert_eq!(get(&["inbound", "200", peer, "a/p#0"]), 3);
        assert_eq!(get(&["inbound", "403", peer, "a/p#0"]), 1);
        assert_eq!(get(&["inbound", "200", peer, "a/p#1"]), 1);
        assert_eq!(get(&["inbound", "200", other, "a/p#0"]), 1);
        assert_eq!(get(&["outbound", "200", peer, "a/p#0"]), 1);
        let inbound = m.duration.with_label_values(&["inbound", "a/p#0"]);
        assert_eq!(inbound.get_sample_count(), 5);
        assert_eq!(m.duration_outbound.get_sample_count(), 1);
    }
}
