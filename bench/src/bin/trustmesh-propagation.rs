//! `trustmesh-propagation`: how fast a policy commit is in force at every sidecar.
//!
//! Starts a control plane on a git checkout of a policy folder and 20 sidecars (release
//! binaries beside this one), each in front of the same tiny app. A client with a mesh
//! certificate keeps one HTTP/2 connection open to every sidecar's inbound listener and asks
//! `GET /probe` every 2 ms. Each round commits a mesh-wide DENY for `/probe` (or reverts it);
//! for every sidecar it records the time from just before `git commit` to the first response
//! that shows the new decision. Prints the median and the maximum over all sidecars and
//! rounds. Everything listens on 127.0.0.1; every process is stopped at the end.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use trustmesh_certs::{CertificateAuthority, RotatingResolver, SpiffeId, TrustBundle};

const SIDECARS: usize = 20;
const ROUNDS: usize = 6;
const ROUND_TIMEOUT: Duration = Duration::from_secs(10);

/// Kills its child on drop, so nothing outlives the benchmark.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn git(dir: &Path, args: &[&str]) -> Result<()> {
    let st = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=bench",
            "-c",
            "user.email=bench@example.invalid",
        ])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .context("running git")?;
    if !st.success() {
        bail!("git {args:?} failed");
    }
    Ok(())
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run())
}

