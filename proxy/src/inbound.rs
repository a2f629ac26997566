//! Inbound: mutual TLS on 0.0.0.0:15006. A client without a certificate that chains to the
//! trust bundle never gets past the handshake. Each request then carries the caller's verified
//! SPIFFE ID to the app in `x-trustmesh-peer-identity` (any header of that name that arrived
//! is replaced) and goes to the app in the HTTP version the calling app used.
//!
//! Before authorization the request is made what the app will receive: a malformed head
//! (lower-case method, two `Host`s, userinfo) gets 400 and `CONNECT` 405; hop-by-hop fields
//! and `x-trustmesh-orig-proto` are removed and `x-trustmesh-peer-identity` set to the
//! verified identity, so a policy on a header sees exactly the value the app gets. Request
//! trailers lose every `x-trustmesh-*` and hop-by-hop field ([`crate::body::request`]).
//!
//! Data path: accept → TLS (client cert required) → peer identity (and its connection
//! share) → HTTP → check the head → strip, set identity → authorize → forward to app.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpListener;
use trustmesh_certs::SpiffeId;

use crate::accept::accept_loop;
use crate::access_log::{self, Entry};
use crate::app_ports::Carrier;
use crate::authorize::{authorize, Peer};
use crate::body::{self, Body};
use crate::drive;
use crate::error::ProxyError;
use crate::headers::{self, ORIG_PROTO, PEER_IDENTITY};
use crate::limits;
use crate::metrics::ConnGuard;
use crate::peer_cap::PeerCap;
use crate::state::Shared;
use crate::upstream::{self, PlainClient};

/// The inbound side: clients to the app over HTTP/1.1 and h2c.
pub struct Inbound {
    shared: Arc<Shared>,
    http1: PlainClient,
    h2c: PlainClient,
    app_authority: String,
    /// `--max-connections` open at once on this listener.
    conns: Arc<tokio::sync::Semaphore>,
    /// `--max-connections-per-identity` of them per peer identity.
    peers: Arc<PeerCap>,
}

