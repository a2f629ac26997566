//! The per-request layers of the inbound stack, after TLS and protocol detection: observe →
//! refuse a blocked caller → check the head → strip, set identity → the port → authorize →
//! forward to the app (an `Expect: 100-continue` preflight is answered once authorized,
//! [`crate::layers::expect`]).
//!
//! Before authorization the request is made what the app will receive: a malformed head
//! (lower-case method, two `Host`s, userinfo) gets 400 and `CONNECT` 405; hop-by-hop fields
//! and `x-trustmesh-orig-proto` are removed and `x-trustmesh-peer-identity` set to the
//! verified identity, so a policy on a header sees exactly the value the app gets. Request
//! trailers lose every `x-trustmesh-*` and hop-by-hop field ([`crate::layers::body::request`]).
//! An upgrade (extended CONNECT from the caller's sidecar, or HTTP/1.1 `Upgrade`) is judged as
//! the `GET` with `Connection: upgrade` and `Upgrade` it stands for, then goes to
//! [`super::upgrade`] in place of the plain forward.

use std::sync::Arc;

use http::{header, HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;

use super::authorize::{authorize, Peer};
use super::{ConnInfo, Inbound};
use crate::app_ports::{app_speaks_http1, Carrier};
use crate::layers::body::{self, Body};
use crate::layers::headers::{self, ORIG_PROTO, PEER_IDENTITY};
use crate::layers::rescue::{self, ProxyError};
use crate::layers::upgrade::Upgrade;
use crate::layers::{deadline, expect, limits, upstream};
use crate::observe::access_log::Entry;
use crate::observe::request::Observe;

impl Inbound {
    /// One request of an mTLS connection: observed, and answered by the app or by
    /// [`rescue::respond`]. It owns what it holds, so that it is the connection's request
    /// future itself, not wrapped in another (each level copies it).
    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: Arc<ConnInfo>,
    ) -> Response<Body> {
        let shared = &self.shared;
        let format = self.config.access_log;
        let mut obs =
            Observe::inbound_from(&req, format, &conn.peer, &conn.peer_label, &shared.identity);
        let grpc = rescue::is_grpc(req.headers());
        let resp = match self.forward(req, &conn, &mut obs.log).await {
            Ok(r) => r,
            Err(e) => rescue::respond(e, grpc),
        };
        // An accepted preflight is logged with the request that follows it, not on its own.
        if !expect::accepted(&resp) {
            obs.finish_in(&shared.metrics, &conn.series, &resp);
        }
        resp
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        conn: &ConnInfo,
        log: &mut Entry,
    ) -> Result<Response<Body>, ProxyError> {
        let peer = &conn.peer;
        let (mut parts, body) = req.into_parts();
        let mesh = self
            .shared
            .mesh
            .load_full()
            .ok_or(ProxyError::NotReady("no policy snapshot yet"))?;
        if crate::revocation::refuses(&self.shared, &mesh, peer, "request") {
            return Err(ProxyError::Denied);
        }
        // An upgrade is authorized as the HTTP/1.1 `GET` it stands for, in either form.
        let upgrade = Upgrade::of_head(
            &parts.method,
            parts.version,
            &parts.headers,
            &parts.extensions,
        );
        if upgrade.is_some() {
            parts.method = http::Method::GET;
            if log.detail {
                log.method = http::Method::GET;
            }
        }
        if let Err(e) = check_head(&parts) {
            self.refused(log);
            return Err(e);
        }
        if let Err(e) = headers::check_count(parts.headers.len(), self.config.serve.max_headers) {
            limits::exceeded(&self.shared.metrics, "header_count", "inbound");
            return Err(e);
        }
        // What the policy sees is what the app gets: the caller's own version of our headers
        // and the hop-by-hop fields are gone, and the verified identity is in place.
        // One look at the names first: a request over the HTTP/1.1 hop carries neither.
        let (orig_proto, preflight) = if headers::has_ours(&parts.headers) {
            let orig_proto = parts.headers.remove(ORIG_PROTO).is_some();
            (
                orig_proto,
                parts.headers.remove(expect::EXPECT_PREFLIGHT).is_some(),
            )
        } else {
            (false, false)
        };
        // A caller that reached us over HTTP/1.1 directly spoke HTTP/1.1.
        let caller_http1 = orig_proto || parts.version != Version::HTTP_2;
        // An `Expect: 100-continue` preflight is authorized as its request, never forwarded.
        headers::strip_hop_by_hop(&mut parts.headers);
        if let Some(up) = &upgrade {
            up.set_http1_fields(&mut parts.headers);
        }
        // Replaces every header of that name that arrived: only we can vouch for the caller.
        parts
            .headers
            .insert(PEER_IDENTITY, conn.peer_header.clone());
        // The port the request reaches is the port authorized, never one written in Host.
        let port = match conn.original {
            None => self.shared.ports.app(),
            Some(original) => match mesh.ports.check(Carrier::RedirectedHttp, original) {
                Ok(port) => port,
                Err(refusal) => {
                    tracing::info!(client.id = %peer, port = original, decision = "deny", "request refused: {refusal}");
                    self.shared
                        .metrics
                        .authz_decisions
                        .with_label_values(&["deny", "-"])
                        .inc();
                    log.decision = Some("deny");
                    return Err(ProxyError::Denied);
                }
            },
        };
        let authz_peer = Peer {
            id: peer,
            ip: conn.addr.ip(),
            sni: conn.sni.as_deref(),
        };
        let metrics = &self.shared.metrics;
        let path = authorize(&mesh.policies, &parts, &authz_peer, port, metrics, log)?;
        // The app is spoken to as its registry entry declares the port reached.
        let app_http1 = app_speaks_http1(mesh.ports.protocol(port), caller_http1);
        drop(mesh);
        if preflight {
            return Ok(expect::accept());
        }
        // From `Host`, a shared copy of its bytes (no allocation); from `:authority`, the one
        // copy that becomes `Host` for an HTTP/1.1 app.
        let (authority, from_host) = match parts.uri.authority() {
            Some(a) => (HeaderValue::from_str(a.as_str()).ok(), false),
            None => (parts.headers.get(header::HOST).cloned(), true),
        };
        let authority_str = authority.as_ref().and_then(|a| a.to_str().ok());
        // The app gets exactly the path that was authorized, and the authority the caller
        // named: as `Host` over HTTP/1.1 (from `:authority` when the caller spoke h2), as
        // `:authority` over h2c (from `Host` when the caller spoke HTTP/1.1).
        let app_authority = |a: Option<&str>| {
            let uri = Uri::builder().scheme(http::uri::Scheme::HTTP);
            let uri = match (a, &conn.app_authority) {
                (None, Some(app)) => uri.authority(app.clone()),
                (a, _) => uri.authority(a.unwrap_or(conn.app.as_str())),
            };
            uri.path_and_query(path.path_and_query()).build()
        };
        let uri = if app_http1 {
            parts.version = Version::HTTP_11;
            // A `Host` the caller sent stays as it is; with no authority at all, the app's
            // address.
            if let Some(a) = authority.as_ref().filter(|_| !from_host) {
                parts.headers.insert(header::HOST, a.clone());
            }
            if !parts.headers.contains_key(header::HOST) {
                if let Some(host) = upstream::app_host(&conn.app) {
                    parts.headers.insert(header::HOST, host);
                }
            }
            // Origin form (RFC 9112 §3.2.1): the connection is to the app already.
            Uri::builder().path_and_query(path.path_and_query()).build()
        } else {
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
            app_authority(authority_str).or_else(|_| app_authority(None))
        };
        parts.uri = uri
            .map_err(|e| ProxyError::BadRequest(format!("cannot rebuild the request URI: {e}")))?;
        if let Some(up) = upgrade {
            return self.upgrade(parts, up, conn, log).await;
        }
        let body_timeout = self.config.body_timeout;
        let (body, stalled) = body::request(body, body_timeout);
        // A gRPC caller's `grpc-timeout` is its deadline, in place of --upstream-timeout.
        let timeout = deadline::for_request(
            &parts.headers,
            self.config.upstream_timeout,
            self.config.max_grpc_timeout,
        );
        let req = Request::from_parts(parts, body);
        let target = &conn.app_target;
        let sent = if app_http1 {
            upstream::send_http1(&self.app.http1, &conn.app, req, target, timeout).await
        } else {
            upstream::send_h2c(&self.app.h2c, &conn.app, req, target, timeout).await
        };
        sent.map_err(|e| match e {
            ProxyError::Timeout { .. } => e,
            // A stalled request body is why the exchange failed: the client's fault.
            _ if stalled.get() => {
                limits::exceeded(metrics, "body_timeout", "inbound");
                ProxyError::BodyTimeout {
                    secs: body_timeout.as_secs(),
                }
            }
            _ => e,
        })
    }

    /// Counts and logs a request refused before authorization (its head is malformed).
    fn refused(&self, log: &mut Entry) {
        self.shared
            .metrics
            .authz_decisions
            .with_label_values(&["bad_request", "-"])
            .inc();
        log.decision = Some("bad_request");
    }
}

/// Refuses what no app behind the mesh is sent: `CONNECT` (405: the inbound sidecar
/// tunnels nothing), then what [`headers::check_head`] refuses (400).
fn check_head(parts: &http::request::Parts) -> Result<(), ProxyError> {
    if parts.method == http::Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed("CONNECT"));
    }
    headers::check_head(parts)
}
