//! Measuring one case for one segment, and adding segments up.
//!
//! A case (direct, nginx pair, trustmesh pair) is measured in several short segments that the
//! run interleaves with the other cases' segments, so that a burst of unrelated load on the
//! shared machine lands on every case alike instead of on whichever ran at that moment. The
//! segments of one case add up here: histograms merge, counts and CPU ticks sum, RSS keeps
//! its peak.

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram;

use crate::handshake::HandshakeResult;
use crate::loadgen::{self, Edge, Target};
use crate::procs::{self, Sidecar, Ticks};

/// Latency of the open-loop segments, in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Requests completed in the measured windows.
    pub completed: u64,
    /// Requests failed in the measured windows.
    pub errors: u64,
    /// How late the pacer itself was (worst segment's p99), included in every figure.
    pub pacer_late_p99_us: f64,
}

/// Every figure for one case (direct has no sidecars, so only latency and rate).
#[derive(Clone, Debug, Default)]
pub struct CaseResult {
    /// Latency at the fixed rate.
    pub latency: Latency,
    /// Closed-loop requests per second.
    pub max_rps: f64,
    /// Closed-loop failures.
    pub max_errors: u64,
    /// Closed-loop median latency (µs), for context.
    pub max_p50_us: f64,
    /// CPU µs per request for A and B over the fixed-rate windows.
    pub cpu_us_per_req: Option<[f64; 2]>,
    /// VmRSS (KiB) of A and B when idle.
    pub rss_idle_kib: Option<[u64; 2]>,
    /// Peak VmRSS (KiB) of A and B during the closed-loop segments.
    pub rss_load_kib: Option<[u64; 2]>,
    /// PSS (KiB) of A and B when idle.
    pub pss_idle_kib: Option<[u64; 2]>,
    /// Peak PSS (KiB) of A and B during the closed-loop segments.
    pub pss_load_kib: Option<[u64; 2]>,
    /// Threads of A and B (nginx: summed over master and worker).
    pub threads: Option<[u64; 2]>,
    /// Closed-loop runs at fixed connection counts (`--pinned`), in the order measured.
    pub closed: Vec<Closed>,
    /// Full mTLS handshakes at B.
    pub handshake: Option<HandshakeResult>,
    /// Free-form facts about the set-up (versions, flags).
    pub notes: Vec<String>,
}

/// A closed-loop run at one connection count (`--pinned`): the rate, the median latency and
/// the sidecars' CPU per request at that rate.
#[derive(Clone, Debug, Default)]
pub struct Closed {
    /// Keep-alive connections of the client.
    pub connections: usize,
    /// Completed requests per second.
    pub rps: f64,
    /// Median latency (µs), send to full response.
    pub p50_us: f64,
    /// Failed requests.
    pub errors: u64,
    /// CPU µs per request for A and B in the measured windows (None for direct).
    pub cpu_us_per_req: Option<[f64; 2]>,
    /// Of that, user-space µs per request for A and B (the rest is the kernel's).
    pub user_us_per_req: Option<[f64; 2]>,
    /// CPU µs per request, both hops, of each segment in the order of the rounds (so that
    /// two cases' segments of the same round, measured side by side, can be compared).
    pub rounds_us_per_req: Vec<f64>,
}

/// Running totals of the closed-loop segments at one connection count.
struct ClosedAcc {
    connections: usize,
    hist: Histogram<u64>,
    ok: u64,
    err: u64,
    window: Duration,
    cpu_ticks: [Ticks; 2],
    /// (CPU ticks of both hops, requests) of each segment.
    rounds: Vec<(u64, u64)>,
}

/// Running totals of one case over its segments.
pub struct Accumulator {
    fixed_hist: Histogram<u64>,
    fixed_ok: u64,
    fixed_err: u64,
    pacer_late_ns: u64,
    cpu_ticks: [u64; 2],
    max_hist: Histogram<u64>,
    max_ok: u64,
    max_err: u64,
    max_window: Duration,
    rss_peak: [u64; 2],
    pss_peak: [u64; 2],
    closed: Vec<ClosedAcc>,
}

