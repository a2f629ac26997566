//! A route's `timeouts.request` covers the whole exchange (Gateway API GEP-1742: from the
//! request's start to the end of the response), so a response body still streaming at the
//! deadline is cut: the client sees a reset, never a body that looks complete.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::time::{Instant, Sleep};

use crate::layers::body::{Body, BoxError};

/// The response body ran past the route's `timeouts.request`.
#[derive(Debug, thiserror::Error)]
#[error("the response was not complete within the HTTPRoute's timeouts.request")]
pub struct PastDeadline;

/// `body`, cut with [`PastDeadline`] at `deadline`.
pub fn until(body: Body, deadline: Instant) -> Body {
    if body.is_end_stream() {
        return body;
    }
    DeadlineBody {
        inner: body,
        sleep: Box::pin(tokio::time::sleep_until(deadline)),
    }
    .boxed()
}

struct DeadlineBody {
    inner: Body,
    sleep: Pin<Box<Sleep>>,
}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(PastDeadline)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::StreamBody;

    use super::*;

    #[tokio::test]
    async fn a_body_still_streaming_at_the_deadline_ends_with_an_error() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        let body = StreamBody::new(stream).boxed();
        let mut cut = until(body, Instant::now() + Duration::from_millis(50));
        tx.send(Ok(Frame::data(Bytes::from_static(b"first"))))
            .await
            .unwrap();
        let first = cut.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "first");
        // Nothing more comes; the deadline passes.
        let err = cut.frame().await.unwrap().unwrap_err();
        assert!(err.is::<PastDeadline>(), "{err}");
        drop(tx);
    }

    #[tokio::test]
    async fn a_body_that_ends_in_time_is_untouched() {
        let body = crate::layers::body::full("all of it");
        let whole = until(body, Instant::now() + Duration::from_secs(1))
            .collect()
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(whole, "all of it");
    }
}
