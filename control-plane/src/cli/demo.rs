//! Command line: `trustmesh demo`: a whole mesh on loopback. A control plane with the example policy folder
//! (`policies/examples/production`), three example services (api-gateway, checkout-service,
//! order-service), each behind its own `trustmesh-proxy`, and beside them the canary example
//! (`policies/examples/canary`, namespace `shop`: web calling orders, split 90/10 with
//! orders-canary by an `HTTPRoute`; [`canary`]). It tries the example requests
//! itself, prints the curl commands, and stops everything on Ctrl-C.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::process::{Child, Command};
use trustmesh_certs::SpiffeId;

use clap::Args;

mod canary;

/// Flags of `trustmesh demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps its CA and state (a temporary folder by default).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

const EXAMPLE_MESH: &str = include_str!("../../../policies/examples/production/mesh.yaml");
const EXAMPLE_SERVICES: &str = include_str!("../../../policies/examples/production/services.yaml");
const EXAMPLE_POLICY: &str =
    include_str!("../../../policies/examples/production/orders-policy.yaml");

/// One example workload: its name and namespace, the ports of its sidecar and of its app.
pub(super) struct Workload {
    pub(super) name: &'static str,
    pub(super) namespace: &'static str,
    pub(super) inbound: u16,
    pub(super) outbound: u16,
    pub(super) admin: u16,
    pub(super) app: u16,
}

/// The inbound ports match the endpoints in `policies/examples/production/services.yaml`.
const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "order-service",
        namespace: "production",
        inbound: 15106,
        outbound: 15101,
        admin: 15100,
        app: 18081,
    },
    Workload {
        name: "api-gateway",
        namespace: "production",
        inbound: 15206,
        outbound: 15201,
        admin: 15200,
        app: 18082,
    },
    Workload {
        name: "checkout-service",
        namespace: "production",
        inbound: 15306,
        outbound: 15301,
        admin: 15300,
        app: 18083,
    },
];

/// Runs the demo until Ctrl-C.
pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let tmp = std::env::temp_dir().join(format!("trustmesh-demo-{}", std::process::id()));
    let data_dir = args.data_dir.unwrap_or_else(|| tmp.join("data"));
    let result = run_in(&tmp, &data_dir).await;
    if result.is_err() {
        print_log_tails(&tmp.join("logs"));
    }
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

/// The last lines of every demo log, so that a failed start says why before its folder goes.
fn print_log_tails(logs: &Path) {
    let Ok(entries) = std::fs::read_dir(logs) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        let lines: Vec<&str> = text.lines().collect();
        eprintln!("--- {} (last lines)", entry.path().display());
        for line in &lines[lines.len().saturating_sub(15)..] {
            eprintln!("{line}");
        }
    }
}

