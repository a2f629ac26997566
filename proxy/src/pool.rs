//! Connections between sidecars: mTLS (TLS 1.3, ALPN h2) to a peer's inbound listener,
//! verifying that its certificate names the identity the registry expects, then one HTTP/2
//! connection per (endpoint, identity) that every request to it multiplexes over. A closed
//! connection, or one made with a trust bundle that has since been replaced, is re-made.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use trustmesh_certs::SpiffeId;

use crate::body::Body;
use crate::error::ProxyError;

struct Entry {
    sender: SendRequest<Body>,
    config: Arc<rustls::ClientConfig>,
}

/// One destination: its live connection, and a lock that lets one task at a time make a new one.
#[derive(Default)]
struct Slot {
    ready: Option<Entry>,
    connecting: Arc<tokio::sync::Mutex<()>>,
}

impl Slot {
    fn usable(&self, config: &Arc<rustls::ClientConfig>) -> Option<SendRequest<Body>> {
        self.ready
            .as_ref()
            .filter(|e| !e.sender.is_closed() && Arc::ptr_eq(&e.config, config))
            .map(|e| e.sender.clone())
    }
}

/// The pool of HTTP/2 connections to other sidecars, by identity, then endpoint (two levels,
/// so that a lookup borrows its keys rather than copying them).
#[derive(Default)]
pub struct Pool {
    slots: Mutex<HashMap<SpiffeId, HashMap<String, Slot>>>,
}

impl Pool {
    /// A ready sender to `endpoint`, verified as `identity`, made with `config`. `target`
    /// names the destination in errors (made only when one happens).
    pub async fn get(
        &self,
        endpoint: &str,
        identity: &SpiffeId,
        sni: &str,
        config: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        target: &(dyn Fn() -> String + Sync),
    ) -> Result<SendRequest<Body>, ProxyError> {
        let poisoned = || ProxyError::Upstream {
            target: target(),
            reason: "connection pool poisoned".to_string(),
        };
        // The common case: a live connection, found under the map's lock without waiting.
        let connecting = {
            let mut slots = self.slots.lock().map_err(|_| poisoned())?;
            match slots.get(identity).and_then(|m| m.get(endpoint)) {
                Some(slot) => match slot.usable(&config) {
                    Some(sender) => return Ok(sender),
                    None => slot.connecting.clone(),
                },
                None => slots
                    .entry(identity.clone())
                    .or_default()
                    .entry(endpoint.to_string())
                    .or_default()
                    .connecting
                    .clone(),
            }
        };
        // One connect at a time per destination; others wait and then share it.
        let _connecting = connecting.lock().await;
        if let Some(sender) = self.peek(endpoint, identity, &config) {
            return Ok(sender);
        }
        let sender = connect(endpoint, sni, config.clone(), connect_timeout, &target()).await?;
        let mut slots = self.slots.lock().map_err(|_| poisoned())?;
        let slot = slots
            .entry(identity.clone())
            .or_default()
            .entry(endpoint.to_string())
            .or_default();
        slot.ready = Some(Entry {
            sender: sender.clone(),
            config,
        });
        Ok(sender)
    }

    fn peek(
        &self,
        endpoint: &str,
        identity: &SpiffeId,
        config: &Arc<rustls::ClientConfig>,
    ) -> Option<SendRequest<Body>> {
        let slots = self.slots.lock().ok()?;
        slots.get(identity)?.get(endpoint)?.usable(config)
    }
}

async fn connect(
    endpoint: &str,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    target: &str,
) -> Result<SendRequest<Body>, ProxyError> {
    let connect_err = |reason: String| ProxyError::Connect {
        target: target.to_string(),
        reason,
    };
    let tcp = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(endpoint))
        .await
        .map_err(|_| connect_err(format!("no TCP connection within {connect_timeout:?}")))?
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(sni.to_string())
        .map_err(|_| connect_err(format!("{sni:?} is not a valid TLS server name")))?;
    let tls = tokio::time::timeout(
        connect_timeout,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .map_err(|_| ProxyError::Tls {
        target: target.to_string(),
        reason: format!("no TLS handshake within {connect_timeout:?}"),
    })?
    .map_err(|e| ProxyError::Tls {
        target: target.to_string(),
        reason: e.to_string(),
    })?;
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err(ProxyError::Tls {
            target: target.to_string(),
            reason: "the peer did not negotiate h2; is it a trustmesh sidecar?".to_string(),
        });
    }
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .adaptive_window(true)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .handshake(TokioIo::new(tls))
        .await
        .map_err(|e| ProxyError::Upstream {
            target: target.to_string(),
            reason: format!("HTTP/2 handshake: {e}"),
        })?;
    let target = target.to_string();
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(target: "outbound", "connection to {target} ended: {e}");
        }
    });
    Ok(sender)
}
