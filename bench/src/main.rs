//! `trustmesh-bench`: a trustmesh sidecar pair against an nginx mTLS sidecar pair, in front of
//! the same backend, driven by the same load generator, in one run. See `bench/README.md`.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod backend;
mod handshake;
mod loadgen;
mod measure;
mod mesh;
mod nginx;
mod pin;
mod pki;
mod procs;
mod report;
mod run;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "trustmesh-bench",
    about = "trustmesh sidecar pair vs nginx mTLS pair"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Open-loop request rate (requests per second).
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds measured per case and mode (fixed rate, max rate), split over --rounds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of warm-up before each case's first segment of each mode.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Interleaved rounds: every case gets one segment per round, in rotating order.
    #[arg(long, default_value_t = 5)]
    rounds: u32,
    /// Keep-alive connections of the open-loop client.
    #[arg(long, default_value_t = 8)]
    open_connections: usize,
    /// Connections of the closed-loop (max rate) client.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds of each handshake run.
    #[arg(long, default_value_t = 3.0)]
    handshake_duration: f64,
    /// Concurrent handshake clients.
    #[arg(long, default_value_t = 4)]
    handshake_clients: usize,
    /// Folder of `trustmesh` and `trustmesh-proxy` (default: this binary's folder).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Threads of each trustmesh proxy (sets TRUSTMESH_THREADS; 0 is one per core; default:
    /// the proxy's own default, 1). nginx runs one worker process per sidecar.
    #[arg(long)]
    proxy_threads: Option<usize>,
    /// Skip the nginx pair.
    #[arg(long)]
    skip_nginx: bool,
    /// Skip the trustmesh pair.
    #[arg(long)]
    skip_trustmesh: bool,
    /// Servers (backend, sidecars, nginx workers, control plane) on CPU 0, the load generator
    /// on CPU 1 (taskset), and closed-loop runs at --pinned-connections with CPU per request.
    #[arg(long)]
    pinned: bool,
    /// Connection counts of the closed-loop runs under --pinned.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    pinned_connections: Vec<usize>,
    /// With --pinned: only the closed-loop runs (no fixed rate, 64-connection max rate or
    /// handshakes), for repeated comparisons of CPU per request.
    #[arg(long, requires = "pinned")]
    closed_only: bool,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve the benchmark backend (started by the harness itself).
    Backend {
        /// Loopback address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
}

fn main() -> ExitCode {
    match real_main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The chain once, without a backtrace: the failing step names itself.
            eprintln!("trustmesh-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::Backend { listen }) = cli.cmd {
        if !listen.ip().is_loopback() {
            bail!("the backend listens on loopback only, not {listen}");
        }
        return backend::serve(listen);
    }
    let settings = settings(cli)?;
    if !settings.pinned_connections.is_empty() {
        // Before the runtime exists, so that every thread it makes inherits the mask.
        pin::enable()?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        // Dropping the run future drops every ChildGuard in it, which stops the children.
        tokio::select! {
            r = run::run(settings) => r,
            _ = tokio::signal::ctrl_c() => bail!("interrupted; stopped every process started"),
            _ = terminated() => bail!("terminated; stopped every process started"),
        }
    })?;
    println!("{}", report::render(&result));
    Ok(())
}

async fn terminated() -> Result<()> {
    let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    sig.recv().await;
    Ok(())
}

fn settings(cli: Cli) -> Result<run::Settings> {
    let secs = |name: &str, v: f64, max: f64| {
        if !(v >= 0.0 && v <= max) {
            bail!("--{name} must be between 0 and {max} seconds");
        }
        Ok(Duration::from_secs_f64(v))
    };
    let bin_dir = match cli.bin_dir {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .context("binary has no folder")?
            .to_path_buf(),
    };
    if cli.rate == 0 || cli.rate > 100_000 {
        bail!("--rate must be between 1 and 100000");
    }
    if !(1..=1024).contains(&cli.open_connections) || !(1..=1024).contains(&cli.connections) {
        bail!("connection counts must be between 1 and 1024");
    }
    if !(1..=50).contains(&cli.rounds) {
        bail!("--rounds must be between 1 and 50");
    }
    if cli.proxy_threads.is_some_and(|t| t > 64) {
        bail!("--proxy-threads must be between 0 (one per core) and 64");
    }
    if !(1..=64).contains(&cli.handshake_clients) {
        bail!("--handshake-clients must be between 1 and 64");
    }
    if cli
        .pinned_connections
        .iter()
        .any(|c| !(1..=1024).contains(c))
    {
        bail!("--pinned-connections must be between 1 and 1024 each");
    }
    Ok(run::Settings {
        rate: cli.rate,
        warmup: secs("warmup", cli.warmup, 60.0)?,
        duration: secs("duration", cli.duration, 120.0)?,
        rounds: cli.rounds,
        open_connections: cli.open_connections,
        closed_connections: cli.connections,
        handshake_duration: secs("handshake-duration", cli.handshake_duration, 60.0)?,
        handshake_concurrency: cli.handshake_clients,
        bin_dir,
        proxy_threads: cli.proxy_threads,
        skip_nginx: cli.skip_nginx,
        skip_trustmesh: cli.skip_trustmesh,
        closed_only: cli.closed_only,
        pinned_connections: if cli.pinned {
            cli.pinned_connections
        } else {
            Vec::new()
        },
    })
}
