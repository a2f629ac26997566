//! Domain: replicas that do not share a data folder (on Kubernetes without a ReadWriteMany volume)
//! still agree on the blocked identities: with `--peers HOST:PORT`, every second each replica
//! asks every address that name resolves to (a headless Service names every replica) for its
//! blocklist, `GET /v1/blocklist`, and merges it into its own data folder
//! ([`crate::domain::blocklist::merge`], last writer wins per identity, a tie is a block). A merge that
//! changes the folder is then pushed to this replica's proxies like a local block.
//!
//! Replicas call each other over mTLS as the control plane's own identity, with a client
//! certificate this process issues itself from the CA and renews at half its life or when the
//! issuing CA changes; the peer must present the control plane's identity too. Asking itself
//! (when the name also resolves to this replica) is harmless: the merge changes nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use trustmesh_certs::{control_plane_identity, CertificateAuthority, RotatingResolver};

use super::trust::{TrustStore, TrustView};
use crate::domain::blocklist::{self, FileForm, State};

/// How often each peer is asked.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// How long one exchange may take.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Lifetime of the certificate a replica presents to its peers.
const CLIENT_CERT_TTL: Duration = Duration::from_secs(3600);
/// Largest blocklist read from a peer.
const MAX_ANSWER: usize = 8 << 20;

/// How the exchange with each peer address went last, for `trustmesh status`.
#[derive(Debug, Default)]
pub struct PeerBook(Mutex<BTreeMap<SocketAddr, PeerRecord>>);

#[derive(Debug, Clone, Default)]
struct PeerRecord {
    last_ok: Option<SystemTime>,
    last_error: Option<String>,
    failing: bool,
}

impl PeerBook {
    /// Records an exchange with `addr`; returns whether it had been failing before.
    fn record(&self, addr: SocketAddr, result: &anyhow::Result<bool>) -> bool {
        let Ok(mut book) = self.0.lock() else {
            return false;
        };
        let r = book.entry(addr).or_default();
        let was_failing = r.failing;
        match result {
            Ok(_) => {
                r.last_ok = Some(SystemTime::now());
                r.failing = false;
            }
            Err(e) => {
                r.last_error = Some(format!("{e:#}"));
                r.failing = true;
            }
        }
        was_failing
    }

    /// Forgets the addresses not in `current` (replicas that are gone).
    fn keep_only(&self, current: &[SocketAddr]) {
        if let Ok(mut book) = self.0.lock() {
            book.retain(|addr, _| current.contains(addr));
        }
    }

    /// One JSON object per peer address: `address`, `ok` (the last exchange worked),
    /// `last_ok` (RFC 3339 or null), `last_error` (null when the last exchange worked).
    pub fn to_json(&self) -> Vec<serde_json::Value> {
        let Ok(book) = self.0.lock() else {
            return Vec::new();
        };
        book.iter()
            .map(|(addr, r)| {
                serde_json::json!({
                    "address": addr.to_string(),
                    "ok": !r.failing,
                    "last_ok": r.last_ok.map(trustmesh_runtime::rfc3339),
                    "last_error": if r.failing { r.last_error.clone() } else { None },
                })
            })
            .collect()
    }
}

/// The certificate this replica presents to its peers, and when to make a new one.
struct ClientCert {
    resolver: Arc<RotatingResolver>,
    signer: Option<Arc<CertificateAuthority>>,
    renew_at: SystemTime,
}

impl ClientCert {
    /// Issues a new certificate when there is none, past half its life, or when the CA that
    /// issues has changed (a rotation).
    fn refresh(&mut self, signer: &Arc<CertificateAuthority>) -> anyhow::Result<()> {
        let now = SystemTime::now();
        let same_signer = self.signer.as_ref().is_some_and(|s| Arc::ptr_eq(s, signer));
        if same_signer && now < self.renew_at {
            return Ok(());
        }
        let id = control_plane_identity(signer.trust_domain());
        let (issued, key) = signer.issue(&id, &[], &[], CLIENT_CERT_TTL, now)?;
        self.resolver.set(issued.chain, &key)?;
        self.signer = Some(signer.clone());
        self.renew_at = now + CLIENT_CERT_TTL / 2;
        Ok(())
    }
}

/// What the exchange with peer replicas works on and reports to.
pub struct PeerSync {
    /// The trust state (the CA that issues this replica's client certificate, the bundle, the
    /// data folder whose blocklist is merged).
    pub trust: Arc<TrustStore>,
    /// How the last exchange with each peer went, for `trustmesh status`.
    pub book: Arc<PeerBook>,
    /// `trustmesh_cp_peer_sync_total{result}`: exchanges by result.
    pub counter: prometheus::IntCounterVec,
}

