//! The byte tunnel an upgrade becomes, once its answer (`101`, or `200` to an extended
//! CONNECT) is out: bytes are copied both ways until both sides have closed (a half-close is
//! passed on, RFC 9293 §3.6), or until nothing moved either way for `--idle-timeout` (then both
//! are closed and `trustmesh_limits_exceeded_total{limit="idle_timeout"}` counts it).
//!
//! While open, a tunnel is counted in `trustmesh_tunnels_open{direction}` and keeps the served
//! connection it came from busy ([`crate::layers::limits::OpenTunnel`]): an HTTP/1.1
//! connection's head timer must not answer `408` into the tunnel, an HTTP/2 connection
//! carrying a tunnel stream is not idle, and a switched HTTP/1.1 connection keeps counting
//! against `--max-connections` (and the per-identity cap) until its tunnel closes. Its
//! access-log line is written when it closes, with the bytes each way and the duration from
//! the request head.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http::StatusCode;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::layers::limits::{Activity, OpenTunnel};
use crate::observe::access_log::{self, AccessLogFormat, Entry};
use crate::observe::metrics::Metrics;

/// An upgrade whose answer is about to leave: what its tunnel needs once both sides switched.
pub struct Tunnel {
    direction: &'static str,
    open: prometheus::IntGauge,
    idle_closed: prometheus::IntCounter,
    idle: Duration,
    _busy: Option<OpenTunnel>,
    format: AccessLogFormat,
    log: Entry,
    status: StatusCode,
    start: Instant,
}

impl Tunnel {
    /// Prepares the tunnel of a request that began at `start` and is answered `status`: keeps
    /// the served connection's [`Activity`] (`busy`, from the request's extensions, see
    /// [`crate::layers::drive::serve`]) busy and the connection held until the tunnel closes,
    /// and marks `log` as written by the tunnel, keeping a copy that records `protocol`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        metrics: &Metrics,
        direction: &'static str,
        idle: Duration,
        busy: Option<Arc<Activity>>,
        format: AccessLogFormat,
        log: &mut Entry,
        protocol: &str,
        status: StatusCode,
        start: Instant,
    ) -> Self {
        let mut own = log.clone();
        own.upgrade = Some(protocol.to_string());
        log.deferred = true;
        Self {
            direction,
            open: metrics.tunnels.with_label_values(&[direction]),
            idle_closed: metrics
                .limits_exceeded
                .with_label_values(&["idle_timeout", direction]),
            idle,
            _busy: busy.map(|a| a.tunnel()),
            format,
            log: own,
            status,
            start,
        }
    }

    /// Runs the tunnel on a task of its own: waits for both sides to switch (`caller`: the
    /// connection we answered; `callee`: the one we asked), copies until it ends, then logs.
    pub fn spawn(self, caller: OnUpgrade, callee: OnUpgrade) {
        tokio::spawn(self.run(caller, callee));
    }

    async fn run(mut self, caller: OnUpgrade, callee: OnUpgrade) {
        self.open.inc();
        let meter = Meter::new();
        match tokio::try_join!(caller, callee) {
            Ok((caller, callee)) => {
                let mut caller = Metered {
                    inner: TokioIo::new(caller),
                    meter: &meter,
                };
                let mut callee = TokioIo::new(callee);
                tokio::select! {
                    r = tokio::io::copy_bidirectional(&mut caller, &mut callee) => {
                        if let Err(e) = r {
                            tracing::debug!(direction = self.direction, "tunnel ended: {e}");
                        }
                    }
                    () = meter.idle(self.idle) => {
                        self.idle_closed.inc();
                        tracing::debug!(direction = self.direction, "tunnel idle for --idle-timeout; closed");
                    }
                }
            }
            Err(e) => tracing::debug!(direction = self.direction, "upgrade failed: {e}"),
        }
        self.open.dec();
        self.log.tunnel_bytes_up = Some(meter.up.load(Ordering::Relaxed));
        self.log.tunnel_bytes_down = Some(meter.down.load(Ordering::Relaxed));
        access_log::write(
            self.format,
            self.direction,
            &self.log,
            self.status,
            &http::HeaderMap::new(),
            self.start.elapsed(),
        );
    }
}

/// Bytes each way and when the last one moved.
struct Meter {
    base: Instant,
    last_ms: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

impl Meter {
    fn new() -> Self {
        Self {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        }
    }

    fn moved(&self, counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `timeout`.
    async fn idle(&self, timeout: Duration) {
        loop {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let idle_for = self.base.elapsed().saturating_sub(last);
            if idle_for >= timeout {
                return;
            }
            tokio::time::sleep(timeout - idle_for).await;
        }
    }
}

/// The caller's side of a tunnel: what it sends counts up, what it is sent counts down.
struct Metered<'a, T> {
    inner: T,
    meter: &'a Meter,
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.meter.moved(&self.meter.up, n);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            if n > 0 {
                self.meter.moved(&self.meter.down, n);
            }
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn bytes_are_counted_each_way_and_silence_ends_it() {
        let meter = Meter::new();
        let (near, mut far) = tokio::io::duplex(1024);
        let (other_near, mut other_far) = tokio::io::duplex(1024);
        let mut caller = Metered {
            inner: near,
            meter: &meter,
        };
        let mut callee = other_near;
        let peers = async {
            far.write_all(b"hello").await.unwrap();
            let mut got = [0u8; 5];
            other_far.read_exact(&mut got).await.unwrap();
            other_far.write_all(b"hi!").await.unwrap();
            let mut back = [0u8; 3];
            far.read_exact(&mut back).await.unwrap();
            assert_eq!((&got, &back), (b"hello", b"hi!"));
            // Then both stay silent, connections open.
            std::future::pending::<()>().await;
        };
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut caller, &mut callee) => "closed",
                () = meter.idle(Duration::from_millis(200)) => "idle",
                () = peers => "peers",
            }
        })
        .await;
        assert_eq!(ended, Ok("idle"));
        assert_eq!(meter.up.load(Ordering::Relaxed), 5);
        assert_eq!(meter.down.load(Ordering::Relaxed), 3);
    }
}
