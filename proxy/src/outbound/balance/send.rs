//! One request to a service: balanced over its endpoints ([`super::Balancer`]), with failover.
//!
//! A request that never reached an app goes to another endpoint of the service at once, and
//! the endpoint leaves rotation ([`super::eject`]):
//!
//! - the connection could not be made (TCP connect refused or timed out, TLS refused or
//!   timed out, the HTTP/2 handshake failed);
//! - the pooled connection closed before the request was written: hyper's
//!   `SendRequest::try_send_request` hands the request back ([`TrySendError::take_message`]);
//! - for a request without a body (the only kind that can be sent again once hyper has taken
//!   it): the peer refused the stream (`REFUSED_STREAM`, RFC 9113 §8.7: not processed), or,
//!   for an idempotent method (RFC 9110 §9.2.2), the connection was lost or went away before
//!   any response head (a sidecar killed with requests on the wire).
//!
//! Every endpoint is tried at most once per request, all within the request's one timeout:
//! a frozen endpoint costs a request at most that timeout. What happens after the request
//! reached an app (a 5xx, a reset, a timeout) is answered as is and counted towards outlier
//! ejection; retrying those is for routes (`retry`), not for failover.
//!
//! A request rewritten for the HTTP/1.1 hop ([`crate::outbound::hop`]) takes a pooled
//! HTTP/1.1 connection instead ([`http1`]), with the same failover.
//!
//! [`Outbound::send_to_service`] is the one way to send a request to a service, used by
//! `forward` (and by routes, once per attempt).

use std::error::Error as _;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use tokio::time::Instant;
use trustmesh_policies::ServiceEntry;

use super::eject::Reason;
use super::{endpoint_identity, Endpoint, InFlight, Outcome};
use crate::layers::body::Body;
use crate::layers::replay::{idempotent, lost, Head};
use crate::layers::rescue::ProxyError;
use crate::outbound::Outbound;
use crate::state::MeshView;

mod http1;

/// How one attempt ended.
enum Attempt {
    /// The answer (or the error) for the caller.
    Done(Result<Response<Incoming>, ProxyError>),
    /// The request never reached an app: here it is again, with why, for another endpoint.
    Again(Request<Body>, ProxyError),
}

impl Outbound {
    /// Sends `req` (already rewritten for the hop between sidecars) to one of `service`'s
    /// endpoints, picked by the balancer, failing over to another while the request has
    /// reached no app; `504` once `timeout` passes without a response head, whatever was
    /// tried. The response body streams.
    pub async fn send_to_service(
        &self,
        service: &ServiceEntry,
        req: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, ProxyError> {
        let deadline = Instant::now() + timeout;
        let mesh = self.mesh()?;
        let replay = (service.endpoints.len() > 1)
            .then(|| Head::of(&req))
            .flatten();
        let mut req = req;
        let mut tried: Vec<Arc<Endpoint>> = Vec::new();
        let mut last = None;
        loop {
            let picked = self.balancer.pick(service, &tried);
            for ep in picked.probes {
                self.probe(service, &mesh, ep);
            }
            let Some(ep) = picked.endpoint else {
                return Err(last.unwrap_or_else(|| {
                    ProxyError::NoEndpoints(format!("{}.{}", service.name, service.namespace))
                }));
            };
            tried.push(ep.clone());
            let sent = self.balancer.start(&ep);
            let sent = Some((sent, deadline));
            let attempt = self.try_endpoint(service, &mesh, ep.addr(), req, sent, &replay);
            let attempt = attempt;
            match tokio::time::timeout_at(deadline, attempt).await {
                Err(_) => return Err(timed_out(service, ep.addr(), timeout)),
                Ok(Attempt::Done(result)) => return result,
                Ok(Attempt::Again(again, err)) => {
                    tracing::debug!(service = %service.name, endpoint = %ep.addr(), "failing over: {err}");
                    req = again;
                    last = Some(err);
                }
            }
        }
    }

    /// Sends `req` to `endpoint` itself (an original destination the app dialled), without
    /// balancing or failover; `504` after `timeout` without a response head.
    pub async fn send_to_endpoint(
        &self,
        service: &ServiceEntry,
        endpoint: &str,
        req: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, ProxyError> {
        let mesh = self.mesh()?;
        let attempt = self.try_endpoint(service, &mesh, endpoint, req, None, &None);
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Attempt::Done(result)) => result,
            Ok(Attempt::Again(_, err)) => Err(err),
            Err(_) => Err(timed_out(service, endpoint, timeout)),
        }
    }

