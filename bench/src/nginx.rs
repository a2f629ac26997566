//! The reference: an nginx mTLS sidecar pair, configured as an operator would for this job.
//!
//! ```text
//! client --HTTP/1.1--> nginx A (plain listener, proxy_pass https, client cert, verifies B)
//!        --mTLS, TLS 1.3, keep-alive upstream--> nginx B (ssl_verify_client on) --HTTP/1.1--> backend
//! ```
//!
//! Each nginx is one master and `worker_processes 1`, in the foreground (`daemon off`) with its
//! own root-owned temporary prefix, pid file and error log. Access logs are off, as they are for
//! the trustmesh proxies where the binary allows it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};

use crate::pki::{self, Leaf, Pki};
use crate::procs::{self, ChildGuard, Sidecar};

/// The name nginx A checks in B's certificate (`proxy_ssl_name`).
const B_NAME: &str = "nginx-b";

/// A running nginx pair; dropping it stops both.
pub struct NginxPair {
    /// The plain HTTP listener of A, where the client sends.
    pub outbound: SocketAddr,
    /// B's mTLS listener (the handshake test's target).
    pub inbound: SocketAddr,
    /// A's processes (master and worker).
    pub a: Sidecar,
    /// B's processes (master and worker).
    pub b: Sidecar,
    /// The SPIFFE ID in B's certificate, checked by the handshake client.
    pub b_identity: String,
    /// The CA that issued both sides' certificates (and can issue more for the handshake client).
    pub pki: Pki,
    /// The nginx and OpenSSL versions.
    pub version: String,
    _guards: Vec<ChildGuard>,
    _dir: tempfile::TempDir,
}

/// Finds the nginx binary, or fails with how to install it.
pub fn binary() -> Result<PathBuf> {
    for p in ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"] {
        if Path::new(p).exists() {
            return Ok(PathBuf::from(p));
        }
    }
    bail!("nginx not found: run bench/run.sh, or `apt-get update && apt-get install -y nginx`")
}

impl NginxPair {
    /// Writes certificates and configuration in a temp dir and starts B, then A.
    pub fn start(backend: SocketAddr) -> Result<Self> {
        let nginx = binary()?;
        let dir = tempfile::Builder::new()
            .prefix("trustmesh-bench-nginx-")
            .tempdir()?;
        let pki = Pki::generate()?;
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, pki.ca_pem())?;
        let a_leaf: Leaf = pki.issue("nginx-a", &["nginx-a"])?;
        let b_leaf: Leaf = pki.issue("nginx-b", &[B_NAME])?;
        let (a_crt, a_key) = pki::write_leaf(&a_leaf, dir.path(), "a")?;
        let (b_crt, b_key) = pki::write_leaf(&b_leaf, dir.path(), "b")?;

        let addrs = procs::free_addrs(2)?;
        let (outbound, inbound) = (addrs[0], addrs[1]);

        let b_conf = server_config(dir.path(), "b", inbound, backend, &b_crt, &b_key, &ca);
        let a_conf = client_config(dir.path(), "a", outbound, inbound, &a_crt, &a_key, &ca);
        let mut guards = Vec::new();
        let b = start_one(&nginx, dir.path(), "b", &b_conf, inbound, &mut guards)?;
        let a = start_one(&nginx, dir.path(), "a", &a_conf, outbound, &mut guards)?;

        // `nginx -V` names the nginx and OpenSSL versions (on stderr).
        let version = Command::new(&nginx)
            .arg("-V")
            .output()
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stderr).into_owned();
                text.lines()
                    .filter(|l| l.starts_with("nginx version") || l.starts_with("built with"))
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .unwrap_or_default();
        Ok(Self {
            outbound,
            inbound,
            a: Sidecar { pids: a },
            b: Sidecar { pids: b },
            b_identity: pki::spiffe_id("nginx-b")?.to_string(),
            pki,
            version,
            _guards: guards,
            _dir: dir,
        })
    }
}

