//! The one place where what the proxy answers itself becomes a response (as linkerd's
//! `ServerRescue` does): every refusal and failure on the request path is a [`ProxyError`],
//! and [`respond`] alone decides its status, its body and, for a gRPC caller, its gRPC status.
//!
//! An HTTP caller gets the status and a one-line plain-text body: 400 bad request or path,
//! 403 denied (`RBAC: access denied`, naming no policy), 404 unknown destination or no
//! matching route rule, 500 a route's backend outside the registry, 405 inbound
//! `CONNECT`, 408 stalled request body, 502 upstream refused or failed verification, 503 not
//! ready or no endpoint, 504 upstream timeout. A caller that sent `content-type:
//! application/grpc*` gets a gRPC trailers-only response instead (HTTP 200, `content-type:
//! application/grpc`, `grpc-status`, `grpc-message`; ARCHITECTURE.md "Transparency"), its
//! code from [`grpc_code`]. Bodies say what happened without echoing anything secret.

use http::{header, HeaderMap, HeaderValue, Response, StatusCode};

use crate::layers::body::{self, Body};
pub use crate::layers::error::ProxyError;

impl ProxyError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoHost | Self::BadRequest(_) | Self::BadPath(_) => StatusCode::BAD_REQUEST,
            Self::Denied => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnknownService { .. } | Self::NoRouteRule { .. } => StatusCode::NOT_FOUND,
            Self::InvalidBackend { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Withheld { .. } => StatusCode::FORBIDDEN,
            Self::NotReady(_) | Self::NoEndpoints(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect { .. }
            | Self::Tls { .. }
            | Self::Upstream { .. }
            | Self::OutsideMesh { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } | Self::RouteTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            Self::BodyTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyHeaders { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }
}

/// Whether the caller speaks gRPC (`content-type: application/grpc`, `application/grpc+proto`,
/// ...): it is answered in gRPC's terms.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The response for `err`, for a caller that speaks gRPC (`grpc`, see [`is_grpc`]) or not.
/// The error is logged here, except where the deciding layer logged it already.
pub fn respond(err: ProxyError, grpc: bool) -> Response<Body> {
    let status = err.status();
    match err {
        // Decisions, logged at info where they were made (authorize, route).
        ProxyError::OutsideMesh { .. } | ProxyError::Denied | ProxyError::BadPath(_) => {}
        _ if status.is_server_error() => tracing::warn!(status = status.as_u16(), "{err}"),
        _ => tracing::info!(status = status.as_u16(), "{err}"),
    }
    let text = match err {
        // The denial is the same answer Envoy's RBAC filter gives.
        ProxyError::Denied => err.to_string(),
        _ => format!("trustmesh: {err}\n"),
    };
    if grpc {
        return grpc_response(grpc_code(status), text.trim_end());
    }
    text_response(status, text)
}

/// The gRPC status code for a status the proxy answers with. 400, 403, 404, 502 and 503 map
/// as gRPC's "HTTP to gRPC status code mapping" says; that table is for a client that got no
/// `grpc-status`, and says 504 and 429 are `UNAVAILABLE`, but here the sidecar is the one that
/// gave up or refused: its own timeout is `DEADLINE_EXCEEDED` (4) and a limit it enforces
/// (408, 429, 431) `RESOURCE_EXHAUSTED` (8). Anything else is `UNKNOWN` (2), as in that table.
pub fn grpc_code(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 13,            // INTERNAL
        401 => 16,            // UNAUTHENTICATED
        403 => 7,             // PERMISSION_DENIED
        404 => 12,            // UNIMPLEMENTED
        408 | 429 | 431 => 8, // RESOURCE_EXHAUSTED
        502 | 503 => 14,      // UNAVAILABLE
        504 => 4,             // DEADLINE_EXCEEDED
        _ => 2,               // UNKNOWN
    }
}

