//! API layer: what the listener's handshakes use ([`Tls`]), and the check of a resumed TLS
//! session. A resumed session carries the client certificate of the full handshake it came
//! from (possibly before a restart, with [`super::tickets`]), and rustls does not check it
//! again; [`Tls::check_resumed`] does, as that handshake's verifier would now: the chain to the
//! bundle in force, validity at this moment, the SPIFFE ID's trust domain. Proof of possession
//! needs no new signature: only the client that did the full handshake holds the session's
//! resumption secret (RFC 8446 §2.2, §4.6.1).
//!
//! A chain that verified once under a [`Tls`] (one trust state: a CA rotation step or a new
//! bundle makes a new one) is remembered by the SHA-256 of its bytes with its leaf's
//! NotAfter, so the fleet reconnecting after a restart costs one signature check per
//! certificate, not per connection. A remembered chain is still refused once its NotAfter
//! has passed; the blocklist is checked per request either way.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier as _;
use trustmesh_certs::verify::SpiffeClientVerifier;
use trustmesh_certs::{TrustBundle, TrustDomain};

use super::tickets::TicketKeys;

/// Session tickets sent after each handshake: one for the snapshot watch and one for a
/// renewal that may run beside it.
const TICKETS_PER_HANDSHAKE: usize = 2;
/// Most chains remembered per trust state (then forgotten all at once and learnt again):
/// about 5 MB at most, for a fleet of this many certificates.
const MAX_REMEMBERED: usize = 100_000;

/// What new handshakes use: the server configuration, and the verifier that checks the client
/// certificate of a resumed session again (both of one trust state).
pub struct Tls {
    config: Arc<rustls::ServerConfig>,
    clients: SpiffeClientVerifier,
    /// SHA-256 of a verified chain -> its leaf's NotAfter.
    verified: Mutex<HashMap<[u8; 32], SystemTime>>,
}

impl Tls {
    /// `config` (whose clients chain to `bundle`, of trust domain `td`) resuming sessions
    /// through `tickets`.
    pub fn new(
        mut config: rustls::ServerConfig,
        bundle: &TrustBundle,
        td: &TrustDomain,
        tickets: Arc<TicketKeys>,
    ) -> anyhow::Result<Self> {
        config.ticketer = tickets;
        config.send_tls13_tickets = TICKETS_PER_HANDSHAKE;
        let clients = SpiffeClientVerifier::optional(bundle, td)?;
        Ok(Self {
            config: Arc::new(config),
            clients,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// The server configuration.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// Checks the client certificate chain a resumed session carries, as a full handshake
    /// would at `now`; `Err` says why it no longer holds. A session without one passes (it
    /// is anonymous, as its first handshake was).
    pub fn check_resumed(
        &self,
        certs: Option<&[CertificateDer<'static>]>,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        let Some((leaf, intermediates)) = certs.and_then(|c| c.split_first()) else {
            return Ok(());
        };
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(now.as_secs());
        let key = chain_digest(leaf, intermediates);
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        match verified.get(&key) {
            Some(not_after) if at <= *not_after => return Ok(()),
            Some(_) => return Err(rustls::CertificateError::Expired.into()),
            None => {}
        }
        drop(verified);
        self.clients.verify_client_cert(leaf, intermediates, now)?;
        let not_after = trustmesh_certs::identity::cert_not_after(leaf)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= MAX_REMEMBERED {
            verified.clear();
        }
        verified.insert(key, not_after);
        Ok(())
    }
}

/// SHA-256 over the chain's certificates, each preceded by its length.
fn chain_digest(leaf: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> [u8; 32] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for c in std::iter::once(leaf).chain(intermediates) {
        ctx.update(&(c.len() as u64).to_be_bytes());
        ctx.update(c);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests;
