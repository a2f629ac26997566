//! `trustmesh-cp-load`: N simulated sidecars in one process against one control plane, as
//! Istio's `pilot-load` does. Each has its own identity and client certificate and holds the
//! snapshot long poll; the policy folder is a generated git repository of S services with
//! their policies. It measures the time from a policy commit to every sidecar holding the new
//! version, the control plane's idle CPU and RSS, the CPU one push costs, the bytes per
//! snapshot, and a control-plane restart with all N reconnecting. See `bench/README.md`.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

#[path = "cp_load/fixture.rs"]
mod fixture;
#[path = "cp_load/fleet.rs"]
mod fleet;
#[path = "../pin.rs"]
#[allow(dead_code)]
mod pin;
#[path = "../procs.rs"]
#[allow(dead_code)]
mod procs;
#[path = "cp_load/sidecar.rs"]
mod sidecar;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

use fixture::{ControlPlane, Shape};
use fleet::{percentiles, Fleet};

#[derive(Parser, Debug)]
#[command(
    name = "trustmesh-cp-load",
    about = "N simulated sidecars against one control plane"
)]
struct Cli {
    /// Services in the generated registry (S).
    #[arg(long, default_value_t = 100)]
    services: usize,
    /// Simulated sidecars (N), each with its own identity.
    #[arg(long, default_value_t = 200)]
    sidecars: usize,
    /// Services each sidecar may call (its snapshot's registry entries).
    #[arg(long, default_value_t = 10)]
    calls: usize,
    /// Policy commits to time.
    #[arg(long, default_value_t = 3)]
    pushes: usize,
    /// Seconds the control plane's idle CPU is measured over.
    #[arg(long, default_value_t = 30.0)]
    idle: f64,
    /// Seconds each long poll asks to be held (the proxy uses 30).
    #[arg(long, default_value_t = 30.0)]
    wait: f64,
    /// Longest wait for the whole fleet in any phase, seconds.
    #[arg(long, default_value_t = 180.0)]
    timeout: f64,
    /// First handshakes in flight at once while the fleet starts.
    #[arg(long, default_value_t = 64)]
    ramp: usize,
    /// Replicas of a service share its identity (as pods of a Deployment share a
    /// ServiceAccount) instead of each sidecar having its own.
    #[arg(long)]
    shared_identity: bool,
    /// A new connection (a resumed TLS handshake) per poll, as the proxy's control-plane
    /// client made before it kept one, instead of one kept per sidecar (the proxy's way now).
    #[arg(long)]
    connection_per_poll: bool,
    /// Skip the control-plane restart.
    #[arg(long)]
    no_restart: bool,
    /// Folder of `trustmesh` (default: this binary's folder).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// `RUST_LOG` of the control plane (e.g. `warn,policy=debug,snapshot=trace` to time a
    /// push's steps from its log).
    #[arg(long, default_value = "warn")]
    cp_log: String,
    /// Where the control plane's log goes (default: a temporary file, removed at the end).
    #[arg(long)]
    cp_log_file: Option<PathBuf>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let secs = |name: &str, v: f64, lo: f64, hi: f64| {
        if !(lo..=hi).contains(&v) {
            bail!("--{name} must be between {lo} and {hi} seconds");
        }
        Ok(Duration::from_secs_f64(v))
    };
    if !(1..=100_000).contains(&cli.services) || !(1..=50_000).contains(&cli.sidecars) {
        bail!("--services must be 1..=100000 and --sidecars 1..=50000");
    }
    if !(1..=1024).contains(&cli.ramp) || cli.pushes > 100 {
        bail!("--ramp must be 1..=1024 and --pushes at most 100");
    }
    let shape = Shape {
        services: cli.services,
        sidecars: cli.sidecars,
        calls: cli.calls.min(cli.services.saturating_sub(1)),
        shared_identity: cli.shared_identity,
    };
    let idle = secs("idle", cli.idle, 1.0, 600.0)?;
    let wait = secs("wait", cli.wait, 1.0, 120.0)?;
    let timeout = secs("timeout", cli.timeout, 5.0, 900.0)?;
    // Both this process and the control plane (which inherits it) hold one socket per sidecar.
    let nofile = rlimit::increase_nofile_limit(u64::MAX).context("raising RLIMIT_NOFILE")?;
    if nofile < cli.sidecars as u64 + 256 {
        bail!(
            "the open-file limit is {nofile}, {} sidecars need {} or more",
            cli.sidecars,
            cli.sidecars + 256
        );
    }
    let bin_dir = match cli.bin_dir.clone() {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .context("binary folder")?
            .to_path_buf(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli, shape, bin_dir, nofile, [idle, wait, timeout]))
}

