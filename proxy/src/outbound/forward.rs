//! The per-request layers of the outbound stack: observe → refuse what the mesh never
//! carries (`CONNECT`, a malformed head) → route ([`super::route`]: Host, then original
//! destination) → passthrough, or rewrite for the hop between sidecars → (a service with
//! `HTTPRoute`s: its rules, [`super::http_route`]) → (`Expect: 100-continue`: the preflight,
//! [`crate::layers::expect`]) → send to the service ([`Outbound::send_to_service`]: balance,
//! failover, the mTLS h2 pool) → forward.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{header, uri, HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::hop::Hop;
use super::route::{self, Route};
use super::Outbound;
use crate::layers::body::{self, Body};
use crate::layers::headers::{self, ORIG_PROTO, PEER_IDENTITY};
use crate::layers::rescue::{self, ProxyError};
use crate::layers::{deadline, expect};
use crate::observe::access_log::Entry;
use crate::observe::request::Observe;
use crate::observe::series::Series;
use crate::state::MeshView;

impl Outbound {
    /// One request of the app: observed (in `series`, its connection's), and answered by the
    /// destination or by [`rescue::respond`]. It owns what it holds, so that it is the
    /// connection's request future itself, not wrapped in another (each level copies it).
    pub(crate) async fn handle(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        orig: Option<SocketAddr>,
        series: Arc<Series>,
    ) -> Response<Body> {
        let shared = &self.shared;
        // The app's own fields, counted before the sidecar adds trace context.
        let fields = req.headers().len();
        let mut obs = Observe::outbound(&mut req, self.config.access_log, &shared.identity);
        let grpc = rescue::is_grpc(req.headers());
        let result = match headers::check_count(fields, self.config.serve.max_headers) {
            Ok(()) => self.forward(req, orig, &mut obs.log).await,
            Err(e) => {
                crate::layers::limits::exceeded(&shared.metrics, "header_count", "outbound");
                Err(e)
            }
        };
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, ProxyError::OutsideMesh { .. }) {
                    obs.log.decision = Some("deny");
                }
                rescue::respond(e, grpc)
            }
        };
        if let Some(by) = resp.extensions().get::<super::balance::ServedBy>() {
            // Nearly always the service's own identity, set already.
            if obs.log.destination.as_deref() != Some(by.0.as_str()) {
                obs.log.destination = Some(crate::observe::access_log::shared(by.0.as_str()));
            }
        }
        obs.finish_in(&shared.metrics, &series, &resp);
        resp
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        orig: Option<SocketAddr>,
        log: &mut Entry,
    ) -> Result<Response<Body>, ProxyError> {
        // WebSocket and other upgrades: an extended-CONNECT stream of their own (`upgrade`).
        // The less common ways (upgrades, passthrough, routes, the `100-continue` preflight)
        // are boxed: inline, their futures would make every request's future larger, and it
        // is moved (copied) whole when hyper takes it and at each level that awaits it.
        if let Some(up) = crate::layers::upgrade::Upgrade::of(&req) {
            return Box::pin(self.upgrade(req, up, orig, log)).await;
        }
        let mesh = self
            .shared
            .mesh
            .load_full()
            .ok_or(ProxyError::NotReady("no policy snapshot yet"))?;
        // What the head says is read in `next`, no await in it: its temporaries (the head's
        // parts, the request before its rewrite) are then no part of this future.
        let hop = match self.next(req, orig, &mesh, log)? {
            Next::Hop(hop) => hop,
            Next::Passthrough { req, addr, timeout } => {
                return Box::pin(self.passthrough.forward(req, addr, timeout)).await;
            }
            Next::Routed {
                service,
                req,
                host,
                timeout,
            } => {
                return Box::pin(self.routed(&mesh, service, req, &host, orig, timeout, log)).await;
            }
        };
        if hop.preflight {
            return Box::pin(self.preflighted(hop)).await;
        }
        // Not through `send`: one level less of future that holds (and copies) the next.
        let sent = match hop.dial {
            None => {
                self.send_to_service(hop.service, hop.upstream, hop.timeout)
                    .await
            }
            Some(dial) => {
                self.send_to_endpoint(hop.service, &dial, hop.upstream, hop.timeout)
                    .await
            }
        };
        self.answer(sent, &hop.stalled)
    }

    /// Reads the head (checks, deadline, route) and, for a mesh service without routes,
    /// rewrites the request for the hop between sidecars.
    fn next<'m>(
        &self,
        req: Request<Incoming>,
        orig: Option<SocketAddr>,
        mesh: &'m MeshView,
        log: &mut Entry,
    ) -> Result<Next<'m>, ProxyError> {
        if req.method() == http::Method::CONNECT {
            return Err(ProxyError::BadRequest(
                "CONNECT is not supported through the mesh".to_string(),
            ));
        }
        // The same head checks as inbound, so the app hears why here rather than from the
        // callee (lower-case method, two Host headers, userinfo: 400).
        let (parts, body) = req.into_parts();
        headers::check_head(&parts)?;
        // A gRPC caller's `grpc-timeout` is its deadline, in place of --upstream-timeout.
        let timeout = deadline::for_request(
            &parts.headers,
            self.config.upstream_timeout,
            self.config.max_grpc_timeout,
        );
        let req = Request::from_parts(parts, body);
        let host = request_host(req.uri(), req.headers());
        let route = route::decide(
            &self.shared,
            &mesh.snapshot.registry,
            host.as_deref(),
            orig,
            mesh.snapshot.mesh.outbound_policy,
        )?;
        let (service, dial) = match route {
            Route::Service(service) => (service, None),
            Route::Mesh { service, dial } => (service, Some(dial)),
            Route::Passthrough(addr) => {
                log.decision = Some("passthrough");
                return Ok(Next::Passthrough { req, addr, timeout });
            }
        };
        // A redirected request without Host is named by the address the app dialled.
        let host = host
            .or_else(|| orig.map(|o| o.to_string()))
            .ok_or(ProxyError::NoHost)?;
        log.destination = Some(crate::observe::access_log::shared(
            service.identity.as_str(),
        ));
        if Self::has_routes(mesh, service) {
            return Ok(Next::Routed {
                service,
                req,
                host,
                timeout,
            });
        }
        let hop = super::hop::choose(self.config.hop_http1, &req, service, &host, orig);
        let (upstream, stalled) = to_mesh_request(req, &host, hop, self.config.body_timeout)?;
        Ok(Next::Hop(Rewritten {
            service,
            dial,
            preflight: expect::wants_continue(upstream.headers(), upstream.body()),
            upstream,
            stalled,
            timeout,
        }))
    }

    /// The exchange of a request that wants `100 Continue`: the app's body is not polled
    /// (so hyper sends no `100 Continue`) until the destination's sidecar has authorized the
    /// head (see `layers::expect`).
    async fn preflighted(&self, hop: Rewritten<'_>) -> Result<Response<Body>, ProxyError> {
        let (preflight, answered) = expect::preflight(&hop.upstream);
        let answer = self
            .send(hop.service, hop.dial.as_deref(), preflight, hop.timeout)
            .await?;
        drop(answered);
        if !expect::accepted(&answer) {
            let (mut parts, body) = answer.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            return Ok(Response::from_parts(parts, body::stream(body)));
        }
        let sent = self
            .send(hop.service, hop.dial.as_deref(), hop.upstream, hop.timeout)
            .await;
        self.answer(sent, &hop.stalled)
    }

    /// The destination's answer for the app, hop-by-hop fields gone; a failure while the
    /// app's body had stalled is that stall's (`408`).
    fn answer(
        &self,
        sent: Result<Response<Incoming>, ProxyError>,
        stalled: &body::Stalled,
    ) -> Result<Response<Body>, ProxyError> {
        let resp = sent.map_err(|e| {
            if stalled.get() && matches!(e, ProxyError::Upstream { .. }) {
                crate::layers::limits::exceeded(&self.shared.metrics, "body_timeout", "outbound");
                return ProxyError::BodyTimeout {
                    secs: self.config.body_timeout.as_secs(),
                };
            }
            e
        })?;
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body::stream(body)))
    }
}

