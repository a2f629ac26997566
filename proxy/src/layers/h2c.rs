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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::layers::body;

    /// An h2c app that answers with the request's `:authority` and counts its connections;
    /// each connection serves `per_conn` requests and is then closed.
    async fn app(per_conn: usize) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let served = Arc::new(AtomicUsize::new(0));
                let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
                let done_tx = Arc::new(Mutex::new(Some(done_tx)));
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let n = served.fetch_add(1, Ordering::SeqCst) + 1;
                    if n >= per_conn {
                        if let Some(tx) = done_tx.lock().unwrap().take() {
                            let _ = tx.send(());
                        }
                    }
                    let authority = req.uri().authority().map(|a| a.to_string());
                    async move {
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(
                            Bytes::from(authority.unwrap_or_default()),
                        )))
                    }
                });
                tokio::spawn(async move {
                    let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = done_rx => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
        });
        (addr, conns)
    }

    async fn get(pool: &H2cPool, addr: &str) -> String {
        let req = Request::get("http://b.test/x")
            .body(body::full(Bytes::new()))
            .unwrap();
        let resp = pool.send(addr, req).await.unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn requests_share_one_connection_carry_the_callers_authority_and_reconnect() {
        let (addr, conns) = app(2).await;
        let pool = H2cPool::new(Duration::from_secs(5));
        assert_eq!(get(&pool, &addr).await, "b.test");
        assert_eq!(get(&pool, &addr).await, "b.test");
        assert_eq!(conns.load(Ordering::SeqCst), 1, "one connection for both");
        // The app closed that connection after two requests: the next one makes a new one.
        for _ in 0..500 {
            if pool.live(&addr).is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            pool.live(&addr).is_none(),
            "the closed connection is not reused"
        );
        assert_eq!(get(&pool, &addr).await, "b.test");
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_app_that_is_down_is_a_connect_error() {
        let gone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = gone.local_addr().unwrap().to_string();
        drop(gone);
        let pool = H2cPool::new(Duration::from_secs(5));
        let req = Request::get("http://b.test/")
            .body(body::full(Bytes::new()))
            .unwrap();
        let err = pool.send(&addr, req).await.unwrap_err();
        assert!(matches!(err, H2cError::Connect(_)), "{err}");
    }
}
