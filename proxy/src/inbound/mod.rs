//! Inbound: mutual TLS on 0.0.0.0:15006. A client without a certificate that chains to the
//! trust bundle never gets past the handshake. Each request then carries the caller's verified
//! SPIFFE ID to the app in `x-trustmesh-peer-identity` (any header of that name that arrived
//! is replaced) and goes to the app in the HTTP version the calling app used.
//!
//! The stack, built once in [`Inbound::connection`] and read top to bottom:
//!
//! 1. accept ([`crate::net::accept`]): `--max-connections`, the drain;
//! 2. original destination: the app port the caller dialled when iptables redirected;
//! 3. TLS ([`tls`]): client certificate required, `--handshake-timeout`, the peer identity;
//! 4. admit: a blocked identity ([`crate::revocation`]) is closed, and one over
//!    `--max-connections-per-identity` ([`peer_cap`]);
//! 5. detect ([`crate::layers::detect`]): ALPN `trustmesh-tcp` is opaque TCP
//!    ([`crate::opaque`]), anything else HTTP, served by [`crate::layers::drive::serve`];
//! 6. per request ([`request`]): observe ([`crate::observe::request`]) → refuse a blocked
//!    caller → check the head → strip, set identity → the port → authorize ([`authorize`]) →
//!    forward to the app (an upgrade: [`upgrade`], then a tunnel); what the proxy answers
//!    itself comes from [`crate::layers::rescue`].

pub mod authorize;
pub mod peer_cap;
pub mod request;
pub mod tls;
pub mod upgrade;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use trustmesh_certs::SpiffeId;

use crate::layers::detect::{self, Protocol};
use crate::layers::drive::ServeConfig;
use crate::layers::limits;
use crate::layers::{drive, upstream::AppClient};
use crate::net::accept::accept_loop;
use crate::observe::access_log::AccessLogFormat;
use crate::observe::metrics::ConnGuard;
use crate::observe::series::Series;
use crate::state::Shared;
use peer_cap::PeerCap;

/// What the inbound stack needs from the flags, made once at start-up
/// ([`Config::from_args`], in [`crate::config`]).
#[derive(Debug, Clone)]
pub struct Config {
    /// `--app`: where the app listens.
    pub app: SocketAddr,
    /// `--connect-timeout` to the app.
    pub connect_timeout: Duration,
    /// `--upstream-timeout`: the app's response headers.
    pub upstream_timeout: Duration,
    /// `--max-grpc-timeout`: the longest `grpc-timeout` honoured.
    pub max_grpc_timeout: Duration,
    /// `--body-timeout`.
    pub body_timeout: Duration,
    /// `--handshake-timeout`.
    pub handshake_timeout: Duration,
    /// `--max-connections`.
    pub max_connections: u32,
    /// `--max-connections-per-identity` (or its default).
    pub connections_per_identity: u32,
    /// The limits every served connection is held to.
    pub serve: ServeConfig,
    /// `--access-log`.
    pub access_log: AccessLogFormat,
}

/// The inbound side: clients to the app over HTTP/1.1 and h2c.
pub struct Inbound {
    shared: Arc<Shared>,
    config: Config,
    app: AppClient,
    /// `--max-connections` open at once on this listener.
    conns: Arc<tokio::sync::Semaphore>,
    /// `--max-connections-per-identity` of them per peer identity.
    peers: Arc<PeerCap>,
}

/// What one mTLS connection proved about its caller.
pub struct ConnInfo {
    /// The verified SPIFFE ID.
    pub peer: SpiffeId,
    /// `peer` as the `x-trustmesh-peer-identity` value (made once per connection).
    pub peer_header: HeaderValue,
    /// `peer` as the `peer` label of the request metric (made once per connection).
    pub peer_label: Arc<str>,
    /// The request metric's series this connection's requests count in.
    pub series: Series,
    /// The caller's address.
    pub addr: SocketAddr,
    /// The SNI it sent.
    pub sni: Option<String>,
    /// Where the app is: `--app`, or its port the caller dialled when iptables redirected.
    pub app: String,
    /// `app` as error messages name it (made once per connection, not per request).
    pub app_target: String,
    /// `app` as the authority of the URI the app is sent (parsed once per connection; `None`
    /// if it is none, and then each request's URI fails to build as it would from `app`).
    pub app_authority: Option<http::uri::Authority>,
    /// The original destination port when iptables redirected the connection.
    pub original: Option<u16>,
}