async fn run_in(tmp: &Path, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let policies = tmp.join("policies");
    std::fs::create_dir_all(&policies)
        .with_context(|| format!("creating {}", policies.display()))?;
    std::fs::write(policies.join("mesh.yaml"), EXAMPLE_MESH)?;
    std::fs::write(policies.join("services.yaml"), EXAMPLE_SERVICES)?;
    std::fs::write(policies.join("orders-policy.yaml"), EXAMPLE_POLICY)?;
    canary::write_policies(&policies)?;

    let exe = std::env::current_exe().context("finding the trustmesh binary")?;
    let proxy_bin = exe.with_file_name("trustmesh-proxy");
    if !proxy_bin.exists() {
        anyhow::bail!(
            "{} is missing: build both binaries with `cargo build --release --workspace`",
            proxy_bin.display()
        );
    }
    let cp_addr = free_port()?;
    let mut children: Vec<Child> = Vec::new();
    let logs = tmp.join("logs");
    std::fs::create_dir_all(&logs)?;
    children.push(spawn(
        Command::new(&exe)
            .arg("serve")
            .arg("--listen")
            .arg(cp_addr.to_string())
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--policies")
            .arg(&policies),
        &logs.join("control-plane.log"),
    )?);
    wait_for(
        || async { tokio::net::TcpStream::connect(cp_addr).await.is_ok() },
        "the control plane",
    )
    .await
    .with_context(|| format!("see {}", logs.join("control-plane.log").display()))?;

    let key = crate::domain::tokens::load_or_create_key(data_dir)?;
    let td = crate::domain::ca::store::load_existing(data_dir)?
        .trust_domain()
        .clone();
    let workloads = || WORKLOADS.iter().chain(&canary::WORKLOADS);
    for w in workloads() {
        tokio::spawn(serve_app(w.name, ([127, 0, 0, 1], w.app).into()));
        let id = SpiffeId::from_service_account(&td, w.namespace, w.name)?;
        let token =
            crate::domain::tokens::create(&key, &id, BTreeMap::new(), Duration::from_secs(300))?;
        let token_file = tmp.join(format!("{}.{}.token", w.name, w.namespace));
        crate::storage::files::write_atomic(&token_file, token.expose().as_bytes(), 0o600)?;
        children.push(spawn(
            Command::new(&proxy_bin)
                .arg("--control-plane")
                .arg(format!("https://{cp_addr}"))
                .arg("--trust-bundle")
                .arg(data_dir.join(crate::domain::ca::store::TRUST_BUNDLE))
                .arg("--token-file")
                .arg(&token_file)
                .arg("--identity")
                .arg(id.as_str())
                .arg("--app")
                .arg(format!("127.0.0.1:{}", w.app))
                .arg("--inbound")
                .arg(format!("127.0.0.1:{}", w.inbound))
                .arg("--outbound")
                .arg(format!("127.0.0.1:{}", w.outbound))
                .arg("--admin")
                .arg(format!("127.0.0.1:{}", w.admin)),
            &logs.join(format!("{}.{}.log", w.name, w.namespace)),
        )?);
    }
    for w in workloads() {
        let url = format!("http://127.0.0.1:{}/ready", w.admin);
        wait_for(
            || async {
                get(&url, None)
                    .await
                    .map(|(s, _)| s == 200)
                    .unwrap_or(false)
            },
            w.name,
        )
        .await
        .with_context(|| {
            let log = logs.join(format!("{}.{}.log", w.name, w.namespace));
            format!("see {}", log.display())
        })?;
    }

    println!("trustmesh demo: a control plane on https://{cp_addr} and six services, each with its sidecar.");
    println!("Logs: {}", logs.display());
    println!();
    let tries = [
        (
            "api-gateway reads an order: allowed by production/orders-api",
            15201,
            "order-service.production",
            "/orders/42",
        ),
        (
            "checkout-service reads an order: allowed",
            15301,
            "order-service",
            "/orders/7",
        ),
        (
            "api-gateway asks for /admin: no rule allows it, denied",
            15201,
            "order-service",
            "/admin",
        ),
        (
            "order-service calls api-gateway: no policy lets it, so its sidecar is not even told api-gateway exists",
            15101,
            "api-gateway.production.svc.cluster.local",
            "/health",
        ),
    ];
    for (what, port, host, path) in tries {
        let url = format!("http://127.0.0.1:{port}{path}");
        let outcome = match get(&url, Some(host)).await {
            Ok((status, body)) => format!("{status} {}", body.trim()),
            Err(e) => format!("failed: {e:#}"),
        };
        println!("# {what} (through the caller's sidecar, over mTLS)");
        println!("curl -s -H 'Host: {host}' {url}");
        println!("#  -> {outcome}");
        println!();
    }
    canary::try_split().await;
    println!("# what a sidecar holds: identity, certificate expiry, policy version");
    println!("curl -s http://127.0.0.1:15200/config");
    println!("curl -s http://127.0.0.1:15200/metrics");
    println!();
    println!("Press Ctrl-C to stop the demo.");
    // Ctrl-C, or SIGTERM (a supervisor, `kill`): either way the children are stopped first.
    trustmesh_runtime::shutdown_signal().await;
    for c in &mut children {
        let _ = c.kill().await;
    }
    println!("trustmesh demo: stopped.");
    Ok(ExitCode::SUCCESS)
}

fn spawn(cmd: &mut Command, log: &PathBuf) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .context("starting a demo process")
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?)
}

async fn wait_for<F, Fut>(mut check: F, what: &str) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check().await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{what} did not become ready within 30 s")
}

/// A plain HTTP GET from the demo, as an app would make it.
pub(super) async fn get(url: &str, host: Option<&str>) -> anyhow::Result<(u16, String)> {
    get_with(url, host, &[]).await
}

/// [`get`] with extra request headers.
pub(super) async fn get_with(
    url: &str,
    host: Option<&str>,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Empty<Bytes>>();
    let mut req = Request::get(url);
    if let Some(h) = host {
        req = req.header(http::header::HOST, h);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        client.request(req.body(Empty::new())?),
    )
    .await
    .context("timed out")??;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// An example app: answers with who it is, what was asked and who asked (as its sidecar
/// vouches in `x-trustmesh-peer-identity`).
async fn serve_app(name: &'static str, addr: SocketAddr) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("trustmesh demo: cannot bind the {name} app on {addr}: {e}");
            return;
        }
    };
    let name = Arc::new(name);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let name = name.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                let name = name.clone();
                async move {
                    let peer = req
                        .headers()
                        .get("x-trustmesh-peer-identity")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    let body = serde_json::json!({
                        "service": *name,
                        "method": req.method().as_str(),
                        "path": req.uri().path(),
                        "caller": peer,
                    });
                    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
                    *resp.status_mut() = StatusCode::OK;
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
