//! An upgrade request to a plain-HTTP callee (the local app inbound, a passthrough destination
//! outbound) on a connection of its own: the connection becomes the tunnel, so it is never
//! pooled. HTTP/1.1 for a request in that form, h2c (prior knowledge) for an extended CONNECT.

use std::time::Duration;

use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::layers::body::Body;
use crate::layers::rescue::ProxyError;

/// Connects to `addr` within `connect_timeout` and sends `req` in its version; `504` after
/// `timeout` without a response head, `502` when `target` refuses or fails. HTTP/1.1 requests
/// go out in origin form (`/path?query`), as servers expect them.
pub async fn send(
    addr: &str,
    mut req: Request<Body>,
    target: &str,
    connect_timeout: Duration,
    timeout: Duration,
) -> Result<Response<Incoming>, ProxyError> {
    let connect_err = |reason: String| ProxyError::Connect {
        target: target.to_string(),
        reason,
    };
    let tcp = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| connect_err(format!("no TCP connection within {connect_timeout:?}")))?
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let io = TokioIo::new(tcp);
    let failed = |e: hyper::Error| ProxyError::Upstream {
        target: target.to_string(),
        reason: e.to_string(),
    };
    let exchange = async {
        if req.version() == Version::HTTP_2 {
            let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(failed)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!("upgrade connection ended: {e}");
                }
            });
            sender.send_request(req).await.map_err(failed)
        } else {
            if let Some(pq) = req.uri().path_and_query().cloned() {
                *req.uri_mut() = Uri::from(pq);
            }
            let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
                .handshake(io)
                .await
                .map_err(failed)?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!("upgrade connection ended: {e}");
                }
            });
            sender.send_request(req).await.map_err(failed)
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProxyError::Timeout {
            target: target.to_string(),
            secs: timeout.as_secs(),
        })?
}
