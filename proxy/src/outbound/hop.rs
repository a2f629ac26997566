//! Which protocol the hop between sidecars speaks for one request (ARCHITECTURE.md: ALPN `h2`
//! or `http/1.1`).
//!
//! An HTTP/1.1 app's request to a port declared `http`, or declared nothing, goes as
//! HTTP/1.1 on a pooled keep-alive connection ([`super::pool::http1`]): the same exchange the
//! app made, with no HTTP/2 framing, HPACK or stream task on either sidecar. While more than
//! [`HTTP1_MAX_IN_FLIGHT`] requests are in flight to the endpoint, it goes over HTTP/2 all the
//! same ([`onto_h2`]), where concurrent requests share reads, writes and wake-ups. Everything else
//! stays on HTTP/2: h2 and gRPC apps, ports declared `http2` or `grpc`, upgrades (extended
//! CONNECT, [`super::upgrade`]), `Expect: 100-continue` requests (their preflight,
//! [`crate::layers::expect`], is a stream reset once answered). A chunked body's trailers,
//! declared or not, cross either hop (hyper is patched for it: `vendor/README.md`). The inbound sidecar serves
//! both; it tells the caller's version from the hop's own (HTTP/1.1) or from
//! `x-trustmesh-orig-proto` (HTTP/2), and speaks to its app as before.

use std::net::SocketAddr;

use http::{header, HeaderValue, Request, Version};
use trustmesh_policies::{Protocol, ServiceEntry};

use super::http_route::host_port;
use crate::layers::expect;
use crate::layers::headers::ORIG_PROTO;

/// Requests in flight to one endpoint (this one included) up to which an HTTP/1.1 app's
/// request takes an HTTP/1.1 connection; above it, the endpoint's multiplexed HTTP/2
/// connection, where many requests share each read, write and wake-up (one at a time,
/// HTTP/1.1 costs less per request; thirty at a time, HTTP/2 does).
pub const HTTP1_MAX_IN_FLIGHT: usize = 4;

/// The protocol between sidecars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// HTTP/2, one multiplexed connection per endpoint.
    H2,
    /// HTTP/1.1, pooled keep-alive connections.
    Http1,
}

/// The hop for `req` to `service`, whose port is the one `host` names, else the original
/// destination's, else the service's first, else 80 (as routes read it). `enabled` is
/// `--hop-http1`.
pub fn choose<B: http_body::Body>(
    enabled: bool,
    req: &Request<B>,
    service: &ServiceEntry,
    host: &str,
    orig: Option<SocketAddr>,
) -> Hop {
    if !enabled || req.version() == Version::HTTP_2 {
        return Hop::H2;
    }
    if expect::wants_continue(req.headers(), req.body()) {
        return Hop::H2;
    }
    let port = host_port(host)
        .or(orig.map(|o| o.port()))
        .or_else(|| service.ports.first().map(|p| p.port))
        .unwrap_or(80);
    let declared = service
        .ports
        .iter()
        .find(|p| p.port == port)
        .map(|p| p.protocol);
    match declared {
        Some(Protocol::Http2 | Protocol::Grpc) => Hop::H2,
        Some(Protocol::Http | Protocol::Tcp) | None => Hop::Http1,
    }
}