impl ConnInfo {
    /// The connection of `peer` from `addr`; `None` only if the identity is no header value
    /// (a SPIFFE ID always is).
    pub fn new(
        peer: SpiffeId,
        addr: SocketAddr,
        sni: Option<String>,
        app: String,
        original: Option<u16>,
    ) -> Option<Self> {
        let peer_header = HeaderValue::from_str(peer.as_str()).ok()?;
        let app_target = format!("the app at {app}");
        let app_authority = http::uri::Authority::try_from(app.as_str()).ok();
        Some(Self {
            peer_label: Arc::from(peer.as_str()),
            series: Series::default(),
            peer,
            peer_header,
            addr,
            sni,
            app,
            app_target,
            app_authority,
            original,
        })
    }
}

impl Inbound {
    /// Creates the inbound side.
    pub fn new(shared: Arc<Shared>, config: Config) -> Arc<Self> {
        Arc::new(Self {
            app: AppClient::new(config.connect_timeout),
            conns: Arc::new(tokio::sync::Semaphore::new(config.max_connections as usize)),
            peers: PeerCap::new(config.connections_per_identity),
            shared,
            config,
        })
    }

    /// Serves mTLS connections until the drain begins.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let (shared, conns) = (self.shared.clone(), self.conns.clone());
        accept_loop(
            listener,
            &shared.drain,
            &shared.metrics,
            conns,
            "inbound",
            move |tcp, addr, watcher| self.clone().connection(tcp, addr, watcher),
        )
        .await;
    }

    /// One accepted connection, down the stack.
    async fn connection(self: Arc<Self>, tcp: TcpStream, addr: SocketAddr, watcher: Watcher) {
        // Redirected by iptables: the app port the caller dialled, on the app's address (only
        // a port the registry declares is reached, see `app_ports`).
        let original = crate::net::original_dst::redirected(&tcp).map(|o| o.port());
        self.connection_io(tcp, addr, original, Some(watcher)).await;
    }

    /// The stack from TLS down, on any stream (a test hands it one end of a duplex).
    pub async fn connection_io<IO>(
        self: Arc<Self>,
        io: IO,
        addr: SocketAddr,
        original: Option<u16>,
        watcher: Option<Watcher>,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(mesh) = self.shared.mesh.load_full() else {
            // Not ready: no trust bundle from the control plane yet.
            return;
        };
        let _guard = ConnGuard::new(&self.shared.metrics, "inbound");
        let app = match original {
            Some(port) => SocketAddr::new(self.config.app.ip(), port).to_string(),
            None => self.config.app.to_string(),
        };
        let server_config = mesh.server_config.clone();
        drop(mesh);
        let timeout = self.config.handshake_timeout;
        let Some((mut tls, peer)) =
            tls::handshake(server_config, io, timeout, &self.shared.metrics, addr).await
        else {
            return;
        };
        if let Some(mesh) = self.shared.mesh.load_full() {
            if crate::revocation::refuses(&self.shared, &mesh, &peer, "connection") {
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                return;
            }
        }
        let Some(_permit) = self.peers.acquire(&peer) else {
            limits::exceeded(&self.shared.metrics, "connections_per_identity", "inbound");
            tracing::info!(client.id = %peer, client.addr = %addr, "over --max-connections-per-identity; closed");
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
            return;
        };
        if detect::by_alpn(tls.get_ref().1.alpn_protocol()) == Protocol::Opaque {
            let config = crate::opaque::Config {
                app_ip: self.config.app.ip(),
                connect_timeout: self.config.connect_timeout,
            };
            crate::opaque::inbound(self.shared.clone(), tls, peer, addr, original, config).await;
            return;
        }
        let sni = tls.get_ref().1.server_name().map(str::to_string);
        tracing::debug!(client.id = %peer, client.addr = %addr, "mTLS connection");
        let Some(conn) = ConnInfo::new(peer, addr, sni, app, original) else {
            return;
        };
        let conn = Arc::new(conn);
        let this = self.clone();
        let shared = &self.shared;
        drive::serve(
            tls,
            &self.config.serve,
            watcher,
            &shared.drain,
            &shared.metrics,
            "inbound",
            move |req| this.clone().handle(req, conn.clone()),
        )
        .await;
    }
}
