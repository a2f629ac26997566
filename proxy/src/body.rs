//! The body type every request and response carries through the proxy: bodies are streamed
//! frame by frame, never collected.

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};

/// A streamed body.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Boxes a streamed body received from a peer.
pub fn stream(b: hyper::body::Incoming) -> Body {
    b.boxed()
}

/// A small body made by the proxy itself.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}
