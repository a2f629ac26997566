//! The observe layer of both stacks: each request gets one access-log line, its
//! `trustmesh_requests_total` / duration metrics and, with `--otlp-endpoint`, one span.
//! [`Observe::inbound`] or [`Observe::outbound`] starts it from the request head; the layers
//! below fill in its [`Entry`] (route, decision, destination); [`Observe::finish`] records it
//! against the response, whichever layer made that response.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::{Request, Response};
use trustmesh_certs::SpiffeId;

use crate::observe::access_log::{self, AccessLogFormat, Entry};
use crate::observe::metrics::Metrics;
use crate::observe::series::Series;
use crate::observe::{otlp, trace};

/// Which stack a request went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a peer sidecar to the app.
    Inbound,
    /// From the app to the mesh.
    Outbound,
}

impl Direction {
    /// The `direction` label and access-log field.
    pub fn label(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// One request being observed.
pub struct Observe {
    direction: Direction,
    format: AccessLogFormat,
    start: Instant,
    started: SystemTime,
    /// Inbound: the verified caller (the `peer` label of the request metric).
    peer: Option<Arc<str>>,
    /// What the access log and the span say; the layers below fill it in.
    pub log: Entry,
}

impl Observe {
    /// Starts observing a request `peer` sent to this workload (`me`).
    #[cfg(test)]
    pub fn inbound<B>(
        req: &Request<B>,
        format: AccessLogFormat,
        peer: &SpiffeId,
        me: &SpiffeId,
    ) -> Self {
        Self::inbound_from(req, format, peer, &Arc::from(peer.as_str()), me)
    }

    /// [`Observe::inbound`] with `peer` as its metric label already made (once per
    /// connection, so that a request copies no string for it).
    pub fn inbound_from<B>(
        req: &Request<B>,
        format: AccessLogFormat,
        peer: &SpiffeId,
        peer_label: &Arc<str>,
        me: &SpiffeId,
    ) -> Self {
        let start = Instant::now();
        let detail = Entry::wanted(format, otlp::enabled());
        let mut log = Entry::from_request(req.method(), req.uri(), req.headers(), detail);
        if detail {
            log.source = Some(access_log::shared(peer.as_str()));
            log.destination = Some(access_log::shared(me.as_str()));
        }
        if otlp::enabled() {
            log.span_id = trace::new_span_id();
        }
        Self {
            direction: Direction::Inbound,
            format,
            start,
            started: span_start(),
            peer: Some(Arc::clone(peer_label)),
            log,
        }
    }

    /// Starts observing a request the app (`me`) sent: a request that carries no trace yet
    /// starts one here (its headers gain `traceparent` when spans are exported).
    pub fn outbound<B>(req: &mut Request<B>, format: AccessLogFormat, me: &SpiffeId) -> Self {
        let start = Instant::now();
        let started_trace = trace::ensure(req.headers_mut(), otlp::enabled());
        let detail = Entry::wanted(format, otlp::enabled());
        let mut log = Entry::from_request(req.method(), req.uri(), req.headers(), detail);
        if otlp::enabled() {
            // A trace started here: this hop is its root, and its id is the parent the callee sees.
            log.span_id = match started_trace {
                Some(id) => {
                    log.parent_id = None;
                    Some(id)
                }
                None => trace::new_span_id(),
            };
        }
        let started = span_start();
        if detail {
            log.source = Some(access_log::shared(me.as_str()));
        }
        if let Some(pq) = req.uri().path_and_query() {
            log.set_raw_path(pq.as_str());
        }
        Self {
            direction: Direction::Outbound,
            format,
            start,
            started,
            peer: None,
            log,
        }
    }

    /// Records the finished request: metrics, the access-log line, the span.
    #[cfg(test)]
    pub fn finish<B>(self, metrics: &Metrics, resp: &Response<B>) {
        self.finish_in(metrics, &Series::default(), resp);
    }

    /// [`Observe::finish`], counting in the series its connection's requests keep in
    /// `series` (looked up again only when the labels differ from the last request's).
    pub fn finish_in<B>(self, metrics: &Metrics, series: &Series, resp: &Response<B>) {
        let elapsed = self.start.elapsed();
        let status = resp.status();
        let direction = self.direction.label();
        let peer = match self.direction {
            Direction::Inbound => self.peer.as_deref(),
            Direction::Outbound => self.log.destination.as_deref(),
        };
        let route = self.log.route.as_deref().unwrap_or("-");
        series.record(
            metrics,
            self.direction,
            status,
            peer.unwrap_or("-"),
            route,
            elapsed.as_secs_f64(),
        );
        access_log::write(
            self.format,
            direction,
            &self.log,
            status,
            resp.headers(),
            elapsed,
        );
        otlp::record(direction, &self.log, status, self.started, elapsed);
    }
}

/// The wall-clock start of a request's span: read only when spans are exported, the one
/// reader of it ([`otlp::record`]), so a request costs one clock read less otherwise.
fn span_start() -> SystemTime {
    if otlp::enabled() {
        SystemTime::now()
    } else {
        SystemTime::UNIX_EPOCH
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    fn count(m: &Metrics, labels: &[&str]) -> u64 {
        m.requests.with_label_values(labels).get()
    }

    #[test]
    fn an_inbound_request_is_counted_by_caller_and_route() {
        let m = Metrics::new().unwrap();
        let (peer, me) = (
            id("spiffe://cluster.local/ns/a/sa/web"),
            id("spiffe://cluster.local/ns/a/sa/api"),
        );
        let req = Request::get("/orders/1").body(()).unwrap();
        let mut obs = Observe::inbound(&req, AccessLogFormat::Json, &peer, &me);
        assert_eq!(obs.log.source.as_deref(), Some(peer.as_str()));
        assert_eq!(obs.log.destination.as_deref(), Some(me.as_str()));
        obs.log.route = Some("orders".into());
        let resp = Response::builder().status(403).body(()).unwrap();
        obs.finish(&m, &resp);
        assert_eq!(count(&m, &["inbound", "403", peer.as_str(), "orders"]), 1);
    }

    #[test]
    fn an_outbound_request_is_counted_by_destination() {
        let m = Metrics::new().unwrap();
        let me = id("spiffe://cluster.local/ns/a/sa/web");
        let mut req = Request::get("http://api/x/../y?q=1").body(()).unwrap();
        let mut obs = Observe::outbound(&mut req, AccessLogFormat::Json, &me);
        assert_eq!(obs.log.source.as_deref(), Some(me.as_str()));
        assert_eq!(obs.log.path.as_deref(), Some("/y"));
        let resp = Response::builder().status(404).body(()).unwrap();
        Observe::outbound(&mut req, AccessLogFormat::Off, &me).finish(&m, &resp);
        assert_eq!(count(&m, &["outbound", "404", "-", "-"]), 1);
        obs.log.destination = Some("spiffe://cluster.local/ns/a/sa/api".into());
        obs.finish(&m, &resp);
        assert_eq!(
            count(
                &m,
                &["outbound", "404", "spiffe://cluster.local/ns/a/sa/api", "-"]
            ),
            1
        );
    }
}
