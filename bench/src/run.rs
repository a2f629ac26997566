//! One benchmark run: the backend, then the direct case, the nginx pair and the trustmesh pair
//! in turn (one pair alive at a time), each measured the same way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::handshake::{self, HandshakeResult};
use crate::loadgen::{self, Edge, Target};
use crate::mesh::{self, MeshPair};
use crate::nginx::NginxPair;
use crate::pki::Pki;
use crate::procs::{self, ChildGuard, Sidecar};

/// What to run and for how long.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Open-loop rate (requests per second).
    pub rate: u32,
    /// Warm-up before each measured window.
    pub warmup: Duration,
    /// Length of each measured window.
    pub duration: Duration,
    /// Keep-alive connections of the open-loop client.
    pub open_connections: usize,
    /// Connections of the closed-loop client.
    pub closed_connections: usize,
    /// Length of each handshake run.
    pub handshake_duration: Duration,
    /// Concurrent handshake clients.
    pub handshake_concurrency: usize,
    /// Where `trustmesh` and `trustmesh-proxy` are.
    pub bin_dir: PathBuf,
    /// TOKIO_WORKER_THREADS for the trustmesh proxies (None: their default).
    pub proxy_threads: Option<usize>,
    /// Skip the nginx pair.
    pub skip_nginx: bool,
    /// Skip the trustmesh pair.
    pub skip_trustmesh: bool,
}

/// Latency of an open-loop run, in microseconds.
#[derive(Clone, Debug, Default)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Requests completed in the window.
    pub completed: u64,
    /// Requests failed in the window.
    pub errors: u64,
    /// How late the pacer itself was (p99), included in every figure.
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
    /// CPU µs per request for A and B over the fixed-rate window.
    pub cpu_us_per_req: Option<[f64; 2]>,
    /// VmRSS (KiB) of A and B when idle.
    pub rss_idle_kib: Option<[u64; 2]>,
    /// Peak VmRSS (KiB) of A and B during the closed-loop run.
    pub rss_load_kib: Option<[u64; 2]>,
    /// Threads of A and B (nginx: summed over master and worker).
    pub threads: Option<[u64; 2]>,
    /// Full mTLS handshakes at B.
    pub handshake: Option<HandshakeResult>,
    /// Free-form facts about the set-up (versions, flags).
    pub notes: Vec<String>,
}

/// The whole run.
pub struct RunResult {
    /// The settings used.
    pub settings: Settings,
    /// Client straight to the backend.
    pub direct: CaseResult,
    /// The trustmesh pair, or why it could not run.
    pub trustmesh: Option<Result<CaseResult, String>>,
    /// The nginx pair, or why it could not run.
    pub nginx: Option<Result<CaseResult, String>>,
}

/// Runs every case; a pair that cannot start is reported, not fatal.
pub async fn run(settings: Settings) -> Result<RunResult> {
    let backend_addr = procs::free_addrs(1)?[0];
    let mut backend = start_backend(backend_addr)?;
    procs::wait_for_tcp(backend_addr, &mut backend, Duration::from_secs(10))?;

    eprintln!("[bench] direct: client -> backend {backend_addr}");
    let direct_target = Target {
        addr: backend_addr,
        host: "backend".into(),
    };
    check(&direct_target).await?;
    let direct = measure(&settings, &direct_target, None).await?;

    let nginx = if settings.skip_nginx {
        None
    } else {
        eprintln!("[bench] nginx pair");
        Some(
            nginx_case(&settings, backend_addr)
                .await
                .map_err(|e| format!("{e:#}")),
        )
    };
    let trustmesh = if settings.skip_trustmesh {
        None
    } else {
        eprintln!("[bench] trustmesh pair");
        Some(
            mesh_case(&settings, backend_addr)
                .await
                .map_err(|e| format!("{e:#}")),
        )
    };
    backend
        .check_running()
        .context("the backend died during the run")?;
    Ok(RunResult {
        settings,
        direct,
        trustmesh,
        nginx,
    })
}

