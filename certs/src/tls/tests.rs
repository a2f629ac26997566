use std::io::{Read, Write};
use std::time::SystemTime;

use rustls::{CertificateError, Error, ProtocolVersion};

use super::*;
use crate::testing::{ca, handshake, id, other_key, resolver_for, td, Failed, HOUR};
use crate::verify::{cert_error, peer_identity};
use crate::{identity, CertError, CertificateAuthority};

const CLIENT: &str = "spiffe://cluster.local/ns/prod/sa/frontend";
const SERVER: &str = "spiffe://cluster.local/ns/prod/sa/orders";

struct Mesh {
    ca: CertificateAuthority,
    client: Arc<RotatingResolver>,
    server: Arc<RotatingResolver>,
}

fn mesh() -> Mesh {
    let ca = ca();
    let now = SystemTime::now();
    Mesh {
        client: resolver_for(&ca, &id(CLIENT), now, HOUR),
        server: resolver_for(&ca, &id(SERVER), now, HOUR),
        ca,
    }
}

fn server_cfg(ca: &CertificateAuthority, resolver: Arc<RotatingResolver>) -> Arc<ServerConfig> {
    Arc::new(sidecar_server_config(&ca.trust_bundle(), &td(), resolver).unwrap())
}

fn client_cfg(
    ca: &CertificateAuthority,
    resolver: Arc<RotatingResolver>,
    expected: &str,
) -> Arc<ClientConfig> {
    Arc::new(sidecar_client_config(&ca.trust_bundle(), resolver, id(expected)).unwrap())
}

