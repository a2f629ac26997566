use std::time::UNIX_EPOCH;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateSigningRequestDer, UnixTime};
use rustls::server::ParsedCertificate;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use super::*;
use crate::csr::generate_csr;
use crate::testing::{ca, id, other_key, td, HOUR};

const API: &str = "spiffe://cluster.local/ns/prod/sa/api";

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn x509<'a>(der: &'a CertificateDer<'_>) -> X509Certificate<'a> {
    identity::parse(der).unwrap()
}

fn general_names<'a>(x: &'a X509Certificate<'a>) -> Vec<GeneralName<'a>> {
    x.subject_alternative_name()
        .unwrap()
        .map(|e| e.value.general_names.clone())
        .unwrap_or_default()
}

/// Verifies `leaf` against `bundle` with webpki, as a server certificate, at `now`.
fn chains_to(leaf: &CertificateDer<'_>, bundle: &TrustBundle, now: SystemTime) -> bool {
    let parsed = ParsedCertificate::try_from(leaf).unwrap();
    let now = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap());
    let algs = crate::provider::provider().signature_verification_algorithms;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &bundle.root_store(),
        &[],
        now,
        algs.all,
    )
    .is_ok()
}

fn ski(x: &X509Certificate<'_>) -> Option<Vec<u8>> {
    x.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

fn pem_csr(der: &[u8]) -> String {
    crate::pem::encode("CERTIFICATE REQUEST", der)
}

fn csr_with_sans(sans: Vec<SanType>) -> String {
    let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    params.serialize_request(&kp).unwrap().pem().unwrap()
}

#[test]
fn generated_ca_has_the_root_profile() {
    let now = SystemTime::now();
    let ca = CertificateAuthority::generate(&td(), now).unwrap();
    let x = x509(ca.cert_der());
    assert!(x.is_ca());
    let ku = x.key_usage().unwrap().unwrap();
    assert!(ku.value.key_cert_sign() && ku.value.crl_sign() && ku.value.digital_signature());
    assert!(ski(&x).is_some());
    assert_eq!(
        x.subject().to_string(),
        "O=trustmesh, CN=trustmesh root CA (cluster.local)"
    );
    assert_eq!(
        identity::uri_sans(&x).unwrap(),
        vec!["spiffe://cluster.local"]
    );
    assert!(x.raw_serial().len() >= 8);
    assert_eq!(x.validity().not_before.timestamp(), secs(now) - 60);
    assert!((x.validity().not_after.timestamp() - secs(now) - 10 * 365 * 86400).abs() <= 1);
    assert_eq!(secs(ca.not_after()), x.validity().not_after.timestamp());
    assert_eq!(ca.trust_domain(), &td());
    assert_eq!(
        ca.trust_bundle().roots(),
        std::slice::from_ref(ca.cert_der())
    );
}

#[test]
fn two_cas_get_different_serials() {
    let (a, b) = (ca(), ca());
    assert_ne!(
        x509(a.cert_der()).raw_serial(),
        x509(b.cert_der()).raw_serial()
    );
}

#[test]
fn from_pem_round_trips_and_still_signs_for_the_same_root() {
    let original = ca();
    let loaded = CertificateAuthority::from_pem(original.cert_pem(), &original.key_pem()).unwrap();
    assert_eq!(loaded.cert_der(), original.cert_der());
    assert_eq!(loaded.cert_pem(), original.cert_pem());
    assert_eq!(loaded.trust_domain(), original.trust_domain());
    assert_eq!(loaded.not_after(), original.not_after());
    assert_eq!(loaded.key_pem(), original.key_pem());

    let now = SystemTime::now();
    let (issued, _key) = loaded.issue(&id(API), &[], &[], HOUR, now).unwrap();
    assert!(chains_to(&issued.chain[0], &original.trust_bundle(), now));
    // The authority key identifier still names the original root's key.
    let leaf = x509(&issued.chain[0]);
    let aki = leaf
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                a.key_identifier.clone()
            }
            _ => None,
        })
        .unwrap();
    let root = x509(original.cert_der());
    assert_eq!(Some(aki.0.to_vec()), ski(&root));
}

