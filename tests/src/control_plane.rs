//! The real control plane (`trustmesh serve`) on an ephemeral loopback port, and the one-shot
//! `trustmesh` subcommands the tests call (`token create`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use rustls::ClientConfig;

use crate::bins::binaries;
use crate::client::Resp;
use crate::policies::TRUST_DOMAIN;
use crate::ports::free_addr;
use crate::process::Process;
use crate::wait::POLL_STEP;

/// How long the control plane may take to create its CA and answer `/healthz`.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for a one-shot CLI command.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `trustmesh serve`; killed when dropped.
#[derive(Debug)]
pub struct ControlPlane {
    process: Process,
    addr: SocketAddr,
    work_dir: PathBuf,
    data_dir: PathBuf,
    policies: PathBuf,
    tls: Option<Arc<ClientConfig>>,
    starts: usize,
    extra: Vec<String>,
}

impl ControlPlane {
    /// Starts `trustmesh serve` with its data folder `work_dir/cp-data` and the given policy
    /// folder, and waits until it is healthy.
    pub async fn start(work_dir: &Path, policies: &Path) -> anyhow::Result<Self> {
        Self::start_in(work_dir, &work_dir.join("cp-data"), policies).await
    }

    /// Like [`ControlPlane::start`] with an explicit data folder.
    pub async fn start_in(
        work_dir: &Path,
        data_dir: &Path,
        policies: &Path,
    ) -> anyhow::Result<Self> {
        Self::start_with(work_dir, data_dir, policies, &[]).await
    }

    /// Like [`ControlPlane::start_in`] with extra `serve` flags (e.g. `["--cert-ttl", "10s"]`),
    /// kept for [`ControlPlane::restart`]. Several may share one data folder (replicas); each
    /// logs to `control-plane-<port>.<start>.log`.
    pub async fn start_with(
        work_dir: &Path,
        data_dir: &Path,
        policies: &Path,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_on(work_dir, data_dir, policies, free_addr()?, extra).await
    }

    /// Like [`ControlPlane::start_with`] on a listen address chosen beforehand (replicas that
    /// must name each other before either starts).
    pub async fn start_on(
        work_dir: &Path,
        data_dir: &Path,
        policies: &Path,
        addr: SocketAddr,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let process = spawn_serve_with(work_dir, data_dir, policies, addr, 1, &extra)?;
        let mut cp = Self {
            process,
            addr,
            work_dir: work_dir.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            policies: policies.to_path_buf(),
            tls: None,
            starts: 1,
            extra,
        };
        cp.wait_ready().await?;
        Ok(cp)
    }

