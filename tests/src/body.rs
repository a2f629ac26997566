//! Bodies that stream: a generator of N bytes that never holds more than one chunk, and a
//! counter that reads a body frame by frame without keeping it.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt as _;

/// Size of each chunk [`GeneratedBody`] yields.
pub const CHUNK: usize = 64 * 1024;

/// A body of `len` bytes produced in [`CHUNK`]-sized frames. Every chunk is the same shared
/// buffer, so a 100 MB body costs 64 KiB of memory.
#[derive(Debug, Clone)]
pub struct GeneratedBody {
    remaining: u64,
    chunk: Bytes,
    exact: bool,
}

impl GeneratedBody {
    /// A body of exactly `len` bytes (a repeating byte pattern) that announces its length, so
    /// HTTP/1.1 sends it with `content-length`.
    pub fn new(len: u64) -> Self {
        let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
        Self {
            remaining: len,
            chunk: Bytes::from(chunk),
            exact: true,
        }
    }

    /// The same bytes without a length up front, so HTTP/1.1 sends them chunked.
    pub fn chunked(len: u64) -> Self {
        Self {
            exact: false,
            ..Self::new(len)
        }
    }
}

impl Body for GeneratedBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.remaining).map_or(CHUNK, |r| r.min(CHUNK));
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        if self.exact {
            SizeHint::with_exact(self.remaining)
        } else {
            SizeHint::default()
        }
    }
}

/// Reads `body` to its end, counting data bytes and dropping each frame as it comes.
pub async fn count_body<B>(mut body: B) -> Result<u64, B::Error>
where
    B: Body + Unpin,
{
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            n += bytes::Buf::remaining(&data) as u64;
        }
    }
    Ok(n)
}
