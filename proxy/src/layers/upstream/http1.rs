//! HTTP/1.1 to the local app: keep-alive connections (`hyper::client::conn::http1`, TCP_NODELAY,
//! `--connect-timeout`) per app address, each carrying one exchange at a time, held in the
//! idle sets both HTTP/1.1 pools share ([`crate::layers::idle`]): the most recently used idle
//! one first, given back once the response head is in, at most [`Limits::MAX_IDLE`] idle ones
//! kept, each for [`AppHttp1::IDLE_TIMEOUT`] at most. Concurrent requests get one each.
//!
//! The addresses are a handful at most (`--app`, or the app's ports iptables redirected to the
//! sidecar), so they are found by a scan, with nothing hashed per request.
//!
//! An app closes idle connections on its own terms (its keep-alive timeout, a `Connection:
//! close` answer, an HTTP/1.0 server after every response); a pooled one it has closed never
//! fails a request. hyper hands back a request it wrote nothing of, which goes on another
//! connection (as hyper-util's client retries a canceled request). One that was written and got
//! no answer is sent again only when it has no body and its method is idempotent (RFC 9110
//! §9.2.2), from a copy of its head made before it went. That race (the app's keep-alive timeout
//! firing as the request arrives) needs a connection idle for as long as the app's timeout, so
//! the copy (a clone of every header) is made only for a connection idle at least
//! [`AppHttp1::REPLAY_AFTER`], shorter than any app's keep-alive timeout: under load, when
//! connections are idle for microseconds, no request pays for it. A fresh connection's failure
//! is the app's.

use std::sync::Mutex;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::Failure;
use crate::layers::body::Body;
use crate::layers::idle::{IdleSet, Limits};
use crate::layers::replay::{idempotent, lost, Head};

/// The HTTP/1.1 connections to the app, by address.
pub struct AppHttp1 {
    conns: Mutex<Vec<(String, IdleSet<SendRequest<Body>>)>>,
    limits: Limits,
    connect_timeout: Duration,
    /// A request taken on a connection idle at least this long may be sent twice.
    replay_after: Duration,
}

impl AppHttp1 {
    /// How long an idle connection to the app is kept (hyper-util's client kept them as long).
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

    /// How long a connection must have been idle for a bodiless idempotent request on it to
    /// be kept to send again should the app close it under the request.
    pub const REPLAY_AFTER: Duration = Duration::from_millis(100);

    /// An empty pool whose connects give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let limits = Limits {
            max_idle: Limits::MAX_IDLE,
            idle_timeout: Self::IDLE_TIMEOUT,
        };
        Self::with_limits(connect_timeout, limits, Self::REPLAY_AFTER)
    }

    /// [`AppHttp1::new`] held to `limits`, keeping a request to send again on a connection
    /// idle at least `replay_after`.
    pub fn with_limits(connect_timeout: Duration, limits: Limits, replay_after: Duration) -> Self {
        Self {
            conns: Mutex::default(),
            limits,
            connect_timeout,
            replay_after,
        }
    }

    /// Sends `req` (origin form, with its `Host`) to the app at `addr`, on an idle connection
    /// or a new one, and returns the response once its head is in.
    pub(super) async fn send(
        &self,
        addr: &str,
        mut req: Request<Body>,
    ) -> Result<Response<Incoming>, Failure> {
        let mut replay: Option<Head> = None;
        // Each pass either takes an idle connection (dropped if it fails) or makes a new one
        // (whose failure ends the loop), so this ends.
        loop {
            let (mut sender, idle) = match self.idle(addr) {
                Some((s, idle)) => (s, Some(idle)),
                // Boxed: the connect's future is large, and inline it would be part of (and
                // copied with) every request's future, though it runs once per connection.
                None => (Box::pin(self.connect(addr)).await?, None),
            };
            let reused = idle.is_some();
            if replay.is_none()
                && idle.is_some_and(|i| i >= self.replay_after)
                && idempotent(req.method())
            {
                replay = Head::of(&req);
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    self.give_back(addr, sender);
                    return Ok(resp);
                }
                Err(mut e) if reused => {
                    if let Some(again) = e.take_message() {
                        tracing::debug!(target: "inbound", "pooled connection to the app at {addr} closed while idle; another one");
                        req = again;
                        continue;
                    }
                    match replay.as_ref().filter(|_| lost(e.error())) {
                        Some(head) => {
                            tracing::debug!(target: "inbound", "pooled connection to the app at {addr} lost before an answer; sent again: {}", e.error());
                            req = head.request();
                        }
                        None => return Err(Failure::Upstream(e.into_error().to_string())),
                    }
                }
                Err(e) => return Err(Failure::Upstream(e.into_error().to_string())),
            }
        }
    }

    /// The most recently used idle connection to `addr`, if any, and how long it was idle.
    fn idle(&self, addr: &str) -> Option<(SendRequest<Body>, Duration)> {
        let mut conns = self.conns.lock().ok()?;
        let (_, set) = conns.iter_mut().find(|(a, _)| a == addr)?;
        set.take(&self.limits, |_| true)
    }

    /// Keeps `sender`, whose response head is in, for the next request to `addr`.
    fn give_back(&self, addr: &str, sender: SendRequest<Body>) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut conns) = self.conns.lock() else {
            return;
        };
        let i = match conns.iter().position(|(a, _)| a == addr) {
            Some(i) => i,
            None => {
                conns.push((addr.to_string(), IdleSet::default()));
                conns.len() - 1
            }
        };
        conns[i].1.give_back(sender, &self.limits);
    }

    /// A new connection to the app at `addr`; closed and expired idle ones of every address
    /// are forgotten first (here, never per request).
    async fn connect(&self, addr: &str) -> Result<SendRequest<Body>, Failure> {
        let tcp = tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| {
                Failure::Connect(format!("no connection within {:?}", self.connect_timeout))
            })?
            .map_err(|e| {
                tracing::debug!(target: "inbound", "connect to the app at {addr}: {e}");
                Failure::Connect("connection refused or unreachable".to_string())
            })?;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(target: "inbound", "TCP_NODELAY to the app at {addr}: {e}");
        }
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| Failure::Upstream(format!("HTTP/1.1 handshake: {e}")))?;
        let target = addr.to_string();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(target: "inbound", "HTTP/1.1 connection to the app at {target} ended: {e}");
            }
        });
        self.prune();
        Ok(sender)
    }

    /// Forgets closed connections, closes those idle past the timeout, and forgets addresses
    /// left with none.
    fn prune(&self) {
        if let Ok(mut conns) = self.conns.lock() {
            for (_, set) in conns.iter_mut() {
                set.prune(&self.limits);
            }
            conns.retain(|(_, set)| !set.is_empty());
        }
    }

    /// Connections held for `addr`, idle or still reading a response (tests).
    #[cfg(test)]
    pub(super) fn held(&self, addr: &str) -> usize {
        self.conns
            .lock()
            .map(|c| {
                c.iter()
                    .filter(|(a, _)| a == addr)
                    .map(|(_, s)| s.len())
                    .sum()
            })
            .unwrap_or(0)
    }
}
