//! The HTTP/1.1 hop between sidecars, for HTTP/1.1 apps ([`crate::outbound::hop`]):
//! keep-alive HTTP/1.1 connections over the same mTLS as HTTP/2 (TLS 1.3, the peer's
//! certificate must name the registry's identity), with ALPN `http/1.1`.
//!
//! An HTTP/1.1 connection carries one exchange at a time, so each (identity, endpoint) has a
//! set of them ([`crate::layers::idle`]: the most recently used idle one first, given back once
//! the response head is in, bounded in count and idle time). One connection serves every
//! request of a client that sends one at a time; concurrent requests get one each. The peer
//! closes idle connections after its own `--idle-timeout`, so this pool keeps one no longer
//! than half of that ([`Limits::for_idle_timeout`]); one the peer has closed is seen closed and
//! skipped. A connection made with a trust bundle that has since been replaced is never taken
//! again.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use trustmesh_certs::SpiffeId;

use super::hash::FastMap;
use crate::layers::body::Body;
use crate::layers::idle::{IdleSet, Reusable};
use crate::layers::rescue::ProxyError;

/// The ALPN protocol of the HTTP/1.1 hop.
pub const ALPN: &[u8] = b"http/1.1";

pub use crate::layers::idle::Limits;

impl Limits {
    /// The limits for a sidecar whose `--idle-timeout` is `idle`: a connection is not kept
    /// past half of it (so that a peer with the same flag never closes one under a request),
    /// nor past 30 s.
    pub fn for_idle_timeout(idle: Duration) -> Self {
        Self {
            max_idle: Self::MAX_IDLE,
            idle_timeout: (idle / 2).min(Duration::from_secs(30)),
        }
    }
}

struct Conn {
    sender: SendRequest<Body>,
    config: Arc<rustls::ClientConfig>,
}

impl Reusable for Conn {
    fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    fn is_ready(&self) -> bool {
        self.sender.is_ready()
    }
}

/// A connection taken from the pool for one exchange; [`Http1Pool::give_back`] returns it.
pub struct Taken {
    sender: SendRequest<Body>,
    config: Arc<rustls::ClientConfig>,
    reused: bool,
}

impl Taken {
    /// The connection's sender.
    pub fn sender(&mut self) -> &mut SendRequest<Body> {
        &mut self.sender
    }

    /// Whether it had carried a request before (so the peer may have closed it while idle).
    pub fn reused(&self) -> bool {
        self.reused
    }
}

/// Idle HTTP/1.1 connections to other sidecars, by identity, then endpoint.
pub struct Http1Pool {
    conns: Mutex<FastMap<SpiffeId, FastMap<String, IdleSet<Conn>>>>,
    limits: Limits,
    /// `trustmesh_upstream_connections_total`.
    connects: prometheus::IntCounter,
    /// `trustmesh_upstream_http1_connections_total`.
    http1_connects: prometheus::IntCounter,
}

impl Http1Pool {
    /// An empty pool held to `limits`; every connection it makes counts in both counters.
    pub fn new(
        limits: Limits,
        connects: prometheus::IntCounter,
        http1_connects: prometheus::IntCounter,
    ) -> Self {
        Self {
            conns: Mutex::default(),
            limits,
            connects,
            http1_connects,
        }
    }

    /// A connection to `endpoint`, verified as `identity` with `config`: an idle one, else a
    /// new one (TLS server name `sni()`). `target` names the destination in errors.
    pub async fn take(
        &self,
        endpoint: &str,
        identity: &SpiffeId,
        sni: &(dyn Fn() -> String + Sync),
        config: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        target: &(dyn Fn() -> String + Sync),
    ) -> Result<Taken, ProxyError> {
        if let Some(taken) = self.idle(endpoint, identity, &config) {
            return Ok(taken);
        }
        // Boxed: the handshake's future is large, and inline it would be part of (and copied
        // with) every request's future, though it runs once per connection.
        Box::pin(self.connect(endpoint, &sni(), config, connect_timeout, target())).await
    }

    /// A new connection to `endpoint` (see [`Http1Pool::take`]).
    async fn connect(
        &self,
        endpoint: &str,
        sni: &str,
        config: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        target: String,
    ) -> Result<Taken, ProxyError> {
        let tls = super::dial(endpoint, sni, config.clone(), connect_timeout, &target).await?;
        if tls.get_ref().1.alpn_protocol() != Some(ALPN) {
            return Err(ProxyError::Tls {
                target,
                reason: "the peer did not negotiate http/1.1; is it a trustmesh sidecar?".into(),
            });
        }
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(tls))
            .await
            .map_err(|e| ProxyError::Upstream {
                target: target.clone(),
                reason: format!("HTTP/1.1 handshake: {e}"),
            })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(target: "outbound", "HTTP/1.1 connection to {target} ended: {e}");
            }
        });
        self.connects.inc();
        self.http1_connects.inc();
        self.prune();
        Ok(Taken {
            sender,
            config,
            reused: false,
        })
    }

    /// The most recently used idle connection to `endpoint`; closed, outdated and expired
    /// ones met on the way are dropped.
    fn idle(
        &self,
        endpoint: &str,
        identity: &SpiffeId,
        config: &Arc<rustls::ClientConfig>,
    ) -> Option<Taken> {
        let mut conns = self.conns.lock().ok()?;
        let set = conns.get_mut(identity)?.get_mut(endpoint)?;
        let (c, _) = set.take(&self.limits, |c| Arc::ptr_eq(&c.config, config))?;
        Some(Taken {
            sender: c.sender,
            config: c.config,
            reused: true,
        })
    }

    /// Returns `taken` once its response head is in (a closed connection is dropped). Idle
    /// connections of the endpoint beyond [`Limits::max_idle`] are closed, oldest first.
    pub fn give_back(&self, endpoint: &str, identity: &SpiffeId, taken: Taken) {
        if taken.sender.is_closed() {
            return;
        }
        let Ok(mut conns) = self.conns.lock() else {
            return;
        };
        let by_endpoint = match conns.get_mut(identity) {
            Some(m) => m,
            None => conns.entry(identity.clone()).or_default(),
        };
        let set = match by_endpoint.get_mut(endpoint) {
            Some(s) => s,
            None => by_endpoint.entry(endpoint.to_string()).or_default(),
        };
        let conn = Conn {
            sender: taken.sender,
            config: taken.config,
        };
        set.give_back(conn, &self.limits);
    }

    /// Forgets closed connections and closes those idle past the timeout, and forgets the
    /// endpoints left with none (pods come and go with new addresses, so that the pool does
    /// not grow without end). Run when a connection is made, never per request.
    fn prune(&self) {
        let Ok(mut conns) = self.conns.lock() else {
            return;
        };
        for by_endpoint in conns.values_mut() {
            for set in by_endpoint.values_mut() {
                set.prune(&self.limits);
            }
            by_endpoint.retain(|_, set| !set.is_empty());
        }
        conns.retain(|_, by_endpoint| !by_endpoint.is_empty());
    }

    /// Connections held for `endpoint`, idle or still reading a response (tests).
    #[cfg(test)]
    fn held(&self, endpoint: &str) -> usize {
        self.conns
            .lock()
            .map(|c| {
                c.values()
                    .filter_map(|m| m.get(endpoint))
                    .map(IdleSet::len)
                    .sum()
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
