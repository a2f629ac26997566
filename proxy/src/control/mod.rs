//! The client of the control-plane API: HTTPS/1.1, verifying the control plane's SPIFFE ID
//! against the trust bundle and presenting our certificate once we have one. Used for
//! bootstrap, renewal and the snapshot long poll.
//!
//! Calls with our certificate go on one kept connection per replica ([`kept`]): the watch's
//! polls follow each other on it, so a push costs the control plane one answer per sidecar,
//! no handshake. It is kept only while the TLS configuration it was made with is the one in
//! force (a renewed certificate or a new bundle makes a new one: the next call handshakes
//! again and presents the certificate in force), and dropped on `Connection: close` (a
//! draining control plane) or a failure; the control plane itself refuses a kept connection
//! past its certificate's NotAfter and closes them all on a trust change.
//!
//! Several control planes (`--control-plane` repeated or comma-separated: replicas on one data
//! folder) are tried in turn: a call goes to the one that answered last, and when it cannot be
//! reached, fails, answers 5xx or does not answer in time, to the next one, within the same
//! call. A host name with several addresses is tried address by address as well.
//!
//! A call that carries a bearer token presents no client certificate: the token is its
//! credential, and a certificate that has expired would make the control plane refuse the
//! handshake before it reads the token.
//!
//! New connections with our certificate resume TLS 1.3 sessions (the control plane sends
//! tickets, and keeps their key across its restarts), so the whole fleet's reconnect after a
//! control-plane restart costs no signatures. A resumed
//! session carries the certificate of the handshake it came from, so the sessions are
//! forgotten whenever our certificate or the trust bundle changes: the next call then
//! handshakes in full and presents the certificate in force.
//!
//! A call that failed because no replica was listening (every connect refused) is
//! [`NotListening`], so that the watch can come back soon after a control-plane restart
//! without pressing on one that is up and struggling.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Uri};
use rustls::sign::CertifiedKey;
use trustmesh_certs::{control_plane_identity, RotatingResolver, TrustBundle, TrustDomain};
use trustmesh_runtime::client;

/// The largest response accepted from the control plane.
const MAX_RESPONSE: usize = 32 * 1024 * 1024;
/// TLS sessions kept for resumption (a watch and a renewal may run side by side, per replica).
const SESSIONS: usize = 8;

/// Every replica refused the connection: nothing listens there now (a control plane that is
/// restarting, or not started yet). Refused connects cost the control plane nothing.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotListening(String);

/// The TLS configuration that presents our certificate, and the certificate it was made for:
/// its session store holds only sessions of that certificate.
struct WithCert {
    config: Arc<rustls::ClientConfig>,
    cert: Option<Arc<CertifiedKey>>,
}

/// One control-plane replica.
struct Endpoint {
    uri: Uri,
    host: String,
    port: u16,
    /// The connection kept for calls with our certificate.
    kept: kept::Kept,
}

/// What the control-plane client needs from the flags, made once at start-up: the replicas
/// (`--control-plane`) and the trust domain whose control-plane identity they must prove (that
/// of `--identity`).
#[derive(Debug, Clone)]
pub struct Config {
    /// The replicas, `https://host:port` each, tried in this order.
    pub control_plane: Vec<Uri>,
    /// Our trust domain: each replica must present its control-plane SPIFFE ID.
    pub trust_domain: TrustDomain,
}

/// The control-plane replicas and the TLS configuration to reach them.
pub struct ControlClient {
    endpoints: Vec<Endpoint>,
    /// The replica that answered last; calls start there.
    preferred: AtomicUsize,
    tls: ArcSwap<WithCert>,
    /// The same without a client certificate, for calls with a bearer token.
    tls_anonymous: ArcSwap<rustls::ClientConfig>,
    resolver: Arc<RotatingResolver>,
    /// The bundle in force and our trust domain, to make `tls` again when the certificate
    /// changes.
    trust: ArcSwap<(TrustBundle, TrustDomain)>,
}

/// One answer from the control plane: its status and whole body.
pub use trustmesh_runtime::client::Answer;

impl ControlClient {
    /// A client for the replicas of `config` that trusts `bundle` and presents the
    /// certificate `resolver` holds (once it holds one); fails on a URL that is not
    /// `https://` or has no host, and on no URL at all.
    pub fn new(
        config: &Config,
        bundle: &TrustBundle,
        resolver: Arc<RotatingResolver>,
    ) -> anyhow::Result<Self> {
        let td = &config.trust_domain;
        let mut endpoints = Vec::with_capacity(config.control_plane.len());
        for uri in &config.control_plane {
            if uri.scheme_str() != Some("https") {
                anyhow::bail!("--control-plane {uri} must be an https:// URL");
            }
            let host = uri
                .host()
                .ok_or_else(|| anyhow::anyhow!("--control-plane {uri} has no host"))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            endpoints.push(Endpoint {
                uri: uri.clone(),
                host,
                port: uri.port_u16().unwrap_or(15012),
                kept: kept::Kept::default(),
            });
        }
        if endpoints.is_empty() {
            anyhow::bail!("--control-plane is needed");
        }
        let tls = with_cert(bundle, td, &resolver)?;
        let tls_anonymous = cp_client_config(bundle, td, None)?;
        Ok(Self {
            endpoints,
            preferred: AtomicUsize::new(0),
            tls: ArcSwap::from_pointee(tls),
            tls_anonymous: ArcSwap::from_pointee(tls_anonymous),
            resolver,
            trust: ArcSwap::from_pointee((bundle.clone(), td.clone())),
        })
    }

