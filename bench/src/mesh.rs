//! The system under test: `trustmesh serve` and two `trustmesh-proxy` sidecars on loopback.
//!
//! ```text
//! client --HTTP/1.1, Host: bench-server.bench--> proxy A outbound
//!        --mTLS (TLS 1.3, h2, pooled)--> proxy B inbound --HTTP/1.1--> backend
//! ```
//!
//! The control plane runs for the whole case (the proxies keep a watch open to it) but is not
//! metered: it is idle while load flows.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::handshake;
use crate::procs::{self, ChildGuard, Sidecar};

/// Service account of the server-side workload (proxy B).
pub const SERVER_SA: &str = "server";
/// Service account of the client-side workload (proxy A).
const CLIENT_SA: &str = "bench-client";
/// The `Host` the client sends; A resolves it through the registry to B.
pub const SERVER_HOST: &str = "bench-server.bench";
/// How long the control plane and each proxy may take to become ready.
const READY_LIMIT: Duration = Duration::from_secs(30);

/// A running control plane and proxy pair; dropping it stops all three.
pub struct MeshPair {
    /// A's outbound listener (plain HTTP from the app).
    pub outbound: SocketAddr,
    /// B's inbound mTLS listener.
    pub inbound: SocketAddr,
    /// Proxy A.
    pub a: Sidecar,
    /// Proxy B.
    pub b: Sidecar,
    /// The SPIFFE ID B serves with.
    pub b_identity: String,
    /// The control plane's data dir (holds its CA).
    pub data_dir: PathBuf,
    /// Flags the proxy binary was found to accept and that were used (for the report).
    pub proxy_flags: Vec<String>,
    // Proxies first: fields drop in order, so the control plane stops last.
    _proxies: Vec<ChildGuard>,
    _control_plane: ChildGuard,
    _dir: tempfile::TempDir,
}

