//! A bodiless request's head, kept to send the request again when the connection it went on
//! was lost before an answer: the outbound balancer sends it to another endpoint, the app's
//! HTTP/1.1 pool on another connection ([`crate::layers::upstream`]). Which losses allow it is
//! each caller's rule; what a lost connection looks like, and which methods may be sent twice
//! (RFC 9110 §9.2.2), is the same for both.

use std::error::Error as _;

use http::{HeaderMap, Method, Request, Uri, Version};
use http_body::Body as _;

use crate::layers::body::{self, Body};

/// The head of a request without a body.
pub struct Head {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Head {
    /// The head of `req` when it has no body; `None` otherwise (its body cannot be replayed).
    pub fn of(req: &Request<Body>) -> Option<Self> {
        req.body().is_end_stream().then(|| Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        })
    }

    /// The request again.
    pub fn request(&self) -> Request<Body> {
        let mut req = Request::new(body::full(""));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }

    /// The request's method.
    pub fn method(&self) -> &Method {
        &self.method
    }
}

/// Whether a request with method `m` may be sent twice (RFC 9110 §9.2.2).
pub fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Whether `error`, with no response head, means the connection was lost under the request
/// (closed, canceled, cut short, or an I/O error underneath), not that the request itself was
/// refused as malformed.
pub fn lost(error: &hyper::Error) -> bool {
    if error.is_user() {
        return false;
    }
    if error.is_closed() || error.is_canceled() || error.is_incomplete_message() {
        return true;
    }
    let mut source = error.source();
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}
