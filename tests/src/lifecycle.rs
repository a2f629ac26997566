//! Helpers for the certificate lifecycle tests (`tests/tests/lifecycle*.rs`): an A → B mesh
//! whose control plane issues short-lived certificates and may run as several replicas on one
//! data folder, a steady load through A's outbound that counts every failed request, a TLS
//! probe that reads the certificate a listener presents, and readers for the proxies' admin
//! endpoints.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use trustmesh_certs::TrustBundle;

use crate::app::App;
use crate::client::{admin_get, connect, REQUEST_TIMEOUT};
use crate::control_plane::{run_cli, CliOutput, ControlPlane};
use crate::mesh::{Base, NAMESPACE};
use crate::mtls::{client_without_cert, spiffe};
use crate::policies::spiffe_id;
use crate::proxy::Proxy;
use crate::workdir::WorkDir;

/// How the lifecycle mesh is set up.
#[derive(Debug, Clone)]
pub struct LifeOptions {
    /// `--cert-ttl` of every replica.
    pub cert_ttl: String,
    /// How many `serve` replicas share the data folder.
    pub replicas: usize,
    /// Extra `serve` flags for every replica.
    pub cp_extra: Vec<String>,
}

impl LifeOptions {
    /// One replica issuing certificates that live `ttl`.
    pub fn ttl(ttl: &str) -> Self {
        Self {
            cert_ttl: ttl.to_string(),
            replicas: 1,
            cp_extra: Vec::new(),
        }
    }
}

/// A → B (`b.test`) with short-lived certificates. Fields drop in order: sidecars, control
/// planes, apps, folder.
#[derive(Debug)]
pub struct LifeMesh {
    /// The caller's sidecar (`spiffe://cluster.local/ns/test/sa/a`).
    pub a: Proxy,
    /// The callee's sidecar (`spiffe://cluster.local/ns/test/sa/b`).
    pub b: Proxy,
    /// The replicas, all on `dir/cp-data`; the proxies know all of them.
    pub cps: Vec<ControlPlane>,
    /// A's app.
    pub app_a: App,
    /// B's app.
    pub app_b: App,
    /// Policies, data, tokens, logs.
    pub dir: WorkDir,
}

impl LifeMesh {
    /// Starts the replicas one after the other (the first creates the CA), then B and A with
    /// every replica as `--control-plane`.
    pub async fn start(test: &str, opts: LifeOptions) -> anyhow::Result<Self> {
        let Base {
            dir,
            a_ports,
            b_ports,
            policies,
            app_a,
            app_b,
        } = Base::new(test).await?;
        let data = dir.path().join("cp-data");
        let mut extra: Vec<&str> = vec!["--cert-ttl", &opts.cert_ttl];
        extra.extend(opts.cp_extra.iter().map(String::as_str));
        let mut cps = Vec::new();
        for _ in 0..opts.replicas.max(1) {
            cps.push(ControlPlane::start_with(dir.path(), &data, &policies, &extra).await?);
        }
        let more: Vec<String> = cps
            .iter()
            .skip(1)
            .flat_map(|cp| ["--control-plane".to_string(), cp.url()])
            .collect();
        let more: Vec<&str> = more.iter().map(String::as_str).collect();
        let (id_a, id_b) = (spiffe_id(NAMESPACE, "a"), spiffe_id(NAMESPACE, "b"));
        let (b, a) = tokio::try_join!(
            Proxy::start_with(&cps[0], "b", &id_b, app_b.addr(), b_ports, &more),
            Proxy::start_with(&cps[0], "a", &id_a, app_a.addr(), a_ports, &more),
        )?;
        Ok(Self {
            a,
            b,
            cps,
            app_a,
            app_b,
            dir,
        })
    }

    /// The data folder every replica shares.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("cp-data")
    }

    /// Runs `trustmesh ARGS... --data-dir <data folder>` and fails unless it exits 0.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        let data = self.data_dir().display().to_string();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--data-dir", &data]);
        let out = run_cli(&all).await?;
        anyhow::ensure!(
            out.status.success(),
            "`trustmesh {}` failed ({}): {}{}",
            all.join(" "),
            out.status,
            out.stdout,
            out.stderr
        );
        Ok(out)
    }
}

/// What a steady load has seen so far.
#[derive(Debug, Default)]
struct Counters {
    ok: AtomicU64,
    failed: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// Requests through a sidecar's outbound, one after the other on each of a few keep-alive
/// connections, until stopped; every answer other than 200 and every error is a failure.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    tasks: Vec<JoinHandle<()>>,
    started: Instant,
}

/// The result of a load.
#[derive(Debug)]
pub struct LoadReport {
    /// Requests answered 200.
    pub ok: u64,
    /// Requests that failed.
    pub failed: u64,
    /// The first failures: when (seconds into the load) and what.
    pub failures: Vec<String>,
    /// How long the load ran.
    pub elapsed: Duration,
}

