//! Header hygiene between the app and the mesh: hop-by-hop headers (RFC 9110 §7.6.1) never
//! cross a hop, and trustmesh's own headers are set only by the sidecar that can vouch for them.

use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;

use crate::layers::error::ProxyError;

/// The verified identity of the caller, set by the inbound sidecar for the app.
pub const PEER_IDENTITY: HeaderName = HeaderName::from_static("x-trustmesh-peer-identity");
/// The app's original HTTP version when the hop between sidecars upgraded HTTP/1 to h2
/// (linkerd's `l5d-orig-proto`); absent means the app spoke h2.
pub const ORIG_PROTO: HeaderName = HeaderName::from_static("x-trustmesh-orig-proto");

/// The hop-by-hop fields of RFC 9110 §7.6.1 (and the legacy `Keep-Alive` and
/// `Proxy-Connection`), plus `Proxy-Authenticate` / `Proxy-Authorization`, which are for the
/// proxy the client talked to (RFC 9110 §11.7) and never for the app.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Fields that must never arrive as trailers (RFC 9110 §6.5.1: framing, routing and how to
/// read the content), on top of the hop-by-hop ones.
const NOT_TRAILERS: [HeaderName; 5] = [
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::HOST,
    header::TE,
    header::TRAILER,
];

/// The prefix of the fields only a trustmesh sidecar may set.
const TRUSTMESH_PREFIX: &str = "x-trustmesh-";

/// Removes hop-by-hop headers, the ones the `Connection` header names, and `TE` unless it is
/// `trailers` (the only value HTTP/2 allows).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One look at each field name first: most heads carry none of these, and each removal
    // by name hashes the name (nine of them per head, twice per request and sidecar).
    let hop = |n: &HeaderName| *n == header::TE || HOP_BY_HOP.contains(n);
    if !headers.keys().any(hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("trailers"));
    if !te_trailers {
        headers.remove(header::TE);
    }
}

/// Removes the fields only a sidecar may set (`x-trustmesh-*`) among `ours`, with one look at
/// the names first: an app's request nearly never carries one, and each removal by name
/// hashes it. Every name in `ours` must start with `x-trustmesh-`.
pub fn strip_ours(headers: &mut HeaderMap, ours: &[HeaderName]) {
    debug_assert!(ours
        .iter()
        .all(|n| n.as_str().starts_with(TRUSTMESH_PREFIX)));
    if !has_ours(headers) {
        return;
    }
    for name in ours {
        headers.remove(name);
    }
}

/// Whether any field is named `x-trustmesh-*` (one pass over the names, no hashing).
pub fn has_ours(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|n| n.as_str().starts_with(TRUSTMESH_PREFIX))
}

/// Cleans a request's trailers before they go on: trustmesh's own fields (`x-trustmesh-*`:
/// an app that merges trailers into headers must never read a caller's
/// `x-trustmesh-peer-identity`), hop-by-hop fields and the fields RFC 9110 §6.5.1 forbids
/// in trailers.
pub fn strip_trailers(trailers: &mut HeaderMap) {
    strip_hop_by_hop(trailers);
    for name in &NOT_TRAILERS {
        trailers.remove(name);
    }
    let ours: Vec<HeaderName> = trailers
        .keys()
        .filter(|n| n.as_str().starts_with(TRUSTMESH_PREFIX))
        .cloned()
        .collect();
    for name in ours {
        trailers.remove(name);
    }
}

/// Checks a request head before anything else looks at it: a method that is not upper-case
/// (`delete` could dodge a DENY on `DELETE` and reach an app that upper-cases it), more than
/// one `Host`, or an authority with userinfo (`x@y`, which no origin server should see) get
/// 400. `CONNECT` is the caller's to refuse: see [`ProxyError::MethodNotAllowed`].
pub fn check_head(parts: &Parts) -> Result<(), ProxyError> {
    let method = parts.method.as_str();
    if method.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(ProxyError::BadRequest(format!(
            "the method {method:?} is not upper-case"
        )));
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        // RFC 9112 §3.2: a request with more than one Host is refused with 400.
        return Err(ProxyError::BadRequest("more than one Host header".into()));
    }
    let userinfo = host.is_some_and(|h| h.as_bytes().contains(&b'@'))
        || parts
            .uri
            .authority()
            .is_some_and(|a| a.as_str().contains('@'));
    if userinfo {
        // RFC 9110 §4.2.4: userinfo is deprecated in http(s) URIs.
        return Err(ProxyError::BadRequest(
            "the authority carries userinfo (user@host)".into(),
        ));
    }
    Ok(())
}