/// Where a request goes once its head is read ([`Outbound::next`]).
enum Next<'m> {
    /// To a mesh service without routes, rewritten for the hop.
    Hop(Rewritten<'m>),
    /// In plaintext to the original destination (`outbound_policy: passthrough`).
    Passthrough {
        req: Request<Incoming>,
        addr: SocketAddr,
        timeout: std::time::Duration,
    },
    /// To a mesh service with `HTTPRoute`s: its rules decide.
    Routed {
        service: &'m trustmesh_policies::ServiceEntry,
        req: Request<Incoming>,
        host: String,
        timeout: std::time::Duration,
    },
}

/// A request rewritten for the hop between sidecars, and where it goes.
struct Rewritten<'m> {
    service: &'m trustmesh_policies::ServiceEntry,
    /// The endpoint the app dialled itself (an original destination), else balanced.
    dial: Option<String>,
    upstream: Request<Body>,
    stalled: body::Stalled,
    timeout: std::time::Duration,
    /// `Expect: 100-continue` with a body: the head goes first ([`Outbound::preflighted`]).
    preflight: bool,
}

impl Outbound {
    /// One exchange with `service`: balanced over its endpoints, or to `dial` when the app
    /// dialled one endpoint itself (an original destination).
    async fn send(
        &self,
        service: &trustmesh_policies::ServiceEntry,
        dial: Option<&str>,
        req: Request<Body>,
        timeout: std::time::Duration,
    ) -> Result<Response<Incoming>, ProxyError> {
        match dial {
            None => self.send_to_service(service, req, timeout).await,
            Some(dial) => self.send_to_endpoint(service, dial, req, timeout).await,
        }
    }
}