/// A request rewritten for the HTTP/1.1 hop ([`super::forward::to_mesh_request`]), moved to
/// the HTTP/2 hop: `:authority` from its `Host`, the caller's version recorded. `None` when
/// its `Host` is no URI authority: the request back, to stay on HTTP/1.1.
// The request itself comes back, moved not copied (as hyper's `try_send_request` does).
#[allow(clippy::result_large_err)]
pub fn onto_h2<B>(req: Request<B>) -> Result<Request<B>, Request<B>> {
    let (mut parts, body) = req.into_parts();
    let uri = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|host| super::forward::hop_uri(&parts.uri, host).ok());
    let Some(uri) = uri else {
        return Err(Request::from_parts(parts, body));
    };
    parts.headers.remove(header::HOST);
    parts
        .headers
        .insert(ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
    parts.uri = uri;
    parts.version = Version::HTTP_2;
    Ok(Request::from_parts(parts, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(ports: &[(u16, &str)]) -> ServiceEntry {
        let ports: Vec<serde_json::Value> = ports
            .iter()
            .map(|(port, protocol)| serde_json::json!({"port": port, "protocol": protocol}))
            .collect();
        serde_json::from_value(serde_json::json!({
            "name": "b",
            "namespace": "t",
            "identity": "spiffe://cluster.local/ns/t/sa/b",
            "ports": ports,
        }))
        .unwrap()
    }

    fn req(version: Version, expect: bool) -> Request<http_body_util::Full<bytes::Bytes>> {
        let mut b = Request::builder().version(version).uri("/x");
        if expect {
            b = b.header(http::header::EXPECT, "100-continue");
        }
        b.body(http_body_util::Full::new(bytes::Bytes::from_static(b"up")))
            .unwrap()
    }

    #[test]
    fn http1_apps_take_http1_unless_the_port_is_declared_http2_or_grpc() {
        let h1 = req(Version::HTTP_11, false);
        let http = service(&[(80, "http")]);
        assert_eq!(choose(true, &h1, &http, "b", None), Hop::Http1);
        assert_eq!(choose(true, &h1, &service(&[]), "b", None), Hop::Http1);
        assert_eq!(
            choose(true, &req(Version::HTTP_10, false), &http, "b", None),
            Hop::Http1
        );
        let mixed = service(&[(80, "http"), (9090, "grpc"), (8443, "http2")]);
        assert_eq!(choose(true, &h1, &mixed, "b:80", None), Hop::Http1);
        assert_eq!(choose(true, &h1, &mixed, "b:9090", None), Hop::H2);
        assert_eq!(choose(true, &h1, &mixed, "b:8443", None), Hop::H2);
        // No port in Host: the original destination's, then the first declared.
        let orig: SocketAddr = "10.0.0.9:9090".parse().unwrap();
        assert_eq!(choose(true, &h1, &mixed, "b", Some(orig)), Hop::H2);
        assert_eq!(
            choose(true, &h1, &service(&[(50051, "grpc")]), "b", None),
            Hop::H2
        );
    }

    #[test]
    fn onto_h2_moves_host_to_the_authority_and_records_the_version() {
        let req = Request::builder()
            .version(Version::HTTP_11)
            .uri("/x?y=1")
            .header(header::HOST, "b.test:80")
            .body(())
            .unwrap();
        let req = onto_h2(req).unwrap();
        assert_eq!(req.version(), Version::HTTP_2);
        assert_eq!(req.uri(), "https://b.test:80/x?y=1");
        assert!(req.headers().get(header::HOST).is_none());
        assert_eq!(req.headers()[ORIG_PROTO], "HTTP/1.1");
        let bad = Request::builder()
            .uri("/x")
            .header(header::HOST, "a b")
            .body(())
            .unwrap();
        assert_eq!(onto_h2(bad).unwrap_err().version(), Version::HTTP_11);
    }

    #[test]
    fn h2_apps_expect_continue_and_the_flag_off_stay_on_h2_and_chunked_bodies_do_not() {
        let http = service(&[(80, "http")]);
        assert_eq!(
            choose(true, &req(Version::HTTP_2, false), &http, "b", None),
            Hop::H2
        );
        assert_eq!(
            choose(true, &req(Version::HTTP_11, true), &http, "b", None),
            Hop::H2
        );
        assert_eq!(
            choose(false, &req(Version::HTTP_11, false), &http, "b", None),
            Hop::H2
        );
        let chunked = Request::builder()
            .uri("/x")
            .body(http_body_util::StreamBody::new(
                futures_util::stream::empty::<
                    Result<http_body::Frame<bytes::Bytes>, std::convert::Infallible>,
                >(),
            ))
            .unwrap();
        assert_eq!(choose(true, &chunked, &http, "b", None), Hop::Http1);
    }
}
