//! Plain HTTP out of the sidecar, to the local app (inbound) or to an address outside the mesh
//! (passthrough): one exchange on a pooled hyper client, the response head bounded by a
//! timeout, failures named for the target, hop-by-hop headers stripped from the response.

use std::time::Duration;

use http::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::layers::body::{self, Body};
use crate::layers::headers;
use crate::layers::rescue::ProxyError;

/// A pooled plain-HTTP client.
pub type PlainClient = Client<HttpConnector, Body>;

/// The clients of the local app: HTTP/1.1 for a caller that spoke HTTP/1.1, h2c for one that
/// spoke HTTP/2, each pooled.
pub struct AppClient {
    /// HTTP/1.1.
    pub http1: PlainClient,
    /// HTTP/2 with prior knowledge.
    pub h2c: PlainClient,
}

impl AppClient {
    /// Both clients, with `connect_timeout` to the app.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        let http1 = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector.clone());
        let h2c = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .http2_adaptive_window(true)
            .build(connector);
        Self { http1, h2c }
    }
}

/// Sends `req` and streams the answer back; `504` after `timeout` without a response head,
/// `502` when `target` refuses or fails.
pub async fn send(
    client: &PlainClient,
    req: Request<Body>,
    target: &str,
    timeout: Duration,
) -> Result<Response<Body>, ProxyError> {
    let resp = tokio::time::timeout(timeout, client.request(req))
        .await
        .map_err(|_| ProxyError::Timeout {
            target: target.to_string(),
            secs: timeout.as_secs(),
        })?
        .map_err(|e| {
            if e.is_connect() {
                ProxyError::Connect {
                    target: target.to_string(),
                    reason: "connection refused or unreachable".to_string(),
                }
            } else {
                ProxyError::Upstream {
                    target: target.to_string(),
                    reason: e.to_string(),
                }
            }
        })?;
    let (mut parts, body) = resp.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body::stream(body)))
}
