//! Clients and readers for `ops_cp_limits.rs`: mesh-certificate and anonymous TLS clients of
//! the control plane, connections held open, and `/metrics` series.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body_util::Empty;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use trustmesh_certs::{control_plane_identity, TrustBundle};
use trustmesh_e2e::client::{admin_get, connect};
use trustmesh_e2e::control_plane::ControlPlane;
use trustmesh_e2e::https::client_config;
use trustmesh_e2e::mtls::{client_with_cert, issue, mesh_ca, mtls_get, trust_domain};
use trustmesh_e2e::policies::{spiffe_id, write_policies, ServiceEntry};
use trustmesh_e2e::ports::free_addr;
use trustmesh_e2e::proxy::Proxy;
use trustmesh_e2e::wait::poll_until;
use trustmesh_e2e::workdir::WorkDir;

/// Longest any step here may take; the limits under test are a few seconds.
pub(crate) const BOUND: Duration = Duration::from_secs(8);

/// `trustmesh serve` with `flags`, over a registry of `test/a` and `test/b`.
pub(crate) async fn start(name: &str, flags: &[&str]) -> (WorkDir, ControlPlane) {
    let dir = WorkDir::new(name).expect("work dir");
    let policies = write_policies(
        &dir.path().join("policies"),
        &[
            ServiceEntry::new("a", "test", free_addr().unwrap()),
            ServiceEntry::new("b", "test", free_addr().unwrap()),
        ],
    )
    .expect("policies");
    let data = dir.path().join("cp-data");
    let cp = ControlPlane::start_with(dir.path(), &data, &policies, flags)
        .await
        .expect("control plane starts");
    (dir, cp)
}

/// A client with a mesh certificate for `test/<sa>`, speaking HTTP/1.1 as the proxies do.
pub(crate) fn mtls(cp: &ControlPlane, sa: &str) -> Arc<ClientConfig> {
    let ca = mesh_ca(cp).unwrap();
    let (cert, key) = issue(
        &ca,
        &spiffe_id("test", sa),
        Duration::from_secs(600),
        SystemTime::now(),
    )
    .unwrap();
    let bundle = TrustBundle::from_pem(&cp.trust_bundle_pem().unwrap()).unwrap();
    let cp_id = control_plane_identity(&trust_domain().unwrap());
    let mut tls = (*client_with_cert(&bundle, &cert, &key, cp_id.as_str()).unwrap()).clone();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(tls)
}

/// A client with no certificate (a bootstrapping proxy, a scanner).
pub(crate) fn anonymous(cp: &ControlPlane) -> Arc<ClientConfig> {
    client_config(&cp.trust_bundle_pem().unwrap()).unwrap()
}

pub(crate) async fn tls(
    config: Arc<ClientConfig>,
    addr: SocketAddr,
) -> anyhow::Result<TlsStream<tokio::net::TcpStream>> {
    let tcp = connect(addr).await?;
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    let work = TlsConnector::from(config).connect(name, tcp);
    Ok(tokio::time::timeout(BOUND, work).await??)
}

/// An HTTP/1.1 connection kept open after one answered `GET /healthz`.
pub(crate) struct Held {
    _send: SendRequest<Empty<Bytes>>,
    _conn: tokio::task::JoinHandle<()>,
}

/// Opens a connection and has `GET /healthz` answered on it; `Err` when the server closed it.
pub(crate) async fn hold(config: Arc<ClientConfig>, addr: SocketAddr) -> anyhow::Result<Held> {
    let io = tls(config, addr).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = Request::get("/healthz")
        .header(http::header::HOST, addr.to_string())
        .body(Empty::new())?;
    let resp = tokio::time::timeout(BOUND, send.send_request(req)).await??;
    anyhow::ensure!(resp.status() == 200, "/healthz answered {}", resp.status());
    Ok(Held {
        _send: send,
        _conn: conn,
    })
}

/// [`hold`], retried while connections that just closed still hold their slots (the server
/// frees a slot once it has seen the close).
pub(crate) async fn hold_soon(config: &Arc<ClientConfig>, addr: SocketAddr, what: &str) -> Held {
    poll_until(what, BOUND, || async {
        Ok(hold(config.clone(), addr).await.ok())
    })
    .await
    .unwrap()
}

/// A policy change for the sidecar of `test/a`.
pub(crate) const ALLOW_B: &str = "apiVersion: trustmesh.io/v1\nkind: AuthorizationPolicy\n\
    metadata: {name: allow-b, namespace: test}\n\
    spec:\n  selector: {matchLabels: {app: a}}\n  action: ALLOW\n  \
    rules:\n    - from: [{source: {principals: [\"cluster.local/ns/test/sa/b\"]}}]\n";

/// The policy version a sidecar has in force (`/config`).
pub(crate) async fn proxy_version(proxy: &Proxy) -> String {
    let config = admin_get(proxy.admin(), "/config")
        .await
        .unwrap()
        .json()
        .unwrap();
    config["policy_version"].as_str().unwrap().to_string()
}

/// Reads until the server closes (`true`) or `within` passes (`false`); returns what it sent.
pub(crate) async fn closed_within<S: AsyncRead + Unpin>(
    s: &mut S,
    within: Duration,
) -> (bool, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + within;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (true, got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (false, got),
        }
    }
}

/// `trustmesh_cp_limits_exceeded_total{limit}` read with `config` (which must be let in), or
/// another series of `/metrics` when `series` is given whole.
pub(crate) async fn metric(config: &Arc<ClientConfig>, cp: &ControlPlane, series: &str) -> u64 {
    let text = mtls_get(config.clone(), cp.addr(), "localhost", "/metrics")
        .await
        .unwrap()
        .text();
    value(&text, series)
}

/// The value of `series` (or of `limit`'s refusal counter) in a `/metrics` text.
pub(crate) fn value(text: &str, series: &str) -> u64 {
    let series = if series.starts_with("trustmesh_") {
        series.to_string()
    } else {
        format!("trustmesh_cp_limits_exceeded_total{{limit=\"{series}\"}}")
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{series} ")))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// An HTTP/2 frame header (RFC 9113 §4.1) and payload.
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}
