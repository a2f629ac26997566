//! A real sidecar (`trustmesh-proxy`) bootstrapped against a [`ControlPlane`] with a fresh token.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::bins::binaries;
use crate::client::admin_get;
use crate::control_plane::ControlPlane;
use crate::ports::ProxyPorts;
use crate::process::Process;
use crate::wait::POLL_STEP;

/// How long a sidecar may take to bootstrap and report ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How [`Proxy::spawn`] starts a sidecar.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// Labels its log file (`<work>/proxy-<name>.log`, appended to across restarts).
    pub name: &'a str,
    /// Its `--identity`.
    pub identity: &'a str,
    /// Its `--app`.
    pub app: SocketAddr,
    /// Its listeners.
    pub ports: ProxyPorts,
    /// Its `--token-file`, used as it is.
    pub token_file: &'a std::path::Path,
    /// Extra flags.
    pub extra: &'a [&'a str],
    /// A command the binary runs under, e.g. `["prlimit", "--nofile=256:4096"]`.
    pub wrapper: &'a [&'a str],
}

/// A running sidecar; killed when dropped.
#[derive(Debug)]
pub struct Proxy {
    process: Process,
    identity: String,
    ports: ProxyPorts,
    app: SocketAddr,
}

impl Proxy {
    /// Creates a token for `identity`, starts the sidecar on `ports` in front of `app` and waits
    /// until `/ready` answers 200. `name` labels its log file (`<work>/proxy-<name>.log`).
    pub async fn start(
        cp: &ControlPlane,
        name: &str,
        identity: &str,
        app: SocketAddr,
        ports: ProxyPorts,
    ) -> anyhow::Result<Self> {
        Self::start_with(cp, name, identity, app, ports, &[]).await
    }

    /// [`Proxy::start`] with extra flags (e.g. `["--upstream-timeout", "1s"]`).
    pub async fn start_with(
        cp: &ControlPlane,
        name: &str,
        identity: &str,
        app: SocketAddr,
        ports: ProxyPorts,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let token = cp.token(identity).await?;
        Self::start_with_token(cp, name, identity, app, ports, &token, extra).await
    }

    /// [`Proxy::start_with`] with a bootstrap token of the caller's (e.g. a Kubernetes
    /// ServiceAccount JWT) instead of a fresh `trustmesh token create`.
    pub async fn start_with_token(
        cp: &ControlPlane,
        name: &str,
        identity: &str,
        app: SocketAddr,
        ports: ProxyPorts,
        token: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        Self::launch(cp, name, identity, (app, ports), token, extra, false).await
    }

    /// [`Proxy::start_with`], with the sidecar's stdout (the access log) a pipe that nobody
    /// reads; its stderr still goes to the log file.
    pub async fn start_stdout_unread(
        cp: &ControlPlane,
        name: &str,
        identity: &str,
        app: SocketAddr,
        ports: ProxyPorts,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let token = cp.token(identity).await?;
        Self::launch(cp, name, identity, (app, ports), &token, extra, true).await
    }

