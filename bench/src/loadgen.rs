//! The load generator: one hyper HTTP/1.1 keep-alive client, the same code for the direct,
//! trustmesh and nginx cases.
//!
//! Two modes:
//! - [`fixed_rate`] is open loop. A pacer thread schedules request `i` at `start + i / rate` and
//!   hands it to a pool of keep-alive connections; latency is measured from the *scheduled* time,
//!   so a slow response that delays the requests behind it shows up in their latency too
//!   (coordinated omission is not hidden, as in wrk2). The pacer is an OS thread with
//!   `thread::sleep` because tokio's timer has 1 ms granularity, coarser than what is measured.
//! - [`max_rate`] is closed loop: `connections` connections each send the next request as soon
//!   as the previous answer is in; the completions inside the window give the highest rate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};
use tokio::task::JoinSet;

/// No single request may take longer than this; past it, it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound on requests in one closed-loop run, whatever the time says.
const MAX_REQUESTS: u64 = 50_000_000;

/// Where the load goes: a plain HTTP/1.1 listener and the `Host` to send.
#[derive(Clone, Debug)]
pub struct Target {
    /// The listener (the backend itself, or the outbound side of a sidecar pair).
    pub addr: SocketAddr,
    /// The `Host` header (trustmesh routes on it).
    pub host: String,
}

/// Which edge of the measurement window a hook is called at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edge {
    /// Warm-up is over; measurement starts now.
    Start,
    /// Every measured request has completed or failed.
    End,
}

/// Result of an open-loop run (warm-up excluded).
pub struct FixedRateResult {
    /// Latency from scheduled time to full response, in nanoseconds.
    pub latency: Histogram<u64>,
    /// Requests scheduled inside the window that completed with 200.
    pub completed: u64,
    /// Requests scheduled inside the window that failed (error, non-200, timeout).
    pub errors: u64,
    /// How late the pacer handed out ticks, p99, in nanoseconds (a health check of the
    /// load generator itself; it is included in every latency).
    pub pacer_late_p99_ns: u64,
}

/// Result of a closed-loop run (warm-up excluded).
pub struct MaxRateResult {
    /// Requests completed with 200 inside the window.
    pub completed: u64,
    /// Failed requests inside the window.
    pub errors: u64,
    /// Latency of each request (send to full response), in nanoseconds.
    pub latency: Histogram<u64>,
}

fn new_histogram() -> Result<Histogram<u64>> {
    // 1 µs .. 60 s in nanoseconds, 3 significant digits.
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
}

