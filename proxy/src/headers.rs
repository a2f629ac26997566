//! Header hygiene between the app and the mesh: hop-by-hop headers (RFC 9110 §7.6.1) never
//! cross a hop, and trustmesh's own headers are set only by the sidecar that can vouch for them.

use http::header::{self, HeaderMap, HeaderName};

/// The verified identity of the caller, set by the inbound sidecar for the app.
pub const PEER_IDENTITY: HeaderName = HeaderName::from_static("x-trustmesh-peer-identity");
/// The app's original HTTP version when the hop between sidecars upgraded HTTP/1 to h2
/// (linkerd's `l5d-orig-proto`); absent means the app spoke h2.
pub const ORIG_PROTO: HeaderName = HeaderName::from_static("x-trustmesh-orig-proto");

const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    HeaderName::from_static("keep-alive"),
];

/// Removes hop-by-hop headers, the ones the `Connection` header names, and `TE` unless it is
/// `trailers` (the only value HTTP/2 allows).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
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
    headers.remove("proxy-connection");
    let te_trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("trailers"));
    if !te_trailers {
        headers.remove(header::TE);
    }
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
}
