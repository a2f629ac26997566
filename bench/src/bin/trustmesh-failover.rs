//! `trustmesh-failover`: what an endpoint's death and a slow endpoint cost the callers.
//!
//! Starts a control plane and, on loopback, a service `pair.bench` with two endpoints and
//! `trio.bench` with three (each its own `trustmesh-proxy` in front of its own in-process
//! app), and two callers'
//! sidecars, one with the default balancer (`ewma`) and one with `--balancer rr`; the
//! binaries are those beside this one (`cargo build --release --workspace`). Then:
//!
//! 1. **death**: an open-loop load of 500 req/s for 6 s through the ewma caller to `pair`;
//!    2 s in, one of its endpoints' sidecar is killed (SIGKILL). Prints
//!    the requests lost and the time from the kill to the caller's
//!    `trustmesh_ejections_total` counting it (its `/metrics` read every 5 ms);
//! 2. **slow**: the third endpoint's app answers 10× slower (20 ms against 2 ms); 200 req/s
//!    for 5 s through each caller in turn; prints the share that went to the slow endpoint
//!    and p50 / p90 / p99 / max of each.
//!
//! Every loop is bounded in time and count; every process is killed at the end.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};

const FAST: Duration = Duration::from_millis(2);
const SLOW: Duration = Duration::from_millis(20);

/// Kills its child on drop, so nothing outlives the benchmark.
struct Guard(Option<Child>);

