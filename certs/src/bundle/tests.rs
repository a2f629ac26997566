use super::*;
use crate::testing::ca;

#[test]
fn from_pem_reads_and_normalizes_roots() {
    let ca = ca();
    let messy = format!("junk before\r\n{}\n\n", ca.cert_pem().replace('\n', "\r\n"));
    let bundle = TrustBundle::from_pem(&messy).unwrap();
    assert_eq!(bundle.len(), 1);
    assert!(!bundle.is_empty());
    assert_eq!(bundle.roots()[0], *ca.cert_der());
    assert_eq!(bundle.pem(), ca.cert_pem());
    assert_eq!(bundle.root_store().len(), 1);
}

#[test]
fn refuses_empty_and_bad_pem() {
    assert_eq!(TrustBundle::from_pem(""), Err(CertError::EmptyBundle));
    assert_eq!(
        TrustBundle::from_pem("no pem here"),
        Err(CertError::EmptyBundle)
    );
    let broken = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        TrustBundle::from_pem(broken),
        Err(CertError::Pem(_))
    ));
    let not_a_cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        TrustBundle::from_pem(not_a_cert),
        Err(CertError::Parse(_))
    ));
}

#[test]
fn merge_is_a_union_without_duplicates() {
    let (a, b) = (ca().trust_bundle(), ca().trust_bundle());
    let ab = a.merge(&b);
    assert_eq!(ab.len(), 2);
    assert_eq!(ab.root_store().len(), 2);
    assert_eq!(ab.merge(&a), ab);
    assert_eq!(ab.merge(&b).len(), 2);
    let from_pem = TrustBundle::from_pem(&format!("{}{}{}", a.pem(), b.pem(), a.pem())).unwrap();
    assert_eq!(from_pem, ab);
    assert_eq!(from_pem.pem(), ab.pem());
}