fn serial(certs: Option<&[CertificateDer<'_>]>) -> String {
    identity::cert_serial_hex(&certs.unwrap()[0]).unwrap()
}

#[test]
fn mutual_tls_succeeds_over_tls13_and_names_the_client() {
    let m = mesh();
    let (client, server) = handshake(
        client_cfg(&m.ca, m.client.clone(), SERVER),
        server_cfg(&m.ca, m.server.clone()),
    )
    .unwrap();
    assert_eq!(client.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(server.protocol_version(), Some(ProtocolVersion::TLSv1_3));
    assert_eq!(peer_identity(server.peer_certificates()), Some(id(CLIENT)));
    assert_eq!(peer_identity(client.peer_certificates()), Some(id(SERVER)));
    assert_eq!(client.alpn_protocol(), Some(&b"h2"[..]));
}

#[test]
fn client_refuses_a_server_with_another_identity() {
    let m = mesh();
    let impostor = resolver_for(
        &m.ca,
        &id("spiffe://cluster.local/ns/prod/sa/payments"),
        SystemTime::now(),
        HOUR,
    );
    let err = match handshake(
        client_cfg(&m.ca, m.client.clone(), SERVER),
        server_cfg(&m.ca, impostor),
    ) {
        Err(Failed::Client(e)) => e,
        other => panic!("expected the client to refuse, got {other:?}"),
    };
    match cert_error(&err) {
        Some(CertError::PeerIdentityMismatch {
            expected,
            presented,
        }) => {
            assert_eq!(expected, &id(SERVER));
            assert_eq!(
                presented.as_str(),
                "spiffe://cluster.local/ns/prod/sa/payments"
            );
        }
        other => panic!("expected an identity mismatch, got {other:?} from {err}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(SERVER) && msg.contains("payments"), "{msg}");
}

#[test]
fn client_refuses_a_server_from_another_ca() {
    let m = mesh();
    let stranger = ca();
    let server = resolver_for(&stranger, &id(SERVER), SystemTime::now(), HOUR);
    let r = handshake(
        client_cfg(&m.ca, m.client.clone(), SERVER),
        server_cfg(&stranger, server),
    );
    assert!(
        matches!(
            r,
            Err(Failed::Client(Error::InvalidCertificate(
                // Both roots have the same subject, so webpki finds an anchor and its signature fails.
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            )))
        ),
        "{r:?}"
    );
}

#[test]
fn server_refuses_a_client_without_certificate() {
    let m = mesh();
    let empty = Arc::new(RotatingResolver::new());
    assert!(matches!(
        handshake(
            client_cfg(&m.ca, empty, SERVER),
            server_cfg(&m.ca, m.server.clone())
        ),
        Err(Failed::Server(Error::NoCertificatesPresented))
    ));
}

#[test]
fn server_refuses_a_client_from_another_ca() {
    let m = mesh();
    let stranger = ca();
    let client = resolver_for(&stranger, &id(CLIENT), SystemTime::now(), HOUR);
    // The client trusts both roots, so only the server's check can fail.
    let bundle = m.ca.trust_bundle().merge(&stranger.trust_bundle());
    let client_cfg = Arc::new(sidecar_client_config(&bundle, client, id(SERVER)).unwrap());
    let r = handshake(client_cfg, server_cfg(&m.ca, m.server.clone()));
    assert!(
        matches!(
            r,
            Err(Failed::Server(Error::InvalidCertificate(
                CertificateError::UnknownIssuer | CertificateError::BadSignature
            )))
        ),
        "{r:?}"
    );
}

#[test]
fn server_refuses_an_expired_client_certificate() {
    let m = mesh();
    let two_hours_ago = SystemTime::now() - 2 * HOUR;
    let expired = resolver_for(&m.ca, &id(CLIENT), two_hours_ago, HOUR);
    let err = handshake(
        client_cfg(&m.ca, expired, SERVER),
        server_cfg(&m.ca, m.server.clone()),
    );
    assert!(
        matches!(
            err,
            Err(Failed::Server(Error::InvalidCertificate(
                CertificateError::Expired | CertificateError::ExpiredContext { .. }
            )))
        ),
        "{err:?}"
    );
}

#[test]
fn server_refuses_a_client_of_another_trust_domain() {
    let m = mesh();
    let foreign_td = TrustDomain::parse("partner.example").unwrap();
    let foreign = CertificateAuthority::generate(&foreign_td, SystemTime::now()).unwrap();
    let client = resolver_for(
        &foreign,
        &id("spiffe://partner.example/ns/prod/sa/frontend"),
        SystemTime::now(),
        HOUR,
    );
    // Even with the foreign root in its bundle, the server accepts only its own trust domain.
    let bundle = m.ca.trust_bundle().merge(&foreign.trust_bundle());
    let server = Arc::new(sidecar_server_config(&bundle, &td(), m.server.clone()).unwrap());
    let client_cfg = Arc::new(sidecar_client_config(&bundle, client, id(SERVER)).unwrap());
    let err = match handshake(client_cfg, server) {
        Err(Failed::Server(e)) => e,
        other => panic!("expected the server to refuse, got {other:?}"),
    };
    assert!(
        matches!(
            cert_error(&err),
            Some(CertError::TrustDomainMismatch { .. })
        ),
        "{err}"
    );
}

#[test]
fn server_without_a_certificate_aborts_the_handshake() {
    let m = mesh();
    let empty = Arc::new(RotatingResolver::new());
    assert!(matches!(
        handshake(
            client_cfg(&m.ca, m.client.clone(), SERVER),
            server_cfg(&m.ca, empty)
        ),
        Err(Failed::Server(_))
    ));
}

#[test]
fn rotated_certificate_is_presented_on_the_next_handshake_only() {
    let m = mesh();
    let client = client_cfg(&m.ca, m.client.clone(), SERVER);
    let server = server_cfg(&m.ca, m.server.clone());
    let (mut c1, mut s1) = handshake(client.clone(), server.clone()).unwrap();
    let first = serial(c1.peer_certificates());

    let (issued, key) =
        m.ca.issue(&id(SERVER), &[], &[], HOUR, SystemTime::now())
            .unwrap();
    m.server.set(issued.chain, &key).unwrap();

    let (c2, _s2) = handshake(client, server).unwrap();
    let second = serial(c2.peer_certificates());
    assert_eq!(second, issued.serial_hex);
    assert_ne!(first, second);

    // The connection made before the rotation still carries data with its old certificate.
    assert_eq!(serial(c1.peer_certificates()), first);
    c1.writer().write_all(b"ping").unwrap();
    let mut wire = Vec::new();
    while c1.wants_write() {
        c1.write_tls(&mut wire).unwrap();
    }
    s1.read_tls(&mut &wire[..]).unwrap();
    s1.process_new_packets().unwrap();
    let mut got = [0u8; 4];
    s1.reader().read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
}

#[test]
fn resolver_refuses_a_key_that_does_not_match_and_keeps_the_old_one() {
    let m = mesh();
    let before = m.server.current().unwrap();
    let (issued, _key) =
        m.ca.issue(&id(SERVER), &[], &[], HOUR, SystemTime::now())
            .unwrap();
    assert!(matches!(
        m.server.set(issued.chain, &other_key()),
        Err(CertError::Rustls(_))
    ));
    assert_eq!(
        m.server.set(Vec::new(), &other_key()),
        Err(CertError::EmptyChain)
    );
    assert!(Arc::ptr_eq(&before, &m.server.current().unwrap()));
    assert!(m.server.has_cert());
    assert!(!RotatingResolver::new().has_cert());
    let dbg = format!("{:?}", m.server);
    assert!(dbg.contains(SERVER), "{dbg}");
}

fn control_plane(ca: &CertificateAuthority) -> Arc<ServerConfig> {
    let (issued, key) = ca
        .issue(
            &crate::control_plane_identity(&td()),
            &["localhost".to_string()],
            &["127.0.0.1".parse().unwrap()],
            HOUR,
            SystemTime::now(),
        )
        .unwrap();
    Arc::new(control_plane_server_config(&ca.trust_bundle(), &td(), issued.chain, &key).unwrap())
}

#[test]
fn control_plane_accepts_bootstrap_clients_without_certificate() {
    let ca = ca();
    let client = control_plane_client_config(
        &ca.trust_bundle(),
        crate::control_plane_identity(&td()),
        None,
    )
    .unwrap();
    let (c, s) = handshake(Arc::new(client), control_plane(&ca)).unwrap();
    assert_eq!(s.peer_certificates(), None);
    assert_eq!(peer_identity(s.peer_certificates()), None);
    assert_eq!(c.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(c.protocol_version(), Some(ProtocolVersion::TLSv1_3));
}

#[test]
fn control_plane_names_clients_that_present_a_certificate() {
    let m = mesh();
    let client = control_plane_client_config(
        &m.ca.trust_bundle(),
        crate::control_plane_identity(&td()),
        Some(m.client.clone()),
    )
    .unwrap();
    let (_, s) = handshake(Arc::new(client), control_plane(&m.ca)).unwrap();
    assert_eq!(peer_identity(s.peer_certificates()), Some(id(CLIENT)));
}

#[test]
fn control_plane_still_refuses_bad_client_certificates() {
    let m = mesh();
    let expired = resolver_for(&m.ca, &id(CLIENT), SystemTime::now() - 2 * HOUR, HOUR);
    let client = control_plane_client_config(
        &m.ca.trust_bundle(),
        crate::control_plane_identity(&td()),
        Some(expired),
    )
    .unwrap();
    assert!(matches!(
        handshake(Arc::new(client), control_plane(&m.ca)),
        Err(Failed::Server(Error::InvalidCertificate(_)))
    ));
}

#[test]
fn control_plane_client_refuses_a_workload_posing_as_control_plane() {
    let m = mesh();
    let client = control_plane_client_config(
        &m.ca.trust_bundle(),
        crate::control_plane_identity(&td()),
        None,
    )
    .unwrap();
    let (issued, key) =
        m.ca.issue(&id(SERVER), &[], &[], HOUR, SystemTime::now())
            .unwrap();
    let server =
        control_plane_server_config(&m.ca.trust_bundle(), &td(), issued.chain, &key).unwrap();
    let err = match handshake(Arc::new(client), Arc::new(server)) {
        Err(Failed::Client(e)) => e,
        other => panic!("expected the client to refuse, got {other:?}"),
    };
    assert!(matches!(
        cert_error(&err),
        Some(CertError::PeerIdentityMismatch { .. })
    ));
}

#[test]
fn configs_are_tls13_only() {
    let m = mesh();
    let srv = sidecar_server_config(&m.ca.trust_bundle(), &td(), m.server.clone()).unwrap();
    assert_eq!(
        srv.alpn_protocols,
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let cfg = sidecar_client_config(&m.ca.trust_bundle(), m.client.clone(), id(SERVER)).unwrap();
    // A TLS 1.2-only server cannot talk to it.
    let tls12_server = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(m.server.clone());
    assert!(handshake(Arc::new(cfg), Arc::new(tls12_server)).is_err());
}

#[test]
fn configs_never_resume_sessions() {
    let m = mesh();
    let srv = sidecar_server_config(&m.ca.trust_bundle(), &td(), m.server.clone()).unwrap();
    assert_eq!(srv.send_tls13_tickets, 0);
    assert!(!srv.session_storage.can_cache());
    let client = sidecar_client_config(&m.ca.trust_bundle(), m.client.clone(), id(SERVER)).unwrap();
    let (c1, _) = handshake(Arc::new(client.clone()), Arc::new(srv.clone())).unwrap();
    let (c2, _) = handshake(Arc::new(client), Arc::new(srv)).unwrap();
    assert_eq!(c1.handshake_kind(), Some(rustls::HandshakeKind::Full));
    assert_eq!(c2.handshake_kind(), Some(rustls::HandshakeKind::Full));
}

#[test]
fn mutual_tls_with_an_intermediate_ca_needs_only_the_root() {
    let root = ca();
    let inter = root
        .new_intermediate(SystemTime::now(), std::time::Duration::from_secs(86400))
        .unwrap();
    let now = SystemTime::now();
    let client = resolver_for(&inter, &id(CLIENT), now, HOUR);
    let server = resolver_for(&inter, &id(SERVER), now, HOUR);
    // Both sides trust the root alone; the intermediate travels in each chain.
    let bundle = root.trust_bundle();
    let (c, s) = handshake(
        Arc::new(sidecar_client_config(&bundle, client, id(SERVER)).unwrap()),
        Arc::new(sidecar_server_config(&bundle, &td(), server).unwrap()),
    )
    .unwrap();
    assert_eq!(c.peer_certificates().unwrap().len(), 2);
    assert_eq!(s.peer_certificates().unwrap().len(), 2);
    assert_eq!(peer_identity(s.peer_certificates()), Some(id(CLIENT)));
}