/// Starts one nginx on `conf`, waits for its listener and returns master + worker pids.
fn start_one(
    nginx: &Path,
    dir: &Path,
    name: &str,
    conf: &str,
    listen: SocketAddr,
    guards: &mut Vec<ChildGuard>,
) -> Result<Vec<u32>> {
    let conf_path = dir.join(format!("nginx-{name}.conf"));
    std::fs::write(&conf_path, conf)?;
    let prefix = dir.join(format!("prefix-{name}"));
    std::fs::create_dir_all(prefix.join("logs"))?;
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .arg("-e")
        .arg(dir.join(format!("error-{name}.log")));
    let log = dir.join(format!("stdout-{name}.log"));
    let mut guard = ChildGuard::spawn(&format!("nginx {name}"), cmd, Some(&log))?
        .with_graceful_stop(Duration::from_secs(2));
    let waited = procs::wait_for_tcp(listen, &mut guard, Duration::from_secs(10));
    if let Err(e) = waited {
        let err =
            std::fs::read_to_string(dir.join(format!("error-{name}.log"))).unwrap_or_default();
        let out = std::fs::read_to_string(&log).unwrap_or_default();
        guards.push(guard);
        bail!("{e:#}\nnginx {name} error log:\n{err}{out}");
    }
    let master = guard.pid();
    let workers = procs::children_of(master)?;
    if workers.is_empty() {
        guards.push(guard);
        bail!("nginx {name} (pid {master}) has no worker process");
    }
    guard.track_extra(&workers);
    guards.push(guard);
    let mut pids = vec![master];
    pids.extend(workers);
    Ok(pids)
}

/// Lines every nginx shares: foreground master, one worker, files in the temp dir.
fn common(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "daemon off;\n\
         master_process on;\n\
         worker_processes 1;\n\
         pid {d}/nginx-{name}.pid;\n\
         error_log {d}/error-{name}.log warn;\n\
         events {{ worker_connections 4096; }}\n"
    )
}

/// Temp paths inside `http {}` so that nothing is written under /var.
fn http_common(dir: &Path, name: &str) -> String {
    let d = dir.display();
    format!(
        "    access_log off;\n\
         \x20   client_body_temp_path {d}/prefix-{name}/client_body;\n\
         \x20   proxy_temp_path {d}/prefix-{name}/proxy;\n\
         \x20   fastcgi_temp_path {d}/prefix-{name}/fastcgi;\n\
         \x20   uwsgi_temp_path {d}/prefix-{name}/uwsgi;\n\
         \x20   scgi_temp_path {d}/prefix-{name}/scgi;\n\
         \x20   keepalive_requests 1000000;\n\
         \x20   keepalive_timeout 75s;\n"
    )
}

/// B: terminates mTLS (TLS 1.3 only, client certificate required and chained to our CA) and
/// forwards to the backend over a keep-alive upstream. It passes the client's certificate
/// subject like trustmesh passes the peer identity.
fn server_config(
    dir: &Path,
    name: &str,
    listen: SocketAddr,
    backend: SocketAddr,
    crt: &Path,
    key: &Path,
    ca: &Path,
) -> String {
    format!(
        "{common}http {{\n{http}\
         \x20   upstream backend {{ server {backend}; keepalive 64; }}\n\
         \x20   server {{\n\
         \x20       listen {listen} ssl;\n\
         \x20       ssl_protocols TLSv1.3;\n\
         \x20       ssl_certificate {crt};\n\
         \x20       ssl_certificate_key {key};\n\
         \x20       ssl_client_certificate {ca};\n\
         \x20       ssl_verify_client on;\n\
         \x20       location / {{\n\
         \x20           proxy_pass http://backend;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           proxy_set_header x-peer-cert-subject $ssl_client_s_dn;\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        common = common(dir, name),
        http = http_common(dir, name),
        crt = crt.display(),
        key = key.display(),
        ca = ca.display(),
    )
}

/// A: plain HTTP from the app, mTLS to B with a client certificate, B's name checked, upstream
/// connections kept alive and TLS sessions reused.
fn client_config(
    dir: &Path,
    name: &str,
    listen: SocketAddr,
    upstream: SocketAddr,
    crt: &Path,
    key: &Path,
    ca: &Path,
) -> String {
    format!(
        "{common}http {{\n{http}\
         \x20   upstream peer_b {{ server {upstream}; keepalive 64; }}\n\
         \x20   server {{\n\
         \x20       listen {listen};\n\
         \x20       location / {{\n\
         \x20           proxy_pass https://peer_b;\n\
         \x20           proxy_http_version 1.1;\n\
         \x20           proxy_set_header Connection \"\";\n\
         \x20           proxy_ssl_protocols TLSv1.3;\n\
         \x20           proxy_ssl_certificate {crt};\n\
         \x20           proxy_ssl_certificate_key {key};\n\
         \x20           proxy_ssl_trusted_certificate {ca};\n\
         \x20           proxy_ssl_verify on;\n\
         \x20           proxy_ssl_verify_depth 2;\n\
         \x20           proxy_ssl_name {B_NAME};\n\
         \x20           proxy_ssl_session_reuse on;\n\
         \x20       }}\n\
         \x20   }}\n\
         }}\n",
        common = common(dir, name),
        http = http_common(dir, name),
        crt = crt.display(),
        key = key.display(),
        ca = ca.display(),
    )
}