/// The host the app asked for: the absolute-form URI's authority, else the Host header.
pub(super) fn request_host(uri: &Uri, headers: &http::HeaderMap) -> Option<String> {
    if let Some(a) = uri.authority() {
        return Some(a.as_str().to_string());
    }
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

/// Rewrites the app's request for the hop between sidecars, hop-by-hop headers gone. HTTP/2
/// ([`Hop::H2`]): `:authority` set to the host the app named and the original version
/// recorded in `x-trustmesh-orig-proto`; HTTP/1.1 ([`Hop::Http1`]): origin-form with that
/// host as `Host`, as the app sent it (the hop's version is the caller's).
pub(super) fn to_mesh_request(
    req: Request<Incoming>,
    host: &str,
    hop: Hop,
    body_timeout: std::time::Duration,
) -> Result<(Request<Body>, body::Stalled), ProxyError> {
    let (mut parts, body) = req.into_parts();
    let orig_version = parts.version;
    headers::strip_hop_by_hop(&mut parts.headers);
    // Only an inbound sidecar may vouch for a caller; whatever the app wrote is dropped.
    headers::strip_ours(
        &mut parts.headers,
        &[PEER_IDENTITY, ORIG_PROTO, expect::EXPECT_PREFLIGHT],
    );
    match hop {
        Hop::H2 => {
            parts.headers.remove(header::HOST);
            if orig_version != Version::HTTP_2 {
                parts
                    .headers
                    .insert(ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
            }
            parts.uri = hop_uri(&parts.uri, host)?;
            parts.version = Version::HTTP_2;
        }
        Hop::Http1 => {
            // Most often the app's own `Host` already (one only: `check_head`), kept as it is.
            if parts.headers.get(header::HOST).map(HeaderValue::as_bytes) != Some(host.as_bytes()) {
                let host = HeaderValue::from_str(host)
                    .map_err(|_| ProxyError::BadRequest(format!("{host:?} is not a valid Host")))?;
                parts.headers.insert(header::HOST, host);
            }
            if parts.uri.authority().is_some() {
                let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
                parts.uri = Uri::try_from(path).map_err(|e| {
                    ProxyError::BadRequest(format!("cannot rebuild the request URI: {e}"))
                })?;
            }
            parts.version = Version::HTTP_11;
        }
    }
    let (body, stalled) = body::request(body, body_timeout);
    Ok((Request::from_parts(parts, body), stalled))
}

/// The URI of a request on the hop between sidecars: `https://HOST` (the host the app named)
/// with the app's own path and query.
pub(super) fn hop_uri(app_uri: &Uri, host: &str) -> Result<Uri, ProxyError> {
    let path_and_query = app_uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme("https")
        .authority(host)
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| ProxyError::BadRequest(format!("cannot rebuild the request URI: {e}")))
}