fn start_backend(addr: SocketAddr) -> Result<ChildGuard> {
    let exe = std::env::current_exe().context("finding the bench binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("backend").arg("--listen").arg(addr.to_string());
    ChildGuard::spawn("backend", cmd, None)
}

async fn nginx_case(settings: &Settings, backend: SocketAddr) -> Result<CaseResult> {
    let pair = NginxPair::start(backend)?;
    let target = Target {
        addr: pair.outbound,
        host: "bench-server.bench".into(),
    };
    check(&target).await?;
    let client = handshake::Client::new(
        &pair.pki,
        handshake::CLIENT_SA,
        &pair.b_identity,
        &[b"http/1.1"],
    )?;
    let mut result = measure(settings, &target, Some((&pair.a, &pair.b))).await?;
    result.handshake = Some(handshake_case(settings, &client, pair.inbound, &pair.b).await?);
    result
        .notes
        .push(format!("{}, worker_processes 1 per sidecar", pair.version));
    Ok(result)
}

async fn mesh_case(settings: &Settings, backend: SocketAddr) -> Result<CaseResult> {
    let pair = MeshPair::start(&settings.bin_dir, backend, settings.proxy_threads).await?;
    let target = Target {
        addr: pair.outbound,
        host: mesh::SERVER_HOST.into(),
    };
    check(&target).await?;
    let pki = Pki::load(&pair.data_dir)?;
    let client = handshake::Client::new(&pki, handshake::CLIENT_SA, &pair.b_identity, &[b"h2"])?;
    let mut result = measure(settings, &target, Some((&pair.a, &pair.b))).await?;
    result.handshake = Some(handshake_case(settings, &client, pair.inbound, &pair.b).await?);
    let flags = if pair.proxy_flags.is_empty() {
        "none".to_owned()
    } else {
        pair.proxy_flags.join(" ")
    };
    let threads = match settings.proxy_threads {
        Some(t) => format!("TOKIO_WORKER_THREADS={t}"),
        None => "the proxy's default tokio worker threads (one per core)".to_owned(),
    };
    result.notes.push(format!(
        "trustmesh-proxy extra flags: {flags}; RUST_LOG=warn; {threads}"
    ));
    Ok(result)
}

/// A few sequential requests that must all answer 200 before anything is measured.
async fn check(target: &Target) -> Result<()> {
    let r = loadgen::max_rate(target, Duration::ZERO, Duration::from_millis(300), 1).await?;
    if r.completed == 0 || r.errors > 0 {
        bail!(
            "sanity check through {} failed: {} ok, {} errors",
            target.addr,
            r.completed,
            r.errors
        );
    }
    Ok(())
}

/// Fixed rate (with CPU metering), then closed loop (with RSS sampling).
async fn measure(
    settings: &Settings,
    target: &Target,
    pair: Option<(&Sidecar, &Sidecar)>,
) -> Result<CaseResult> {
    let mut result = CaseResult::default();
    let sidecars: Vec<Sidecar> = pair
        .map(|(a, b)| vec![a.clone(), b.clone()])
        .unwrap_or_default();
    if !sidecars.is_empty() {
        result.rss_idle_kib = Some(pair_of(&sidecars, Sidecar::rss_kib)?);
        result.threads = Some(pair_of(&sidecars, Sidecar::threads)?);
    }

    eprintln!(
        "[bench]   fixed rate {} rps, {:?} + {:?} warm-up",
        settings.rate, settings.duration, settings.warmup
    );
    let mut cpu_start = vec![0u64; sidecars.len()];
    let mut cpu_end = vec![0u64; sidecars.len()];
    let mut hook = |edge: Edge| -> Result<()> {
        let into = if edge == Edge::Start {
            &mut cpu_start
        } else {
            &mut cpu_end
        };
        for (slot, s) in into.iter_mut().zip(&sidecars) {
            *slot = s.cpu_ticks()?;
        }
        Ok(())
    };
    let fixed = loadgen::fixed_rate(
        target,
        settings.rate,
        settings.warmup,
        settings.duration,
        settings.open_connections,
        &mut hook,
    )
    .await?;
    result.latency = Latency {
        p50_us: us(fixed.latency.value_at_quantile(0.50)),
        p99_us: us(fixed.latency.value_at_quantile(0.99)),
        p999_us: us(fixed.latency.value_at_quantile(0.999)),
        completed: fixed.completed,
        errors: fixed.errors,
        pacer_late_p99_us: us(fixed.pacer_late_p99_ns),
    };
    if !sidecars.is_empty() {
        let per_tick_us = 1e6 / procs::clock_ticks() as f64;
        let per = |i: usize| {
            cpu_end[i].saturating_sub(cpu_start[i]) as f64 * per_tick_us
                / fixed.completed.max(1) as f64
        };
        result.cpu_us_per_req = Some([per(0), per(1)]);
    }

    eprintln!(
        "[bench]   closed loop, {} connections, {:?}",
        settings.closed_connections, settings.duration
    );
    let sample_for = settings.warmup + settings.duration;
    let sampler = async {
        let mut peak = [0u64; 2];
        let end = Instant::now() + sample_for;
        while Instant::now() < end && !sidecars.is_empty() {
            for (p, s) in peak.iter_mut().zip(&sidecars) {
                *p = (*p).max(s.rss_kib()?);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok::<_, anyhow::Error>(peak)
    };
    let closed = loadgen::max_rate(
        target,
        settings.warmup,
        settings.duration,
        settings.closed_connections,
    );
    let (closed, peak) = tokio::join!(closed, sampler);
    let closed = closed?;
    result.max_rps = closed.rps;
    result.max_errors = closed.errors;
    result.max_p50_us = us(closed.latency.value_at_quantile(0.5));
    if !sidecars.is_empty() {
        result.rss_load_kib = Some(peak?);
    }
    Ok(result)
}

async fn handshake_case(
    settings: &Settings,
    client: &handshake::Client,
    inbound: SocketAddr,
    server: &Sidecar,
) -> Result<HandshakeResult> {
    eprintln!(
        "[bench]   full mTLS handshakes against {inbound}, {} clients, {:?}",
        settings.handshake_concurrency, settings.handshake_duration
    );
    let r = handshake::run(
        client,
        inbound,
        server,
        settings.handshake_duration,
        settings.handshake_concurrency,
    )
    .await?;
    if r.handshakes == 0 {
        return Err(anyhow!(
            "no handshake succeeded against {inbound} ({} failures)",
            r.failures
        ));
    }
    Ok(r)
}

fn pair_of(s: &[Sidecar], f: fn(&Sidecar) -> Result<u64>) -> Result<[u64; 2]> {
    Ok([f(&s[0])?, f(&s[1])?])
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}