    async fn launch(
        cp: &ControlPlane,
        name: &str,
        identity: &str,
        (app, ports): (SocketAddr, ProxyPorts),
        token: &str,
        extra: &[&str],
        stdout_unread: bool,
    ) -> anyhow::Result<Self> {
        let token_file = cp.work_dir().join(format!("{name}.token"));
        std::fs::write(&token_file, format!("{token}\n"))
            .with_context(|| format!("writing {}", token_file.display()))?;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))?;

        let mut proxy = Self::spawn_with(
            cp,
            &Launch {
                name,
                identity,
                app,
                ports,
                token_file: &token_file,
                extra,
                wrapper: &[],
            },
            stdout_unread,
        )?;
        proxy.wait_ready().await?;
        Ok(proxy)
    }

    /// Starts a sidecar as `launch` says, with its token file as it is (it may be missing or
    /// spent), and returns at once; see [`Proxy::wait_ready_every`].
    pub fn spawn(cp: &ControlPlane, launch: &Launch<'_>) -> anyhow::Result<Self> {
        Self::spawn_with(cp, launch, false)
    }

    /// [`Proxy::spawn`], with stdout a pipe nobody reads when `stdout_unread`.
    fn spawn_with(
        cp: &ControlPlane,
        launch: &Launch<'_>,
        stdout_unread: bool,
    ) -> anyhow::Result<Self> {
        let bins = binaries()?;
        let mut cmd = match launch.wrapper.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&bins.proxy);
                c
            }
            None => Command::new(&bins.proxy),
        };
        let ports = launch.ports;
        cmd.arg("--control-plane")
            .arg(cp.url())
            .arg("--trust-bundle")
            .arg(cp.trust_bundle_path())
            .arg("--token-file")
            .arg(launch.token_file)
            .arg("--identity")
            .arg(launch.identity)
            .arg("--app")
            .arg(launch.app.to_string())
            .arg("--inbound")
            .arg(ports.inbound.to_string())
            .arg("--outbound")
            .arg(ports.outbound.to_string())
            .arg("--admin")
            .arg(ports.admin.to_string())
            .args(launch.extra)
            .current_dir(cp.work_dir());
        let log = cp.work_dir().join(format!("proxy-{}.log", launch.name));
        let label = format!("proxy {}", launch.name);
        let process = if stdout_unread {
            Process::spawn_stdout_unread(&label, cmd, &log)?
        } else {
            Process::spawn(&label, cmd, &log)?
        };
        Ok(Self {
            process,
            identity: launch.identity.to_string(),
            ports,
            app: launch.app,
        })
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        self.wait_ready_every(POLL_STEP).await
    }

    /// Waits (up to [`READY_TIMEOUT`]) until `/ready` answers 200, asking every `step`; fails
    /// at once when the process exits.
    pub async fn wait_ready_every(&mut self, step: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            self.process.ensure_running()?;
            let last = match admin_get(self.ports.admin, "/ready").await {
                Ok(r) if r.status == 200 => return Ok(()),
                Ok(r) => format!("/ready answered {}: {}", r.status, r.text()),
                Err(e) => format!("/ready: {e:#}"),
            };
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "{} was not ready after {READY_TIMEOUT:?} (last: {last})\n{}",
                    self.process.name(),
                    self.process.tail()
                );
            }
            tokio::time::sleep(step).await;
        }
    }

    /// The SPIFFE ID it bootstrapped as.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Its listeners.
    pub fn ports(&self) -> ProxyPorts {
        self.ports
    }

    /// Where the app sends plain HTTP.
    pub fn outbound(&self) -> SocketAddr {
        self.ports.outbound
    }

    /// Where other sidecars connect with mTLS.
    pub fn inbound(&self) -> SocketAddr {
        self.ports.inbound
    }

    /// The admin listener.
    pub fn admin(&self) -> SocketAddr {
        self.ports.admin
    }

    /// Its `--app`.
    pub fn app(&self) -> SocketAddr {
        self.app
    }

    /// The process (log, pid).
    pub fn process(&mut self) -> &mut Process {
        &mut self.process
    }

    /// The access-log lines (JSON objects with a `direction`) in the sidecar's output so far.
    pub fn access_log(&mut self) -> Vec<serde_json::Value> {
        self.process
            .log()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("direction").is_some())
            .collect()
    }

    /// Waits (up to 5 s) until the sidecar has logged at least `n` access lines; returns them.
    pub async fn wait_access_log(&mut self, n: usize) -> Vec<serde_json::Value> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let lines = self.access_log();
            if lines.len() >= n || std::time::Instant::now() >= deadline {
                return lines;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Resident set size in KiB (`VmRSS` in `/proc/PID/status`).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.process.pid().context("the proxy is not running")?;
        rss_kib(pid)
    }
}

/// `VmRSS` of `pid` in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}