#[test]
fn from_pem_refuses_a_key_of_another_ca() {
    let (a, b) = (ca(), ca());
    assert_eq!(
        CertificateAuthority::from_pem(a.cert_pem(), &b.key_pem()).unwrap_err(),
        CertError::KeyMismatch
    );
    assert_eq!(
        CertificateAuthority::from_pem(a.cert_pem(), &other_key().to_pem()).unwrap_err(),
        CertError::KeyMismatch
    );
}

#[test]
fn from_pem_refuses_a_leaf_and_garbage() {
    let ca = ca();
    let (issued, key) = ca
        .issue(&id(API), &[], &[], HOUR, SystemTime::now())
        .unwrap();
    assert!(matches!(
        CertificateAuthority::from_pem(&issued.chain_pem, &key.to_pem()),
        Err(CertError::NotCa { .. })
    ));
    assert!(matches!(
        CertificateAuthority::from_pem("garbage", &ca.key_pem()),
        Err(CertError::Pem(_))
    ));
    assert!(matches!(
        CertificateAuthority::from_pem(ca.cert_pem(), "garbage"),
        Err(CertError::Pem(_))
    ));
}

#[test]
fn sign_csr_issues_an_x509_svid() {
    let ca = ca();
    let now = SystemTime::now();
    let api = id(API);
    let req = generate_csr(&api).unwrap();
    let issued = ca.sign_csr(&req.csr_pem, &api, HOUR, now).unwrap();

    assert_eq!(issued.chain.len(), 1, "leaf only, never the root");
    assert_eq!(issued.chain_pem, crate::pem::encode_certs(&issued.chain));
    let leaf = x509(&issued.chain[0]);
    let names = general_names(&leaf);
    assert_eq!(names.len(), 1);
    assert!(matches!(names[0], GeneralName::URI(u) if u == API));
    assert_eq!(identity::identity_from_cert(&issued.chain[0]).unwrap(), api);

    let bc = leaf.basic_constraints().unwrap().unwrap();
    assert!(bc.critical && !bc.value.ca);
    let ku = leaf.key_usage().unwrap().unwrap();
    assert!(ku.critical);
    assert!(ku.value.digital_signature());
    assert!(!ku.value.key_cert_sign() && !ku.value.crl_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap();
    assert!(eku.value.server_auth && eku.value.client_auth);
    assert!(!eku.value.any);

    assert!((leaf.validity().not_before.timestamp() - (secs(now) - 60)).abs() <= 1);
    assert!((leaf.validity().not_after.timestamp() - (secs(now) + 3600)).abs() <= 1);
    assert_eq!(
        secs(issued.not_after),
        leaf.validity().not_after.timestamp()
    );
    assert_eq!(
        issued.serial_hex,
        identity::cert_serial_hex(&issued.chain[0]).unwrap()
    );
    assert!(issued.serial_hex.len() >= 16);
    assert_eq!(leaf.issuer(), x509(ca.cert_der()).subject());
    // The leaf carries the workload's key from the CSR.
    let csr = ParsedCsr::from_pem(&req.csr_pem).unwrap();
    assert_eq!(
        leaf.public_key().subject_public_key.data,
        csr.public_key.der_bytes()
    );
    assert!(chains_to(&issued.chain[0], &ca.trust_bundle(), now));
}

#[test]
fn sign_csr_refuses_a_csr_for_another_identity() {
    let ca = ca();
    let req = generate_csr(&id("spiffe://cluster.local/ns/prod/sa/admin")).unwrap();
    let err = ca
        .sign_csr(&req.csr_pem, &id(API), HOUR, SystemTime::now())
        .unwrap_err();
    assert_eq!(
        err,
        CertError::CsrIdentityMismatch {
            requested: "spiffe://cluster.local/ns/prod/sa/admin".into(),
            allowed: id(API),
        }
    );
}

#[test]
fn sign_csr_refuses_identities_of_another_trust_domain() {
    let ca = ca();
    let foreign = id("spiffe://evil.example/ns/prod/sa/api");
    let req = generate_csr(&foreign).unwrap();
    let now = SystemTime::now();
    assert!(matches!(
        ca.sign_csr(&req.csr_pem, &foreign, HOUR, now),
        Err(CertError::TrustDomainMismatch { .. })
    ));
    assert!(matches!(
        ca.sign_csr(&req.csr_pem, &id(API), HOUR, now),
        Err(CertError::CsrIdentityMismatch { .. })
    ));
    assert!(matches!(
        ca.issue(&foreign, &[], &[], HOUR, now),
        Err(CertError::TrustDomainMismatch { .. })
    ));
}

#[test]
fn sign_csr_refuses_a_tampered_csr() {
    let ca = ca();
    let req = generate_csr(&id(API)).unwrap();
    let mut der = CertificateSigningRequestDer::from_pem_slice(req.csr_pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec();
    // Change the requested identity inside the signed request info: `/sa/api` -> `/sa/apj`.
    let at = der.windows(3).position(|w| w == b"api").unwrap();
    der[at + 2] = b'j';
    let tampered = pem_csr(&der);
    assert_eq!(
        ca.sign_csr(
            &tampered,
            &id("spiffe://cluster.local/ns/prod/sa/apj"),
            HOUR,
            SystemTime::now()
        )
        .unwrap_err(),
        CertError::CsrSignature
    );
    // Flipping a base64 character of the body breaks it one way or another.
    let mut body: Vec<char> = req.csr_pem.chars().collect();
    let i = body.len() / 2;
    body[i] = if body[i] == 'A' { 'B' } else { 'A' };
    let flipped: String = body.into_iter().collect();
    assert!(ca
        .sign_csr(&flipped, &id(API), HOUR, SystemTime::now())
        .is_err());
}

#[test]
fn sign_csr_refuses_garbage() {
    let ca = ca();
    let now = SystemTime::now();
    assert!(matches!(
        ca.sign_csr("garbage", &id(API), HOUR, now),
        Err(CertError::Pem(_))
    ));
    assert!(matches!(
        ca.sign_csr(&pem_csr(b"\x30\x03\x02\x01\x00"), &id(API), HOUR, now),
        Err(CertError::Parse(_))
    ));
    // A certificate is not a CSR.
    assert!(matches!(
        ca.sign_csr(ca.cert_pem(), &id(API), HOUR, now),
        Err(CertError::Pem(_))
    ));
}

#[test]
fn sign_csr_wants_exactly_one_uri_san_and_drops_other_sans() {
    let ca = ca();
    let now = SystemTime::now();
    let two = csr_with_sans(vec![
        uri_san(API).unwrap(),
        uri_san("spiffe://cluster.local/ns/prod/sa/admin").unwrap(),
    ]);
    assert_eq!(
        ca.sign_csr(&two, &id(API), HOUR, now).unwrap_err(),
        CertError::MultipleUriSans
    );
    let none = csr_with_sans(vec![SanType::DnsName("api.prod".try_into().unwrap())]);
    assert_eq!(
        ca.sign_csr(&none, &id(API), HOUR, now).unwrap_err(),
        CertError::NoUriSan
    );

    let with_dns = csr_with_sans(vec![
        SanType::DnsName("evil.example.com".try_into().unwrap()),
        uri_san(API).unwrap(),
        SanType::IpAddress("10.0.0.1".parse().unwrap()),
    ]);
    let issued = ca.sign_csr(&with_dns, &id(API), HOUR, now).unwrap();
    let leaf = x509(&issued.chain[0]);
    let names = general_names(&leaf);
    assert_eq!(names.len(), 1, "{names:?}");
    assert_eq!(leaf.subject().to_string(), "O=trustmesh");
}

#[test]
fn leaf_never_outlives_the_ca() {
    let now = SystemTime::now();
    let ca = ca();
    let (issued, _) = ca
        .issue(
            &id(API),
            &[],
            &[],
            Duration::from_secs(20 * 365 * 86400),
            now,
        )
        .unwrap();
    assert_eq!(issued.not_after, ca.not_after());
    let much_later = now + Duration::from_secs(11 * 365 * 86400);
    assert_eq!(
        ca.issue(&id(API), &[], &[], HOUR, much_later).unwrap_err(),
        CertError::CaExpired
    );
}

#[test]
fn issue_adds_dns_and_ip_sans_beside_the_one_uri() {
    let ca = ca();
    let cp = control_plane_identity(&td());
    let (issued, key) = ca
        .issue(
            &cp,
            &["localhost".to_string()],
            &["127.0.0.1".parse().unwrap()],
            HOUR,
            SystemTime::now(),
        )
        .unwrap();
    let leaf = x509(&issued.chain[0]);
    let names = general_names(&leaf);
    assert_eq!(names.len(), 3);
    assert!(names
        .iter()
        .any(|n| matches!(n, GeneralName::DNSName("localhost"))));
    assert!(names
        .iter()
        .any(|n| matches!(n, GeneralName::IPAddress([127, 0, 0, 1]))));
    assert_eq!(identity::identity_from_cert(&issued.chain[0]).unwrap(), cp);
    assert_eq!(
        leaf.public_key().raw,
        key.key_pair().unwrap().subject_public_key_info().as_slice()
    );
}

#[test]
fn control_plane_identity_is_the_system_service_account() {
    assert_eq!(
        control_plane_identity(&td()).as_str(),
        "spiffe://cluster.local/ns/trustmesh-system/sa/trustmesh-control-plane"
    );
}

#[test]
fn identity_from_cert_wants_exactly_one_valid_spiffe_uri() {
    let kp = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let cert_with = |sans: Vec<SanType>| {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.self_signed(&kp).unwrap().der().clone()
    };
    let none = cert_with(vec![SanType::DnsName("a.b".try_into().unwrap())]);
    assert_eq!(
        identity::identity_from_cert(&none).unwrap_err(),
        CertError::NoUriSan
    );
    let two = cert_with(vec![uri_san(API).unwrap(), uri_san(API).unwrap()]);
    assert_eq!(
        identity::identity_from_cert(&two).unwrap_err(),
        CertError::MultipleUriSans
    );
    let bad = cert_with(vec![uri_san("https://cluster.local/a").unwrap()]);
    assert!(matches!(
        identity::identity_from_cert(&bad),
        Err(CertError::BadSpiffeId(_))
    ));
    assert!(matches!(
        identity::identity_from_cert(&CertificateDer::from(vec![1, 2, 3])),
        Err(CertError::Parse(_))
    ));
}

#[test]
fn the_ca_can_be_shared_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<CertificateAuthority>();
    assert_send_sync::<TrustBundle>();
    assert_send_sync::<crate::RotatingResolver>();
    assert_send_sync::<PrivateKey>();
}

/// A root (the operator's offline root) and an intermediate it signed (the mesh's online CA).
fn root_and_intermediate() -> (CertificateAuthority, CertificateAuthority) {
    let root = ca();
    let inter = root
        .new_intermediate(SystemTime::now(), Duration::from_secs(365 * 86400))
        .unwrap();
    (root, inter)
}

#[test]
fn intermediate_ca_issues_chains_that_carry_the_intermediate() {
    let (root, inter) = root_and_intermediate();
    assert!(inter.is_intermediate() && !root.is_intermediate());
    assert_eq!(
        inter.trust_bundle(),
        root.trust_bundle(),
        "the root alone is trusted"
    );
    let x = x509(inter.cert_der());
    assert!(x.is_ca());
    assert_eq!(x.issuer(), x509(root.cert_der()).subject());
    let bc = x.basic_constraints().unwrap().unwrap();
    assert_eq!(bc.value.path_len_constraint, Some(0));

    let now = SystemTime::now();
    let api = id(API);
    let req = generate_csr(&api).unwrap();
    let issued = inter.sign_csr(&req.csr_pem, &api, HOUR, now).unwrap();
    assert_eq!(
        issued.chain.len(),
        2,
        "leaf and intermediate, never the root"
    );
    assert_eq!(&issued.chain[1], inter.cert_der());
    assert_eq!(issued.chain_pem, crate::pem::encode_certs(&issued.chain));
    assert_eq!(x509(&issued.chain[0]).issuer(), x.subject());

    // A peer that trusts only the root verifies the leaf with the intermediate sent beside it,
    // and cannot without it.
    let parsed = ParsedCertificate::try_from(&issued.chain[0]).unwrap();
    let at = UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap());
    let algs = crate::provider::provider()
        .signature_verification_algorithms
        .all;
    let roots = root.trust_bundle().root_store();
    assert!(rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &roots,
        &issued.chain[1..],
        at,
        algs
    )
    .is_ok());
    assert!(!chains_to(&issued.chain[0], &root.trust_bundle(), now));

    // The control plane's own certificate is served with the intermediate too.
    let (own, _) = inter
        .issue(&control_plane_identity(&td()), &[], &[], HOUR, now)
        .unwrap();
    assert_eq!(own.chain.len(), 2);
}

