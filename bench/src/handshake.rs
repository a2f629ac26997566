//! Full mTLS handshakes per second per core at the server-side sidecar's inbound listener.
//!
//! A rustls client (the same `sidecar_client_config` trustmesh's outbound uses: TLS 1.3,
//! client certificate, server's SPIFFE ID checked) makes new TCP connections and full TLS 1.3
//! handshakes with session resumption disabled. After each handshake it sends close_notify and
//! reads to the end, so the server has also verified the client's certificate and Finished
//! before the connection counts. The server process's utime + stime over the interval gives
//! the CPU-seconds; handshakes divided by them is handshakes per second per core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio_rustls::TlsConnector;
use trustmesh_certs::{RotatingResolver, TrustBundle};

use crate::pki::{self, Leaf, Pki};
use crate::procs::{self, Sidecar};

/// Most handshakes one run attempts, whatever the time says.
const MAX_HANDSHAKES: u64 = 1_000_000;
/// One handshake plus the close may take at most this long.
const PER_CONNECTION: Duration = Duration::from_secs(5);

/// What one handshake run measured.
#[derive(Clone, Debug, Default)]
pub struct HandshakeResult {
    /// Completed handshakes whose connection the server closed cleanly.
    pub handshakes: u64,
    /// Failed connections or handshakes.
    pub failures: u64,
    /// Wall-clock handshakes per second.
    pub per_second: f64,
    /// CPU-seconds the server sidecar used in the interval.
    pub server_cpu_s: f64,
    /// Handshakes per server CPU-second.
    pub per_core_second: f64,
    /// Key exchange group and cipher suite the server chose.
    pub negotiated: String,
}

/// A handshake client for one server: its rustls config and the name it sends.
pub struct Client {
    config: Arc<ClientConfig>,
}

impl Client {
    /// A client with a certificate for `spiffe://cluster.local/ns/bench/sa/<client_sa>` from
    /// `pki`, checking that the server is `server_id`, offering `alpn`, never resuming.
    pub fn new(pki: &Pki, client_sa: &str, server_id: &str, alpn: &[&[u8]]) -> Result<Self> {
        Self::with_leaf(pki.issue(client_sa, &[])?, pki.ca_pem(), server_id, alpn)
    }

    /// A client presenting `leaf`, trusting the CA certificates in `trust_pem`.
    pub fn with_leaf(leaf: Leaf, trust_pem: &str, server_id: &str, alpn: &[&[u8]]) -> Result<Self> {
        let resolver = Arc::new(RotatingResolver::new());
        resolver.set(leaf.chain, &leaf.key)?;
        let bundle = TrustBundle::from_pem(trust_pem)?;
        let expected = trustmesh_certs::SpiffeId::parse(server_id)?;
        let mut config = trustmesh_certs::tls::sidecar_client_config(&bundle, resolver, expected)?;
        // Every connection pays for a full handshake: no tickets, no session IDs.
        config.resumption = Resumption::disabled();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Self {
            config: Arc::new(config),
        })
    }
}

