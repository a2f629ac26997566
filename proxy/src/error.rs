//! The one place where a failure on the request path becomes an HTTP status (as linkerd's
//! `ServerRescue` does): 400 bad request, 404 unknown destination, 405 inbound `CONNECT`,
//! 502 upstream refused or failed verification, 503 no certificate yet, 504 upstream timeout.
//! Bodies are short and say what happened without echoing anything secret.

use http::{header, Response, StatusCode};

use crate::body::{self, Body};

/// What went wrong while proxying one request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request has no Host header or authority.
    #[error("the request has no Host header")]
    NoHost,
    /// The request is not something the proxy can carry.
    #[error("{0}")]
    BadRequest(String),
    /// The method is one this listener never carries (inbound `CONNECT`): 405.
    #[error("{0} is not allowed here")]
    MethodNotAllowed(&'static str),
    /// The Host names no service in the registry.
    #[error("no service {host:?} in the mesh registry (known as name, name.namespace or name.namespace.svc.cluster.local)")]
    UnknownService {
        /// The host as the app sent it.
        host: String,
    },
    /// A redirected connection's original destination is outside the registry and
    /// `mesh.yaml` has `outbound_policy: deny`.
    #[error("{addr} is not in the mesh registry and mesh.yaml has outbound_policy: deny; nothing was sent")]
    OutsideMesh {
        /// The original destination.
        addr: std::net::SocketAddr,
    },
    /// The service has no endpoint.
    #[error("service {0} has no endpoints in the registry")]
    NoEndpoints(String),
    /// No certificate or snapshot yet.
    #[error("the sidecar is not ready: {0}")]
    NotReady(&'static str),
    /// TCP connect failed.
    #[error("cannot connect to {target}: {reason}")]
    Connect {
        /// The service and address.
        target: String,
        /// Why.
        reason: String,
    },
    /// The peer's TLS handshake failed (including a wrong identity).
    #[error("mTLS to {target} failed: {reason}")]
    Tls {
        /// The service and address.
        target: String,
        /// Why.
        reason: String,
    },
    /// An intercepted request to a mesh workload this identity may not call: refused here,
    /// never passed through in plaintext.
    #[error("{addr} is a mesh workload this sidecar's identity may not call")]
    Withheld {
        /// The original destination.
        addr: std::net::SocketAddr,
    },
    /// The client stopped sending its request body (`--body-timeout`).
    #[error("the client sent no request body data for {secs} s")]
    BodyTimeout {
        /// The timeout.
        secs: u64,
    },
    /// The upstream did not answer in time.
    #[error("{target} did not answer within {secs} s")]
    Timeout {
        /// The service or app.
        target: String,
        /// The timeout.
        secs: u64,
    },
    /// The upstream failed mid-request.
    #[error("{target} failed: {reason}")]
    Upstream {
        /// The service or app.
        target: String,
        /// Why.
        reason: String,
    },
}

impl ProxyError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoHost | Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnknownService { .. } => StatusCode::NOT_FOUND,
            Self::Withheld { .. } => StatusCode::FORBIDDEN,
            Self::NotReady(_) | Self::NoEndpoints(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. }
            | Self::Tls { .. }
            | Self::Upstream { .. }
            | Self::OutsideMesh { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// The response for this error, with a one-line plain-text body.
    pub fn into_response(self) -> Response<Body> {
        let status = self.status();
        if matches!(self, Self::OutsideMesh { .. }) {
            // A policy decision, logged at info where it was made (`intercept`).
        } else if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), "{self}");
        } else {
            tracing::info!(status = status.as_u16(), "{self}");
        }
        text_response(status, format!("trustmesh: {self}\n"))
    }
}

/// A plain-text response made by the proxy.
pub fn text_response(status: StatusCode, text: String) -> Response<Body> {
    let mut resp = Response::new(body::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