/// Exchanges blocklists with `peers` until the process ends.
pub async fn run(sync: PeerSync, peers: Vec<String>) {
    let state = Arc::new(sync);
    let mut cert = ClientCert {
        resolver: Arc::new(RotatingResolver::new()),
        signer: None,
        renew_at: SystemTime::UNIX_EPOCH,
    };
    // Exchanges under way, kept across rounds, and the addresses they are with.
    let mut round = tokio::task::JoinSet::new();
    let mut in_flight = std::collections::HashSet::new();
    let mut tls_for: Option<(Arc<TrustView>, Arc<rustls::ClientConfig>)> = None;
    loop {
        let view = state.trust.current();
        if let Err(e) = cert.refresh(&view.signer) {
            tracing::warn!("peers: cannot make this replica's client certificate: {e:#}");
            tokio::time::sleep(INTERVAL).await;
            continue;
        }
        // The TLS configuration changes only with the trust state (the certificate behind
        // the shared resolver is swapped in place).
        let tls = match &tls_for {
            Some((made_for, tls)) if Arc::ptr_eq(made_for, &view) => tls.clone(),
            _ => match trustmesh_certs::tls::control_plane_client_config(
                &view.bundle,
                control_plane_identity(view.signer.trust_domain()),
                Some(cert.resolver.clone()),
            ) {
                Ok(c) => {
                    let tls = Arc::new(c);
                    tls_for = Some((view.clone(), tls.clone()));
                    tls
                }
                Err(e) => {
                    tracing::warn!("peers: TLS configuration: {e}");
                    tokio::time::sleep(INTERVAL).await;
                    continue;
                }
            },
        };
        // Every address the peers resolve to this round is asked at once, and a round lasts
        // INTERVAL whatever happens: an address that does not answer (a node that hangs) is
        // left to time out on its own and holds up none of the others. Addresses no longer
        // resolved (replicas gone) are forgotten.
        let mut current = Vec::new();
        for peer in &peers {
            let (host, addrs) = match resolve(peer).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(peer = %peer, "peers: {e:#}");
                    state.counter.with_label_values(&["error"]).inc();
                    continue;
                }
            };
            for addr in addrs {
                current.push(addr);
                if !in_flight.insert(addr) {
                    continue;
                }
                let (state, tls, host) = (state.clone(), tls.clone(), host.clone());
                round.spawn(async move { (addr, exchange(&state, tls, addr, &host).await) });
            }
        }
        state.book.keep_only(&current);
        let next_round = tokio::time::sleep(INTERVAL);
        tokio::pin!(next_round);
        loop {
            let done = tokio::select! {
                () = &mut next_round => break,
                done = round.join_next(), if !round.is_empty() => done,
            };
            let Some(Ok((addr, result))) = done else {
                // A task that did not finish (it cannot panic, but be sure): nothing is under
                // way once the set is empty.
                if round.is_empty() {
                    in_flight.clear();
                }
                continue;
            };
            in_flight.remove(&addr);
            // Log changes only: the first failure, and the first success after failures.
            let was_failing = state.book.record(addr, &result);
            match result {
                Ok(changed) => {
                    let label = if changed { "changed" } else { "unchanged" };
                    state.counter.with_label_values(&[label]).inc();
                    if was_failing {
                        tracing::info!(peer = %addr, "peers: reached the peer again");
                    }
                }
                Err(e) => {
                    state.counter.with_label_values(&["error"]).inc();
                    if !was_failing {
                        tracing::warn!(peer = %addr, "peers: cannot exchange blocklists: {e:#}");
                    }
                }
            }
        }
    }
}

/// The addresses `peer` (`HOST:PORT`) names now, and the host part for TLS.
async fn resolve(peer: &str) -> anyhow::Result<(String, Vec<SocketAddr>)> {
    let (host, _) = peer
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("{peer:?} is not HOST:PORT"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(peer).await?.collect();
    Ok((host, addrs))
}

/// Asks `addr` for its blocklist and merges it; whether the data folder changed.
async fn exchange(
    state: &PeerSync,
    tls: Arc<rustls::ClientConfig>,
    addr: SocketAddr,
    host: &str,
) -> anyhow::Result<bool> {
    let target = trustmesh_runtime::client::Target::at(addr, host);
    let (status, body) =
        trustmesh_runtime::client::get(tls, &target, "/v1/blocklist", MAX_ANSWER, TIMEOUT).await?;
    if !status.is_success() {
        anyhow::bail!(
            "GET /v1/blocklist answered {status}: {}",
            String::from_utf8_lossy(&body).trim()
        );
    }
    let form: FileForm = serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("the blocklist is not valid JSON: {e}"))?;
    let theirs = State::from_form(form)?;
    let dir = state.trust.dir();
    let now = SystemTime::now();
    // Most rounds change nothing: find that out without taking the folder's lock.
    let changed = blocklist::read_state(dir)?.merge(&theirs, now) && {
        let changed = blocklist::merge(dir, &theirs)?;
        if changed {
            tracing::info!(peer = %addr, "peers: took blocklist changes from a peer");
        }
        changed
    };
    // Events dated in the future were left out of the merge; the exchange counts as failed
    // (logged, `trustmesh status`, `trustmesh_cp_peer_sync_total{result="error"}`) so that a
    // replica with a bad clock is seen. The rest of its list was taken in.
    let future = theirs.future_events(now);
    if !future.is_empty() {
        let named: Vec<String> = future
            .iter()
            .map(|(id, at)| format!("{id} at {at}"))
            .collect();
        anyhow::bail!(
            "refused {} blocklist event(s) dated more than {}s in the future (check the \
             peer's clock): {}",
            future.len(),
            blocklist::MAX_CLOCK_SKEW.as_secs(),
            named.join(", ")
        );
    }
    Ok(changed)
}

/// `--peers`: each a `HOST:PORT` (a headless Service's name resolves to every replica).
pub fn parse_peer(s: &str) -> Result<String, String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    port.parse::<u16>()
        .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
    Ok(s.to_string())
}
