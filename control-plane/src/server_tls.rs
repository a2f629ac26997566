//! The control plane's HTTPS listener: TLS 1.3 with an optional mesh client certificate, then
//! HTTP/1.1 into [`crate::api::handle`]. Its own certificate is re-issued by the CA before it
//! expires, and whenever the trust state changes (a CA rotation switches the issuing CA or the
//! bundle client certificates must chain to), and swapped in for new handshakes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use trustmesh_certs::control_plane_identity;

use crate::api::{self, AppState, Caller};
use crate::trust::TrustView;

/// Lifetime of the control plane's own serving certificate.
const SERVING_CERT_TTL: Duration = Duration::from_secs(24 * 3600);
/// A TLS handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Issues the control plane's serving certificate from the issuing CA of `trust`: the SPIFFE
/// ID of the control plane, plus `localhost`, `127.0.0.1`, `::1`, the listen IP and the extra
/// names for operators' tools. Client certificates must chain to `trust`'s bundle (both roots
/// during a CA rotation).
pub fn server_config(
    trust: &TrustView,
    listen: SocketAddr,
    names: &[String],
) -> anyhow::Result<rustls::ServerConfig> {
    let ca = &trust.signer;
    let td = ca.trust_domain();
    let id = control_plane_identity(td);
    let mut dns = vec!["localhost".to_string()];
    dns.extend(names.iter().cloned());
    let mut ips: Vec<std::net::IpAddr> = vec![
        std::net::Ipv4Addr::LOCALHOST.into(),
        std::net::Ipv6Addr::LOCALHOST.into(),
    ];
    if !listen.ip().is_unspecified() && !ips.contains(&listen.ip()) {
        ips.push(listen.ip());
    }
    let (issued, key) = ca.issue(&id, &dns, &ips, SERVING_CERT_TTL, SystemTime::now())?;
    Ok(trustmesh_certs::tls::control_plane_server_config(
        &trust.bundle,
        td,
        issued.chain,
        &key,
    )?)
}

/// Accepts connections until `shutdown` resolves, then drains them ([`crate::drain`]).
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    names: Vec<String>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let listen = listener.local_addr()?;
    let config = Arc::new(ArcSwap::from_pointee(server_config(
        &state.trust.current(),
        listen,
        &names,
    )?));
    tokio::spawn(renew_serving_cert(
        state.clone(),
        config.clone(),
        listen,
        names,
    ));
    tokio::pin!(shutdown);
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(watcher) = state.drain.watcher() else {
            break;
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(config.load_full());
        let state = state.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(client.addr = %addr, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(client.addr = %addr, "TLS handshake timed out");
                    return;
                }
            };
            let certs = tls.get_ref().1.peer_certificates();
            let caller = Arc::new(Caller {
                identity: trustmesh_certs::verify::peer_identity(certs),
                cert_expiry: certs
                    .and_then(|c| c.first())
                    .and_then(|c| trustmesh_certs::identity::cert_not_after(c).ok()),
                addr,
            });
            let svc = service_fn(move |req| api::handle(state.clone(), caller.clone(), req));
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(client.addr = %addr, "connection ended: {e}");
            }
        });
    }
    // Stop accepting, answer the long polls, let requests in flight finish.
    drop(listener);
    if !state.drain.run().await {
        tracing::warn!("--drain-timeout passed with connections still open; closing them");
    }
    Ok(())
}

async fn renew_serving_cert(
    state: Arc<AppState>,
    config: Arc<ArcSwap<rustls::ServerConfig>>,
    listen: SocketAddr,
    names: Vec<String>,
) {
    let mut trust = state.trust.subscribe();
    loop {
        tokio::select! {
            () = tokio::time::sleep(SERVING_CERT_TTL / 2) => {}
            changed = trust.changed() => if changed.is_err() { return },
        }
        let view = trust.borrow_and_update().clone();
        match server_config(&view, listen, &names) {
            Ok(c) => config.store(Arc::new(c)),
            Err(e) => tracing::warn!("renewing the control plane's serving certificate: {e:#}"),
        }
    }
}
