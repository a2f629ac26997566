//! The world the load runs against: a git policy folder of S services with their policies,
//! the control plane on it, and a certificate per simulated sidecar from the control plane's
//! own CA (read from its `--data-dir`, as the e2e helpers in `tests/src/mtls.rs` do).
//!
//! Service `s{h}` (namespace `load`, identity `spiffe://cluster.local/ns/load/sa/s{h}`) is
//! served by the sidecars `j` with `j % S == h`; sidecar `j` has the identity
//! `.../ns/load/sa/s{h}-r{j / S}` of its own, so no two sidecars share an identity and the
//! per-identity watch cap never bites (such an identity is in no registry entry, so the
//! control plane gives it a label-less workload in namespace `load`). With `shared_identity`
//! the replicas of a service share its identity instead, as the pods of a Deployment share a
//! ServiceAccount (their snapshots then also carry their service's own entry and inbound
//! policy). With `default_action: deny`, one ALLOW policy per service admits the sidecars of
//! the `calls` services before it, so each sidecar may call `calls` services and its snapshot
//! carries those registry entries (least privilege, as the control plane builds it); a
//! namespace-wide DENY in `load` applies to every sidecar.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use rustls::ClientConfig;
use trustmesh_certs::{CertificateAuthority, RotatingResolver, SpiffeId, TrustBundle};

use crate::procs::ChildGuard;

/// The namespace of every generated service.
const NS: &str = "load";
/// TLS sessions each simulated sidecar keeps for resumption.
const SESSIONS: usize = 4;

/// Sizes of the generated mesh.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Services in the registry.
    pub services: usize,
    /// Simulated sidecars.
    pub sidecars: usize,
    /// Services each sidecar may call.
    pub calls: usize,
    /// Replicas share their service's identity.
    pub shared_identity: bool,
}

/// The identity of sidecar `j`.
pub fn sidecar_identity(shape: Shape, j: usize) -> String {
    let h = j % shape.services;
    if shape.shared_identity {
        format!("spiffe://cluster.local/ns/{NS}/sa/s{h}")
    } else {
        format!(
            "spiffe://cluster.local/ns/{NS}/sa/s{h}-r{}",
            j / shape.services
        )
    }
}

