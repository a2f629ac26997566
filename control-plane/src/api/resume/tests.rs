use std::time::Duration;

use trustmesh_certs::{CertificateAuthority, SpiffeId};

use super::*;

fn secs(t: SystemTime) -> UnixTime {
    UnixTime::since_unix_epoch(t.duration_since(SystemTime::UNIX_EPOCH).unwrap())
}

fn tls_for(ca: &CertificateAuthority, dir: &std::path::Path) -> Tls {
    let td = ca.trust_domain().clone();
    let id = trustmesh_certs::control_plane_identity(&td);
    let (issued, key) = ca
        .issue(&id, &[], &[], Duration::from_secs(3600), SystemTime::now())
        .unwrap();
    let bundle = ca.trust_bundle();
    let config =
        trustmesh_certs::tls::control_plane_server_config(&bundle, &td, issued.chain, &key)
            .unwrap();
    let tickets = Arc::new(TicketKeys::load(dir, SystemTime::now()).unwrap());
    Tls::new(config, &bundle, &td, tickets).unwrap()
}

#[test]
fn a_resumed_chain_is_checked_as_a_full_handshake_would_and_refused_once_expired() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let td = trustmesh_certs::TrustDomain::parse("cluster.local").unwrap();
    let ca = CertificateAuthority::generate(&td, now).unwrap();
    let tls = tls_for(&ca, dir.path());
    let id = SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap();
    let (cert, _key) = ca
        .issue(&id, &[], &[], Duration::from_secs(600), now)
        .unwrap();
    let chain = cert.chain;
    assert!(
        tls.check_resumed(None, secs(now)).is_ok(),
        "anonymous stays anonymous"
    );
    assert!(tls.check_resumed(Some(&chain), secs(now)).is_ok());
    // Again (remembered), still good while it holds...
    assert!(tls
        .check_resumed(Some(&chain), secs(now + Duration::from_secs(60)))
        .is_ok());
    // ...and refused once past its NotAfter, remembered or not.
    let late = secs(now + Duration::from_secs(3600));
    assert!(tls.check_resumed(Some(&chain), late).is_err());
    let fresh = tls_for(&ca, dir.path());
    assert!(fresh.check_resumed(Some(&chain), late).is_err());

    // A chain of another CA (a bundle that no longer trusts it, after a rotation) is refused.
    let other = CertificateAuthority::generate(&td, now).unwrap();
    let (foreign, _key) = other
        .issue(&id, &[], &[], Duration::from_secs(600), now)
        .unwrap();
    assert!(tls.check_resumed(Some(&foreign.chain), secs(now)).is_err());
}