fn histogram() -> Result<Histogram<u64>> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
}

/// Reads the sidecars' CPU ticks into `at_start` or `at_end`, depending on the edge.
fn read_ticks(
    sidecars: &[Sidecar],
    edge: Edge,
    at_start: &mut [u64; 2],
    at_end: &mut [u64; 2],
) -> Result<()> {
    let into = if edge == Edge::Start {
        at_start
    } else {
        at_end
    };
    for (slot, s) in into.iter_mut().zip(sidecars) {
        *slot = s.cpu_ticks()?;
    }
    Ok(())
}

impl Accumulator {
    /// Empty totals.
    pub fn new() -> Result<Self> {
        let h = histogram;
        Ok(Self {
            fixed_hist: h()?,
            fixed_ok: 0,
            fixed_err: 0,
            pacer_late_ns: 0,
            cpu_ticks: [0; 2],
            max_hist: h()?,
            max_ok: 0,
            max_err: 0,
            max_window: Duration::ZERO,
            rss_peak: [0; 2],
            pss_peak: [0; 2],
            closed: Vec::new(),
        })
    }

    /// One open-loop segment: `warmup` discarded, then `window` measured, with the sidecars'
    /// CPU ticks read at the window's edges.
    pub async fn fixed_segment(
        &mut self,
        target: &Target,
        sidecars: &[Sidecar],
        rate: u32,
        connections: usize,
        warmup: Duration,
        window: Duration,
    ) -> Result<()> {
        let mut at_start = [0u64; 2];
        let mut at_end = [0u64; 2];
        let mut hook =
            |edge: Edge| -> Result<()> { read_ticks(sidecars, edge, &mut at_start, &mut at_end) };
        let r = loadgen::fixed_rate(target, rate, warmup, window, connections, &mut hook).await?;
        self.fixed_hist
            .add(&r.latency)
            .map_err(|e| anyhow!("merging histograms: {e}"))?;
        self.fixed_ok += r.completed;
        self.fixed_err += r.errors;
        self.pacer_late_ns = self.pacer_late_ns.max(r.pacer_late_p99_ns);
        for ((sum, end), start) in self.cpu_ticks.iter_mut().zip(at_end).zip(at_start) {
            *sum += end.saturating_sub(start);
        }
        Ok(())
    }

