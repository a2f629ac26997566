//! Plaintext HTTP to an address outside the mesh, for a redirected connection when
//! `mesh.yaml` says `outbound_policy: passthrough` (see [`crate::outbound::route`]). The request goes
//! to its original destination as HTTP/1.1 with the app's own `Host`; nothing of the mesh is
//! added (no identity header, no certificate).

use std::net::SocketAddr;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::layers::body::{self, Body};
use crate::layers::headers;
use crate::layers::rescue::ProxyError;
use crate::layers::upstream::{self, PlainClient};

/// An HTTP/1.1 client that dials whatever address a request names.
pub struct Passthrough {
    client: PlainClient,
}

impl Passthrough {
    /// A client with the sidecar's connect timeout.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(connect_timeout));
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
        }
    }

    /// Sends `req` to `orig` and streams the answer back.
    pub async fn forward(
        &self,
        req: Request<Incoming>,
        orig: SocketAddr,
        timeout: Duration,
    ) -> Result<Response<Body>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        // An h2c request carries its authority in the URI; HTTP/1.1 wants it in Host.
        if !parts.headers.contains_key(header::HOST) {
            if let Some(a) = parts.uri.authority() {
                if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                    parts.headers.insert(header::HOST, v);
                }
            }
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        parts.uri = Uri::builder()
            .scheme("http")
            .authority(orig.to_string())
            .path_and_query(path)
            .build()
            .map_err(|e| ProxyError::BadRequest(format!("cannot rebuild the request URI: {e}")))?;
        parts.version = Version::HTTP_11;
        let target = format!("{orig} (outside the mesh)");
        let req = Request::from_parts(parts, body::stream(body));
        upstream::send(&self.client, req, &target, timeout).await
    }
}
