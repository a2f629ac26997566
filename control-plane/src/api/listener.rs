//! API layer: the control plane's HTTPS listener, TLS 1.3 with an optional mesh client certificate, then
//! HTTP/1.1 (only: ALPN offers nothing else) into [`crate::api::handle`], within the caps and
//! timeouts of [`super::limits`]. Its own certificate is re-issued by the CA before it
//! expires, and whenever the trust state changes (a CA rotation switches the issuing CA or the
//! bundle client certificates must chain to), and swapped in for new handshakes.
//!
//! Sessions resume with the tickets of [`super::tickets`], across restarts too; a resumed
//! session's client certificate is checked again ([`super::resume`]) before the connection is
//! served. The blocklist is checked per request, as for any connection.
//!
//! Connections are kept alive (the sidecars' watch reuses one), so a handshake's checks must
//! hold for as long as the connection serves: a request after the client certificate's
//! NotAfter is refused (`401 certificate_expired`, [`super::handle`]) and the connection
//! closes; and when the trust bundle changes (a CA rotation's steps) every open connection,
//! and one accepted under the serving configuration of an older bundle, is closed gracefully
//! as the drain does: the request in flight is answered first (a long poll wakes, the bundle
//! being part of the snapshot version), the next one comes on a new handshake verified
//! against the bundle in force. A blocklist change closes nothing: the blocklist is checked
//! per request, so blocking one identity does not make the whole fleet reconnect.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::Watcher;
use rustls::pki_types::UnixTime;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use trustmesh_certs::control_plane_identity;

use super::limits::{self, Limit};
use super::resume::Tls;
use super::state::{AppState, Caller};
use super::tickets::TicketKeys;
use crate::domain::trust::TrustView;

/// Lifetime of the control plane's own serving certificate.
const SERVING_CERT_TTL: Duration = Duration::from_secs(24 * 3600);

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

/// The handshakes' configuration and the trust state it was made for.
struct Serving {
    tls: Tls,
    trust: Arc<TrustView>,
}

/// Accepts connections until `shutdown` resolves, then drains them ([`trustmesh_runtime::Drain`]) for at most
/// `drain_timeout`.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    names: Vec<String>,
    tickets: Arc<TicketKeys>,
    drain_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let listen = listener.local_addr()?;
    let trust = state.trust.current();
    let config = Arc::new(ArcSwap::from_pointee(Serving {
        tls: Tls::new(
            server_config(&trust, listen, &names)?,
            &trust.bundle,
            trust.signer.trust_domain(),
            tickets.clone(),
        )?,
        trust,
    }));
    tokio::spawn(renew_serving_cert(
        state.clone(),
        config.clone(),
        listen,
        names,
        tickets.clone(),
    ));
    tokio::spawn(tickets.rotate_forever());
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
        // Over --max-connections the connection is closed before its handshake costs anything.
        let Some(slot) = state.limits.accept() else {
            tracing::debug!(client.addr = %addr, "over --max-connections; closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        // Subscribed before the configuration is read: a change from here on closes it.
        let trust = state.trust.subscribe();
        tokio::spawn(connection(
            tcp,
            addr,
            config.load_full(),
            trust,
            state.clone(),
            slot,
            watcher,
        ));
    }
    // Stop accepting, answer the long polls, let requests in flight finish.
    drop(listener);
    if state.drain.run(drain_timeout).await > 0 {
        tracing::warn!("--drain-timeout passed with connections still open; closing them");
    }
    Ok(())
}