/// Header fields a sidecar may add to a request on its way (identity, trace context, the
/// caller's protocol): the inbound listener allows `--max-headers` plus these, so a request
/// the outbound sidecar accepted is not refused one hop later.
pub const SIDECAR_HEADERS: u32 = 16;

/// Refuses a request that came with `fields` header fields, more than `limit`
/// (`--max-headers`), with 431. hyper holds HTTP/1 heads to it while parsing; HTTP/2 header
/// lists are counted here.
pub fn check_count(fields: usize, limit: u32) -> Result<(), ProxyError> {
    if fields > limit as usize {
        return Err(ProxyError::TooManyHeaders { limit });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert(header::TE, "gzip".parse().unwrap());
        h.insert("x-app", "kept".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-app"], "kept");
        let mut h = HeaderMap::new();
        h.insert(header::TE, "trailers".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h[header::TE], "trailers");
    }

    #[test]
    fn filters_headers_and_trailers_as_the_table_says() {
        // (name, kept in headers, kept in trailers)
        let table = [
            ("x-app", true, true),
            ("grpc-status", true, true),
            ("connection", false, false),
            ("keep-alive", false, false),
            ("proxy-connection", false, false),
            ("proxy-authorization", false, false),
            ("proxy-authenticate", false, false),
            ("transfer-encoding", false, false),
            ("upgrade", false, false),
            ("x-named", false, false),
            ("te", true, false),
            ("content-length", true, false),
            ("host", true, false),
            ("trailer", true, false),
            ("x-trustmesh-peer-identity", true, false),
            ("x-trustmesh-orig-proto", true, false),
            ("x-trustmesh-anything", true, false),
        ];
        let mut map = HeaderMap::new();
        for (name, _, _) in table {
            let value = match name {
                "connection" => "x-named",
                "te" => "trailers",
                _ => "1",
            };
            map.insert(HeaderName::from_static(name), value.parse().unwrap());
        }
        let mut headers = map.clone();
        strip_hop_by_hop(&mut headers);
        let mut trailers = map;
        strip_trailers(&mut trailers);
        for (name, in_headers, in_trailers) in table {
            assert_eq!(headers.contains_key(name), in_headers, "header {name}");
            assert_eq!(trailers.contains_key(name), in_trailers, "trailer {name}");
        }
    }

    #[test]
    fn strips_only_the_listed_sidecar_fields() {
        let mut h = HeaderMap::new();
        h.insert(PEER_IDENTITY, "spiffe://td/ns/x/sa/forged".parse().unwrap());
        h.append(PEER_IDENTITY, "spiffe://td/ns/x/sa/again".parse().unwrap());
        h.insert(ORIG_PROTO, "HTTP/1.1".parse().unwrap());
        h.insert("x-trustmesh-other", "1".parse().unwrap());
        h.insert("x-app", "kept".parse().unwrap());
        strip_ours(&mut h, &[PEER_IDENTITY, ORIG_PROTO]);
        assert!(!h.contains_key(PEER_IDENTITY));
        assert!(!h.contains_key(ORIG_PROTO));
        assert_eq!(h["x-trustmesh-other"], "1");
        assert_eq!(h["x-app"], "kept");
        let mut forged = HeaderMap::new();
        forged.insert(PEER_IDENTITY, "spiffe://td/ns/x/sa/forged".parse().unwrap());
        forged.insert("x-app", "kept".parse().unwrap());
        strip_ours(&mut forged, &[PEER_IDENTITY]);
        assert!(!forged.contains_key(PEER_IDENTITY));
        assert_eq!(forged.len(), 1);
    }

    fn head(method: &str, uri: &str, hosts: &[&str]) -> Parts {
        let mut b = http::Request::builder()
            .method(http::Method::from_bytes(method.as_bytes()).unwrap())
            .uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn refuses_lowercase_methods_two_hosts_and_userinfo() {
        let ok = [
            head("GET", "/", &["b.test"]),
            head("DELETE", "/x", &["b.test:80"]),
            head("PURGE-2", "/", &[]),
            head("GET", "http://b.test/x", &[]),
        ];
        for p in &ok {
            assert!(check_head(p).is_ok(), "{} {}", p.method, p.uri);
        }
        let bad = [
            head("delete", "/", &["b.test"]),
            head("Get", "/", &["b.test"]),
            head("GET", "/", &["b.test", "c.test"]),
            head("GET", "/", &["x@b.test"]),
            head("GET", "http://x@b.test/", &[]),
        ];
        for p in &bad {
            let err = check_head(p).unwrap_err();
            assert_eq!(err.status(), http::StatusCode::BAD_REQUEST, "{err}");
        }
    }
}