#[test]
fn intermediate_chain_round_trips_through_pem() {
    let (root, inter) = root_and_intermediate();
    assert_eq!(
        crate::pem::decode_certs(inter.chain_pem()).unwrap().len(),
        2
    );
    let loaded = CertificateAuthority::from_pem(inter.chain_pem(), &inter.key_pem()).unwrap();
    assert_eq!(loaded.cert_der(), inter.cert_der());
    assert_eq!(loaded.chain_pem(), inter.chain_pem());
    assert_eq!(loaded.trust_bundle(), root.trust_bundle());
    assert!(loaded.is_intermediate());
    assert!(loaded.not_after() <= root.not_after());
    let (issued, _) = loaded
        .issue(&id(API), &[], &[], HOUR, SystemTime::now())
        .unwrap();
    assert_eq!(issued.chain[1], *inter.cert_der());
    // A two-level chain (root → intermediate → intermediate) is served in full.
    let deeper_parent = root
        .new_intermediate(SystemTime::now(), Duration::from_secs(86400))
        .unwrap();
    // Path length 0 forbids another CA below the intermediate: refused at load time.
    assert!(matches!(
        deeper_parent.new_intermediate(SystemTime::now(), Duration::from_secs(3600)),
        Err(CertError::BadCaChain(_))
    ));
}

