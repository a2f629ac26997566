//! Drives one served HTTP connection to its end, for the inbound, outbound and probe
//! listeners alike: it asks the connection to finish (HTTP/1.1: close once idle; HTTP/2:
//! GOAWAY, RFC 9113 §6.8) when the drain begins or when [`Activity::expired`] says so (an
//! HTTP/2 connection that started no request within `--header-timeout`, or any connection
//! idle for `--idle-timeout`), and closes it outright if it has not finished a moment later.
//!
//! Data path: accept → (TLS) → [`crate::layers::limits::Tracked`] IO → hyper → this loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::layers::body::{Body, BoxError};
use crate::layers::limits::{self, Activity};
use crate::observe::metrics::Metrics;
use trustmesh_runtime::Drain;

/// How long a connection asked to finish on a timeout may take before it is dropped (a
/// client that reads nothing must not keep it by never taking the GOAWAY).
const GRACE: Duration = Duration::from_secs(2);

/// A served connection that can be asked to finish gracefully.
pub trait Graceful: Future<Output = Result<(), BoxError>> {
    /// HTTP/1.1: close once the response in flight is done; HTTP/2: send GOAWAY and close
    /// once the open streams are done.
    fn finish(self: Pin<&mut Self>);
}

impl<I, S, B> Graceful
    for hyper_util::server::conn::auto::Connection<'_, I, S, hyper_util::rt::TokioExecutor>
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Send,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn finish(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, B> Graceful
    for hyper_util::server::conn::auto::UpgradeableConnection<
        '_,
        I,
        S,
        hyper_util::rt::TokioExecutor,
    >
where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Send,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn finish(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// The limits a connection is held to.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `--header-timeout`.
    pub header: Duration,
    /// `--idle-timeout`.
    pub idle: Duration,
    /// `--max-header-bytes`: tells a head too large in bytes from one with too many fields.
    pub max_header_bytes: u32,
}

/// What every served HTTP connection is held to, from the flags: the server side of the
/// limits in the table of [`crate::layers::limits`].
#[derive(Debug, Clone, Copy)]
pub struct ServeConfig {
    /// `--header-timeout`.
    pub header_timeout: Duration,
    /// `--idle-timeout`.
    pub idle_timeout: Duration,
    /// `--max-header-bytes`.
    pub max_header_bytes: u32,
    /// `--max-headers`.
    pub max_headers: u32,
    /// `--max-concurrent-streams`.
    pub max_concurrent_streams: u32,
}

impl ServeConfig {
    /// The timeouts the connection driver enforces.
    pub fn timeouts(&self) -> Timeouts {
        Timeouts {
            header: self.header_timeout,
            idle: self.idle_timeout,
            max_header_bytes: self.max_header_bytes,
        }
    }
}

/// The server builder for one connection, with the HTTP limits of `cfg` set.
pub fn builder(cfg: &ServeConfig) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // `Tracked` answers 408 at the header timeout, and only while a head is arriving.
        // hyper's own runs from the moment it waits for a head, so it would close an idle
        // keep-alive connection silently; it stays off (its default is 30 s), and the
        // watchdog ([`Activity::expired`]) closes a connection whose 408 is never read.
        .header_read_timeout(None)
        .max_headers(cfg.max_headers as usize)
        .max_buf_size(cfg.max_header_bytes as usize);
    b.http2()
        .timer(TokioTimer::new())
        .adaptive_window(true)
        .max_header_list_size(cfg.max_header_bytes)
        .max_concurrent_streams(cfg.max_concurrent_streams);
    b
}

/// Runs `conn` to its end. `watcher` (held until then) keeps a drain waiting for it.
pub async fn drive<C: Graceful>(
    conn: C,
    watcher: Option<Watcher>,
    activity: &Activity,
    timeouts: Timeouts,
    drain: &Drain,
    metrics: &Metrics,
    direction: &'static str,
) {
    tokio::pin!(conn);
    let mut draining = false;
    let mut closing: Option<Pin<Box<tokio::time::Sleep>>> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    let head_within_bytes =
                        activity.head_bytes() < u64::from(timeouts.max_header_bytes);
                    limits::count_error(metrics, direction, e.as_ref(), head_within_bytes);
                    tracing::debug!(direction, "connection ended: {e}");
                }
                break;
            }
            () = drain.started(), if !draining => {
                draining = true;
                conn.as_mut().finish();
            }
            why = activity.expired(timeouts.header, timeouts.idle), if closing.is_none() => {
                // A 408 already answered is counted once, below.
                if !activity.head_timed_out() {
                    limits::exceeded(metrics, why.label(), direction);
                }
                conn.as_mut().finish();
                closing = Some(Box::pin(tokio::time::sleep(GRACE)));
            }
            () = async {
                match closing.as_mut() {
                    Some(s) => s.as_mut().await,
                    None => std::future::pending().await,
                }
            } => break,
        }
    }
    if activity.head_timed_out() {
        limits::exceeded(metrics, "header_timeout", direction);
    }
    drop(watcher);
}

