//! Plain HTTP out of the sidecar, to the local app (inbound) or to an address outside the mesh
//! (passthrough): one exchange, the response head bounded by a timeout, failures named for the
//! target, hop-by-hop headers stripped from the response. HTTP/1.1 to the app goes through
//! [`AppHttp1`] (keep-alive connections by app address), h2c through [`H2cPool`], and an
//! address outside the mesh through hyper-util's pooled client ([`PlainClient`]).

use std::time::Duration;

use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};

use crate::layers::body::{self, Body};
use crate::layers::h2c::{H2cError, H2cPool};
use crate::layers::headers;
use crate::layers::rescue::ProxyError;
pub use http1::AppHttp1;

mod http1;

/// A pooled plain-HTTP client (to addresses outside the mesh).
pub type PlainClient = Client<HttpConnector, Body>;

/// The clients of the local app: keep-alive HTTP/1.1 ([`AppHttp1`]), and h2c ([`H2cPool`],
/// one multiplexed connection per app address); which one a request takes is the app's
/// declared protocol ([`crate::app_ports::app_speaks_http1`]).
pub struct AppClient {
    /// HTTP/1.1.
    pub http1: AppHttp1,
    /// HTTP/2 with prior knowledge.
    pub h2c: H2cPool,
}

impl AppClient {
    /// Both clients, with `connect_timeout` to the app.
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            http1: AppHttp1::new(connect_timeout),
            h2c: H2cPool::new(connect_timeout),
        }
    }
}

/// The `Host` an HTTP/1.1 request to the app at `addr` carries when the caller named no
/// authority (RFC 9112 §3.2: one is required): the address, without the default port, as
/// hyper-util's client made it from the URI.
pub fn app_host(addr: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(addr.strip_suffix(":80").unwrap_or(addr)).ok()
}

/// Why an exchange failed, as [`bounded`] reports it.
enum Failure {
    /// No connection to the target.
    Connect(String),
    /// The exchange on a connection failed.
    Upstream(String),
}

/// Sends `req` and streams the answer back; `504` after `timeout` without a response head,
/// `502` when `target` refuses or fails.
pub async fn send(
    client: &PlainClient,
    req: Request<Body>,
    target: &str,
    timeout: Duration,
) -> Result<Response<Body>, ProxyError> {
    let exchange = async {
        client.request(req).await.map_err(|e| {
            if e.is_connect() {
                Failure::Connect("connection refused or unreachable".to_string())
            } else {
                Failure::Upstream(e.to_string())
            }
        })
    };
    bounded(exchange, target, timeout).await
}

/// [`send`] over HTTP/1.1 to the app at `addr`; `req` is in origin form, with its `Host`.
pub async fn send_http1(
    pool: &AppHttp1,
    addr: &str,
    req: Request<Body>,
    target: &str,
    timeout: Duration,
) -> Result<Response<Body>, ProxyError> {
    bounded(pool.send(addr, req), target, timeout).await
}

/// [`send`] over h2c to the app at `addr`.
pub async fn send_h2c(
    pool: &H2cPool,
    addr: &str,
    req: Request<Body>,
    target: &str,
    timeout: Duration,
) -> Result<Response<Body>, ProxyError> {
    let exchange = async {
        pool.send(addr, req).await.map_err(|e| match e {
            H2cError::Connect(reason) => Failure::Connect(reason),
            H2cError::Exchange(e) => Failure::Upstream(e.to_string()),
        })
    };
    bounded(exchange, target, timeout).await
}

/// Runs `exchange` within `timeout` and names a failure for `target`; the response loses its
/// hop-by-hop headers.
async fn bounded(
    exchange: impl std::future::Future<Output = Result<Response<Incoming>, Failure>>,
    target: &str,
    timeout: Duration,
) -> Result<Response<Body>, ProxyError> {
    let resp = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| ProxyError::Timeout {
            target: target.to_string(),
            secs: timeout.as_secs(),
        })?
        .map_err(|e| match e {
            Failure::Connect(reason) => ProxyError::Connect {
                target: target.to_string(),
                reason,
            },
            Failure::Upstream(reason) => ProxyError::Upstream {
                target: target.to_string(),
                reason,
            },
        })?;
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body::stream(body)))
}

#[cfg(test)]
mod tests;
