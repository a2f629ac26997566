//! Outbound: the app's plain HTTP (HTTP/1.1 or h2c) on 127.0.0.1:15001 is carried to the
//! destination's sidecar over mutual TLS. The destination is the registry `Service` that the
//! request's Host (or absolute-form URI) names; a Host outside the registry is answered here
//! and nothing leaves the pod in plaintext.
//!
//! With interception (`trustmesh-proxy init`), a connection iptables redirected here also has
//! its original destination, which routes a request whose Host names no service, and
//! `outbound_policy` decides for addresses outside the registry ([`route`]).
//!
//! The stack, built once in [`Outbound::connection`] and read top to bottom:
//!
//! 1. accept ([`crate::net::accept`]): `--max-connections`, the drain;
//! 2. original destination, when iptables redirected;
//! 3. detect ([`crate::layers::detect`]): a redirected connection that does not open like
//!    HTTP is opaque TCP ([`route::opaque`]); HTTP is served by [`crate::layers::drive::serve`];
//! 4. per request ([`forward`]): observe ([`crate::observe::request`]) → check the head →
//!    route ([`route`]: Host, then original destination) → passthrough ([`passthrough`]) or
//!    a service with `HTTPRoute`s goes through its rules first ([`http_route`]: match,
//!    headers, weighted backend, timeouts, retries) → balance ([`balance`]: an endpoint per
//!    request, failover, ejection) → the mTLS pool: HTTP/2 ([`pool`]), or HTTP/1.1 for an
//!    HTTP/1.1 app ([`hop`], [`pool::http1`]) → forward; an upgrade
//!    (WebSocket, extended CONNECT) takes [`upgrade`] instead; what the proxy answers itself
//!    comes from [`crate::layers::rescue`].

pub mod balance;
pub mod forward;
pub mod hop;
pub mod http_route;
pub mod passthrough;
pub mod pool;
pub mod route;
pub mod upgrade;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

use crate::layers::drive;
use crate::layers::drive::ServeConfig;
use crate::net::accept::accept_loop;
use crate::observe::access_log::AccessLogFormat;
use crate::observe::metrics::ConnGuard;
use crate::state::Shared;
use balance::Balancer;
use passthrough::Passthrough;
use pool::http1::Http1Pool;
use pool::Pool;

/// What the outbound stack needs from the flags, made once at start-up
/// ([`Config::from_args`], in [`crate::config`]).
#[derive(Debug, Clone)]
pub struct Config {
    /// `--connect-timeout` to a peer sidecar or a passthrough destination.
    pub connect_timeout: Duration,
    /// `--upstream-timeout`: the destination's response headers.
    pub upstream_timeout: Duration,
    /// `--max-grpc-timeout`: the longest `grpc-timeout` honoured.
    pub max_grpc_timeout: Duration,
    /// `--body-timeout`.
    pub body_timeout: Duration,
    /// `--max-connections`.
    pub max_connections: u32,
    /// The limits every served connection is held to.
    pub serve: ServeConfig,
    /// `--access-log`.
    pub access_log: AccessLogFormat,
    /// Route retries: the body buffer and the budget.
    pub retry: http_route::RetryConfig,
    /// `--balancer` and the `--eject-*` flags.
    pub balance: balance::Config,
    /// `--hop-http1`: HTTP/1.1 apps' requests take the HTTP/1.1 hop ([`hop`]).
    pub hop_http1: bool,
    /// The bounds of the HTTP/1.1 pool.
    pub http1_pool: pool::http1::Limits,
}

/// The outbound side: its pool and its balancer over endpoints.
pub struct Outbound {
    shared: Arc<Shared>,
    config: Config,
    pool: Arc<Pool>,
    http1_pool: Http1Pool,
    balancer: Arc<Balancer>,
    passthrough: Passthrough,
    /// The retry budget of every service a route retries to.
    budgets: http_route::budget::Budgets,
    /// `--max-connections` open at once on this listener.
    conns: Arc<tokio::sync::Semaphore>,
}

impl Outbound {
    /// Creates the outbound side.
    pub fn new(shared: Arc<Shared>, config: Config) -> Arc<Self> {
        Arc::new(Self {
            pool: Arc::new(Pool::new(shared.metrics.upstream_connections.clone())),
            http1_pool: Http1Pool::new(
                config.http1_pool,
                shared.metrics.upstream_connections.clone(),
                shared.metrics.upstream_http1_connections.clone(),
            ),
            balancer: Arc::new(Balancer::new(
                config.balance,
                Arc::new(balance::SystemClock),
                shared.metrics.balance(),
                fastrand::u64(..),
            )),
            passthrough: Passthrough::new(config.connect_timeout),
            budgets: http_route::budget::Budgets::new(
                config.retry.budget_percent,
                config.retry.budget_min_per_sec,
            ),
            conns: Arc::new(tokio::sync::Semaphore::new(config.max_connections as usize)),
            shared,
            config,
        })
    }

    /// Serves the app's connections until the drain begins.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        tokio::spawn(forget_gone_services(
            self.shared.clone(),
            self.balancer.clone(),
        ));
        let (shared, conns) = (self.shared.clone(), self.conns.clone());
        accept_loop(
            listener,
            &shared.drain,
            &shared.metrics,
            conns,
            "outbound",
            move |tcp, addr, watcher| self.clone().connection(tcp, addr, watcher),
        )
        .await;
    }

    /// One connection from the app: opaque TCP when iptables redirected something that is not
    /// HTTP, else HTTP/1.1 or h2c.
    async fn connection(self: Arc<Self>, tcp: TcpStream, addr: SocketAddr, watcher: Watcher) {
        let _guard = ConnGuard::new(&self.shared.metrics, "outbound");
        let orig = crate::net::original_dst::redirected(&tcp);
        if let Some(orig) = orig {
            if !crate::layers::detect::sniff_http(&tcp).await {
                let timeout = self.config.connect_timeout;
                return route::opaque(&self.shared, tcp, orig, timeout).await;
            }
        }
        tracing::trace!(client.addr = %addr, "outbound connection");
        self.serve_http(tcp, orig, Some(watcher)).await;
    }

    /// The HTTP stack on any stream (a test hands it one end of a duplex); `orig` is the
    /// original destination of a redirected connection.
    pub async fn serve_http<IO>(
        self: Arc<Self>,
        io: IO,
        orig: Option<SocketAddr>,
        watcher: Option<Watcher>,
    ) where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let this = self.clone();
        let shared = &self.shared;
        let series = Arc::new(crate::observe::series::Series::default());
        drive::serve(
            io,
            &self.config.serve,
            watcher,
            &shared.drain,
            &shared.metrics,
            "outbound",
            move |req| this.clone().handle(req, orig, series.clone()),
        )
        .await;
    }
}

/// Keeps the balancer to the services of the snapshot in force: run once per snapshot
/// installed (a new mesh view), never per request.
async fn forget_gone_services(shared: Arc<Shared>, balancer: Arc<Balancer>) {
    let mut changes = shared.mesh_changes.subscribe();
    loop {
        if let Some(mesh) = shared.mesh.load_full() {
            balancer.retain(&mesh.snapshot.registry, &mesh.snapshot.version);
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}
