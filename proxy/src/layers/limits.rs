//! Limits against slow or greedy clients, on the inbound and outbound listeners alike, each
//! with a flag and counted in `trustmesh_limits_exceeded_total{limit,direction}` when hit:
//!
//! | limit | flag | default | what happens |
//! | --- | --- | --- | --- |
//! | `connections` | `--max-connections` | 10000 per listener | a connection over it is closed at once; an upgraded one counts until its tunnel closes |
//! | `handshake_timeout` | `--handshake-timeout` | 10s | an inbound TLS handshake slower than this is dropped |
//! | `header_timeout` | `--header-timeout` | 10s | an HTTP/1 request head not complete in time (counted from its first byte, or from the connection's start for the first request) gets `408` and the connection is closed (slowloris); an idle kept-alive connection waits for `--idle-timeout` instead |
//! | `header_bytes` | `--max-header-bytes` | 64 KiB | an HTTP/1 head larger than this gets `431`; for HTTP/2, the header list limit is announced in SETTINGS |
//! | `header_count` | `--max-headers` | 100 (Envoy's) | an HTTP/1 head with more fields gets `431` from hyper; an HTTP/2 request, from [`crate::layers::headers::check_count`] |
//! | `body_timeout` | `--body-timeout` | 10s | a request body that sends nothing this long is cut; `408` when no response has started (`body.rs`) |
//! | `header_timeout` (HTTP/2) | `--header-timeout` | 10s | an HTTP/2 connection whose preface and first request are not complete in time is closed; PING and SETTINGS frames do not count |
//! | `idle_timeout` | `--idle-timeout` | 5m | a connection with no request in flight and nothing moving for this long is closed (HTTP/2: no stream, then GOAWAY; frames without a stream do not count) |
//! | `connections_per_identity` | `--max-connections-per-identity` | a quarter of `--max-connections` | an inbound connection of an identity that already holds this many is closed after the handshake |
//! | streams | `--max-concurrent-streams` | 256 | announced to HTTP/2 clients (RFC 9113 §6.5.2); the client must not open more |

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::observe::metrics::Metrics;

mod tunnels;

pub use tunnels::OpenTunnel;

/// Counts a connection that ended on a limit; other errors are not limits. hyper answers
/// `431` alike for a head over `--max-header-bytes` and one over `--max-headers`;
/// `head_within_bytes` (the head read so far is under the byte limit) tells them apart.
pub fn count_error(
    metrics: &Metrics,
    direction: &str,
    err: &(dyn std::error::Error + 'static),
    head_within_bytes: bool,
) {
    let Some(e) = err.downcast_ref::<hyper::Error>() else {
        return;
    };
    if e.is_timeout() {
        exceeded(metrics, "header_timeout", direction);
    } else if e.is_parse_too_large() && head_within_bytes {
        exceeded(metrics, "header_count", direction);
    } else if e.is_parse_too_large() {
        exceeded(metrics, "header_bytes", direction);
    }
}

/// Counts one hit of `limit`.
pub fn exceeded(metrics: &Metrics, limit: &str, direction: &str) {
    metrics
        .limits_exceeded
        .with_label_values(&[limit, direction])
        .inc();
    tracing::debug!(limit, direction, "limit exceeded");
}

/// When a connection last moved a byte, and how many requests it has in flight.
#[derive(Debug)]
pub struct Activity {
    base: Instant,
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
    /// Requests started on the connection so far (a head was complete).
    started: AtomicU64,
    /// The connection was closed with `408` because a head did not complete in time.
    head_timed_out: AtomicBool,
    /// Bytes of the HTTP/1 request head being read (0 between heads).
    head_bytes: AtomicU64,
    /// The client sent the HTTP/2 preface: from then on only streams count as activity,
    /// never bytes (PING, SETTINGS and WINDOW_UPDATE frames keep nothing alive).
    h2: AtomicBool,
    /// Upgrades' tunnels still open ([`Activity::tunnel`]), and the signal their last close
    /// gives ([`Activity::tunnels_closed`]).
    tunnels: AtomicUsize,
    tunnel_closed: tokio::sync::Notify,
}

/// Why the watchdog ([`Activity::expired`]) gave up on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// An HTTP/2 connection opened no stream within `--header-timeout` of its start, or an
    /// HTTP/1 head did not complete in time (answered `408`).
    Header,
    /// Nothing in flight and nothing moving for `--idle-timeout`.
    Idle,
}