    /// Trusts a new bundle (pushed in a snapshot) from now on; the sessions of the old one are
    /// forgotten.
    pub fn set_bundle(&self, bundle: &TrustBundle, td: &TrustDomain) {
        match (
            with_cert(bundle, td, &self.resolver),
            cp_client_config(bundle, td, None),
        ) {
            (Ok(c), Ok(anonymous)) => {
                self.trust.store(Arc::new((bundle.clone(), td.clone())));
                self.tls.store(Arc::new(c));
                self.tls_anonymous.store(Arc::new(anonymous));
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("ignoring an unusable trust bundle: {e}")
            }
        }
    }

    /// The configuration that presents the certificate in force: the one made for it, or,
    /// when the certificate changed since (a renewal, a new bootstrap), a new one with an empty
    /// session store.
    fn tls_with_cert(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let current = self.resolver.current();
        let tls = self.tls.load();
        let same = match (&tls.cert, &current) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if same {
            return Ok(tls.config.clone());
        }
        let trust = self.trust.load();
        let fresh = Arc::new(with_cert(&trust.0, &trust.1, &self.resolver)?);
        self.tls.store(fresh.clone());
        Ok(fresh.config.clone())
    }

    /// Makes one request, to the replica that answered last and then to each other one in
    /// turn; `timeout` bounds the exchange with each. A 5xx answer moves on to the next
    /// replica too, and is returned when it is the last one's. With a `bearer`, no client
    /// certificate is presented. When every replica refused the connection the error is
    /// [`NotListening`].
    pub async fn call(
        &self,
        method: Method,
        path_and_query: &str,
        bearer: Option<&str>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> anyhow::Result<Answer> {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut failures = Vec::new();
        let mut refused = 0;
        for i in 0..n {
            let at = (first + i) % n;
            let ep = &self.endpoints[at];
            let exchange = self.call_one(
                ep,
                method.clone(),
                path_and_query,
                bearer,
                body.clone(),
                timeout,
            );
            match exchange.await {
                Ok(answer) if !answer.status.is_server_error() || i + 1 == n => {
                    if at != first {
                        tracing::info!(control_plane = %ep.uri, "failed over to this control plane");
                    }
                    self.preferred.store(at, Ordering::Relaxed);
                    return Ok(answer);
                }
                Ok(answer) => failures.push(format!("{}: answered {}", ep.uri, answer.status)),
                Err(e) => {
                    refused += usize::from(connect_refused(&e));
                    failures.push(format!("{e:#}"));
                }
            }
        }
        if refused == n {
            return Err(NotListening(failures.join("; ")).into());
        }
        anyhow::bail!("{}", failures.join("; "))
    }

    async fn call_one(
        &self,
        ep: &Endpoint,
        method: Method,
        path_and_query: &str,
        bearer: Option<&str>,
        body: Option<Bytes>,
        timeout: Duration,
    ) -> anyhow::Result<Answer> {
        let target = client::Target::named(&ep.host, ep.port);
        let call = client::Call {
            method,
            path: path_and_query,
            bearer,
            json: body,
        };
        // A call with a token presents no certificate, on a connection of its own; one with
        // our certificate goes on the kept connection (see the module docs).
        let answer = match bearer {
            Some(_) => {
                let config = self.tls_anonymous.load_full();
                client::send(config, &target, call, MAX_RESPONSE, timeout).await
            }
            None => {
                let config = self.tls_with_cert()?;
                tokio::time::timeout(timeout, ep.kept.send(config, &target, call, MAX_RESPONSE))
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {timeout:?}")))
            }
        };
        answer.with_context(|| format!("the control plane at {}", ep.uri))
    }
}

/// Whether `e` is a refused TCP connect (nothing listening at the address).
fn connect_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
    })
}

/// TLS to the control plane presenting what `resolver` holds now, resuming the sessions of
/// that certificate only (see the module docs).
fn with_cert(
    bundle: &TrustBundle,
    td: &TrustDomain,
    resolver: &Arc<RotatingResolver>,
) -> anyhow::Result<WithCert> {
    let cert = resolver.current();
    let mut config = cp_client_config(bundle, td, Some(resolver))?;
    config.resumption = rustls::client::Resumption::in_memory_sessions(SESSIONS);
    Ok(WithCert {
        config: Arc::new(config),
        cert,
    })
}

/// TLS to the control plane, with session resumption off (calls with a token: they present
/// no certificate and are rare).
fn cp_client_config(
    bundle: &TrustBundle,
    td: &TrustDomain,
    resolver: Option<&Arc<RotatingResolver>>,
) -> anyhow::Result<rustls::ClientConfig> {
    let mut c = trustmesh_certs::tls::control_plane_client_config(
        bundle,
        control_plane_identity(td),
        resolver.cloned(),
    )?;
    c.resumption = rustls::client::Resumption::disabled();
    Ok(c)
}

/// The error message in a control-plane JSON error body, or the body itself.
pub fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(200).collect())
}

mod kept;
#[cfg(test)]
mod tests;