/// One accepted connection: the TLS handshake within `--handshake-timeout` (a resumed
/// session's certificate checked again), then its class (a mesh certificate, or anonymous
/// within `--max-anonymous-connections`), then HTTP/1.1, the one protocol ALPN offers, with
/// the head limits, closed gracefully on the drain or a trust change (see the module docs).
/// The connection's slot and the drain's `watcher` are held until it closes.
async fn connection(
    tcp: TcpStream,
    addr: SocketAddr,
    serving: Arc<Serving>,
    mut trust: watch::Receiver<Arc<TrustView>>,
    state: Arc<AppState>,
    mut slot: limits::Connection,
    watcher: Watcher,
) {
    let limits = state.limits.clone();
    let tls_state = &serving.tls;
    // Made under an older bundle than the one in force (the serving certificate's renewal
    // lags the change): served one request at most.
    if serving.trust.bundle != trust.borrow().bundle {
        trust.mark_changed();
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_state.config());
    let tls = match tokio::time::timeout(limits.args.handshake_timeout, acceptor.accept(tcp)).await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(client.addr = %addr, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            limits.exceeded(Limit::HandshakeTimeout);
            tracing::debug!(client.addr = %addr, "TLS handshake timed out");
            return;
        }
    };
    let session = tls.get_ref().1;
    if session.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
        if let Err(e) = tls_state.check_resumed(session.peer_certificates(), UnixTime::now()) {
            tracing::info!(client.addr = %addr, "refused a resumed session whose certificate no longer holds: {e}");
            return;
        }
    }
    // The server offers only `http/1.1` (rustls refuses a client that offers ALPN without it);
    // no ALPN at all is HTTP/1.1 too (RFC 7301 §3.2). Anything else would disagree with the
    // protocol served below.
    if let Some(proto) = session.alpn_protocol().filter(|p| *p != b"http/1.1") {
        limits.exceeded(Limit::Protocol);
        tracing::debug!(client.addr = %addr, alpn = %String::from_utf8_lossy(proto), "unexpected ALPN; closed");
        return;
    }
    let certs = session.peer_certificates();
    let caller = Arc::new(Caller {
        identity: trustmesh_certs::verify::peer_identity(certs),
        cert_expiry: certs
            .and_then(|c| c.first())
            .and_then(|c| trustmesh_certs::identity::cert_not_after(c).ok()),
        addr,
    });
    if caller.identity.is_some() {
        slot.verified();
    } else if !slot.anonymous() {
        tracing::debug!(client.addr = %addr, "over --max-anonymous-connections; closed");
        return;
    }
    let drain_state = state.clone();
    let svc = service_fn(move |req| super::handle(state.clone(), caller.clone(), req));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.args.header_timeout)
        .max_header_size(limits::MAX_HEAD_BYTES)
        .max_headers(limits::MAX_HEADERS);
    let conn = http.serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    let drain = drain_state.drain.started();
    tokio::pin!(drain);
    let mut closing = false;
    let ended = loop {
        tokio::select! {
            ended = conn.as_mut() => break ended,
            () = &mut drain, if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = trust.changed(), if !closing => {
                // Only a new bundle voids the handshake's verification; the blocklist (and
                // the CA that issues) apply per request, so a block keeps the fleet connected.
                if trust.borrow_and_update().bundle == serving.trust.bundle {
                    continue;
                }
                closing = true;
                tracing::debug!(client.addr = %addr, "trust state changed; closing the connection after its request");
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    // Held until here, so the drain waits for this connection.
    drop(watcher);
    if let Err(e) = ended {
        if e.is_timeout() {
            limits.exceeded(Limit::HeaderTimeout);
        } else if e.is_parse_too_large() {
            limits.exceeded(Limit::HeaderBytes);
        } else if e.is_parse_version_h2() {
            // HTTP/2 on a connection that negotiated HTTP/1.1: refused, so HTTP/2's own
            // attack surface (rapid reset, CVE-2023-44487; stream floods) is not served.
            limits.exceeded(Limit::Protocol);
        }
        tracing::debug!(client.addr = %addr, "connection ended: {e}");
    }
    drop(slot);
}

async fn renew_serving_cert(
    state: Arc<AppState>,
    config: Arc<ArcSwap<Serving>>,
    listen: SocketAddr,
    names: Vec<String>,
    tickets: Arc<TicketKeys>,
) {
    let mut trust = state.trust.subscribe();
    loop {
        tokio::select! {
            () = tokio::time::sleep(SERVING_CERT_TTL / 2) => {}
            changed = trust.changed() => if changed.is_err() { return },
        }
        let view = trust.borrow_and_update().clone();
        let tls = server_config(&view, listen, &names)
            .and_then(|c| Tls::new(c, &view.bundle, view.signer.trust_domain(), tickets.clone()));
        match tls {
            Ok(tls) => config.store(Arc::new(Serving { tls, trust: view })),
            Err(e) => tracing::warn!("renewing the control plane's serving certificate: {e:#}"),
        }
    }
}