/// One keep-alive HTTP/1.1 connection that reconnects after an error.
struct Conn {
    target: Target,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Conn {
    fn new(target: Target) -> Self {
        Self {
            target,
            sender: None,
        }
    }

    async fn connect(&mut self) -> Result<&mut SendRequest<Empty<Bytes>>> {
        if self.sender.as_ref().is_some_and(|s| s.is_closed()) {
            self.sender = None;
        }
        if self.sender.is_none() {
            let stream = TcpStream::connect(self.target.addr)
                .await
                .with_context(|| format!("connecting to {}", self.target.addr))?;
            stream.set_nodelay(true)?;
            let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        self.sender.as_mut().context("no connection")
    }

    /// Sends one `GET /` and reads the whole response; any failure drops the connection.
    async fn request(&mut self) -> Result<()> {
        let result = tokio::time::timeout(REQUEST_TIMEOUT, self.request_inner()).await;
        let result = result.unwrap_or_else(|_| Err(anyhow!("request timed out")));
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn request_inner(&mut self) -> Result<()> {
        let host = self.target.host.clone();
        let sender = self.connect().await?;
        sender.ready().await?;
        let req = Request::get("/")
            .header(hyper::header::HOST, host)
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        resp.into_body().collect().await?;
        if status != hyper::StatusCode::OK {
            bail!("status {status}");
        }
        Ok(())
    }
}

/// A scheduled request: when it should have been sent.
struct Tick {
    at: Instant,
}

/// Open loop at `rate` requests per second for `warmup + duration`; `hook` is called at the
/// start and the end of the measured window (CPU snapshots are taken there).
pub async fn fixed_rate(
    target: &Target,
    rate: u32,
    warmup: Duration,
    duration: Duration,
    connections: usize,
    hook: &mut (dyn FnMut(Edge) -> Result<()> + Send),
) -> Result<FixedRateResult> {
    if rate == 0 || connections == 0 {
        bail!("rate and connections must be positive");
    }
    let interval = Duration::from_secs(1) / rate;
    let total = (u128::from(rate) * (warmup + duration).as_millis() / 1000) as u64;

    // Open every connection before the clock starts, so warm-up is not spent connecting.
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut c = Conn::new(target.clone());
        c.connect().await?;
        conns.push(c);
    }

    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + warmup;
    let (tx, rx) = mpsc::unbounded_channel::<Tick>();
    let pacer = std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || pace(tx, start, interval, total))?;

    let rx = Arc::new(Mutex::new(rx));
    // A JoinSet aborts its tasks when dropped, so a cancelled or timed-out run stops them.
    let mut workers = JoinSet::new();
    for mut conn in conns {
        let rx = Arc::clone(&rx);
        workers.spawn(async move {
            let mut hist = new_histogram()?;
            let (mut ok, mut failed) = (0u64, 0u64);
            loop {
                // Holding the lock while waiting makes the pool a FIFO work queue: the next
                // tick goes to whichever connection is idle first.
                let tick = { rx.lock().await.recv().await };
                let Some(tick) = tick else { break };
                let result = conn.request().await;
                if tick.at < measure_from {
                    continue;
                }
                match result {
                    Ok(()) => {
                        hist.saturating_record(nanos(tick.at.elapsed()));
                        ok += 1;
                    }
                    Err(_) => failed += 1,
                }
            }
            Ok::<_, anyhow::Error>((hist, ok, failed))
        });
    }

    let edge = async {
        tokio::time::sleep_until(measure_from.into()).await;
        hook(Edge::Start)
    };
    let collect = async {
        let mut hist = new_histogram()?;
        let (mut ok, mut failed) = (0u64, 0u64);
        while let Some(w) = workers.join_next().await {
            let (h, o, f) = w??;
            hist.add(h)
                .map_err(|e| anyhow!("merging histograms: {e}"))?;
            ok += o;
            failed += f;
        }
        Ok::<_, anyhow::Error>((hist, ok, failed))
    };
    let limit = warmup + duration + REQUEST_TIMEOUT * 2;
    let (edge, collected) = tokio::time::timeout(limit, async { tokio::join!(edge, collect) })
        .await
        .context("fixed-rate run did not finish in time")?;
    edge?;
    let (latency, completed, errors) = collected?;
    hook(Edge::End)?;
    let pacer_late_p99_ns = pacer
        .join()
        .map_err(|_| anyhow!("pacer thread panicked"))??;
    Ok(FixedRateResult {
        latency,
        completed,
        errors,
        pacer_late_p99_ns,
    })
}

/// The pacer: hands out `total` ticks at `start + i * interval`; returns its own lateness p99.
fn pace(
    tx: mpsc::UnboundedSender<Tick>,
    start: Instant,
    interval: Duration,
    total: u64,
) -> Result<u64> {
    let mut late = new_histogram()?;
    for i in 0..total {
        let at = start + interval * u32::try_from(i)?;
        let now = Instant::now();
        if at > now {
            std::thread::sleep(at - now);
        }
        late.saturating_record(nanos(at.elapsed()));
        if tx.send(Tick { at }).is_err() {
            break; // the run was cancelled
        }
    }
    Ok(late.value_at_quantile(0.99))
}

/// Closed loop with `connections` connections for `warmup + duration`.
pub async fn max_rate(
    target: &Target,
    warmup: Duration,
    duration: Duration,
    connections: usize,
) -> Result<MaxRateResult> {
    max_rate_hooked(target, warmup, duration, connections, &mut |_| Ok(())).await
}

/// [`max_rate`], calling `hook` when the measured window opens ([`Edge::Start`], after the
/// warm-up) and when it closes ([`Edge::End`], when the last request of the window is sent;
/// requests still in flight then do not count), e.g. to read the sidecars' CPU time.
pub async fn max_rate_hooked(
    target: &Target,
    warmup: Duration,
    duration: Duration,
    connections: usize,
    hook: &mut dyn FnMut(Edge) -> Result<()>,
) -> Result<MaxRateResult> {
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut c = Conn::new(target.clone());
        c.connect().await?;
        conns.push(c);
    }
    let start = Instant::now();
    let from = start + warmup;
    let until = from + duration;
    let per_conn_cap = MAX_REQUESTS / connections.max(1) as u64;
    let mut workers = JoinSet::new();
    for mut conn in conns {
        workers.spawn(async move {
            let mut hist = new_histogram()?;
            let (mut ok, mut failed) = (0u64, 0u64);
            for _ in 0..per_conn_cap {
                let sent = Instant::now();
                if sent >= until {
                    break;
                }
                let result = conn.request().await;
                let done = Instant::now();
                if sent < from || done > until {
                    continue;
                }
                match result {
                    Ok(()) => {
                        hist.saturating_record(nanos(done - sent));
                        ok += 1;
                    }
                    Err(_) => {
                        failed += 1;
                        // Do not spin on a refusing listener.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            Ok::<_, anyhow::Error>((hist, ok, failed))
        });
    }
    tokio::time::sleep_until(from.into()).await;
    hook(Edge::Start)?;
    tokio::time::sleep_until(until.into()).await;
    hook(Edge::End)?;
    let mut latency = new_histogram()?;
    let (mut completed, mut errors) = (0u64, 0u64);
    let deadline = start + warmup + duration + REQUEST_TIMEOUT * 2;
    loop {
        let next = tokio::time::timeout_at(deadline.into(), workers.join_next())
            .await
            .context("closed-loop run did not finish in time")?;
        let Some(w) = next else { break };
        let (h, o, f) = w??;
        latency
            .add(h)
            .map_err(|e| anyhow!("merging histograms: {e}"))?;
        completed += o;
        errors += f;
    }
    Ok(MaxRateResult {
        completed,
        errors,
        latency,
    })
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
