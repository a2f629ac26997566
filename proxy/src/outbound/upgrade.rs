//! The outbound side of an upgrade ([`crate::layers::upgrade`]): the app's HTTP/1.1 `Upgrade`
//! or h2c extended CONNECT is routed like any request, then sent as an extended-CONNECT stream
//! on the pooled mTLS h2 connection to the destination's sidecar (`:protocol` the upgrade's
//! protocol, the app's own path and headers, `x-trustmesh-orig-proto` for an HTTP/1.1 app), or
//! for a passthrough destination as HTTP/1.1 on a connection of its own. The destination's
//! refusal (`403`, `426`, ...) reaches the app as it was; its `200` becomes the answer the app
//! asked for, and the tunnel ([`tunnel`]) carries the rest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::{header, HeaderValue, Request, Response};
use hyper::body::Incoming;

use super::route::{self, Route};
use super::Outbound;
use crate::layers::body::{self, Body};
use crate::layers::headers::{self, ORIG_PROTO, PEER_IDENTITY};
use crate::layers::limits::Activity;
use crate::layers::rescue::ProxyError;
use crate::layers::upgrade::tunnel::Tunnel;
use crate::layers::upgrade::{dial, Form, Upgrade};
use crate::observe::access_log::Entry;

impl Outbound {
    /// Carries the app's upgrade request `req` (asking for `up`) to its destination and, once
    /// that switched, tunnels the connection.
    pub(super) async fn upgrade(
        &self,
        mut req: Request<Incoming>,
        up: Upgrade,
        orig: Option<SocketAddr>,
        log: &mut Entry,
    ) -> Result<Response<Body>, ProxyError> {
        let start = Instant::now();
        let mesh = self
            .shared
            .mesh
            .load_full()
            .ok_or(ProxyError::NotReady("no policy snapshot yet"))?;
        let caller = hyper::upgrade::on(&mut req);
        let (mut parts, _) = req.into_parts();
        headers::check_head(&parts)?;
        let busy = parts.extensions.remove::<Arc<Activity>>();
        let key = parts.headers.get(header::SEC_WEBSOCKET_KEY).cloned();
        let host = super::forward::request_host(&parts.uri, &parts.headers);
        let route = route::decide(
            &self.shared,
            &mesh.snapshot.registry,
            host.as_deref(),
            orig,
            mesh.snapshot.mesh.outbound_policy,
        )?;
        let timeout = self.config.upstream_timeout;
        let (resp, callee_form) = match route {
            Route::Passthrough(addr) => {
                log.decision = Some("passthrough");
                if !parts.headers.contains_key(header::HOST) {
                    if let Some(v) = host.as_deref().and_then(|h| HeaderValue::from_str(h).ok()) {
                        parts.headers.insert(header::HOST, v);
                    }
                }
                headers::strip_hop_by_hop(&mut parts.headers);
                up.to_http1(&mut parts);
                let req = Request::from_parts(parts, body::full(bytes::Bytes::new()));
                let target = format!("{addr} (outside the mesh)");
                let addr = addr.to_string();
                let connect = self.config.connect_timeout;
                let resp = dial::send(&addr, req, &target, connect, timeout).await?;
                (resp, Form::Http1)
            }
            Route::Service(service) | Route::Mesh { service, .. } => {
                let dial = match &route {
                    Route::Mesh { dial, .. } => Some(dial.clone()),
                    _ => None,
                };
                let host = host
                    .or_else(|| orig.map(|o| o.to_string()))
                    .ok_or(ProxyError::NoHost)?;
                log.destination = Some(crate::observe::access_log::shared(
                    service.identity.as_str(),
                ));
                let hop = to_hop(parts, &up, &host)?;
                let resp = match dial {
                    None => self.send_to_service(service, hop, timeout).await?,
                    Some(d) => self.send_to_endpoint(service, &d, hop, timeout).await?,
                };
                (resp, Form::Connect)
            }
        };
        drop(mesh);
        // Refused (403, 426, ...): the app hears it as it was said.
        Ok(
            up.complete(callee_form, resp, key.as_ref(), caller, |status| {
                Tunnel::new(
                    &self.shared.metrics,
                    "outbound",
                    self.config.serve.idle_timeout,
                    busy,
                    self.config.access_log,
                    log,
                    &up.protocol,
                    status,
                    start,
                )
            }),
        )
    }
}

/// The extended CONNECT for the hop between sidecars: `:authority` the host the app named,
/// the app's path and headers (hop-by-hop fields gone), what the app spoke recorded, nothing
/// the app wrote in trustmesh's own headers.
fn to_hop(mut parts: Parts, up: &Upgrade, host: &str) -> Result<Request<Body>, ProxyError> {
    headers::strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(PEER_IDENTITY);
    parts.headers.remove(ORIG_PROTO);
    if up.form == Form::Http1 {
        parts
            .headers
            .insert(ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
    }
    parts.uri = super::forward::hop_uri(&parts.uri, host)?;
    up.to_connect(&mut parts);
    Ok(Request::from_parts(parts, body::full(bytes::Bytes::new())))
}