async fn run(
    cli: Cli,
    shape: Shape,
    bin_dir: PathBuf,
    nofile: u64,
    t: [Duration; 3],
) -> Result<()> {
    let [idle, wait, timeout] = t;
    let tmp = tempfile::tempdir()?;
    let policies = tmp.path().join("policies");
    let written = fixture::write_policies(&policies, shape)?;
    // Every sidecar holds one connection; raise the listener cap above the fleet if needed.
    let mut flags = Vec::new();
    if shape.sidecars + 1024 > 10_000 {
        flags.extend([
            "--max-connections".to_owned(),
            (shape.sidecars + 1024).to_string(),
        ]);
    }
    // Replicas sharing an identity share its watch cap; raise it if they exceed it.
    let per_identity = if shape.shared_identity {
        shape.sidecars.div_ceil(shape.services)
    } else {
        1
    };
    if per_identity > 1024 {
        flags.extend([
            "--max-watches-per-identity".to_owned(),
            (per_identity + 16).to_string(),
        ]);
    }
    let cp = ControlPlane {
        bin: bin_dir.join("trustmesh"),
        listen: procs::free_addrs(1)?[0],
        data: tmp.path().join("data"),
        policies: policies.clone(),
        flags,
        log: cli
            .cp_log_file
            .clone()
            .unwrap_or_else(|| tmp.path().join("control-plane.log")),
        log_filter: cli.cp_log.clone(),
    };
    if !cp.bin.exists() {
        bail!(
            "{} is missing: cargo build --release -p trustmesh-control-plane",
            cp.bin.display()
        );
    }
    // A generated folder the control plane would reject would measure nothing: check it first.
    let check = std::process::Command::new(&cp.bin)
        .args(["policy", "validate"])
        .arg(&policies)
        .output()
        .context("running trustmesh policy validate")?;
    if !check.status.success() {
        bail!(
            "the generated policy folder is invalid: {}",
            String::from_utf8_lossy(&check.stderr)
        );
    }
    println!(
        "trustmesh-cp-load: {} services, {} sidecars, {per_identity} per identity ({}), \
         {} callable services each; RLIMIT_NOFILE {nofile}",
        shape.services,
        shape.sidecars,
        if shape.shared_identity {
            "replicas share their service's identity"
        } else {
            "each its own"
        },
        shape.calls
    );
    println!(
        "  policy folder: {:.1} KiB in git; control plane flags: {}",
        written as f64 / 1024.0,
        if cp.flags.is_empty() {
            "defaults".to_owned()
        } else {
            cp.flags.join(" ")
        }
    );
    let mut guard = tokio::task::block_in_place(|| cp.start())?;
    let started = Instant::now();
    let configs = cp.client_configs(shape)?;
    println!(
        "  {} client certificates issued in {:.2} s",
        configs.len(),
        started.elapsed().as_secs_f64()
    );

    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let ramp = Arc::new(tokio::sync::Semaphore::new(cli.ramp));
    let mut tasks = tokio::task::JoinSet::new();
    let t_connect = Instant::now();
    for (idx, tls) in configs.into_iter().enumerate() {
        let s = sidecar::Sidecar {
            idx,
            tls,
            addr: cp.listen,
            wait,
            per_poll: cli.connection_per_poll,
        };
        tasks.spawn(s.run(tx.clone(), ramp.clone()));
    }
    drop(tx);
    let mut fleet = Fleet::new(shape.sidecars, rx);
    fleet
        .wait_all(timeout, "first snapshot", |f, i| f.version[i].is_some())
        .await?;
    let (mean, max) = bytes(&fleet);
    println!(
        "connect: every sidecar holds its first snapshot {:.2} s after start ({} at most {} handshakes at once); \
         errors {}; snapshot {mean:.0} bytes mean, {max} max",
        t_connect.elapsed().as_secs_f64(),
        shape.sidecars,
        cli.ramp,
        fleet.take_errors()
    );

    fleet.drain_for(Duration::from_secs(2)).await;
    let pid = guard.pid();
    let hz = procs::clock_ticks() as f64;
    let (c0, r0) = (procs::cpu_ticks(pid)?, procs::rss_kib(pid)?);
    fleet.drain_for(idle).await;
    let (c1, r1) = (procs::cpu_ticks(pid)?, procs::rss_kib(pid)?);
    let idle_cpu = (c1 - c0) as f64 / hz;
    println!(
        "idle {idle:?} with {} long polls held: control plane CPU {:.2} s = {:.2} % of a core; RSS {:.1} MiB -> {:.1} MiB; errors {}",
        shape.sidecars,
        idle_cpu,
        100.0 * idle_cpu / idle.as_secs_f64(),
        r0 as f64 / 1024.0,
        r1 as f64 / 1024.0,
        fleet.take_errors()
    );

    let mut samples = Vec::new();
    let mut cpu = Vec::new();
    let me = std::process::id();
    for k in 0..cli.pushes {
        let c0 = procs::cpu_ticks(pid)?;
        let m0 = procs::cpu_ticks(me)?;
        let received = fleet.snapshots;
        let (t0, head) = fixture::commit_push(&policies, k)?;
        let wall0 = unix_ms(t0);
        let want = format!("git:{head}");
        fleet
            .wait_all(timeout, "the pushed version", |f, i| {
                f.version[i]
                    .as_deref()
                    .is_some_and(|v| v.starts_with(&want))
            })
            .await?;
        let c1 = procs::cpu_ticks(pid)?;
        let m1 = procs::cpu_ticks(me)?;
        let mut mine: Vec<Duration> = fleet
            .snapshot_at
            .iter()
            .flatten()
            .map(|at| at.saturating_duration_since(t0))
            .collect();
        let (mean, max) = bytes(&fleet);
        cpu.push((c1 - c0) as f64 / hz);
        println!(
            "push {k}: commit -> sidecar {}; control plane CPU {:.2} s until the last one; {mean:.0} bytes mean ({max} max) per snapshot; \
             RSS {:.1} MiB; errors {}",
            percentiles(&mut mine),
            cpu[k],
            procs::rss_kib(pid)? as f64 / 1024.0,
            fleet.take_errors()
        );
        println!(
            "  push {k}: commit at unix {wall0:.3} ms; first sidecar +{:.1} ms; {} snapshots received for {} sidecars; \
             this tool's CPU {:.2} s",
            mine.iter().min().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            fleet.snapshots - received,
            shape.sidecars,
            (m1 - m0) as f64 / hz
        );
        samples.extend(mine);
        fleet.drain_for(Duration::from_secs(1)).await;
    }
    if cli.pushes > 0 {
        let mean_cpu = cpu.iter().sum::<f64>() / cpu.len() as f64;
        println!(
            "pushes ({}): commit -> sidecar over all {}; CPU per push {:.0} ms mean ({:.1} ms per sidecar)",
            cli.pushes,
            percentiles(&mut samples),
            mean_cpu * 1000.0,
            mean_cpu * 1000.0 / shape.sidecars as f64
        );
    }

    if !cli.no_restart {
        fleet.take_errors();
        fleet.take_handshakes();
        let me = std::process::id();
        let tool0 = procs::cpu_ticks(me)?;
        let t_stop = Instant::now();
        tokio::task::spawn_blocking(move || drop(guard)).await?;
        let stopped = t_stop.elapsed();
        let t_start = Instant::now();
        guard = tokio::task::block_in_place(|| cp.start())?;
        let listening = t_start.elapsed();
        let cp_listening = procs::cpu_ticks(guard.pid())?;
        fleet
            .wait_all(timeout, "served again after the restart", |f, i| {
                f.served_at[i].is_some_and(|at| at > t_start)
            })
            .await?;
        // CPU seconds, which the machine's other load does not stretch as it does wall time.
        let cp_served = procs::cpu_ticks(guard.pid())?;
        let tool1 = procs::cpu_ticks(me)?;
        let mut back: Vec<Duration> = fleet
            .served_at
            .iter()
            .flatten()
            .map(|at| at.saturating_duration_since(t_start))
            .collect();
        let (late, late_kinds) = fleet.errors_after(t_start + listening, t_start);
        let (errors, handshakes) = (fleet.take_errors(), fleet.take_handshakes());
        println!(
            "restart: old control plane stopped (SIGTERM, drain) in {:.2} s; new one listening after {:.2} s; \
             every sidecar served again: {} after the new start; failed attempts meanwhile {} ({:?}), \
             {late} of them begun once it listened; handshakes {}; RSS {:.1} MiB",
            stopped.as_secs_f64(),
            listening.as_secs_f64(),
            percentiles(&mut back),
            errors,
            fleet.samples,
            handshakes,
            procs::rss_kib(guard.pid())? as f64 / 1024.0
        );
        if !late_kinds.is_empty() {
            println!("  seen failing once it listened, by kind: {late_kinds}");
        }
        println!(
            "restart CPU: new control plane {:.2} s until listening, {:.2} s more until every sidecar was served; \
             this tool {:.2} s from the stop until then",
            cp_listening as f64 / hz,
            (cp_served - cp_listening) as f64 / hz,
            (tool1 - tool0) as f64 / hz
        );
    }
    println!(
        "this tool: CPU {:.1} s, RSS {:.1} MiB (it shares the machine with the control plane)",
        procs::cpu_ticks(me)? as f64 / hz,
        procs::rss_kib(me)? as f64 / 1024.0
    );
    tasks.abort_all();
    drop(fleet);
    tokio::task::spawn_blocking(move || drop(guard)).await?;
    Ok(())
}

/// `at` as milliseconds since the Unix epoch (to line up with the control plane's log).
fn unix_ms(at: Instant) -> f64 {
    let now = std::time::SystemTime::now();
    let ago = at.elapsed();
    now.checked_sub(ago)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Mean and largest body length of the snapshots the fleet holds.
fn bytes(fleet: &Fleet) -> (f64, usize) {
    let n = fleet.bytes.len().max(1) as f64;
    let sum: usize = fleet.bytes.iter().sum();
    (
        sum as f64 / n,
        fleet.bytes.iter().copied().max().unwrap_or(0),
    )
}