impl Load {
    /// Starts `workers` loops sending `GET /load/<n>` with `Host: host` to `outbound`, pausing
    /// `pause` between requests.
    pub fn start(outbound: SocketAddr, host: &str, workers: usize, pause: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let started = Instant::now();
        let tasks = (0..workers)
            .map(|w| {
                let (stop, counters, host) = (stop.clone(), counters.clone(), host.to_string());
                tokio::spawn(async move {
                    let client = Client::builder(TokioExecutor::new())
                        .pool_idle_timeout(Duration::from_secs(5))
                        .build_http::<Empty<Bytes>>();
                    let mut n = 0u64;
                    while !stop.load(Ordering::SeqCst) {
                        n += 1;
                        let result = one(&client, outbound, &host, &format!("/load/{w}/{n}")).await;
                        match result {
                            Ok(()) => {
                                counters.ok.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => {
                                counters.failed.fetch_add(1, Ordering::SeqCst);
                                if let Ok(mut f) = counters.failures.lock() {
                                    if f.len() < 20 {
                                        f.push(format!(
                                            "{:.1}s: {e:#}",
                                            started.elapsed().as_secs_f64()
                                        ));
                                    }
                                }
                            }
                        }
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Self {
            stop,
            counters,
            tasks,
            started,
        }
    }

    /// Requests answered 200 so far, and failures so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counters.ok.load(Ordering::SeqCst),
            self.counters.failed.load(Ordering::SeqCst),
        )
    }

    /// Stops the load after the requests in flight and reports.
    pub async fn stop(self) -> LoadReport {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            let _ = t.await;
        }
        LoadReport {
            ok: self.counters.ok.load(Ordering::SeqCst),
            failed: self.counters.failed.load(Ordering::SeqCst),
            failures: self
                .counters
                .failures
                .lock()
                .map(|f| f.clone())
                .unwrap_or_default(),
            elapsed: self.started.elapsed(),
        }
    }
}

async fn one(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    outbound: SocketAddr,
    host: &str,
    path: &str,
) -> anyhow::Result<()> {
    let req = Request::get(format!("http://{outbound}{path}"))
        .header(http::header::HOST, host)
        .body(Empty::new())?;
    let work = async {
        let resp = client.request(req).await.context("request")?;
        let status = resp.status();
        let body = resp.into_body().collect().await.context("body")?.to_bytes();
        anyhow::ensure!(
            status == 200,
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        Ok(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .context("no answer in time")?
}

/// A TLS client that trusts `bundle_pem`, expects the server to be `identity`, presents no
/// certificate and offers h2: enough to read the certificate a sidecar's inbound presents
/// (the sidecar then refuses the client, which is not what is being looked at).
pub fn probe_config(bundle_pem: &str, identity: &str) -> anyhow::Result<Arc<ClientConfig>> {
    let bundle = TrustBundle::from_pem(bundle_pem).context("the probe's trust bundle")?;
    client_without_cert(&bundle, identity)
}

/// Handshakes with `addr` and returns the serial (hex) of the leaf it presents and the length
/// of the chain; fails when the certificate does not verify with `config`.
pub async fn presented(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
) -> anyhow::Result<(String, usize)> {
    let work = async {
        let tcp = connect(addr).await?;
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let tls = TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .context("TLS handshake")?;
        let certs = tls
            .get_ref()
            .1
            .peer_certificates()
            .context("no server certificate")?;
        let leaf = certs.first().context("empty chain")?;
        Ok((trustmesh_certs::cert_serial_hex(leaf)?, certs.len()))
    };
    tokio::time::timeout(REQUEST_TIMEOUT, work)
        .await
        .with_context(|| format!("timed out probing {addr}"))?
}

/// The value of the sample `series` (name with its labels, exactly as exposed, e.g.
/// `trustmesh_certificate_renewals_total{result="ok"}`) on a proxy's `/metrics`; 0 when absent.
pub async fn metric(admin: SocketAddr, series: &str) -> anyhow::Result<f64> {
    let resp = admin_get(admin, "/metrics").await?;
    Ok(sample(&resp.text(), series))
}

/// The value of `series` in a Prometheus text exposition; 0 when absent.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Successful renewals of a proxy so far.
pub async fn renewals_ok(admin: SocketAddr) -> anyhow::Result<u64> {
    Ok(metric(admin, "trustmesh_certificate_renewals_total{result=\"ok\"}").await? as u64)
}

/// A proxy's `/config` as JSON.
pub async fn config(admin: SocketAddr) -> anyhow::Result<serde_json::Value> {
    admin_get(admin, "/config").await?.json()
}

/// The status of a proxy's `/ready`.
pub async fn ready(admin: SocketAddr) -> anyhow::Result<u16> {
    Ok(admin_get(admin, "/ready").await?.status.as_u16())
}

/// The identity of a test workload as a parsed SPIFFE ID (for the certs crate).
pub fn workload(sa: &str) -> anyhow::Result<trustmesh_certs::SpiffeId> {
    spiffe(&spiffe_id(NAMESPACE, sa))
}