impl Guard {
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn addr() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

struct Bins {
    cp: std::path::PathBuf,
    proxy: std::path::PathBuf,
}

async fn run() -> Result<()> {
    let dir = std::env::current_exe()?
        .parent()
        .context("binary folder")?
        .to_path_buf();
    let bins = Bins {
        cp: dir.join("trustmesh"),
        proxy: dir.join("trustmesh-proxy"),
    };
    for b in [&bins.cp, &bins.proxy] {
        if !b.exists() {
            bail!(
                "{} is missing: cargo build --release --workspace",
                b.display()
            );
        }
    }
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    // `pair`: two endpoints, one of them killed; `trio`: three, the last one slow.
    let pair: Vec<SocketAddr> = (0..2).map(|_| addr()).collect::<Result<_>>()?;
    let trio: Vec<SocketAddr> = (0..3).map(|_| addr()).collect::<Result<_>>()?;
    let callers: Vec<SocketAddr> = (0..2).map(|_| addr()).collect::<Result<_>>()?;
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    std::fs::write(
        policies.join("mesh.yaml"),
        "trust_domain: cluster.local\ndefault_action: allow\n",
    )?;
    let service = |name: &str, sa: &str, eps: &[SocketAddr]| {
        let eps: Vec<String> = eps.iter().map(|e| format!("\"{e}\"")).collect();
        format!(
            "---\napiVersion: trustmesh.io/v1\nkind: Service\n\
             metadata: {{name: {name}, namespace: bench}}\n\
             spec: {{identity: spiffe://cluster.local/ns/bench/sa/{sa}, endpoints: [{}], ports: [{{port: 80, protocol: http}}]}}\n",
            eps.join(", ")
        )
    };
    let registry = [
        service("pair", "pair", &pair),
        service("trio", "trio", &trio),
        service("client", "client", &callers),
    ];
    std::fs::write(policies.join("services.yaml"), registry.concat())?;

    let cp_addr = addr()?;
    let data = dir.join("data");
    let mut guards = vec![Guard(Some(
        Command::new(&bins.cp)
            .args(["serve", "--listen", &cp_addr.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .arg("--policies")
            .arg(&policies)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting trustmesh serve")?,
    ))];
    wait(
        || async { data.join("trust-bundle.pem").exists() },
        "the CA",
    )
    .await?;
    wait(
        || async { tokio::net::TcpStream::connect(cp_addr).await.is_ok() },
        "serve",
    )
    .await?;

    let mut servers = Vec::new();
    let endpoints = pair.iter().map(|a| ("pair", a, FAST));
    let trio_delays = [FAST, FAST, SLOW];
    let endpoints = endpoints.chain(trio.iter().zip(trio_delays).map(|(a, d)| ("trio", a, d)));
    let slow_hits = Arc::new(AtomicU64::new(0));
    for (i, (sa, inbound, delay)) in endpoints.enumerate() {
        let app = addr()?;
        let hits = (delay == SLOW).then(|| slow_hits.clone());
        tokio::spawn(app_server(app, delay, hits));
        let ports = Ports {
            inbound: *inbound,
            outbound: addr()?,
            admin: addr()?,
        };
        servers.push(sidecar(
            &bins,
            &cp_addr,
            &data,
            dir,
            (sa, i),
            app,
            ports,
            None,
        )?);
        wait_ready(ports.admin).await?;
    }
    let mut outbound = Vec::new();
    for (i, (inbound, balancer)) in callers.iter().zip(["ewma", "rr"]).enumerate() {
        let ports = Ports {
            inbound: *inbound,
            outbound: addr()?,
            admin: addr()?,
        };
        let (app, who) = (addr()?, ("client", i));
        guards.push(sidecar(
            &bins,
            &cp_addr,
            &data,
            dir,
            who,
            app,
            ports,
            Some(balancer),
        )?);
        wait_ready(ports.admin).await?;
        outbound.push((ports.outbound, ports.admin, balancer));
    }

    let (out, admin, _) = outbound[0];
    println!(
        "endpoint death: one of two endpoints' sidecars killed (SIGKILL) under 500 req/s for 6 s"
    );
    let load = tokio::spawn(open_loop(out, "pair.bench", 500, Duration::from_secs(6)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    servers[0].kill();
    let t0 = Instant::now();
    let series = "trustmesh_ejections_total{reason=\"connect\",service=\"pair.bench\"}";
    let mut ejected = None;
    while t0.elapsed() < Duration::from_secs(3) {
        if metric(admin, series).await.unwrap_or(0.0) >= 1.0 {
            ejected = Some(t0.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let r = load.await??;
    println!(
        "  sent {}   failed {}   kill -> ejection {}",
        r.sent,
        r.failed,
        ejected.map_or("not within 3 s".to_string(), |d| format!("{:.0} ms", ms(d)))
    );

    println!("one slow endpoint of three (app 20 ms against 2 ms), 200 req/s for 5 s:");
    for (out, _, balancer) in &outbound {
        // Warm up: every caller's connections, and its estimates, before the measurement.
        open_loop(*out, "trio.bench", 100, Duration::from_secs(1)).await?;
        let before = slow_hits.load(Ordering::Relaxed);
        let mut r = open_loop(*out, "trio.bench", 200, Duration::from_secs(5)).await?;
        let slow = slow_hits.load(Ordering::Relaxed) - before;
        r.latencies.sort();
        let p = |q: f64| {
            r.latencies
                .get(((r.latencies.len() as f64 - 1.0) * q) as usize)
        };
        let f = |d: Option<&Duration>| d.map_or(0.0, |d| ms(*d));
        println!(
            "  {balancer:>4}: sent {}  failed {}  to the slow one {:.1} %  p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            r.sent,
            r.failed,
            100.0 * slow as f64 / r.sent.max(1) as f64,
            f(p(0.5)),
            f(p(0.9)),
            f(p(0.99)),
            f(p(1.0))
        );
    }
    drop(servers);
    guards.reverse();
    drop(guards);
    Ok(())
}

/// A sidecar's listeners.
#[derive(Clone, Copy)]
struct Ports {
    inbound: SocketAddr,
    outbound: SocketAddr,
    admin: SocketAddr,
}

/// Starts sidecar number `i` of service account `sa` with a fresh token.
#[allow(clippy::too_many_arguments)]
fn sidecar(
    bins: &Bins,
    cp: &SocketAddr,
    data: &Path,
    dir: &Path,
    (sa, i): (&str, usize),
    app: SocketAddr,
    ports: Ports,
    balancer: Option<&str>,
) -> Result<Guard> {
    let id = format!("spiffe://cluster.local/ns/bench/sa/{sa}");
    let out = Command::new(&bins.cp)
        .args(["token", "create", "--identity", &id, "--data-dir"])
        .arg(data)
        .output()?;
    if !out.status.success() {
        bail!("token create: {}", String::from_utf8_lossy(&out.stderr));
    }
    let token = dir.join(format!("{sa}-{i}.token"));
    std::fs::write(&token, &out.stdout)?;
    let child = Command::new(&bins.proxy)
        .args(["--control-plane", &format!("https://{cp}")])
        .arg("--trust-bundle")
        .arg(data.join("trust-bundle.pem"))
        .arg("--token-file")
        .arg(&token)
        .args(["--identity", &id, "--app", &app.to_string()])
        .args(["--inbound", &ports.inbound.to_string()])
        .args(["--outbound", &ports.outbound.to_string()])
        .args(["--admin", &ports.admin.to_string()])
        .args(balancer.map(|b| format!("--balancer={b}")))
        .args(["--access-log", "off", "--log-level", "warn"])
        .stdout(Stdio::null())
        .spawn()
        .context("starting trustmesh-proxy")?;
    Ok(Guard(Some(child)))
}

struct LoadResult {
    sent: u64,
    failed: u64,
    latencies: Vec<Duration>,
}

/// Sends `rate` requests a second for `length` on their schedule (open loop: a slow answer
/// does not delay the next request), each bounded by 5 s; a non-200 or an error is a failure.
async fn open_loop(out: SocketAddr, host: &str, rate: u64, length: Duration) -> Result<LoadResult> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let failed = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let total = rate * length.as_secs();
    let gap = Duration::from_secs(1) / rate as u32;
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        tokio::time::sleep_until(start + gap * n as u32).await;
        let (client, failed, latencies) = (client.clone(), failed.clone(), latencies.clone());
        let req = http::Request::get(format!("http://{out}/n/{n}"))
            .header("host", host)
            .body(Empty::new())?;
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let ok = tokio::time::timeout(Duration::from_secs(5), async {
                let resp = client.request(req).await.ok()?;
                let status = resp.status();
                resp.into_body().collect().await.ok()?;
                (status == 200).then_some(())
            })
            .await;
            if matches!(ok, Ok(Some(()))) {
                if let Ok(mut l) = latencies.lock() {
                    l.push(t.elapsed());
                }
            } else {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let latencies = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    Ok(LoadResult {
        sent: total,
        failed: failed.load(Ordering::Relaxed),
        latencies,
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The value of `series` on a sidecar's `/metrics`.
async fn metric(admin: SocketAddr, series: &str) -> Result<f64> {
    let text = admin_get(admin, "/metrics").await?.1;
    Ok(text
        .lines()
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0))
}

async fn admin_get(admin: SocketAddr, path: &str) -> Result<(u16, String)> {
    let tcp = tokio::net::TcpStream::connect(admin).await?;
    let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())?;
    let resp = s.send_request(req).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn wait<F: std::future::Future<Output = bool>>(
    check: impl Fn() -> F,
    what: &str,
) -> Result<()> {
    for _ in 0..400 {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{what} not up within 20 s")
}

async fn wait_ready(admin: SocketAddr) -> Result<()> {
    wait(
        || async {
            admin_get(admin, "/ready")
                .await
                .is_ok_and(|(s, _)| s == 200)
        },
        "a sidecar",
    )
    .await
}

/// An app: 200 and a short body after `delay`; counts its requests in `hits`.
async fn app_server(listen: SocketAddr, delay: Duration, hits: Option<Arc<AtomicU64>>) {
    let Ok(listener) = tokio::net::TcpListener::bind(listen).await else {
        return;
    };
    while let Ok((tcp, _)) = listener.accept().await {
        let hits = hits.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req| {
                if let Some(h) = &hits {
                    h.fetch_add(1, Ordering::Relaxed);
                }
                app_answer(delay)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

async fn app_answer(
    delay: Duration,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    tokio::time::sleep(delay).await;
    Ok(hyper::Response::new(Full::new(Bytes::from_static(b"ok"))))
}
