//! Outbound: the app's plain HTTP (HTTP/1.1 or h2c) on 127.0.0.1:15001 is carried to the
//! destination's sidecar over mutual TLS. The destination is the registry `Service` that the
//! request's Host (or absolute-form URI) names; a Host outside the registry is answered here
//! and nothing leaves the pod in plaintext.
//!
//! With interception (`trustmesh-proxy init`), a connection iptables redirected here also has
//! its original destination, which routes a request whose Host names no service, and
//! `outbound_policy` decides for addresses outside the registry ([`crate::intercept`]).
//!
//! Data path: accept → original destination → detect HTTP version → route (Host, then
//! original destination) → mTLS h2 pool → forward.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::{header, uri, HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::Watcher;
use tokio::net::{TcpListener, TcpStream};

use crate::accept::accept_loop;
use crate::access_log::{self, Entry};
use crate::body::{self, Body};
use crate::error::ProxyError;
use crate::headers::{self, ORIG_PROTO, PEER_IDENTITY};
use crate::intercept::{self, Route};
use crate::limits;
use crate::metrics::ConnGuard;
use crate::passthrough::Passthrough;
use crate::pool::Pool;
use crate::state::Shared;

/// The outbound side: its pool and a round-robin counter over endpoints.
pub struct Outbound {
    shared: Arc<Shared>,
    pool: Pool,
    next: AtomicUsize,
    passthrough: Passthrough,
    /// `--max-connections` open at once on this listener.
    conns: Arc<tokio::sync::Semaphore>,
}

impl Outbound {
    /// Creates the outbound side.
    pub fn new(shared: Arc<Shared>) -> Arc<Self> {
        Arc::new(Self {
            pool: Pool::new(shared.metrics.upstream_connections.clone()),
            next: AtomicUsize::new(0),
            passthrough: Passthrough::new(shared.args.connect_timeout),
            conns: Arc::new(tokio::sync::Semaphore::new(
                shared.args.max_connections as usize,
            )),
            shared,
        })
    }