/// A gRPC "trailers-only" response: HTTP 200, the status in the header block, no body (gRPC
/// over HTTP/2, "Responses"). `message` is percent-encoded as `grpc-message` requires.
pub fn grpc_response(code: u8, message: &str) -> Response<Body> {
    let mut resp = Response::new(body::full(""));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from(u16::from(code)));
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        h.insert("grpc-message", v);
    }
    resp
}

/// `grpc-message` encoding: printable ASCII except `%` as is, every other byte as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;

    use super::*;

    async fn text(resp: Response<Body>) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn addr() -> std::net::SocketAddr {
        "10.0.0.9:443".parse().unwrap()
    }

    /// Every error: its HTTP status and body, and the gRPC status a gRPC caller gets instead.
    #[tokio::test]
    async fn every_error_has_one_answer_for_http_and_one_for_grpc() {
        let target = || "orders.prod (10.0.0.7:15006)".to_string();
        let table: Vec<(ProxyError, u16, &str, &str)> = vec![
            (ProxyError::NoHost, 400, "trustmesh: the request has no Host header\n", "13"),
            (ProxyError::BadRequest("bad head".into()), 400, "trustmesh: bad head\n", "13"),
            (ProxyError::BadPath("`%2F` in a segment".into()), 400, "trustmesh: bad request path: `%2F` in a segment\n", "13"),
            (ProxyError::Denied, 403, "RBAC: access denied", "7"),
            (ProxyError::Withheld { addr: addr() }, 403, "trustmesh: 10.0.0.9:443 is a mesh workload this sidecar's identity may not call\n", "7"),
            (ProxyError::UnknownService { host: "nope".into() }, 404, "trustmesh: no service \"nope\" in the mesh registry (known as name, name.namespace or name.namespace.svc.cluster.local)\n", "12"),
            (ProxyError::NoRouteRule { service: "orders.prod".into() }, 404, "trustmesh: no HTTPRoute rule of service orders.prod matches this request\n", "12"),
            (ProxyError::InvalidBackend { route: "prod/r#0".into(), backend: "x.prod".into() }, 500, "trustmesh: HTTPRoute prod/r#0 sends this request to x.prod, which is not in this sidecar's registry\n", "2"),
            (ProxyError::MethodNotAllowed("CONNECT"), 405, "trustmesh: CONNECT is not allowed here\n", "2"),
            (ProxyError::BodyTimeout { secs: 10 }, 408, "trustmesh: the client sent no request body data for 10 s\n", "8"),
            (ProxyError::TooManyHeaders { limit: 100 }, 431, "trustmesh: the request has more than 100 header fields\n", "8"),
            (ProxyError::Connect { target: target(), reason: "refused".into() }, 502, "trustmesh: cannot connect to orders.prod (10.0.0.7:15006): refused\n", "14"),
            (ProxyError::Tls { target: target(), reason: "bad id".into() }, 502, "trustmesh: mTLS to orders.prod (10.0.0.7:15006) failed: bad id\n", "14"),
            (ProxyError::Upstream { target: target(), reason: "reset".into() }, 502, "trustmesh: orders.prod (10.0.0.7:15006) failed: reset\n", "14"),
            (ProxyError::OutsideMesh { addr: addr() }, 502, "trustmesh: 10.0.0.9:443 is not in the mesh registry and mesh.yaml has outbound_policy: deny; nothing was sent\n", "14"),
            (ProxyError::NotReady("no policy snapshot yet"), 503, "trustmesh: the sidecar is not ready: no policy snapshot yet\n", "14"),
            (ProxyError::NoEndpoints("orders".into()), 503, "trustmesh: service orders has no endpoints in the registry\n", "14"),
            (ProxyError::Timeout { target: target(), secs: 30 }, 504, "trustmesh: orders.prod (10.0.0.7:15006) did not answer within 30 s\n", "4"),
            (ProxyError::RouteTimeout { target: "orders.prod".into(), timeout: "500ms".into(), which: "request" }, 504, "trustmesh: orders.prod did not answer within 500ms (HTTPRoute timeouts.request)\n", "4"),
        ];
        for (err, status, body, grpc_status) in table {
            let label = format!("{err:?}");
            let grpc = respond(clone(&err), true);
            assert_eq!(grpc.status(), StatusCode::OK, "{label}");
            let h = grpc.headers();
            assert_eq!(h["content-type"], "application/grpc", "{label}");
            assert_eq!(h["grpc-status"], grpc_status, "{label}");
            let message = percent_encode(body.trim_end());
            assert_eq!(h["grpc-message"].to_str().unwrap(), message, "{label}");
            assert_eq!(text(grpc).await, "", "{label}");
            let http = respond(err, false);
            assert_eq!(http.status().as_u16(), status, "{label}");
            assert_eq!(
                http.headers()["content-type"],
                "text/plain; charset=utf-8",
                "{label}"
            );
            assert_eq!(text(http).await, body, "{label}");
        }
    }

    /// The same error again (`ProxyError` holds no clones of its own).
    fn clone(e: &ProxyError) -> ProxyError {
        match e {
            ProxyError::NoHost => ProxyError::NoHost,
            ProxyError::BadRequest(s) => ProxyError::BadRequest(s.clone()),
            ProxyError::BadPath(s) => ProxyError::BadPath(s.clone()),
            ProxyError::Denied => ProxyError::Denied,
            ProxyError::MethodNotAllowed(m) => ProxyError::MethodNotAllowed(m),
            ProxyError::UnknownService { host } => {
                ProxyError::UnknownService { host: host.clone() }
            }
            ProxyError::OutsideMesh { addr } => ProxyError::OutsideMesh { addr: *addr },
            ProxyError::NoRouteRule { service } => ProxyError::NoRouteRule {
                service: service.clone(),
            },
            ProxyError::InvalidBackend { route, backend } => ProxyError::InvalidBackend {
                route: route.clone(),
                backend: backend.clone(),
            },
            ProxyError::NoEndpoints(s) => ProxyError::NoEndpoints(s.clone()),
            ProxyError::NotReady(s) => ProxyError::NotReady(s),
            ProxyError::Connect { target, reason } => ProxyError::Connect {
                target: target.clone(),
                reason: reason.clone(),
            },
            ProxyError::Tls { target, reason } => ProxyError::Tls {
                target: target.clone(),
                reason: reason.clone(),
            },
            ProxyError::Withheld { addr } => ProxyError::Withheld { addr: *addr },
            ProxyError::BodyTimeout { secs } => ProxyError::BodyTimeout { secs: *secs },
            ProxyError::TooManyHeaders { limit } => ProxyError::TooManyHeaders { limit: *limit },
            ProxyError::Timeout { target, secs } => ProxyError::Timeout {
                target: target.clone(),
                secs: *secs,
            },
            ProxyError::RouteTimeout {
                target,
                timeout,
                which,
            } => ProxyError::RouteTimeout {
                target: target.clone(),
                timeout: timeout.clone(),
                which,
            },
            ProxyError::Upstream { target, reason } => ProxyError::Upstream {
                target: target.clone(),
                reason: reason.clone(),
            },
        }
    }

    #[test]
    fn limits_the_sidecar_enforces_are_resource_exhausted() {
        for status in [408, 429, 431] {
            let s = StatusCode::from_u16(status).unwrap();
            assert_eq!(grpc_code(s), 8, "{status}");
        }
        assert_eq!(grpc_code(StatusCode::INTERNAL_SERVER_ERROR), 2);
    }

    #[test]
    fn grpc_messages_are_percent_encoded() {
        let resp = grpc_response(13, "50% off\nnow: é");
        assert_eq!(resp.headers()["grpc-message"], "50%25 off%0Anow: %C3%A9");
    }

    #[test]
    fn only_a_grpc_content_type_is_a_grpc_caller() {
        let mut h = HeaderMap::new();
        assert!(!is_grpc(&h));
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/json", false),
            ("text/plain", false),
        ] {
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&h), grpc, "{ct}");
        }
    }
}
