//! The body type every request and response carries through the proxy: bodies are streamed
//! frame by frame, never collected. A request body from a client is also watched for stalls:
//! one that sends nothing for `--body-timeout` is cut, and the request answered `408` if no
//! response has started, and its trailers are cleaned as its headers are.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};

/// The error a streamed body may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed body.
pub type Body = BoxBody<Bytes, BoxError>;

/// Boxes a streamed body received from a peer.
pub fn stream(b: hyper::body::Incoming) -> Body {
    b.map_err(BoxError::from).boxed()
}

/// A small body made by the proxy itself.
pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// Set when a request body was cut for stalling, so the handler can answer `408`.
#[derive(Debug, Clone, Default)]
pub struct Stalled(Arc<AtomicBool>);

impl Stalled {
    /// Whether the body stalled.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A client's request body, cut when no frame arrives for `idle`. Its trailers lose
/// trustmesh's own and hop-by-hop fields ([`crate::layers::headers::strip_trailers`]).
pub fn request(b: hyper::body::Incoming, idle: Duration) -> (Body, Stalled) {
    let stalled = Stalled::default();
    if b.is_end_stream() {
        return (stream(b), stalled);
    }
    let body = TimeoutBody {
        inner: b,
        idle,
        sleep: Box::pin(tokio::time::sleep(idle)),
        stalled: stalled.clone(),
    };
    (body.boxed(), stalled)
}

/// The request body stalled longer than `--body-timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body data for {0:?}")]
pub struct BodyTimeout(Duration);

struct TimeoutBody {
    inner: hyper::body::Incoming,
    idle: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
    stalled: Stalled,
}

impl http_body::Body for TimeoutBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + this.idle;
                this.sleep.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| {
                    let mut f = f.map_err(BoxError::from)?;
                    if let Some(trailers) = f.trailers_mut() {
                        crate::layers::headers::strip_trailers(trailers);
                    }
                    Ok(f)
                }))
            }
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.stalled.0.store(true, Ordering::Relaxed);
                    Poll::Ready(Some(Err(Box::new(BodyTimeout(this.idle)))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
