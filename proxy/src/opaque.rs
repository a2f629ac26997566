//! Opaque TCP between sidecars. A non-HTTP connection travels over the same mTLS as HTTP, but
//! negotiates ALPN `trustmesh-tcp` and starts with a two-byte preamble: the destination port
//! (big-endian) on the peer's app. The inbound sidecar dials that port only when this
//! workload's registry entry declares it `tcp` and it is none of the sidecar's own listeners
//! (see [`crate::app_ports`]; a redirected connection must name its original destination
//! port). It authorizes the connection once, on the caller's identity, address and the port
//! it dials (a rule that names HTTP-only fields never matches it), then splices bytes both
//! ways. When a new snapshot arrives it checks the port and authorizes the open connection
//! again, and closes it if the new registry or policies refuse it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use trustmesh_certs::SpiffeId;
use trustmesh_policies::request::Request as AuthzRequest;
use trustmesh_policies::ServiceEntry;

use crate::layers::detect::OPAQUE_ALPN as ALPN;
use crate::state::Shared;

/// How long the caller may take to send the preamble.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(5);

/// What opaque TCP needs from the flags: where the app is and how long a dial may take.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// The app's address (`--app`); inbound reaches the authorized port on it.
    pub app_ip: IpAddr,
    /// `--connect-timeout`.
    pub connect_timeout: Duration,
}

/// Carries an app's non-HTTP connection to a mesh service: mTLS to `dial` verifying the
/// service's identity, ALPN `trustmesh-tcp`, the preamble for `port`, then a splice.
pub async fn outbound(
    shared: &Shared,
    mut app: tokio::net::TcpStream,
    service: &ServiceEntry,
    dial: &str,
    port: u16,
    connect_timeout: Duration,
) {
    let Some(mesh) = shared.mesh.load_full() else {
        return;
    };
    let config = match mesh.client_config(&shared.resolver, service.identity_of(dial)) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(dst.addr = dial, "opaque TCP: no TLS configuration: {e:#}");
            return;
        }
    };
    drop(mesh);
    let mut config = (*config).clone();
    config.alpn_protocols = vec![ALPN.to_vec()];
    let sni = service.fqdn();
    let Ok(name) = rustls::pki_types::ServerName::try_from(sni) else {
        return;
    };
    let timeout = connect_timeout;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(dial).await?;
        let _ = tcp.set_nodelay(true);
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        if tls.get_ref().1.alpn_protocol() != Some(ALPN) {
            return Err(std::io::Error::other("the peer does not carry opaque TCP"));
        }
        tls.write_all(&port.to_be_bytes()).await?;
        tls.flush().await?;
        Ok::<_, std::io::Error>(tls)
    };
    let mut tls = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::info!(dst.addr = dial, "opaque TCP to the mesh failed: {e}");
            return;
        }
        Err(_) => {
            tracing::info!(dst.addr = dial, "opaque TCP to the mesh timed out");
            return;
        }
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut app, &mut tls).await {
        tracing::debug!(dst.addr = dial, "opaque TCP ended: {e}");
    }
}

/// Serves one inbound opaque connection: preamble, port check, authorization, splice to the
/// app's port. `original` is the original destination port when iptables redirected it.
pub async fn inbound<S>(
    shared: Arc<Shared>,
    mut tls: S,
    peer: SpiffeId,
    addr: SocketAddr,
    original: Option<u16>,
    config: Config,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut preamble = [0u8; 2];
    match tokio::time::timeout(PREAMBLE_TIMEOUT, tls.read_exact(&mut preamble)).await {
        Ok(Ok(_)) => {}
        _ => {
            tracing::info!(client.id = %peer, client.addr = %addr, "opaque TCP: no preamble, closed");
            return;
        }
    }
    let preamble = u16::from_be_bytes(preamble);
    let mut changes = shared.mesh_changes.subscribe();
    let Some(port) = allowed(&shared, &peer, addr, preamble, original) else {
        return;
    };
    let target = SocketAddr::new(config.app_ip, port);
    let mut app = match tokio::time::timeout(
        config.connect_timeout,
        tokio::net::TcpStream::connect(target),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(client.id = %peer, "opaque TCP: the app at {target} refused: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!(client.id = %peer, "opaque TCP: the app at {target} did not answer");
            return;
        }
    };
    let _ = app.set_nodelay(true);
    let splice = tokio::io::copy_bidirectional(&mut tls, &mut app);
    tokio::pin!(splice);
    loop {
        tokio::select! {
            result = &mut splice => {
                if let Err(e) = result {
                    tracing::debug!(client.id = %peer, "opaque TCP ended: {e}");
                }
                return;
            }
            changed = changes.changed() => {
                if changed.is_err() || allowed(&shared, &peer, addr, preamble, original).is_none() {
                    tracing::info!(client.id = %peer, port, "opaque TCP closed: the new registry or policy refuses it");
                    return;
                }
            }
        }
    }
}

/// The port an opaque connection may reach and is authorized for, under the registry and
/// policies in force, or `None`; logs and counts the decision.
fn allowed(
    shared: &Shared,
    peer: &SpiffeId,
    addr: SocketAddr,
    preamble: u16,
    original: Option<u16>,
) -> Option<u16> {
    let mesh = shared.mesh.load_full()?;
    if crate::revocation::refuses(shared, &mesh, peer, "connection") {
        return None;
    }
    let port = match mesh.ports.opaque(preamble, original) {
        Ok(port) => port,
        Err(refusal) => {
            shared
                .metrics
                .authz_decisions
                .with_label_values(&["deny", "-"])
                .inc();
            tracing::info!(
                client.id = %peer, client.addr = %addr, port = preamble, decision = "deny",
                "opaque TCP connection refused: {refusal}"
            );
            return None;
        }
    };
    let request = AuthzRequest::tcp(Some(peer), Some(addr.ip()), port);
    let decision = mesh.policies.authorize(&request);
    let policy = decision.policy.as_deref().unwrap_or("-");
    shared
        .metrics
        .authz_decisions
        .with_label_values(&[decision.label(), policy])
        .inc();
    if decision.allowed {
        tracing::debug!(client.id = %peer, port, authz.policy = policy, decision = decision.label(), "opaque TCP");
    } else {
        tracing::info!(
            client.id = %peer, port, authz.policy = policy, reason = decision.reason.as_str(),
            decision = "deny", "opaque TCP connection denied"
        );
    }
    decision.allowed.then_some(port)
}
