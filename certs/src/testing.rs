//! Test fixtures: a CA, leaves, and an in-memory TLS handshake between a rustls client and
//! server (bytes pumped through `write_tls`/`read_tls`, no sockets).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection};

use crate::{CertificateAuthority, PrivateKey, RotatingResolver, SpiffeId, TrustDomain};

pub(crate) const HOUR: Duration = Duration::from_secs(3600);

pub(crate) fn td() -> TrustDomain {
    TrustDomain::parse("cluster.local").unwrap()
}

pub(crate) fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

pub(crate) fn ca() -> CertificateAuthority {
    CertificateAuthority::generate(&td(), SystemTime::now()).unwrap()
}

/// A resolver holding a fresh certificate for `id` from `ca`, issued at `now`.
pub(crate) fn resolver_for(
    ca: &CertificateAuthority,
    id: &SpiffeId,
    now: SystemTime,
    ttl: Duration,
) -> Arc<RotatingResolver> {
    let (issued, key) = ca.issue(id, &[], &[], ttl, now).unwrap();
    let r = RotatingResolver::new();
    r.set(issued.chain, &key).unwrap();
    Arc::new(r)
}

/// Which side refused the handshake, and why.
#[derive(Debug)]
pub(crate) enum Failed {
    Client(rustls::Error),
    Server(rustls::Error),
}

/// Runs a whole handshake in memory. Returns both connections once neither is handshaking and
/// nothing is left to send, or the first error and the side that raised it.
pub(crate) fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
) -> Result<(ClientConnection, ServerConnection), Failed> {
    let name = ServerName::try_from("orders.production").unwrap();
    let mut c = ClientConnection::new(client, name).unwrap();
    let mut s = ServerConnection::new(server).unwrap();
    for _ in 0..32 {
        pump(&mut c, &mut s).map_err(Failed::Server)?;
        pump(&mut s, &mut c).map_err(Failed::Client)?;
        let busy = c.is_handshaking() || s.is_handshaking() || c.wants_write() || s.wants_write();
        if !busy {
            return Ok((c, s));
        }
    }
    panic!("handshake did not finish");
}

/// Moves every pending TLS record from `from` to `to` and lets `to` process them.
fn pump<A, B, DA, DB>(from: &mut A, to: &mut B) -> Result<(), rustls::Error>
where
    A: std::ops::DerefMut<Target = rustls::ConnectionCommon<DA>>,
    B: std::ops::DerefMut<Target = rustls::ConnectionCommon<DB>>,
{
    let mut buf = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut buf).unwrap();
    }
    let mut rd = &buf[..];
    while !rd.is_empty() {
        to.read_tls(&mut rd).unwrap();
        to.process_new_packets()?;
    }
    Ok(())
}

/// A key that is not the one in any certificate here.
pub(crate) fn other_key() -> PrivateKey {
    PrivateKey::generate().unwrap()
}
