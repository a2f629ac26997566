//! Plain HTTP out of the sidecar, to the local app (inbound) or to an address outside the mesh
//! (passthrough): one exchange on a pooled hyper client, the response head bounded by a
//! timeout, failures named for the target, hop-by-hop headers stripped from the response.

use std::time::Duration;

use http::{Request, Response};
use hyper_util::client::legacy::{connect::HttpConnector, Client};

use crate::body::{self, Body};
use crate::error::ProxyError;
use crate::headers;

/// A pooled plain-HTTP client.
pub type PlainClient = Client<HttpConnector, Body>;

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
