//! What goes wrong on the request path, as one typed error. What each answers with (status,
//! body, gRPC status) is decided in [`crate::layers::rescue`], nowhere else.

/// What went wrong while proxying one request.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request has no Host header or authority.
    #[error("the request has no Host header")]
    NoHost,
    /// The request is not something the proxy can carry.
    #[error("{0}")]
    BadRequest(String),
    /// The request path does not normalize (`%2F`, `%00`, a climb above the root, ...).
    #[error("bad request path: {0}")]
    BadPath(String),
    /// A policy, or the blocklist, denies the request. The answer names no policy.
    #[error("RBAC: access denied")]
    Denied,
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
    /// The Service has `HTTPRoute`s and none of their rules matches the request: 404, as the
    /// Gateway API asks (`HTTPRouteRule.matches`).
    #[error("no HTTPRoute rule of service {service} matches this request")]
    NoRouteRule {
        /// The Service, `name.namespace`.
        service: String,
    },
    /// A route sent the request to a backend this sidecar cannot use (not in its registry:
    /// the caller may not call it): 500, as the Gateway API asks for an invalid backendRef.
    #[error("HTTPRoute {route} sends this request to {backend}, which is not in this sidecar's registry")]
    InvalidBackend {
        /// The route and rule, `namespace/name#rule`.
        route: String,
        /// The backend, `name.namespace`.
        backend: String,
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
    /// The request has more header fields than `--max-headers` (431).
    #[error("the request has more than {limit} header fields")]
    TooManyHeaders {
        /// The limit.
        limit: u32,
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
    /// An `HTTPRoute` timeout passed (`timeouts.request` for the whole request with its
    /// retries, or `timeouts.backendRequest` for the last attempt): 504.
    #[error("{target} did not answer within {timeout} (HTTPRoute timeouts.{which})")]
    RouteTimeout {
        /// The service.
        target: String,
        /// The timeout, as a Gateway API duration (`500ms`, `2s`).
        timeout: String,
        /// `request` or `backendRequest`.
        which: &'static str,
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
