//! h2c to the local app: one multiplexed HTTP/2 connection (prior knowledge, RFC 9113 §3.3)
//! per app address, made on first use and re-made once closed.
//!
//! The connection is chosen by the app's address, not by the request's URI, so that the app
//! receives the `:authority` the caller named (`b.test`, or the `Host` of an HTTP/1.1 caller)
//! rather than its own address, as it would without the mesh; hyper-util's pooled client
//! dials whatever the URI names and could not do both.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::layers::body::Body;

/// Why an exchange with the app over h2c failed.
#[derive(Debug, thiserror::Error)]
pub enum H2cError {
    /// No connection could be made (refused, unreachable, or not within the connect timeout).
    #[error("{0}")]
    Connect(String),
    /// The connection was made but the exchange failed (handshake, reset, closed).
    #[error("{0}")]
    Exchange(#[from] hyper::Error),
}

/// The h2c connections to the app, one per address.
pub struct H2cPool {
    conns: Mutex<HashMap<String, SendRequest<Body>>>,
    /// One connect at a time, so concurrent first requests share one connection.
    connecting: tokio::sync::Mutex<()>,
    connect_timeout: Duration,
}

impl H2cPool {
    /// An empty pool whose connects give up after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            conns: Mutex::default(),
            connecting: tokio::sync::Mutex::new(()),
            connect_timeout,
        }
    }

    /// Sends `req` (its URI carries the `:authority` the app is shown) to the app at `addr`.
    pub async fn send(
        &self,
        addr: &str,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, H2cError> {
        let mut sender = self.sender(addr).await?;
        sender.ready().await?;
        Ok(sender.send_request(req).await?)
    }

    fn live(&self, addr: &str) -> Option<SendRequest<Body>> {
        let conns = self.conns.lock().ok()?;
        conns.get(addr).filter(|s| !s.is_closed()).cloned()
    }

    async fn sender(&self, addr: &str) -> Result<SendRequest<Body>, H2cError> {
        if let Some(s) = self.live(addr) {
            return Ok(s);
        }
        let _one = self.connecting.lock().await;
        if let Some(s) = self.live(addr) {
            return Ok(s);
        }
        let tcp = tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| {
                H2cError::Connect(format!("no connection within {:?}", self.connect_timeout))
            })?
            .map_err(|e| H2cError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .adaptive_window(true)
            .handshake(TokioIo::new(tcp))
            .await?;
        let target = addr.to_string();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(target: "inbound", "h2c connection to the app at {target} ended: {e}");
            }
        });
        if let Ok(mut conns) = self.conns.lock() {
            // Closed connections of addresses no longer used go with the next connect.
            conns.retain(|_, s| !s.is_closed());
            conns.insert(addr.to_string(), sender.clone());
        }
        Ok(sender)
    }
}