/// Runs `git -C dir ARGS` with a fixed author.
pub fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=cp-load",
            "-c",
            "user.email=cp-load@example.invalid",
        ])
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!("git {args:?} failed with {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Writes `mesh.yaml`, `services.yaml` and `policies.yaml` into `dir` and commits them;
/// returns the bytes written.
pub fn write_policies(dir: &Path, shape: Shape) -> Result<usize> {
    std::fs::create_dir_all(dir)?;
    let mesh =
        "trust_domain: cluster.local\ndefault_action: deny\nroot_namespace: trustmesh-system\n";
    let mut services = String::new();
    let mut policies = String::new();
    let s = shape.services;
    for h in 0..s {
        // Endpoints are never dialled; each service gets its own loopback address.
        let ip = format!("127.{}.{}.{}", 1 + h / 65536, (h / 256) % 256, h % 256);
        let _ = write!(
            services,
            "---\napiVersion: trustmesh.io/v1\nkind: Service\n\
             metadata: {{name: s{h}, namespace: {NS}, labels: {{app: s{h}}}}}\n\
             spec: {{identity: spiffe://cluster.local/ns/{NS}/sa/s{h}, endpoints: [\"{ip}:15006\"], \
             ports: [{{port: 80, protocol: http}}]}}\n"
        );
        let mut principals = Vec::new();
        for back in 1..=shape.calls {
            let caller = (h + s - back % s) % s;
            let mut j = caller;
            while j < shape.sidecars {
                principals.push(
                    sidecar_identity(shape, j)
                        .trim_start_matches("spiffe://")
                        .to_owned(),
                );
                j += s;
            }
        }
        if principals.is_empty() {
            continue;
        }
        let _ = write!(
            policies,
            "---\napiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: allow-s{h}, namespace: {NS}}}\n\
             spec: {{selector: {{matchLabels: {{app: s{h}}}}}, action: ALLOW, \
             rules: [{{from: [{{source: {{principals: [{}]}}}}], to: [{{operation: {{methods: [GET, POST]}}}}]}}]}}\n",
            principals.join(", ")
        );
    }
    policies.push_str(&format!(
        "---\napiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
         metadata: {{name: no-admin, namespace: {NS}}}\n\
         spec: {{action: DENY, rules: [{{to: [{{operation: {{paths: [\"/admin/*\"]}}}}]}}]}}\n"
    ));
    std::fs::write(dir.join("mesh.yaml"), mesh)?;
    std::fs::write(dir.join("services.yaml"), &services)?;
    std::fs::write(dir.join("policies.yaml"), &policies)?;
    git(dir, &["init", "-q", "-b", "main"])?;
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-q", "-m", "generated mesh"])?;
    Ok(mesh.len() + services.len() + policies.len())
}

/// Commits push number `k`: a mesh-wide DENY (root namespace, so it applies to every
/// workload and is in every sidecar's snapshot) of a path that changes each time. Returns the
/// commit, taken just after `git commit` returned.
pub fn commit_push(dir: &Path, k: usize) -> Result<(std::time::Instant, String)> {
    std::fs::write(
        dir.join("push.yaml"),
        format!(
            "apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: push, namespace: trustmesh-system}}\n\
             spec: {{action: DENY, rules: [{{to: [{{operation: {{paths: [\"/push-{k}\"]}}}}]}}]}}\n"
        ),
    )?;
    git(dir, &["add", "-A"])?;
    let t0 = std::time::Instant::now();
    git(dir, &["commit", "-q", "-m", &format!("push {k}")])?;
    Ok((t0, git(dir, &["rev-parse", "HEAD"])?))
}

/// How the control plane is started (again, for the restart).
pub struct ControlPlane {
    /// `trustmesh`.
    pub bin: PathBuf,
    /// Its API.
    pub listen: std::net::SocketAddr,
    /// `--data-dir`.
    pub data: PathBuf,
    /// `--policies`.
    pub policies: PathBuf,
    /// Extra flags (listener limits).
    pub flags: Vec<String>,
    /// Where its output goes.
    pub log: PathBuf,
    /// Its `RUST_LOG`.
    pub log_filter: String,
}

impl ControlPlane {
    /// Starts it and waits (at most 30 s) until it accepts TCP.
    pub fn start(&self) -> Result<ChildGuard> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("--listen")
            .arg(self.listen.to_string())
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--policies")
            .arg(&self.policies)
            .args(&self.flags)
            .env("RUST_LOG", &self.log_filter);
        let mut guard = ChildGuard::spawn("trustmesh serve", cmd, Some(&self.log))?
            .with_graceful_stop(Duration::from_secs(30));
        crate::procs::wait_for_tcp(self.listen, &mut guard, Duration::from_secs(30))?;
        Ok(guard)
    }

    /// An mTLS client configuration per sidecar, each with its own certificate from the CA
    /// in the data folder and its own TLS session store; the server must be the control
    /// plane's identity.
    pub fn client_configs(&self, shape: Shape) -> Result<Vec<Arc<ClientConfig>>> {
        let read = |f: &str| {
            std::fs::read_to_string(self.data.join(f)).with_context(|| format!("reading {f}"))
        };
        let ca = CertificateAuthority::from_pem(&read("ca-cert.pem")?, &read("ca-key.pem")?)
            .context("loading the mesh CA")?;
        let bundle = TrustBundle::from_pem(&read("trust-bundle.pem")?)?;
        let cp = SpiffeId::parse(
            "spiffe://cluster.local/ns/trustmesh-system/sa/trustmesh-control-plane",
        )?;
        let now = SystemTime::now();
        (0..shape.sidecars)
            .map(|j| {
                let id = SpiffeId::parse(&sidecar_identity(shape, j))?;
                let (cert, key) = ca.issue(&id, &[], &[], Duration::from_secs(3600), now)?;
                let resolver = Arc::new(RotatingResolver::new());
                resolver.set(cert.chain, &key)?;
                let mut cfg = trustmesh_certs::tls::control_plane_client_config(
                    &bundle,
                    cp.clone(),
                    Some(resolver),
                )?;
                // The proxy's control-plane client keeps its sessions across reconnects (one
                // store per sidecar, as each proxy has its own).
                cfg.resumption = rustls::client::Resumption::in_memory_sessions(SESSIONS);
                Ok(Arc::new(cfg))
            })
            .collect()
    }
}