    fn mesh(&self) -> Result<Arc<MeshView>, ProxyError> {
        self.shared
            .mesh
            .load_full()
            .ok_or(ProxyError::NotReady("no policy snapshot yet"))
    }

    /// One try at one endpoint: connection from the pool, then the request. The deadline
    /// is the caller's to apply (it drops this future); `sent`, the balancer's count of the
    /// request and its deadline, is then dropped unfinished.
    async fn try_endpoint(
        &self,
        service: &ServiceEntry,
        mesh: &MeshView,
        addr: &str,
        mut req: Request<Body>,
        sent: Option<(InFlight, Instant)>,
        replay: &Option<Head>,
    ) -> Attempt {
        let (sent, deadline) = sent.unzip();
        let mut sent = Finisher {
            balancer: &self.balancer,
            sent,
            deadline,
            on_drop: None,
        };
        // Neither way is boxed: measured, the allocation per request cost more than copying
        // the larger future at the levels above.
        if req.version() == Version::HTTP_11 {
            let busy = sent
                .sent
                .as_ref()
                .is_some_and(|s| s.concurrent() > crate::outbound::hop::HTTP1_MAX_IN_FLIGHT);
            if !busy {
                return self
                    .try_http1(service, mesh, addr, req, &mut sent, replay)
                    .await;
            }
            req = match crate::outbound::hop::onto_h2(req) {
                Ok(h2) => h2,
                Err(h1) => {
                    return self
                        .try_http1(service, mesh, addr, h1, &mut sent, replay)
                        .await
                }
            };
        }
        self.try_h2(service, mesh, addr, req, &mut sent, replay)
            .await
    }

    /// [`Outbound::try_endpoint`] over the pooled HTTP/2 connection.
    async fn try_h2(
        &self,
        service: &ServiceEntry,
        mesh: &MeshView,
        addr: &str,
        req: Request<Body>,
        sent: &mut Finisher<'_>,
        replay: &Option<Head>,
    ) -> Attempt {
        let target = || format!("{}.{} ({addr})", service.name, service.namespace);
        let identity = endpoint_identity(service, addr);
        let config = match mesh.client_config(&self.shared.resolver, identity) {
            Ok(c) => c,
            Err(e) => return no_client_config(service, e, sent),
        };
        let connect = self.config.connect_timeout;
        let pooled = self
            .pool
            .get(addr, identity, service, config, connect, &target);
        let mut sender = match pooled.await {
            Ok(s) => s,
            Err(e) => {
                sent.finish(Outcome::Failed(Reason::Connect));
                return Attempt::Again(req, e);
            }
        };
        // Timing out from here on is a timeout of the endpoint's.
        sent.on_drop = Some(Outcome::Failed(Reason::Timeout));
        match sender.try_send_request(req).await {
            Ok(resp) => answered(resp, identity, sent),
            Err(e) => self.failed(e, replay, &target, sent),
        }
    }

    /// A request hyper did not get an answer for: sent again elsewhere when it reached no
    /// app, else the caller's error.
    fn failed(
        &self,
        mut e: TrySendError<Request<Body>>,
        replay: &Option<Head>,
        target: &dyn Fn() -> String,
        sent: &mut Finisher<'_>,
    ) -> Attempt {
        let upstream = |reason: String| ProxyError::Upstream {
            target: target(),
            reason,
        };
        if let Some(req) = e.take_message() {
            sent.finish(Outcome::Failed(Reason::Connect));
            let err = upstream("the pooled connection closed before the request was sent".into());
            return Attempt::Again(req, err);
        }
        let error = e.into_error();
        if let Some(head) = replay.as_ref().filter(|h| may_resend(h, &error)) {
            sent.finish(Outcome::Failed(Reason::Connect));
            return Attempt::Again(head.request(), upstream(error.to_string()));
        }
        // The caller's own body failing (a stall, a client gone) says nothing of the endpoint.
        let outcome = if error.is_user() {
            Outcome::Neutral
        } else {
            Outcome::Failed(Reason::Reset)
        };
        sent.finish(outcome);
        Attempt::Done(Err(upstream(error.to_string())))
    }

