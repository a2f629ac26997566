//! Connections between sidecars: mTLS (TLS 1.3, ALPN h2) to a peer's inbound listener,
//! verifying that its certificate names the identity the registry expects, then one HTTP/2
//! connection per (endpoint, identity) that every request to it multiplexes over. A closed
//! connection, or one made with a trust bundle that has since been replaced, is re-made.
//! HTTP/1.1 apps' requests take keep-alive HTTP/1.1 connections instead ([`http1`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use trustmesh_certs::SpiffeId;
use trustmesh_policies::ServiceEntry;

use crate::layers::body::Body;
use crate::layers::rescue::ProxyError;
use hash::FastMap;

pub mod hash;
pub mod http1;

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
pub struct Pool {
    slots: Mutex<FastMap<SpiffeId, FastMap<String, Slot>>>,
    /// `trustmesh_upstream_connections_total`: connections made (each a full mTLS handshake).
    connects: prometheus::IntCounter,
}

impl Pool {
    /// An empty pool; every connection it makes counts in `connects`.
    pub fn new(connects: prometheus::IntCounter) -> Self {
        Self {
            slots: Mutex::default(),
            connects,
        }
    }

    /// A ready sender to `endpoint` of `service`, verified as `identity`, made with
    /// `config`. `target` names the destination in errors (made only when one happens); the
    /// TLS server name, only when a connection is made.
    pub async fn get(
        &self,
        endpoint: &str,
        identity: &SpiffeId,
        service: &ServiceEntry,
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
            if let Some(sender) = slots
                .get(identity)
                .and_then(|m| m.get(endpoint))
                .and_then(|slot| slot.usable(&config))
            {
                return Ok(sender);
            }
            // About to connect: a good time to forget destinations that are gone (pods come
            // and go with new addresses), so that the pool does not grow without end.
            prune(&mut slots);
            match slots.get(identity).and_then(|m| m.get(endpoint)) {
                Some(slot) => slot.connecting.clone(),
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
        let sni = service.fqdn();
        // Boxed: the handshake's future is large, and inline it would be part of (and copied
        // with) every request's future, though it runs once per connection.
        let sender = Box::pin(connect(
            endpoint,
            &sni,
            config.clone(),
            connect_timeout,
            &target(),
        ))
        .await?;
        self.connects.inc();
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

    /// Makes a new connection to `endpoint` whatever the pool holds (a probe of an endpoint
    /// out of rotation: a pooled connection to a frozen peer still looks open) and, once made,
    /// puts it in the pool in place of the old one.
    pub async fn reconnect(
        &self,
        endpoint: &str,
        identity: &SpiffeId,
        sni: &str,
        config: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        target: &str,
    ) -> Result<(), ProxyError> {
        let sender = connect(endpoint, sni, config.clone(), connect_timeout, target).await?;
        self.connects.inc();
        let mut slots = self.slots.lock().map_err(|_| ProxyError::Upstream {
            target: target.to_string(),
            reason: "connection pool poisoned".to_string(),
        })?;
        slots
            .entry(identity.clone())
            .or_default()
            .entry(endpoint.to_string())
            .or_default()
            .ready = Some(Entry { sender, config });
        Ok(())
    }

    /// Number of destinations held (tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots
            .lock()
            .map(|s| s.values().map(FastMap::len).sum())
            .unwrap_or(0)
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

/// Drops the destinations whose connection is closed (or was never made) and that nobody is
/// connecting to or waiting for.
fn prune(slots: &mut FastMap<SpiffeId, FastMap<String, Slot>>) {
    for by_endpoint in slots.values_mut() {
        by_endpoint.retain(|_, slot| {
            let live = slot.ready.as_ref().is_some_and(|e| !e.sender.is_closed());
            live || Arc::strong_count(&slot.connecting) > 1
        });
    }
    slots.retain(|_, by_endpoint| !by_endpoint.is_empty());
}

async fn connect(
    endpoint: &str,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    target: &str,
) -> Result<SendRequest<Body>, ProxyError> {
    let tls = dial(endpoint, sni, config, connect_timeout, target).await?;
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

/// TCP to `endpoint`, then the mTLS handshake with `config` (which names the identity the
/// peer must prove and the ALPN offered), each within `connect_timeout`; `sni` is sent.
async fn dial(
    endpoint: &str,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    target: &str,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ProxyError> {
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
    tokio::time::timeout(
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An HTTP/2 connection over an in-memory pipe; dropping the returned server task's
    /// handle (aborting it) closes the connection.
    async fn h2_pair() -> (SendRequest<Body>, tokio::task::JoinHandle<()>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn(async move {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Empty::<
                    bytes::Bytes,
                >::new()))
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(server), svc)
                .await;
        });
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(client))
            .await
            .unwrap();
        tokio::spawn(conn);
        (sender, server)
    }

    fn config() -> Arc<rustls::ClientConfig> {
        let td = trustmesh_certs::TrustDomain::parse("cluster.local").unwrap();
        let ca = trustmesh_certs::CertificateAuthority::generate(&td, std::time::SystemTime::now())
            .unwrap();
        let bundle = trustmesh_certs::TrustBundle::from_pem(ca.cert_pem()).unwrap();
        let id = SpiffeId::parse("spiffe://cluster.local/ns/t/sa/x").unwrap();
        Arc::new(
            trustmesh_certs::tls::sidecar_client_config(
                &bundle,
                Arc::new(trustmesh_certs::RotatingResolver::new()),
                id,
            )
            .unwrap(),
        )
    }

    #[tokio::test]
    async fn prune_forgets_closed_destinations_and_keeps_live_and_pending_ones() {
        let pool = Pool::new(prometheus::IntCounter::new("connects", "connects").unwrap());
        let config = config();
        let id = |n: &str| SpiffeId::parse(&format!("spiffe://cluster.local/ns/t/sa/{n}")).unwrap();
        let (live, _live_server) = h2_pair().await;
        let (gone, gone_server) = h2_pair().await;
        let waiting;
        {
            let mut slots = pool.slots.lock().unwrap();
            let mut put = |who: &str, endpoint: &str, sender: Option<SendRequest<Body>>| {
                let slot = slots
                    .entry(id(who))
                    .or_default()
                    .entry(endpoint.to_string())
                    .or_default();
                slot.ready = sender.map(|sender| Entry {
                    sender,
                    config: config.clone(),
                });
                slot.connecting.clone()
            };
            put("live", "10.0.0.1:15006", Some(live));
            put("gone", "10.0.0.2:15006", Some(gone));
            put("failed", "10.0.0.3:15006", None);
            // Someone is connecting to this one right now.
            waiting = put("pending", "10.0.0.4:15006", None);
        }
        gone_server.abort();
        for _ in 0..100 {
            let closed = pool.slots.lock().unwrap()[&id("gone")]["10.0.0.2:15006"]
                .ready
                .as_ref()
                .is_some_and(|e| e.sender.is_closed());
            if closed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(pool.len(), 4);
        prune(&mut pool.slots.lock().unwrap());
        let slots = pool.slots.lock().unwrap();
        let mut left: Vec<&str> = slots
            .values()
            .flat_map(|m| m.keys().map(String::as_str))
            .collect();
        left.sort();
        assert_eq!(left, ["10.0.0.1:15006", "10.0.0.4:15006"]);
        drop(waiting);
    }
}
