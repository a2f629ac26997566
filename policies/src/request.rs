//! What the evaluator sees of a request: the verified peer, the connection and, for HTTP, the
//! request line and headers. Everything is borrowed, so building a [`Request`] per request
//! allocates nothing.

use std::collections::BTreeMap;
use std::net::IpAddr;

use trustmesh_certs::SpiffeId;

use crate::normalize::RoutePath;

/// Header lookup for `when: request.headers[NAME]` conditions.
pub trait Headers {
    /// The value of header `name` (compared case-insensitively; `name` is given lowercase), or
    /// `None` when absent or not valid text. With several values, the first one.
    fn get(&self, name: &str) -> Option<&str>;

    /// Calls `f` with every value of header `name` in order (`None` for a value that is not
    /// valid text) until it returns `true`; whether one did. `false` when the header is absent.
    /// The default knows one value at most, through [`Headers::get`].
    fn any_value(&self, name: &str, f: &mut dyn FnMut(Option<&str>) -> bool) -> bool {
        self.get(name).is_some_and(|v| f(Some(v)))
    }

    /// Whether header `name` is present at all (even with a value that is not valid text).
    fn contains(&self, name: &str) -> bool {
        self.any_value(name, &mut |_| true)
    }
}

/// No headers at all (TCP connections, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHeaders;

impl Headers for NoHeaders {
    fn get(&self, _name: &str) -> Option<&str> {
        None
    }
}

impl<H: Headers + ?Sized> Headers for &H {
    fn get(&self, name: &str) -> Option<&str> {
        H::get(self, name)
    }

    fn any_value(&self, name: &str, f: &mut dyn FnMut(Option<&str>) -> bool) -> bool {
        H::any_value(self, name, f)
    }
}

impl Headers for [(&str, &str)] {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }

    fn any_value(&self, name: &str, f: &mut dyn FnMut(Option<&str>) -> bool) -> bool {
        self.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .any(|(_, v)| f(Some(v)))
    }
}

impl<const N: usize> Headers for [(&str, &str); N] {
    fn get(&self, name: &str) -> Option<&str> {
        Headers::get(self.as_slice(), name)
    }

    fn any_value(&self, name: &str, f: &mut dyn FnMut(Option<&str>) -> bool) -> bool {
        Headers::any_value(self.as_slice(), name, f)
    }
}

impl Headers for Vec<(String, String)> {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn any_value(&self, name: &str, f: &mut dyn FnMut(Option<&str>) -> bool) -> bool {
        self.iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .any(|(_, v)| f(Some(v)))
    }
}

impl Headers for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Headers for http::HeaderMap {
    fn get(&self, name: &str) -> Option<&str> {
        http::HeaderMap::get(self, name).and_then(|v| v.to_str().ok())
    }

    fn any_value(&self, name: &str, f: &mut dyn FnMut(Option<&str>) -> bool) -> bool {
        self.get_all(name).iter().any(|v| f(v.to_str().ok()))
    }
}

/// One request (or one opaque TCP connection) to authorize.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The peer's SPIFFE ID from its verified client certificate; `None` for no verified peer.
    pub source: Option<&'a SpiffeId>,
    /// The connection's peer address.
    pub source_ip: Option<IpAddr>,
    /// The HTTP method (`None` for TCP).
    pub method: Option<&'a str>,
    /// The normalized path (`None` for TCP).
    pub path: Option<&'a RoutePath>,
    /// `Host` / `:authority`, port allowed (it is stripped before matching).
    pub host: Option<&'a str>,
    /// The destination port (the service port the caller addressed).
    pub port: u16,
    /// The request headers.
    pub headers: &'a dyn Headers,
    /// The TLS SNI the peer sent.
    pub sni: Option<&'a str>,
    /// An opaque TCP connection rather than an HTTP request.
    pub is_tcp: bool,
}

impl<'a> Request<'a> {
    /// An HTTP request with no headers, host or SNI; set the other fields as needed.
    pub fn http(
        source: Option<&'a SpiffeId>,
        method: &'a str,
        path: &'a RoutePath,
        port: u16,
    ) -> Self {
        Self {
            source,
            source_ip: None,
            method: Some(method),
            path: Some(path),
            host: None,
            port,
            headers: &NoHeaders,
            sni: None,
            is_tcp: false,
        }
    }

    /// An opaque TCP connection, authorized on identity, address and port alone.
    pub fn tcp(source: Option<&'a SpiffeId>, source_ip: Option<IpAddr>, port: u16) -> Self {
        Self {
            source,
            source_ip,
            method: None,
            path: None,
            host: None,
            port,
            headers: &NoHeaders,
            sni: None,
            is_tcp: true,
        }
    }
}

impl std::fmt::Debug for Request<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("source", &self.source)
            .field("source_ip", &self.source_ip)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("sni", &self.sni)
            .field("is_tcp", &self.is_tcp)
            .finish_non_exhaustive()
    }
}