#[test]
fn from_pem_refuses_broken_chains() {
    let (root, inter) = root_and_intermediate();
    let other_root = ca();
    // Not ending with a self-signed root.
    let no_root = format!("{}{}", inter.cert_pem(), inter.cert_pem());
    assert!(matches!(
        CertificateAuthority::from_pem(&no_root, &inter.key_pem()),
        Err(CertError::BadCaChain(_))
    ));
    // Ending with a root that did not sign it.
    let wrong_root = format!("{}{}", inter.cert_pem(), other_root.cert_pem());
    assert!(matches!(
        CertificateAuthority::from_pem(&wrong_root, &inter.key_pem()),
        Err(CertError::BadCaChain(_))
    ));
    // The root's key does not sign for the intermediate.
    assert_eq!(
        CertificateAuthority::from_pem(inter.chain_pem(), &root.key_pem()).unwrap_err(),
        CertError::KeyMismatch
    );
    // A leaf in the chain.
    let (leaf, _) = root
        .issue(&id(API), &[], &[], HOUR, SystemTime::now())
        .unwrap();
    let with_leaf = format!("{}{}{}", inter.cert_pem(), leaf.chain_pem, root.cert_pem());
    assert!(matches!(
        CertificateAuthority::from_pem(&with_leaf, &inter.key_pem()),
        Err(CertError::BadCaChain(_))
    ));
}

#[test]
fn trust_domain_comes_from_the_ca_or_from_the_caller() {
    let (_, inter) = root_and_intermediate();
    let other = TrustDomain::parse("other.local").unwrap();
    assert!(matches!(
        CertificateAuthority::from_pem_for_trust_domain(
            inter.chain_pem(),
            &inter.key_pem(),
            Some(&other)
        ),
        Err(CertError::CaTrustDomain(_))
    ));
    // An operator's root without any URI SAN takes the trust domain it is given.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let root = params.self_signed(&key).unwrap();
    let key_pem = crate::pem::encode("PRIVATE KEY", key.serialized_der());
    assert!(matches!(
        CertificateAuthority::from_pem(&root.pem(), &key_pem),
        Err(CertError::CaTrustDomain(_))
    ));
    let ca = CertificateAuthority::from_pem_for_trust_domain(&root.pem(), &key_pem, Some(&td()))
        .unwrap();
    assert_eq!(ca.trust_domain(), &td());
    assert!(ca
        .issue(&id(API), &[], &[], HOUR, SystemTime::now())
        .is_ok());
}
