//! `Expect: 100-continue` (RFC 9110 §10.1.1) answered only after authorization.
//!
//! hyper's HTTP/1 server sends `100 Continue` by itself the first time a request body is
//! polled, and HTTP/2 between sidecars cannot carry a 1xx in hyper (its h2 server sends none
//! and its client skips them). So the outbound sidecar never polls the app's body before the
//! destination's sidecar has authorized the head: it first sends a **preflight**, the same head
//! with `x-trustmesh-expect: preflight` and a body that never sends a byte. The inbound
//! sidecar removes the marker, checks and authorizes the head exactly as it would the request
//! and answers `204` with `x-trustmesh-expect: continue` without reaching the app; the
//! preflight's stream is then reset. Only on that answer is the request sent, its body polled
//! and the `100 Continue` sent to the app; any other answer (a `403` denial, a `404`) is the
//! app's final answer, and its client never sends the body.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, EXPECT};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::BodyExt as _;
use tokio::sync::oneshot;

use crate::layers::body::{self, Body, BoxError};

/// The marker of a preflight (request: `preflight`) and of its acceptance (`continue`).
pub const EXPECT_PREFLIGHT: HeaderName = HeaderName::from_static("x-trustmesh-expect");

/// Whether the app's request waits for `100 Continue` before sending a body it has.
pub fn wants_continue<B: http_body::Body>(headers: &HeaderMap, body: &B) -> bool {
    !body.is_end_stream()
        && headers
            .get(EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
}

/// Held while the preflight is out; dropping it resets the preflight's stream.
pub struct Answered {
    _tx: oneshot::Sender<()>,
}

/// The preflight of `req`: its head with the marker, and a body that sends nothing until the
/// [`Answered`] is dropped, then fails (so hyper resets the stream rather than end it short of
/// its `content-length`).
pub fn preflight(req: &Request<Body>) -> (Request<Body>, Answered) {
    let (tx, rx) = oneshot::channel();
    let mut head = Request::new(NoBytes(rx).boxed());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    head.headers_mut()
        .insert(EXPECT_PREFLIGHT, HeaderValue::from_static("preflight"));
    (head, Answered { _tx: tx })
}

/// Whether the destination's sidecar accepted the preflight's head.
pub fn accepted<B>(resp: &Response<B>) -> bool {
    resp.status() == StatusCode::NO_CONTENT
        && resp
            .headers()
            .get(EXPECT_PREFLIGHT)
            .is_some_and(|v| v == "continue")
}

/// The inbound sidecar's answer to an authorized preflight.
pub fn accept() -> Response<Body> {
    let mut resp = Response::new(body::full(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp.headers_mut()
        .insert(EXPECT_PREFLIGHT, HeaderValue::from_static("continue"));
    resp
}

/// A body that sends no byte and fails once its sender is gone.
struct NoBytes(oneshot::Receiver<()>);

/// The preflight was answered; its stream ends.
#[derive(Debug, thiserror::Error)]
#[error("the preflight was answered")]
struct PreflightDone;

impl http_body::Body for NoBytes {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.0).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => Poll::Ready(Some(Err(Box::new(PreflightDone)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_request_with_a_body_and_expect_100_continue_waits() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(EXPECT, HeaderValue::from_str(v).unwrap());
            h
        };
        let some = body::full("x");
        let none = body::full("");
        assert!(wants_continue(&with("100-continue"), &some));
        assert!(wants_continue(&with("100-Continue"), &some));
        assert!(!wants_continue(&with("100-continue"), &none));
        assert!(!wants_continue(&with("something-else"), &some));
        assert!(!wants_continue(&HeaderMap::new(), &some));
    }

    #[tokio::test]
    async fn the_preflight_carries_the_head_and_no_byte_and_fails_once_answered() {
        let req = Request::post("https://b.test/up")
            .header("content-length", "5")
            .header(EXPECT, "100-continue")
            .body(body::full("hello"))
            .unwrap();
        let (pre, answered) = preflight(&req);
        assert_eq!(pre.uri(), req.uri());
        assert_eq!(pre.method(), req.method());
        assert_eq!(pre.headers()["content-length"], "5");
        assert_eq!(pre.headers()[EXPECT_PREFLIGHT], "preflight");
        let mut body = pre.into_body();
        let first = tokio::time::timeout(std::time::Duration::from_millis(50), body.frame()).await;
        assert!(first.is_err(), "no byte while the preflight is out");
        drop(answered);
        let end = body.frame().await.unwrap();
        assert!(
            end.is_err(),
            "fails (a reset), never ends short of content-length"
        );
        assert!(accepted(&accept()));
        let mut denied = accept();
        *denied.status_mut() = StatusCode::FORBIDDEN;
        assert!(!accepted(&denied));
    }
}