impl Inbound {
    /// Creates the inbound side.
    pub fn new(shared: Arc<Shared>) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(shared.args.connect_timeout));
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector.clone());
        let h2c = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .http2_adaptive_window(true)
            .build(connector);
        Arc::new(Self {
            app_authority: shared.args.app.to_string(),
            conns: Arc::new(tokio::sync::Semaphore::new(
                shared.args.max_connections as usize,
            )),
            peers: PeerCap::new(shared.args.connections_per_identity()),
            shared,
            http1,
            h2c,
        })
    }

    /// Serves mTLS connections until the drain begins.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let (shared, conns) = (self.shared.clone(), self.conns.clone());
        accept_loop(
            listener,
            shared,
            conns,
            "inbound",
            move |tcp, addr, watcher| self.clone().connection(tcp, addr, watcher),
        )
        .await;
    }

    async fn connection(
        self: Arc<Self>,
        tcp: tokio::net::TcpStream,
        addr: SocketAddr,
        watcher: Watcher,
    ) {
        let Some(mesh) = self.shared.mesh.load_full() else {
            // Not ready: no trust bundle from the control plane yet.
            return;
        };
        let _guard = ConnGuard::new(&self.shared.metrics, "inbound");
        // Redirected by iptables: the app port the caller dialled, on the app's address (only
        // a port the registry declares is reached, see `app_ports`).
        let original = crate::original_dst::redirected(&tcp).map(|o| o.port());
        let app = match original {
            Some(port) => SocketAddr::new(self.shared.args.app.ip(), port).to_string(),
            None => self.app_authority.clone(),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(mesh.server_config.clone());
        drop(mesh);
        let handshake_timeout = self.shared.args.handshake_timeout;
        let tls = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                let reason = handshake_reason(&e);
                self.shared
                    .metrics
                    .handshake_errors
                    .with_label_values(&[reason])
                    .inc();
                tracing::info!(client.addr = %addr, reason, "TLS handshake refused: {e}");
                return;
            }
            Err(_) => {
                self.shared
                    .metrics
                    .handshake_errors
                    .with_label_values(&["timeout"])
                    .inc();
                limits::exceeded(&self.shared.metrics, "handshake_timeout", "inbound");
                return;
            }
        };
        // The verifier only lets a valid SPIFFE certificate through, so this is always Some.
        let Some(peer) =
            trustmesh_certs::verify::peer_identity(tls.get_ref().1.peer_certificates())
        else {
            return;
        };
        if let Some(mesh) = self.shared.mesh.load_full() {
            if crate::revocation::refuses(&self.shared, &mesh, &peer, "connection") {
                let mut tls = tls;
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                return;
            }
        }
        let Some(_permit) = self.peers.acquire(&peer) else {
            limits::exceeded(&self.shared.metrics, "connections_per_identity", "inbound");
            tracing::info!(client.id = %peer, client.addr = %addr, "over --max-connections-per-identity; closed");
            let mut tls = tls;
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
            return;
        };
        if tls.get_ref().1.alpn_protocol() == Some(crate::opaque::ALPN) {
            crate::opaque::inbound(self.shared.clone(), tls, peer, addr, original).await;
            return;
        }
        let sni = tls.get_ref().1.server_name().map(str::to_string);
        tracing::debug!(client.id = %peer, client.addr = %addr, "mTLS connection");
        // A SPIFFE ID is always a valid header value; made once per connection, not per request.
        let Ok(peer_header) = HeaderValue::from_str(peer.as_str()) else {
            return;
        };
        let conn = Arc::new(ConnInfo {
            peer_header,
            peer,
            addr,
            sni,
            app,
            original,
        });
        let this = self.clone();
        let activity = limits::Activity::new();
        let act = activity.clone();
        let svc = service_fn(move |req| {
            let this = this.clone();
            let conn = conn.clone();
            let act = act.clone();
            let in_flight = act.request();
            async move {
                let resp = this.handle(req, &conn).await;
                drop(in_flight);
                Ok::<_, std::convert::Infallible>(resp.map(|b| drive::touching(b, act)))
            }
        });
        let builder = limits::builder(&self.shared.args);
        let io = TokioIo::new(limits::Tracked::with_head_timeout(
            tls,
            activity.clone(),
            self.shared.args.header_timeout,
        ));
        let shared = &self.shared;
        drive::drive(
            builder.serve_connection(io, svc),
            Some(watcher),
            &activity,
            shared.args.timeouts(),
            &shared.drain,
            &shared.metrics,
            "inbound",
        )
        .await;
    }

    async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<Body> {
        let start = Instant::now();
        let detail = Entry::wanted(self.shared.args.access_log);
        let mut log = Entry::from_request(req.method(), req.uri(), req.headers(), detail);
        if detail {
            log.source = Some(conn.peer.as_str().to_string());
            log.destination = Some(self.shared.identity.as_str().to_string());
        }
        if crate::otlp::enabled() {
            log.span_id = crate::trace::new_span_id();
        }
        let started = std::time::SystemTime::now();
        let resp = match self.forward(req, conn, &mut log).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        let elapsed = start.elapsed();
        let m = &self.shared.metrics;
        let route = log.route.as_deref().unwrap_or("-");
        m.duration
            .with_label_values(&["inbound", route])
            .observe(elapsed.as_secs_f64());
        m.requests
            .with_label_values(&["inbound", resp.status().as_str(), conn.peer.as_str(), route])
            .inc();
        access_log::write(
            self.shared.args.access_log,
            "inbound",
            &log,
            resp.status(),
            resp.headers(),
            elapsed,
        );
        crate::otlp::record("inbound", &log, resp.status(), started, elapsed);
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
            return Ok(crate::revocation::denied());
        }
        if let Err(e) = check_head(&parts) {
            self.refused(log);
            return Err(e);
        }
        // What the policy sees is what the app gets: the caller's own version of our headers
        // and the hop-by-hop fields are gone, and the verified identity is in place.
        let app_speaks_http1 = match parts.headers.remove(ORIG_PROTO) {
            Some(_) => true,
            // A caller that reached us over HTTP/1.1 directly is forwarded as HTTP/1.1 too.
            None => parts.version != Version::HTTP_2,
        };
        headers::strip_hop_by_hop(&mut parts.headers);
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
                    return Ok(crate::authorize::denied(&parts));
                }
            },
        };
        let authz_peer = Peer {
            id: peer,
            ip: conn.addr.ip(),
            sni: conn.sni.as_deref(),
        };
        let path = match authorize(
            &mesh.policies,
            &parts,
            &authz_peer,
            port,
            &self.shared.metrics,
            log,
        ) {
            Ok(path) => path,
            Err(resp) => return Ok(*resp),
        };
        drop(mesh);
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str().to_string())
            .or_else(|| {
                parts
                    .headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_string)
            });
        // The app gets exactly the path that was authorized.
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(conn.app.as_str())
            .path_and_query(path.path_and_query())
            .build()
            .map_err(|e| ProxyError::BadRequest(format!("cannot rebuild the request URI: {e}")))?;
        let client = if app_speaks_http1 {
            parts.version = Version::HTTP_11;
            if let Some(a) = authority
                .as_deref()
                .and_then(|a| HeaderValue::from_str(a).ok())
            {
                parts.headers.insert(header::HOST, a);
            }
            &self.http1
        } else {
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
            &self.h2c
        };
        let (body, stalled) = body::request(body, self.shared.args.body_timeout);
        let req = Request::from_parts(parts, body);
        let target = format!("the app at {}", conn.app);
        let timeout = self.shared.args.upstream_timeout;
        upstream::send(client, req, &target, timeout)
            .await
            .map_err(|e| match e {
                ProxyError::Timeout { .. } => e,
                // A stalled request body is why the exchange failed: the client's fault.
                _ if stalled.get() => {
                    limits::exceeded(&self.shared.metrics, "body_timeout", "inbound");
                    ProxyError::BodyTimeout {
                        secs: self.shared.args.body_timeout.as_secs(),
                    }
                }
                _ => e,
            })
    }
}

impl Inbound {
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

/// What one mTLS connection proved about its caller.
struct ConnInfo {
    peer: SpiffeId,
    /// `peer` as the `x-trustmesh-peer-identity` value.
    peer_header: HeaderValue,
    addr: SocketAddr,
    sni: Option<String>,
    /// Where the app is: `--app`, or its port the caller dialled when iptables redirected.
    app: String,
    /// The original destination port when iptables redirected the connection.
    original: Option<u16>,
}

/// A bounded label for why an inbound handshake failed.
fn handshake_reason(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no_client_certificate",
        Some(Error::InvalidCertificate(CertificateError::Expired))
        | Some(Error::InvalidCertificate(CertificateError::ExpiredContext { .. })) => "expired",
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => "unknown_issuer",
        Some(Error::InvalidCertificate(_)) => "bad_certificate",
        Some(Error::PeerIncompatible(_)) => "incompatible",
        Some(_) => "protocol",
        None => "io",
    }
}