impl Expired {
    /// The `limit` label it is counted under.
    pub fn label(self) -> &'static str {
        match self {
            Self::Header => "header_timeout",
            Self::Idle => "idle_timeout",
        }
    }
}

impl Activity {
    /// A connection that is active now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            head_timed_out: AtomicBool::new(false),
            head_bytes: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            tunnels: AtomicUsize::new(0),
            tunnel_closed: tokio::sync::Notify::new(),
        })
    }

    /// Records that the connection moved something that counts (a request, a body frame).
    pub fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Marks a request in flight until the guard drops.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Whether the connection was answered `408` for a request head that did not complete.
    pub fn head_timed_out(&self) -> bool {
        self.head_timed_out.load(Ordering::Relaxed)
    }

    /// Bytes of the HTTP/1 request head being read so far (0 between heads).
    pub fn head_bytes(&self) -> u64 {
        self.head_bytes.load(Ordering::Relaxed)
    }

    /// Whether the connection speaks HTTP/2 (its preface arrived).
    pub fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    /// Resolves when the connection should be closed: an HTTP/2 connection that has not
    /// started a request `header_timeout` after it was accepted (its preface and first
    /// HEADERS must arrive by then; HTTP/1 heads have [`Tracked`]'s 408 for that), or any
    /// connection with no request in flight and nothing moving for `idle_timeout`, or one
    /// answered `408` by [`Tracked`] (within a second).
    pub async fn expired(&self, header_timeout: Duration, idle_timeout: Duration) -> Expired {
        loop {
            if self.head_timed_out() {
                // `Tracked` answered 408: the connection ends, whether or not the client
                // reads the answer.
                return Expired::Header;
            }
            if self.is_h2() && self.started.load(Ordering::Relaxed) == 0 {
                let left = header_timeout.saturating_sub(self.base.elapsed());
                if left.is_zero() {
                    return Expired::Header;
                }
                tokio::time::sleep(left.clamp(Duration::from_millis(10), Duration::from_secs(1)))
                    .await;
                continue;
            }
            let wait = self.idle_wait(idle_timeout);
            if wait.is_zero() {
                return Expired::Idle;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// How long until the connection could be idle for `timeout`; zero when it is now.
    fn idle_wait(&self, timeout: Duration) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        let idle_for = self.base.elapsed().saturating_sub(last);
        if idle_for >= timeout && self.in_flight.load(Ordering::Relaxed) == 0 {
            return Duration::ZERO;
        }
        // Check again when the timeout could next run out (at least every second while a
        // request is in flight).
        timeout
            .saturating_sub(idle_for)
            .clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

/// A request in flight on a connection (see [`Activity::request`]).
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An IO that records its activity and, for HTTP/1, enforces `--header-timeout` itself so
/// that a client too slow to finish a request head gets `408 Request Timeout` before the
/// connection closes (hyper's own header timeout closes without a word; it stays behind this
/// one as a backstop). On an HTTP/2 connection (seen by its preface) bytes stop counting as
/// activity: only streams do, so PINGs cannot hold a connection open.
pub struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
    head: Option<HeadTimer>,
}

struct HeadTimer {
    timeout: Duration,
    /// When the head being waited for began (connection start, or the first byte after the
    /// last request started); `None` while no head is awaited.
    since: Option<tokio::time::Instant>,
    seen_started: u64,
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// Bytes of the 408 answer already written, once the timeout fired.
    written: Option<usize>,
    first_read: bool,
}

const REQUEST_TIMEOUT_408: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

impl<T> Tracked<T> {
    /// Wraps `inner` and answers `408` when an HTTP/1 request head takes longer than `timeout`.
    pub fn with_head_timeout(inner: T, activity: Arc<Activity>, timeout: Duration) -> Self {
        let now = tokio::time::Instant::now();
        Self {
            inner,
            activity,
            head: Some(HeadTimer {
                timeout,
                since: Some(now),
                seen_started: 0,
                sleep: Box::pin(tokio::time::sleep_until(now + timeout)),
                written: None,
                first_read: true,
            }),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Tracked<T> {
    /// Writes the 408 answer (resuming where a previous call left off) and reports EOF to the
    /// HTTP server above, which then closes the connection.
    fn answer_408(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let Some(head) = self.head.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut written = head.written.unwrap_or(0);
        while written < REQUEST_TIMEOUT_408.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &REQUEST_TIMEOUT_408[written..]) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => break,
                Poll::Ready(Ok(n)) => written += n,
                Poll::Pending => {
                    head.written = Some(written);
                    return Poll::Pending;
                }
            }
        }
        head.written = Some(REQUEST_TIMEOUT_408.len());
        let _ = Pin::new(&mut self.inner).poll_flush(cx);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if let Some(head) = this.head.as_mut() {
            if head.written.is_some() {
                return this.answer_408(cx);
            }
            let started = this.activity.started.load(Ordering::Relaxed);
            if started != head.seen_started {
                head.seen_started = started;
                head.since = None;
                this.activity.head_bytes.store(0, Ordering::Relaxed);
            }
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let got = &buf.filled()[before..];
        if !got.is_empty() && !this.activity.is_h2() {
            this.activity.touch();
        }
        let Some(head) = this.head.as_mut() else {
            return r;
        };
        if !got.is_empty() {
            if head.first_read && got.starts_with(b"PRI ") {
                // The HTTP/2 preface: from here on streams, not bytes, are activity, and
                // `Activity::expired` holds the first request to the header timeout.
                this.activity.h2.store(true, Ordering::Relaxed);
                this.head = None;
                return r;
            }
            head.first_read = false;
            if head.since.is_none() && this.activity.in_flight.load(Ordering::Relaxed) == 0 {
                let now = tokio::time::Instant::now();
                head.since = Some(now);
                head.sleep.as_mut().reset(now + head.timeout);
            }
            if head.since.is_some() {
                this.activity
                    .head_bytes
                    .fetch_add(got.len() as u64, Ordering::Relaxed);
            }
        }
        if r.is_pending() && head.since.is_some() && head.sleep.as_mut().poll(cx).is_ready() {
            if this.activity.in_flight.load(Ordering::Relaxed) == 0 {
                this.activity.head_timed_out.store(true, Ordering::Relaxed);
                head.written = Some(0);
                return this.answer_408(cx);
            }
            head.since = None;
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) && !self.activity.is_h2() {
            self.activity.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) && !self.activity.is_h2() {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn idle_waits_for_requests_in_flight() {
        let a = Activity::new();
        let req = a.request();
        let (header, idle) = (Duration::from_millis(50), Duration::from_millis(50));
        let expired = tokio::time::timeout(Duration::from_millis(300), a.expired(header, idle));
        assert!(expired.await.is_err(), "idle while a request is in flight");
        drop(req);
        let expired = tokio::time::timeout(Duration::from_secs(2), a.expired(header, idle));
        assert_eq!(expired.await.ok(), Some(Expired::Idle));
    }

    #[tokio::test]
    async fn an_h2_connection_without_a_request_expires_at_the_header_timeout() {
        let a = Activity::new();
        a.h2.store(true, Ordering::Relaxed);
        let (header, idle) = (Duration::from_millis(100), Duration::from_secs(60));
        let got = tokio::time::timeout(Duration::from_secs(5), a.expired(header, idle)).await;
        assert_eq!(got.ok(), Some(Expired::Header));
        // Once it has served a request, only the idle timeout applies.
        drop(a.request());
        let got = tokio::time::timeout(Duration::from_millis(300), a.expired(header, idle)).await;
        assert!(
            got.is_err(),
            "a connection that served a request is not held to the header timeout"
        );
    }
}