/// Serves one HTTP/1.1 or HTTP/2 connection on `io` to its end, each request answered by
/// `handle` (which finds the connection's [`Activity`] in the request's extensions, and may
/// upgrade it: HTTP/1.1 `101`, or an extended CONNECT): the connection held to the limits of `cfg` ([`crate::layers::limits`]), its
/// responses' frames counted as activity, and driven by [`drive`]. Inbound, outbound and any
/// later listener serve HTTP through this one function.
pub async fn serve<IO, H, Fut>(
    io: IO,
    cfg: &ServeConfig,
    watcher: Option<Watcher>,
    drain: &Drain,
    metrics: &Metrics,
    direction: &'static str,
    handle: H,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let activity = Activity::new();
    let act = activity.clone();
    let svc = service_fn(move |mut req: Request<Incoming>| {
        let (handle, act) = (handle.clone(), act.clone());
        let in_flight = act.request();
        // An upgrade's tunnel outlives its request: it holds the connection busy through this
        // ([`crate::layers::upgrade::tunnel`]), so neither timeout cuts it.
        req.extensions_mut().insert(act.clone());
        async move {
            let resp = handle(req).await;
            drop(in_flight);
            Ok::<_, std::convert::Infallible>(resp.map(|b| touching(b, act)))
        }
    });
    let io = TokioIo::new(limits::Tracked::with_head_timeout(
        io,
        activity.clone(),
        cfg.header_timeout,
    ));
    let mut builder = builder(cfg);
    // RFC 8441: h2c apps and peer sidecars may open WebSockets as extended CONNECT streams.
    builder.http2().enable_connect_protocol();
    drive(
        builder.serve_connection_with_upgrades(io, svc),
        watcher,
        &activity,
        cfg.timeouts(),
        drain,
        metrics,
        direction,
    )
    .await;
    // A switched HTTP/1.1 connection ended for hyper when its tunnel began; for the limits
    // it ends with the tunnel (its caller's permits drop when this returns).
    activity.tunnels_closed().await;
}

/// A response body whose frames count as the connection's activity: a streaming response
/// keeps an HTTP/2 connection alive, a stalled one does not.
///
/// A body that fails (the app cut it short) fails one poll late: hyper's HTTP/1 server drops
/// what it has buffered when a body fails, the head included, so a client would see an empty
/// reply (curl: "Empty reply from server") instead of the head and the bytes that came. The
/// one `Pending` between lets hyper flush them; the error then closes the connection (HTTP/1.1)
/// or resets the stream (HTTP/2), so the client sees the body cut short, never complete.
pub fn touching(body: Body, activity: Arc<Activity>) -> Body {
    Touching {
        inner: body,
        activity,
        failed: None,
    }
    .boxed()
}

struct Touching {
    inner: Body,
    activity: Arc<Activity>,
    /// The inner body's error, held for one poll.
    failed: Option<BoxError>,
}

impl http_body::Body for Touching {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Some(Err(e)));
        }
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        // The last frame's touch is the drop's, which follows it (one clock read less per
        // response; most bodies are one frame).
        if r.is_ready() && !self.inner.is_end_stream() {
            self.activity.touch();
        }
        match r {
            Poll::Ready(Some(Err(e))) => {
                self.failed = Some(e);
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            r => r,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Touching {
    fn drop(&mut self) {
        self.activity.touch();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A body of 10 bytes that then fails, as an app's that announced 1000 and closed.
    fn cut_short() -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"0123456789"))),
            Err("the app closed the connection".into()),
        ];
        http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
    }

    #[tokio::test]
    async fn a_body_cut_short_reaches_an_http1_client_with_its_head_and_bytes() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let activity = Activity::new();
        let svc = service_fn(move |_req: Request<Incoming>| {
            let act = activity.clone();
            async move {
                let resp = Response::builder()
                    .header(http::header::CONTENT_LENGTH, "1000")
                    .body(touching(cut_short(), act))
                    .unwrap();
                Ok::<_, std::convert::Infallible>(resp)
            }
        });
        let conn = tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server), svc)
                .await;
        });
        client
            .write_all(b"GET /cut HTTP/1.1\r\nHost: b\r\n\r\n")
            .await
            .unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got:?}");
        assert!(
            got.to_ascii_lowercase().contains("content-length: 1000"),
            "{got:?}"
        );
        assert!(got.ends_with("\r\n\r\n0123456789"), "{got:?}");
        conn.await.unwrap();
    }
}
