//! One benchmark run: the backend, the nginx pair and the trustmesh pair are started together;
//! then the direct case and both pairs are measured in interleaved rounds (fixed rate, then
//! max rate), and last the handshakes at each pair's server side.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::handshake::{self, HandshakeResult};
use crate::loadgen::{self, Target};
use crate::measure::{Accumulator, CaseResult};
use crate::mesh::{self, MeshPair};
use crate::nginx::NginxPair;
use crate::pin;
use crate::pki::Pki;
use crate::procs::{self, ChildGuard, Sidecar};

/// Warm-up of every segment after a case's first one (connections are opened anew).
pub const SEGMENT_WARMUP: Duration = Duration::from_millis(300);

/// What to run and for how long.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Open-loop rate (requests per second).
    pub rate: u32,
    /// Warm-up before each case's first segment.
    pub warmup: Duration,
    /// Total measured time per case and mode, split over `rounds` segments.
    pub duration: Duration,
    /// Interleaved rounds.
    pub rounds: u32,
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
    /// TRUSTMESH_THREADS for the trustmesh proxies (None: their default).
    pub proxy_threads: Option<usize>,
    /// Skip the nginx pair.
    pub skip_nginx: bool,
    /// Skip the trustmesh pair.
    pub skip_trustmesh: bool,
    /// `--pinned`: servers on one CPU, load generator on the other ([`crate::pin`]), plus
    /// closed-loop runs at these connection counts with CPU per request.
    pub pinned_connections: Vec<usize>,
    /// Only the closed-loop runs of `pinned_connections`.
    pub closed_only: bool,
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
    /// Under `--pinned`: the CPUs the load generator and the backend are allowed to run on.
    pub pinning: Option<String>,
}

/// One case, alive for the whole run.
struct Case {
    name: &'static str,
    target: Target,
    /// A and B; empty for direct.
    sidecars: Vec<Sidecar>,
    /// The handshake client and B's inbound listener.
    handshake: Option<(handshake::Client, SocketAddr)>,
    acc: Accumulator,
    result: CaseResult,
    /// Set when the case failed; it is then left out of the remaining rounds.
    failed: Option<String>,
}

impl Case {
    fn new(name: &'static str, target: Target) -> Result<Self> {
        Ok(Self {
            name,
            target,
            sidecars: Vec::new(),
            handshake: None,
            acc: Accumulator::new()?,
            result: CaseResult::default(),
            failed: None,
        })
    }

    fn record<T>(&mut self, what: &str, r: Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                eprintln!("[bench] {}: {what} failed: {e:#}", self.name);
                self.failed = Some(format!("{what}: {e:#}"));
                None
            }
        }
    }
}

/// The two load modes measured in interleaved segments.
#[derive(Clone, Copy)]
enum Mode {
    /// Open loop at `--rate`.
    Fixed,
    /// Closed loop over `--connections`.
    Max,
    /// Closed loop over this many connections, CPU per request read (`--pinned`).
    Closed(usize),
}

/// Runs `rounds` segments of `mode` per case, rotating the order each round so that no case
/// always follows the same neighbour; a case that fails is left out of the rest.
async fn interleaved(
    cases: &mut [Case],
    settings: &Settings,
    mode: Mode,
    rounds: u32,
    window: Duration,
) {
    let n = cases.len();
    for round in 0..rounds {
        for k in 0..n {
            let case = &mut cases[(k + round as usize) % n];
            if case.failed.is_some() {
                continue;
            }
            let warmup = if round == 0 {
                settings.warmup
            } else {
                SEGMENT_WARMUP
            };
            let (what, r) = match mode {
                Mode::Fixed => (
                    "fixed-rate segment",
                    case.acc
                        .fixed_segment(
                            &case.target,
                            &case.sidecars,
                            settings.rate,
                            settings.open_connections,
                            warmup,
                            window,
                        )
                        .await,
                ),
                Mode::Max => (
                    "max-rate segment",
                    case.acc
                        .max_segment(
                            &case.target,
                            &case.sidecars,
                            settings.closed_connections,
                            warmup,
                            window,
                        )
                        .await,
                ),
                Mode::Closed(c) => (
                    "closed-loop segment",
                    case.acc
                        .closed_segment(&case.target, &case.sidecars, c, warmup, window)
                        .await,
                ),
            };
            case.record(what, r);
        }
    }
}