    /// Serves the app's connections until the drain begins.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let (shared, conns) = (self.shared.clone(), self.conns.clone());
        accept_loop(
            listener,
            shared,
            conns,
            "outbound",
            move |tcp, addr, watcher| self.clone().connection(tcp, addr, watcher),
        )
        .await;
    }

    /// One connection from the app: opaque TCP when iptables redirected something that is not
    /// HTTP, else HTTP/1.1 or h2c with the limits of `--header-timeout` and `--idle-timeout`.
    async fn connection(self: Arc<Self>, tcp: TcpStream, addr: SocketAddr, watcher: Watcher) {
        let this = self;
        let _guard = ConnGuard::new(&this.shared.metrics, "outbound");
        let orig = crate::original_dst::redirected(&tcp);
        if let Some(orig) = orig {
            if !intercept::sniff_http(&tcp).await {
                return intercept::opaque(&this.shared, tcp, orig).await;
            }
        }
        let shared = this.shared.clone();
        let activity = limits::Activity::new();
        let act = activity.clone();
        let svc = service_fn(move |req| {
            let this = this.clone();
            let in_flight = act.request();
            async move {
                let resp = this.handle(req, orig).await;
                drop(in_flight);
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let builder = limits::builder(&shared.args);
        let io = TokioIo::new(limits::Tracked::with_head_timeout(
            tcp,
            activity.clone(),
            shared.args.header_timeout,
        ));
        let conn = watcher.watch(builder.serve_connection(io, svc));
        tokio::select! {
            r = conn => if let Err(e) = r {
                limits::count_error(&shared.metrics, "outbound", e.as_ref());
                tracing::debug!(client.addr = %addr, "connection ended: {e}");
            },
            () = activity.idle(shared.args.idle_timeout) => {
                limits::exceeded(&shared.metrics, "idle_timeout", "outbound");
            }
        }
        if activity.head_timed_out() {
            limits::exceeded(&shared.metrics, "header_timeout", "outbound");
        }
    }

    async fn handle(&self, mut req: Request<Incoming>, orig: Option<SocketAddr>) -> Response<Body> {
        let start = Instant::now();
        let started_trace = crate::trace::ensure(req.headers_mut(), crate::otlp::enabled());
        let detail = Entry::wanted(self.shared.args.access_log);
        let mut log = Entry::from_request(req.method(), req.uri(), req.headers(), detail);
        if crate::otlp::enabled() {
            // A trace started here: this hop is its root, and its id is the parent the callee sees.
            log.span_id = match started_trace {
                Some(id) => {
                    log.parent_id = None;
                    Some(id)
                }
                None => crate::trace::new_span_id(),
            };
        }
        let started = std::time::SystemTime::now();
        if detail {
            log.source = Some(self.shared.identity.as_str().to_string());
        }
        if let Some(pq) = req.uri().path_and_query() {
            log.set_raw_path(pq.as_str());
        }
        let resp = match self.forward(req, orig, &mut log).await {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, ProxyError::OutsideMesh { .. }) {
                    log.decision = Some("deny");
                }
                e.into_response()
            }
        };
        let elapsed = start.elapsed();
        let m = &self.shared.metrics;
        m.duration_outbound.observe(elapsed.as_secs_f64());
        m.requests
            .with_label_values(&[
                "outbound",
                resp.status().as_str(),
                log.destination.as_deref().unwrap_or("-"),
                "-",
            ])
            .inc();
        access_log::write(
            self.shared.args.access_log,
            "outbound",
            &log,
            resp.status(),
            resp.headers(),
            elapsed,
        );
        crate::otlp::record("outbound", &log, resp.status(), started, elapsed);
        resp
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        orig: Option<SocketAddr>,
        log: &mut Entry,
    ) -> Result<Response<Body>, ProxyError> {
        let mesh = self
            .shared
            .mesh
            .load_full()
            .ok_or(ProxyError::NotReady("no policy snapshot yet"))?;
        if req.method() == http::Method::CONNECT {
            return Err(ProxyError::BadRequest(
                "CONNECT is not supported through the mesh".to_string(),
            ));
        }
        let host = request_host(&req);
        let route = intercept::decide(
            &self.shared,
            &mesh.snapshot.registry,
            host.as_deref(),
            orig,
            mesh.snapshot.mesh.outbound_policy,
            self.next.fetch_add(1, Ordering::Relaxed),
        )?;
        let (service, endpoint) = match route {
            Route::Mesh { service, dial } => (service, dial),
            Route::Passthrough(addr) => {
                log.decision = Some("passthrough");
                let timeout = self.shared.args.upstream_timeout;
                return self.passthrough.forward(req, addr, timeout).await;
            }
        };
        // A redirected request without Host is named by the address the app dialled.
        let host = host
            .or_else(|| orig.map(|o| o.to_string()))
            .ok_or(ProxyError::NoHost)?;
        log.destination = Some(service.identity.as_str().to_string());
        let endpoint = &endpoint;
        // How errors name the destination; made only when one happens.
        let target_addr = || format!("{}.{} ({endpoint})", service.name, service.namespace);
        let config = mesh
            .client_config(&self.shared.resolver, &service.identity)
            .map_err(|e| ProxyError::Tls {
                target: format!("{}.{}", service.name, service.namespace),
                reason: e.to_string(),
            })?;
        let mut sender = self
            .pool
            .get(
                endpoint,
                service,
                config,
                self.shared.args.connect_timeout,
                &target_addr,
            )
            .await?;
        let (upstream, stalled) = to_mesh_request(req, &host, self.shared.args.body_timeout)?;
        let timeout = self.shared.args.upstream_timeout;
        let resp = tokio::time::timeout(timeout, async {
            sender.ready().await?;
            sender.send_request(upstream).await
        })
        .await
        .map_err(|_| ProxyError::Timeout {
            target: target_addr(),
            secs: timeout.as_secs(),
        })?
        .map_err(|e| {
            if stalled.get() {
                limits::exceeded(&self.shared.metrics, "body_timeout", "outbound");
                return ProxyError::BodyTimeout {
                    secs: self.shared.args.body_timeout.as_secs(),
                };
            }
            ProxyError::Upstream {
                target: target_addr(),
                reason: e.to_string(),
            }
        })?;
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body::stream(body)))
    }
}

/// The host the app asked for: the absolute-form URI's authority, else the Host header.
fn request_host<B>(req: &Request<B>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

/// Rewrites the app's request for the hop between sidecars: HTTP/2 with `:authority` set to
/// the host the app named, hop-by-hop headers gone, the original version recorded.
fn to_mesh_request(
    req: Request<Incoming>,
    host: &str,
    body_timeout: std::time::Duration,
) -> Result<(Request<Body>, body::Stalled), ProxyError> {
    let (mut parts, body) = req.into_parts();
    let orig_version = parts.version;
    headers::strip_hop_by_hop(&mut parts.headers);
    // Only an inbound sidecar may vouch for a caller; whatever the app wrote is dropped.
    parts.headers.remove(PEER_IDENTITY);
    parts.headers.remove(ORIG_PROTO);
    parts.headers.remove(header::HOST);
    if orig_version != Version::HTTP_2 {
        parts
            .headers
            .insert(ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| uri::PathAndQuery::from_static("/"));
    parts.uri = Uri::builder()
        .scheme("https")
        .authority(host)
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| ProxyError::BadRequest(format!("cannot rebuild the request URI: {e}")))?;
    parts.version = Version::HTTP_2;
    let (body, stalled) = body::request(body, body_timeout);
    Ok((Request::from_parts(parts, body), stalled))
}