    /// Starts a probe of `ep`: a fresh mTLS connection, which goes into the pool when made.
    fn probe(&self, service: &ServiceEntry, mesh: &MeshView, ep: Arc<Endpoint>) {
        let identity = endpoint_identity(service, ep.addr()).clone();
        let Ok(config) = mesh.client_config(&self.shared.resolver, &identity) else {
            self.balancer.probed(&ep, false);
            return;
        };
        let (pool, balancer) = (self.pool.clone(), self.balancer.clone());
        let sni = service.fqdn();
        let connect = self.config.connect_timeout;
        let name = format!("{}.{}", service.name, service.namespace);
        tokio::spawn(async move {
            let target = format!("{name} ({})", ep.addr());
            let made = pool
                .reconnect(ep.addr(), &identity, &sni, config, connect, &target)
                .await;
            if let Err(e) = &made {
                tracing::debug!(endpoint = %ep.addr(), "probe failed: {e}");
            }
            balancer.probed(&ep, made.is_ok());
        });
    }
}

/// A response head from the endpoint proving `identity`: counted (a 5xx against it), and
/// marked with who served it.
fn answered(
    mut resp: Response<Incoming>,
    identity: &trustmesh_certs::SpiffeId,
    sent: &mut Finisher<'_>,
) -> Attempt {
    resp.extensions_mut()
        .insert(super::ServedBy(identity.clone()));
    let outcome = if resp.status().is_server_error() {
        Outcome::Failed(Reason::Status5xx)
    } else {
        Outcome::Success
    };
    sent.finish(outcome);
    Attempt::Done(Ok(resp))
}

/// Ends an attempt's in-flight count once, with the outcome it reached. Dropped unfinished
/// once the deadline passed, with `on_drop` (a timeout, once the request was sent) or as a
/// connection failure; dropped before (the caller went away), holding nothing against it.
struct Finisher<'a> {
    balancer: &'a super::Balancer,
    sent: Option<InFlight>,
    deadline: Option<Instant>,
    on_drop: Option<Outcome>,
}

impl Finisher<'_> {
    fn finish(&mut self, outcome: Outcome) {
        if let Some(sent) = self.sent.take() {
            self.balancer.finish(sent, outcome);
        }
    }
}

impl Drop for Finisher<'_> {
    fn drop(&mut self) {
        if self.sent.is_none() {
            // Finished already (nearly always): no outcome to pick, no clock to read.
            return;
        }
        let outcome = if self.deadline.is_some_and(|d| Instant::now() >= d) {
            // Out of time while connecting counts as a connection failure.
            self.on_drop
                .take()
                .unwrap_or(Outcome::Failed(Reason::Connect))
        } else {
            Outcome::Neutral
        };
        self.finish(outcome);
    }
}

fn timed_out(service: &ServiceEntry, endpoint: &str, timeout: Duration) -> ProxyError {
    ProxyError::Timeout {
        target: format!("{}.{} ({endpoint})", service.name, service.namespace),
        secs: timeout.as_secs(),
    }
}

/// Whether, after `error` and no response head, the request of `head` may go to another
/// endpoint: a refused HTTP/2 stream (never processed, RFC 9113 §8.7) whatever its method, a
/// lost connection or stream when its method is idempotent.
fn may_resend(head: &Head, error: &hyper::Error) -> bool {
    if error.is_user() {
        return false;
    }
    let h2 = h2_error(error);
    if h2.is_some_and(|h| h.reason() == Some(h2::Reason::REFUSED_STREAM) && h.is_remote()) {
        return true;
    }
    // hyper turns an HTTP/2 I/O error (the peer's socket closed or reset) into its own I/O
    // kind, with the `io::Error` as the source.
    let lost = lost(error) || h2.is_some_and(|h| h.is_io() || h.is_go_away());
    lost && idempotent(head.method())
}

/// The HTTP/2 error under a hyper error, if any.
fn h2_error(e: &hyper::Error) -> Option<&h2::Error> {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<h2::Error>() {
            return Some(h);
        }
        source = s.source();
    }
    None
}

/// The attempt when no client configuration can be made for the endpoint's identity (neither
/// way, HTTP/2 or HTTP/1.1, can verify it): the request ends with a TLS error, the endpoint
/// not blamed.
fn no_client_config(
    service: &ServiceEntry,
    e: impl std::fmt::Display,
    sent: &mut Finisher<'_>,
) -> Attempt {
    let target = format!("{}.{}", service.name, service.namespace);
    let reason = e.to_string();
    sent.finish(Outcome::Neutral);
    Attempt::Done(Err(ProxyError::Tls { target, reason }))
}