    /// One closed-loop segment, sampling the sidecars' RSS and PSS every 100 ms meanwhile.
    pub async fn max_segment(
        &mut self,
        target: &Target,
        sidecars: &[Sidecar],
        connections: usize,
        warmup: Duration,
        window: Duration,
    ) -> Result<()> {
        let sampler = async {
            let mut rss = [0u64; 2];
            let mut pss = [0u64; 2];
            let end = Instant::now() + warmup + window;
            while Instant::now() < end && !sidecars.is_empty() {
                for ((r, p), s) in rss.iter_mut().zip(pss.iter_mut()).zip(sidecars) {
                    *r = (*r).max(s.rss_kib()?);
                    *p = (*p).max(s.pss_kib()?);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok::<_, anyhow::Error>((rss, pss))
        };
        let closed = loadgen::max_rate(target, warmup, window, connections);
        let (closed, peak) = tokio::join!(closed, sampler);
        let closed = closed?;
        let (rss, pss) = peak?;
        self.max_hist
            .add(&closed.latency)
            .map_err(|e| anyhow!("merging histograms: {e}"))?;
        self.max_ok += closed.completed;
        self.max_err += closed.errors;
        self.max_window += window;
        for (kept, seen) in self.rss_peak.iter_mut().zip(rss) {
            *kept = (*kept).max(seen);
        }
        for (kept, seen) in self.pss_peak.iter_mut().zip(pss) {
            *kept = (*kept).max(seen);
        }
        Ok(())
    }

    /// One closed-loop segment at `connections` connections (`--pinned`), with the sidecars'
    /// CPU ticks read at the window's edges; adds to that connection count's totals.
    pub async fn closed_segment(
        &mut self,
        target: &Target,
        sidecars: &[Sidecar],
        connections: usize,
        warmup: Duration,
        window: Duration,
    ) -> Result<()> {
        let mut at_start = [Ticks::default(); 2];
        let mut at_end = [Ticks::default(); 2];
        let mut hook = |edge: Edge| -> Result<()> {
            let into = if edge == Edge::Start {
                &mut at_start
            } else {
                &mut at_end
            };
            for (slot, s) in into.iter_mut().zip(sidecars) {
                *slot = s.cpu_split()?;
            }
            Ok(())
        };
        let r = loadgen::max_rate_hooked(target, warmup, window, connections, &mut hook).await?;
        let pos = match self
            .closed
            .iter()
            .position(|c| c.connections == connections)
        {
            Some(p) => p,
            None => {
                self.closed.push(ClosedAcc {
                    connections,
                    hist: histogram()?,
                    ok: 0,
                    err: 0,
                    window: Duration::ZERO,
                    cpu_ticks: [Ticks::default(); 2],
                    rounds: Vec::new(),
                });
                self.closed.len() - 1
            }
        };
        let acc = &mut self.closed[pos];
        acc.hist
            .add(&r.latency)
            .map_err(|e| anyhow!("merging histograms: {e}"))?;
        acc.ok += r.completed;
        acc.err += r.errors;
        acc.window += window;
        let mut segment = 0;
        for ((sum, end), start) in acc.cpu_ticks.iter_mut().zip(at_end).zip(at_start) {
            let user = end.user.saturating_sub(start.user);
            let system = end.system.saturating_sub(start.system);
            sum.user += user;
            sum.system += system;
            segment += user + system;
        }
        acc.rounds.push((segment, r.completed));
        Ok(())
    }

    /// Writes the totals into `result` (`pair`: whether there are sidecars to report).
    pub fn finish(&self, result: &mut CaseResult, pair: bool) {
        result.latency = Latency {
            p50_us: us(self.fixed_hist.value_at_quantile(0.50)),
            p99_us: us(self.fixed_hist.value_at_quantile(0.99)),
            p999_us: us(self.fixed_hist.value_at_quantile(0.999)),
            completed: self.fixed_ok,
            errors: self.fixed_err,
            pacer_late_p99_us: us(self.pacer_late_ns),
        };
        if self.max_window > Duration::ZERO {
            result.max_rps = self.max_ok as f64 / self.max_window.as_secs_f64();
        }
        result.max_errors = self.max_err;
        result.max_p50_us = us(self.max_hist.value_at_quantile(0.5));
        let per_tick_us = 1e6 / procs::clock_ticks() as f64;
        result.closed = self
            .closed
            .iter()
            .map(|c| Closed {
                connections: c.connections,
                rps: c.ok as f64 / c.window.as_secs_f64().max(1e-9),
                p50_us: us(c.hist.value_at_quantile(0.5)),
                errors: c.err,
                cpu_us_per_req: pair.then(|| {
                    let per =
                        |t: Ticks| (t.user + t.system) as f64 * per_tick_us / c.ok.max(1) as f64;
                    [per(c.cpu_ticks[0]), per(c.cpu_ticks[1])]
                }),
                user_us_per_req: pair.then(|| {
                    let per = |t: Ticks| t.user as f64 * per_tick_us / c.ok.max(1) as f64;
                    [per(c.cpu_ticks[0]), per(c.cpu_ticks[1])]
                }),
                rounds_us_per_req: if pair {
                    let per = |(t, n): (u64, u64)| t as f64 * per_tick_us / n.max(1) as f64;
                    c.rounds.iter().copied().map(per).collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        if pair {
            let per_tick_us = 1e6 / procs::clock_ticks() as f64;
            let per = |t: u64| t as f64 * per_tick_us / self.fixed_ok.max(1) as f64;
            result.cpu_us_per_req = Some([per(self.cpu_ticks[0]), per(self.cpu_ticks[1])]);
            result.rss_load_kib = Some(self.rss_peak);
            result.pss_load_kib = Some(self.pss_peak);
        }
    }
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}