    /// Stops the control plane (SIGTERM, then SIGKILL) and starts it again on the same port,
    /// data folder and policies; waits until it is healthy again.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.starts += 1;
        self.process = spawn_serve_with(
            &self.work_dir,
            &self.data_dir,
            &self.policies,
            self.addr,
            self.starts,
            &self.extra,
        )?;
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let bundle = self.trust_bundle_path();
        let mut last = String::from("trust-bundle.pem not written yet");
        loop {
            self.process.ensure_running()?;
            if let Ok(pem) = std::fs::read_to_string(&bundle) {
                if !pem.trim().is_empty() {
                    match crate::https::client_config(&pem) {
                        Ok(tls) => {
                            self.tls = Some(tls);
                            match self.get("/healthz").await {
                                Ok(r) if r.status == 200 => return Ok(()),
                                Ok(r) => {
                                    last = format!("/healthz answered {}: {}", r.status, r.text())
                                }
                                Err(e) => last = format!("/healthz: {e:#}"),
                            }
                        }
                        Err(e) => last = format!("trust-bundle.pem: {e:#}"),
                    }
                }
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "the control plane was not healthy after {START_TIMEOUT:?} (last: {last})\n{}",
                    self.process.tail()
                );
            }
            tokio::time::sleep(POLL_STEP).await;
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s) without starting it again.
    pub fn stop(&mut self) {
        self.process.stop(Duration::from_secs(5));
    }

    /// The `--policies` folder.
    pub fn policies(&self) -> &Path {
        &self.policies
    }

    /// The API address (`127.0.0.1:P`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:P`, as the proxies' `--control-plane`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The test's work folder (logs, token files).
    pub fn work_dir(&self) -> &Path {
        &self.work_dir
    }

    /// `data-dir/trust-bundle.pem`.
    pub fn trust_bundle_path(&self) -> PathBuf {
        self.data_dir.join("trust-bundle.pem")
    }

    /// The trust bundle's PEM text.
    pub fn trust_bundle_pem(&self) -> anyhow::Result<String> {
        let p = self.trust_bundle_path();
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// `data-dir/ca-cert.pem`.
    pub fn ca_cert_path(&self) -> PathBuf {
        self.data_dir.join("ca-cert.pem")
    }

    /// `data-dir/ca-key.pem`.
    pub fn ca_key_path(&self) -> PathBuf {
        self.data_dir.join("ca-key.pem")
    }

    /// The server process (for its log and pid).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// `GET path` on the API.
    pub async fn get(&self, path: &str) -> anyhow::Result<Resp> {
        self.request(Method::GET, path, None, Bytes::new()).await
    }

    /// A request to the API with an optional bearer token and a JSON body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: Bytes,
    ) -> anyhow::Result<Resp> {
        let mut b = Request::builder().method(method).uri(path).header(
            http::header::HOST,
            format!("127.0.0.1:{}", self.addr.port()),
        );
        if let Some(token) = bearer {
            b = b.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if !body.is_empty() {
            b = b.header(http::header::CONTENT_TYPE, "application/json");
        }
        let req = b.body(Full::new(body)).context("building the request")?;
        let tls = self
            .tls
            .clone()
            .context("the control plane has not written its trust bundle yet")?;
        crate::https::request(tls, self.addr, req).await
    }

    /// `trustmesh token create --identity ID --data-dir D`: the token, trimmed.
    pub async fn token(&self, identity: &str) -> anyhow::Result<String> {
        self.token_with(identity, &[]).await
    }

    /// `trustmesh token create` with extra flags (e.g. `["--ttl", "1s"]`).
    pub async fn token_with(&self, identity: &str, extra: &[&str]) -> anyhow::Result<String> {
        let data_dir = self.data_dir.to_string_lossy().into_owned();
        let mut args = vec![
            "token",
            "create",
            "--identity",
            identity,
            "--data-dir",
            &data_dir,
        ];
        args.extend_from_slice(extra);
        let out = run_cli(&args).await?;
        anyhow::ensure!(
            out.status.success(),
            "`trustmesh {}` failed ({}): {}",
            args.join(" "),
            out.status,
            out.stderr
        );
        let token = out.stdout.trim().to_string();
        anyhow::ensure!(
            !token.is_empty(),
            "`trustmesh token create` printed nothing"
        );
        Ok(token)
    }
}

/// A finished one-shot command.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `trustmesh ARGS...` to completion (bounded by [`CLI_TIMEOUT`]).
pub async fn run_cli(args: &[&str]) -> anyhow::Result<CliOutput> {
    let bins = binaries()?;
    let mut cmd = tokio::process::Command::new(&bins.control_plane);
    cmd.args(args)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(CLI_TIMEOUT, cmd.output())
        .await
        .with_context(|| {
            format!(
                "`trustmesh {}` still running after {CLI_TIMEOUT:?}",
                args.join(" ")
            )
        })?
        .with_context(|| format!("running `trustmesh {}`", args.join(" ")))?;
    Ok(CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Starts `trustmesh serve` without waiting for it, for tests that expect it to fail.
pub fn spawn_serve(
    work_dir: &Path,
    data_dir: &Path,
    policies: &Path,
    addr: SocketAddr,
    generation: usize,
) -> anyhow::Result<Process> {
    spawn_serve_with(work_dir, data_dir, policies, addr, generation, &[])
}

/// [`spawn_serve`] with extra `serve` flags.
pub fn spawn_serve_with(
    work_dir: &Path,
    data_dir: &Path,
    policies: &Path,
    addr: SocketAddr,
    generation: usize,
    extra: &[String],
) -> anyhow::Result<Process> {
    let bins = binaries()?;
    let mut cmd = Command::new(&bins.control_plane);
    cmd.arg("serve")
        .arg("--listen")
        .arg(addr.to_string())
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--policies")
        .arg(policies)
        .arg("--trust-domain")
        .arg(TRUST_DOMAIN)
        .args(extra)
        .current_dir(work_dir);
    let log = if extra.is_empty() {
        work_dir.join(format!("control-plane.{generation}.log"))
    } else {
        work_dir.join(format!("control-plane-{}.{generation}.log", addr.port()))
    };
    Process::spawn("control plane", cmd, &log)
}