/// Runs `concurrency` handshake loops against `addr` for `duration`, metering `server`.
pub async fn run(
    client: &Client,
    addr: SocketAddr,
    server: &Sidecar,
    duration: Duration,
    concurrency: usize,
) -> Result<HandshakeResult> {
    let connector = TlsConnector::from(Arc::clone(&client.config));
    // The SPIFFE verifier ignores the name; it only has to be valid.
    let name = ServerName::try_from("bench-server.bench")?.to_owned();
    let ticks = procs::clock_ticks() as f64;

    let cpu_before = server.cpu_ticks()?;
    let start = Instant::now();
    let until = start + duration;
    let cap = MAX_HANDSHAKES / concurrency.max(1) as u64;
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let connector = connector.clone();
        let name = name.clone();
        tasks.spawn(async move {
            let (mut ok, mut failed, mut negotiated) = (0u64, 0u64, String::new());
            for _ in 0..cap {
                if Instant::now() >= until {
                    break;
                }
                match tokio::time::timeout(PER_CONNECTION, one(&connector, name.clone(), addr))
                    .await
                {
                    Ok(Ok(n)) => {
                        ok += 1;
                        negotiated = n;
                    }
                    _ => {
                        failed += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            (ok, failed, negotiated)
        });
    }
    let mut result = HandshakeResult::default();
    while let Some(joined) = tasks.join_next().await {
        let (ok, failed, negotiated) = joined?;
        result.handshakes += ok;
        result.failures += failed;
        if !negotiated.is_empty() {
            result.negotiated = negotiated;
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu_after = server.cpu_ticks()?;
    result.per_second = result.handshakes as f64 / wall;
    result.server_cpu_s = cpu_after.saturating_sub(cpu_before) as f64 / ticks;
    if result.server_cpu_s > 0.0 {
        result.per_core_second = result.handshakes as f64 / result.server_cpu_s;
    }
    Ok(result)
}

/// One connection: TCP connect, full handshake, close_notify, read until the server closes.
/// Returns the negotiated key exchange group and cipher suite.
async fn one(
    connector: &TlsConnector,
    name: ServerName<'static>,
    addr: SocketAddr,
) -> Result<String> {
    let tcp = TcpStream::connect(addr).await.context("connect")?;
    tcp.set_nodelay(true)?;
    let mut tls = connector.connect(name, tcp).await.context("handshake")?;
    let (_, conn) = tls.get_ref();
    let group = conn
        .negotiated_key_exchange_group()
        .map(|g| format!("{:?}", g.name()));
    let suite = conn
        .negotiated_cipher_suite()
        .map(|s| format!("{:?}", s.suite()));
    let alpn = conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let negotiated = format!(
        "group {}, suite {}, ALPN {}",
        group.as_deref().unwrap_or("?"),
        suite.as_deref().unwrap_or("?"),
        alpn.as_deref().unwrap_or("none"),
    );
    tls.shutdown().await.context("close_notify")?;
    let mut sink = [0u8; 4096];
    loop {
        match tls.read(&mut sink).await {
            Ok(0) => break,
            Ok(_) => continue,
            // A server that closes TCP without its own close_notify still finished the
            // handshake; an alert (e.g. a refused client certificate) is a failure.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e).context("server refused the connection"),
        }
    }
    Ok(negotiated)
}

/// The client identity the handshake test presents.
pub const CLIENT_SA: &str = "client";

/// The SPIFFE ID of a bench service account, as a string.
pub fn id(sa: &str) -> Result<String> {
    Ok(pki::spiffe_id(sa)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;
    use trustmesh_certs::TrustDomain;

    /// A rustls server with trustmesh's inbound config, serving `spiffe://.../sa/server`.
    async fn server(pki: &Pki) -> SocketAddr {
        let leaf = pki.issue("server", &[]).unwrap();
        let resolver = Arc::new(RotatingResolver::new());
        resolver.set(leaf.chain, &leaf.key).unwrap();
        let bundle = TrustBundle::from_pem(pki.ca_pem()).unwrap();
        let td = TrustDomain::parse(pki::TRUST_DOMAIN).unwrap();
        let cfg = trustmesh_certs::tls::sidecar_server_config(&bundle, &td, resolver).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(cfg));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(tcp).await {
                        let mut buf = [0u8; 64];
                        while let Ok(n) = tls.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                        let _ = tls.shutdown().await;
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn counts_only_handshakes_the_server_accepts() {
        let pki = Pki::generate().unwrap();
        let addr = server(&pki).await;
        let me = Sidecar {
            pids: vec![std::process::id()],
        };
        let server_id = id("server").unwrap();

        let good = Client::new(&pki, CLIENT_SA, &server_id, &[b"h2"]).unwrap();
        let r = run(&good, addr, &me, Duration::from_millis(300), 2)
            .await
            .unwrap();
        assert!(r.handshakes > 0, "{r:?}");
        assert_eq!(r.failures, 0, "{r:?}");
        assert!(r.negotiated.contains("TLS13"), "{r:?}");

        // A certificate from another CA: the client finishes its side of the TLS 1.3
        // handshake, but the server refuses the certificate, so nothing may count.
        let other = Pki::generate().unwrap();
        let leaf = other.issue(CLIENT_SA, &[]).unwrap();
        let bad = Client::with_leaf(leaf, pki.ca_pem(), &server_id, &[b"h2"]).unwrap();
        let r = run(&bad, addr, &me, Duration::from_millis(300), 2)
            .await
            .unwrap();
        assert_eq!(r.handshakes, 0, "{r:?}");
        assert!(r.failures > 0, "{r:?}");
    }

    #[tokio::test]
    async fn refuses_a_server_with_another_identity() {
        let pki = Pki::generate().unwrap();
        let addr = server(&pki).await;
        let me = Sidecar {
            pids: vec![std::process::id()],
        };
        let client = Client::new(&pki, CLIENT_SA, &id("someone-else").unwrap(), &[b"h2"]).unwrap();
        let r = run(&client, addr, &me, Duration::from_millis(200), 1)
            .await
            .unwrap();
        assert_eq!(r.handshakes, 0, "{r:?}");
    }
}