/// Runs every case; a pair that cannot start or fails midway is reported, not fatal.
pub async fn run(settings: Settings) -> Result<RunResult> {
    let backend_addr = procs::free_addrs(1)?[0];
    let mut backend = start_backend(backend_addr)?;
    procs::wait_for_tcp(backend_addr, &mut backend, Duration::from_secs(10))?;
    eprintln!("[bench] backend on {backend_addr}");

    let mut cases = vec![Case::new(
        "direct",
        Target {
            addr: backend_addr,
            host: "backend".into(),
        },
    )?];
    // The pairs live until the end of this function; dropping them stops their processes.
    let mut nginx_pair = None;
    let mut nginx_error = None;
    if !settings.skip_nginx {
        eprintln!("[bench] starting the nginx pair");
        match nginx_case(backend_addr) {
            Ok((pair, case)) => {
                nginx_pair = Some(pair);
                cases.push(case);
            }
            Err(e) => nginx_error = Some(format!("{e:#}")),
        }
    }
    let mut mesh_pair = None;
    let mut mesh_error = None;
    if !settings.skip_trustmesh {
        eprintln!("[bench] starting the trustmesh pair");
        match mesh_case(&settings, backend_addr).await {
            Ok((pair, case)) => {
                mesh_pair = Some(pair);
                cases.push(case);
            }
            Err(e) => mesh_error = Some(format!("{e:#}")),
        }
    }

    for case in &mut cases {
        let r = check(&case.target).await;
        case.record("sanity check", r);
        if case.failed.is_none() && !case.sidecars.is_empty() {
            let rss = pair_of(&case.sidecars, Sidecar::rss_kib);
            case.result.rss_idle_kib = case.record("reading RSS", rss);
            let pss = pair_of(&case.sidecars, Sidecar::pss_kib);
            case.result.pss_idle_kib = case.record("reading PSS", pss);
            let threads = pair_of(&case.sidecars, Sidecar::threads);
            case.result.threads = case.record("reading threads", threads);
            if pin::enabled() {
                let cpus = pin::describe(&case.sidecars);
                case.result.notes.push(cpus);
            }
        }
    }
    if let Some(f) = &cases[0].failed {
        bail!("the direct case failed: {f}");
    }

    let rounds = settings.rounds.max(1);
    let window = settings.duration / rounds;
    if !settings.closed_only {
        eprintln!(
            "[bench] fixed rate {} req/s: {rounds} rounds of {window:?} per case, interleaved",
            settings.rate
        );
        interleaved(&mut cases, &settings, Mode::Fixed, rounds, window).await;
        eprintln!(
            "[bench] max rate, {} connections: {rounds} rounds of {window:?} per case, interleaved",
            settings.closed_connections
        );
        interleaved(&mut cases, &settings, Mode::Max, rounds, window).await;
    }
    for &c in &settings.pinned_connections {
        eprintln!("[bench] closed loop, {c} connections, CPU per request: {rounds} rounds of {window:?} per case");
        interleaved(&mut cases, &settings, Mode::Closed(c), rounds, window).await;
    }
    for case in &mut cases {
        if case.failed.is_some() || settings.closed_only {
            continue;
        }
        if let Some((client, inbound)) = &case.handshake {
            let r = handshake_case(&settings, client, *inbound, &case.sidecars[1]).await;
            case.result.handshake = case.record("handshakes", r);
        }
    }
    backend
        .check_running()
        .context("the backend died during the run")?;

    let mut direct = None;
    let mut nginx = nginx_error.map(Err);
    let mut trustmesh = mesh_error.map(Err);
    for mut case in cases {
        case.acc.finish(&mut case.result, !case.sidecars.is_empty());
        let outcome = match case.failed {
            Some(e) => Err(e),
            None => Ok(case.result),
        };
        match case.name {
            "nginx" => nginx = Some(outcome),
            "trustmesh" => trustmesh = Some(outcome),
            _ => direct = outcome.ok(),
        }
    }
    let pinning = pin::enabled().then(|| pin::harness_note(backend.pid()));
    drop(mesh_pair);
    drop(nginx_pair);
    let direct = direct.context("the direct case failed")?;
    Ok(RunResult {
        settings,
        direct,
        trustmesh,
        nginx,
        pinning,
    })
}

fn start_backend(addr: SocketAddr) -> Result<ChildGuard> {
    let exe = std::env::current_exe().context("finding the bench binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("backend").arg("--listen").arg(addr.to_string());
    ChildGuard::spawn("backend", cmd, None)
}

fn nginx_case(backend: SocketAddr) -> Result<(NginxPair, Case)> {
    let pair = NginxPair::start(backend)?;
    let mut case = Case::new(
        "nginx",
        Target {
            addr: pair.outbound,
            host: "bench-server.bench".into(),
        },
    )?;
    let client = handshake::Client::new(
        &pair.pki,
        handshake::CLIENT_SA,
        &pair.b_identity,
        &[b"http/1.1"],
    )?;
    case.handshake = Some((client, pair.inbound));
    case.sidecars = vec![pair.a.clone(), pair.b.clone()];
    case.result
        .notes
        .push(format!("{}, worker_processes 1 per sidecar", pair.version));
    Ok((pair, case))
}

async fn mesh_case(settings: &Settings, backend: SocketAddr) -> Result<(MeshPair, Case)> {
    let pair = MeshPair::start(&settings.bin_dir, backend, settings.proxy_threads).await?;
    let mut case = Case::new(
        "trustmesh",
        Target {
            addr: pair.outbound,
            host: mesh::SERVER_HOST.into(),
        },
    )?;
    let pki = Pki::load(&pair.data_dir)?;
    let client = handshake::Client::new(&pki, handshake::CLIENT_SA, &pair.b_identity, &[b"h2"])?;
    case.handshake = Some((client, pair.inbound));
    case.sidecars = vec![pair.a.clone(), pair.b.clone()];
    let flags = if pair.proxy_flags.is_empty() {
        "none".to_owned()
    } else {
        pair.proxy_flags.join(" ")
    };
    let threads = match settings.proxy_threads {
        Some(t) => format!("TRUSTMESH_THREADS={t}"),
        None => "the proxy's default threads (--threads 1)".to_owned(),
    };
    case.result.notes.push(format!(
        "trustmesh-proxy extra flags: {flags}; RUST_LOG=warn; {threads}"
    ));
    Ok((pair, case))
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

async fn handshake_case(
    settings: &Settings,
    client: &handshake::Client,
    inbound: SocketAddr,
    server: &Sidecar,
) -> Result<HandshakeResult> {
    eprintln!(
        "[bench] full mTLS handshakes against {inbound}, {} clients, {:?}",
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
        bail!(
            "no handshake succeeded against {inbound} ({} failures)",
            r.failures
        );
    }
    Ok(r)
}

fn pair_of(s: &[Sidecar], f: fn(&Sidecar) -> Result<u64>) -> Result<[u64; 2]> {
    match s {
        [a, b] => Ok([f(a)?, f(b)?]),
        _ => bail!("a pair has two sidecars, not {}", s.len()),
    }
}