async fn run() -> Result<()> {
    let bin_dir = std::env::current_exe()?
        .parent()
        .context("binary folder")?
        .to_path_buf();
    let cp_bin = bin_dir.join("trustmesh");
    let proxy_bin = bin_dir.join("trustmesh-proxy");
    for b in [&cp_bin, &proxy_bin] {
        if !b.exists() {
            bail!(
                "{} is missing: cargo build --release --workspace",
                b.display()
            );
        }
    }
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let policies = dir.join("policies");
    std::fs::create_dir_all(&policies)?;
    let inbound: Vec<u16> = (0..SIDECARS).map(|_| free_port()).collect::<Result<_>>()?;
    std::fs::write(
        policies.join("mesh.yaml"),
        "trust_domain: cluster.local\ndefault_action: allow\n",
    )?;
    let mut services = String::new();
    for (i, port) in inbound.iter().enumerate() {
        services.push_str(&format!(
            "---\napiVersion: trustmesh.io/v1\nkind: Service\n\
             metadata: {{name: s{i}, namespace: bench, labels: {{app: s{i}}}}}\n\
             spec: {{identity: spiffe://cluster.local/ns/bench/sa/s{i}, endpoints: [\"127.0.0.1:{port}\"], ports: [{{port: 80, protocol: http}}]}}\n"
        ));
    }
    std::fs::write(policies.join("services.yaml"), services)?;
    git(&policies, &["init", "-q", "-b", "main"])?;
    git(&policies, &["add", "-A"])?;
    git(&policies, &["commit", "-q", "-m", "registry"])?;

    let app = free_port()?;
    tokio::spawn(app_server(app));
    let cp_port = free_port()?;
    let data = dir.join("data");
    let mut guards = vec![Guard(
        Command::new(&cp_bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{cp_port}")])
            .arg("--data-dir")
            .arg(&data)
            .arg("--policies")
            .arg(&policies)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .context("starting trustmesh serve")?,
    )];
    wait_until(
        || data.join("trust-bundle.pem").exists(),
        "the control plane",
    )
    .await?;
    wait_tcp(SocketAddr::from(([127, 0, 0, 1], cp_port))).await?;
    let mut admins = Vec::new();
    for (i, port) in inbound.iter().enumerate() {
        let id = format!("spiffe://cluster.local/ns/bench/sa/s{i}");
        let out = Command::new(&cp_bin)
            .args(["token", "create", "--identity", &id, "--data-dir"])
            .arg(&data)
            .output()?;
        if !out.status.success() {
            bail!("token create: {}", String::from_utf8_lossy(&out.stderr));
        }
        let token_file = dir.join(format!("s{i}.token"));
        std::fs::write(&token_file, &out.stdout)?;
        let admin = free_port()?;
        admins.push(admin);
        guards.push(Guard(
            Command::new(&proxy_bin)
                .args(["--control-plane", &format!("https://127.0.0.1:{cp_port}")])
                .arg("--trust-bundle")
                .arg(data.join("trust-bundle.pem"))
                .arg("--token-file")
                .arg(&token_file)
                .args(["--identity", &id])
                .args(["--app", &format!("127.0.0.1:{app}")])
                .args(["--inbound", &format!("127.0.0.1:{port}")])
                .args(["--outbound", &format!("127.0.0.1:{}", free_port()?)])
                .args(["--admin", &format!("127.0.0.1:{admin}")])
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .spawn()
                .context("starting trustmesh-proxy")?,
        ));
    }
    for admin in &admins {
        wait_ready(*admin).await?;
    }

    let senders = connect_all(&data, &inbound).await?;
    let mut samples: Vec<Duration> = Vec::new();
    for round in 0..ROUNDS {
        let deny = round % 2 == 0;
        let want = if deny { 403 } else { 200 };
        let file = policies.join("deny-probe.yaml");
        if deny {
            std::fs::write(
                &file,
                "apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
                 metadata: {name: deny-probe, namespace: trustmesh-system}\n\
                 spec: {action: DENY, rules: [{to: [{operation: {paths: [\"/probe\"]}}]}]}\n",
            )?;
        } else {
            std::fs::remove_file(&file)?;
        }
        git(&policies, &["add", "-A"])?;
        let t0 = Instant::now();
        git(
            &policies,
            &["commit", "-q", "-m", &format!("round {round}")],
        )?;
        let waits = senders
            .iter()
            .cloned()
            .map(|s| tokio::spawn(until_status(s, want, t0)));
        for w in waits {
            samples.push(w.await??);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    samples.sort();
    let median = samples[samples.len() / 2];
    let max = samples[samples.len() - 1];
    println!("policy propagation: commit -> first request with the new decision");
    println!(
        "  sidecars {SIDECARS}, rounds {ROUNDS}, samples {}",
        samples.len()
    );
    println!(
        "  median {:.1} ms   p90 {:.1} ms   max {:.1} ms   (goal: max < 1000 ms)",
        ms(median),
        ms(samples[samples.len() * 9 / 10]),
        ms(max)
    );
    // Sidecars first, then the control plane, so none of them logs a lost control plane.
    guards.reverse();
    drop(guards);
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn until_status(
    mut s: SendRequest<Empty<Bytes>>,
    want: u16,
    t0: Instant,
) -> Result<Duration> {
    loop {
        let req = http::Request::get("https://s.bench/probe").body(Empty::new())?;
        s.ready().await?;
        let resp = s.send_request(req).await?;
        let status = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        if status == want {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > ROUND_TIMEOUT {
            bail!("no {want} within {ROUND_TIMEOUT:?} (still {status})");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// One h2 connection to every sidecar, with a client certificate from the mesh CA.
async fn connect_all(data: &Path, inbound: &[u16]) -> Result<Vec<SendRequest<Empty<Bytes>>>> {
    let ca = CertificateAuthority::from_pem(
        &std::fs::read_to_string(data.join("ca-cert.pem"))?,
        &std::fs::read_to_string(data.join("ca-key.pem"))?,
    )?;
    let client = SpiffeId::parse("spiffe://cluster.local/ns/bench/sa/client")?;
    let (cert, key) = ca.issue(
        &client,
        &[],
        &[],
        Duration::from_secs(3600),
        SystemTime::now(),
    )?;
    let resolver = Arc::new(RotatingResolver::new());
    resolver.set(cert.chain, &key)?;
    let bundle = TrustBundle::from_pem(ca.cert_pem())?;
    let mut out = Vec::new();
    for (i, port) in inbound.iter().enumerate() {
        let expected = SpiffeId::parse(&format!("spiffe://cluster.local/ns/bench/sa/s{i}"))?;
        let config =
            trustmesh_certs::tls::sidecar_client_config(&bundle, resolver.clone(), expected)?;
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", *port)).await?;
        let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        let (sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        out.push(sender);
    }
    Ok(out)
}

async fn wait_until(check: impl Fn() -> bool, what: &str) -> Result<()> {
    for _ in 0..300 {
        if check() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{what} did not start within 15 s")
}

async fn wait_tcp(addr: SocketAddr) -> Result<()> {
    for _ in 0..300 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{addr} did not accept within 15 s")
}

async fn wait_ready(admin: u16) -> Result<()> {
    for _ in 0..400 {
        if let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", admin)).await {
            if let Ok((mut s, conn)) =
                hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
            {
                tokio::spawn(conn);
                let req = http::Request::get("/ready")
                    .header("host", "localhost")
                    .body(Empty::<Bytes>::new())?;
                if let Ok(resp) = s.send_request(req).await {
                    if resp.status() == 200 {
                        return Ok(());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("sidecar with admin port {admin} not ready within 20 s")
}

/// The app behind every sidecar: 200 and a short body.
async fn app_server(port: u16) {
    let Ok(listener) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await else {
        return;
    };
    while let Ok((tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                    Bytes::from_static(b"ok"),
                )))
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