impl MeshPair {
    /// Starts the control plane, mints two tokens, starts B then A, and waits until both
    /// proxies report ready.
    pub async fn start(
        bin_dir: &Path,
        backend: SocketAddr,
        threads: Option<usize>,
    ) -> Result<Self> {
        let trustmesh = binary(bin_dir, "trustmesh")?;
        let proxy = binary(bin_dir, "trustmesh-proxy")?;
        let dir = tempfile::Builder::new()
            .prefix("trustmesh-bench-mesh-")
            .tempdir()?;
        let data_dir = dir.path().join("data");
        let policies = dir.path().join("policies");
        std::fs::create_dir_all(&policies)?;

        // cp, A inbound/outbound/admin, B inbound/outbound/admin
        let addrs = procs::free_addrs(7)?;
        let (cp, a_in, a_out, a_adm, b_in, b_out, b_adm) = (
            addrs[0], addrs[1], addrs[2], addrs[3], addrs[4], addrs[5], addrs[6],
        );
        write_policies(&policies, a_in, b_in)?;

        let mut cmd = Command::new(&trustmesh);
        cmd.arg("serve")
            .arg("--listen")
            .arg(cp.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .arg("--policies")
            .arg(&policies)
            .arg("--trust-domain")
            .arg(crate::pki::TRUST_DOMAIN)
            .env("RUST_LOG", "warn");
        let cp_log = dir.path().join("control-plane.log");
        let mut control_plane = ChildGuard::spawn("trustmesh serve", cmd, Some(&cp_log))?;
        let bundle = data_dir.join("trust-bundle.pem");
        wait_for_file(&bundle, &mut control_plane, READY_LIMIT)
            .with_context(|| log_tail(&cp_log))?;
        procs::wait_for_tcp(cp, &mut control_plane, READY_LIMIT)
            .with_context(|| log_tail(&cp_log))?;

        let extra = optional_flags(&proxy)?;
        let server_id = handshake::id(SERVER_SA)?;
        let client_id = handshake::id(CLIENT_SA)?;
        let mut proxies = Vec::new();
        let mut pids = Vec::new();
        for (name, id, inbound, outbound, admin) in [
            ("b", &server_id, b_in, b_out, b_adm),
            ("a", &client_id, a_in, a_out, a_adm),
        ] {
            let token_file = dir.path().join(format!("token-{name}"));
            let token = create_token(&trustmesh, &data_dir, id)?;
            write_secret(&token_file, &token)?;
            let mut cmd = Command::new(&proxy);
            cmd.arg("--control-plane")
                .arg(format!("https://{cp}"))
                .arg("--trust-bundle")
                .arg(&bundle)
                .arg("--token-file")
                .arg(&token_file)
                .arg("--identity")
                .arg(id)
                .arg("--app")
                .arg(backend.to_string())
                .arg("--inbound")
                .arg(inbound.to_string())
                .arg("--outbound")
                .arg(outbound.to_string())
                .arg("--admin")
                .arg(admin.to_string())
                .args(&extra)
                .env("RUST_LOG", "warn");
            if let Some(t) = threads {
                cmd.env("TRUSTMESH_THREADS", t.to_string());
            }
            let log = dir.path().join(format!("proxy-{name}.log"));
            let mut guard = ChildGuard::spawn(&format!("trustmesh-proxy {name}"), cmd, Some(&log))?;
            let ready = wait_ready(admin, &mut guard).await;
            pids.push(guard.pid());
            proxies.push(guard);
            ready.with_context(|| log_tail(&log))?;
        }

        Ok(Self {
            outbound: a_out,
            inbound: b_in,
            a: Sidecar {
                pids: vec![pids[1]],
            },
            b: Sidecar {
                pids: vec![pids[0]],
            },
            b_identity: server_id,
            data_dir,
            proxy_flags: extra,
            _proxies: proxies,
            _control_plane: control_plane,
            _dir: dir,
        })
    }
}

/// `bin_dir/name`, or a message that says how to build it.
fn binary(bin_dir: &Path, name: &str) -> Result<PathBuf> {
    let p = bin_dir.join(name);
    if !p.is_file() {
        bail!(
            "{} not found: build it with `cargo build --release -p trustmesh-control-plane -p trustmesh-proxy`",
            p.display()
        );
    }
    Ok(p)
}

/// Quieter-logging flags the proxy accepts, found in its `--help` (so that an older or newer
/// binary without them still runs): access log off and warn-level logs, as nginx is set up.
fn optional_flags(proxy: &Path) -> Result<Vec<String>> {
    let out = Command::new(proxy)
        .arg("--help")
        .output()
        .context("running trustmesh-proxy --help")?;
    let help = String::from_utf8_lossy(&out.stdout);
    let mut flags = Vec::new();
    if help.contains("--access-log") {
        flags.extend(["--access-log".to_owned(), "off".to_owned()]);
    }
    if help.contains("--log-level") {
        flags.extend(["--log-level".to_owned(), "warn".to_owned()]);
    }
    Ok(flags)
}

/// The policy folder: allow by default, and a registry entry for each side.
fn write_policies(dir: &Path, a_in: SocketAddr, b_in: SocketAddr) -> Result<()> {
    std::fs::write(
        dir.join("mesh.yaml"),
        "trust_domain: cluster.local\ndefault_action: allow\n",
    )?;
    let service = |name: &str, sa: &str, endpoint: SocketAddr| {
        format!(
            "apiVersion: trustmesh.io/v1\n\
             kind: Service\n\
             metadata: {{name: {name}, namespace: bench, labels: {{app: {name}}}}}\n\
             spec:\n\
             \x20 identity: spiffe://cluster.local/ns/bench/sa/{sa}\n\
             \x20 endpoints: [\"{endpoint}\"]\n\
             \x20 ports: [{{port: 80, protocol: http}}]\n"
        )
    };
    let services = format!(
        "{}---\n{}",
        service("bench-server", SERVER_SA, b_in),
        service("bench-client", CLIENT_SA, a_in)
    );
    std::fs::write(dir.join("services.yaml"), services)?;
    Ok(())
}

/// `trustmesh token create`; the token is the trimmed stdout.
fn create_token(trustmesh: &Path, data_dir: &Path, id: &str) -> Result<String> {
    let out = Command::new(trustmesh)
        .args(["token", "create", "--identity", id, "--data-dir"])
        .arg(data_dir)
        .output()
        .context("running trustmesh token create")?;
    if !out.status.success() {
        bail!(
            "trustmesh token create failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let token = String::from_utf8(out.stdout)
        .context("token is not UTF-8")?
        .trim()
        .to_owned();
    if token.is_empty() || token.contains(char::is_whitespace) {
        bail!("trustmesh token create printed no single token");
    }
    Ok(token)
}

fn write_secret(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

fn wait_for_file(path: &Path, child: &mut ChildGuard, limit: Duration) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !path.exists() {
        child.check_running()?;
        if Instant::now() > deadline {
            bail!("{} did not appear within {limit:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    Ok(())
}

/// Polls `GET /ready` on the admin listener until it answers 200.
async fn wait_ready(admin: SocketAddr, child: &mut ChildGuard) -> Result<()> {
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        child.check_running()?;
        if let Ok(200) = get_status(admin, "/ready").await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("proxy admin {admin} did not answer /ready with 200 within {READY_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One `GET` on a fresh HTTP/1.1 connection; the status code.
pub async fn get_status(addr: SocketAddr, path: &str) -> Result<u16> {
    let fut = async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let req = Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .body(Empty::<Bytes>::new())?;
        let resp = sender.send_request(req).await?;
        let status = resp.status().as_u16();
        resp.into_body().collect().await?;
        Ok::<_, anyhow::Error>(status)
    };
    tokio::time::timeout(Duration::from_secs(2), fut)
        .await
        .context("timed out")?
}

/// The last lines of a child's log, for an error message.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(20);
    format!(
        "last lines of {}:\n{}",
        path.display(),
        lines[from..].join("\n")
    )
}
