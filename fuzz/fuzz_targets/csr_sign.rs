//! CSR handling as the control plane does it for `POST /v1/certificates`
//! (`control-plane/src/api.rs`): `CertificateAuthority::sign_csr` on the CSR PEM of the
//! request body, for the identity the bootstrap token proves. An input that starts with
//! `-----BEGIN` is taken as that PEM; any other input as the CSR's DER, wrapped in PEM here,
//! so that the fuzzer works on the ASN.1 itself. Property: whatever is signed names exactly
//! the proven identity.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use trustmesh_certs::{identity_from_cert, CertificateAuthority, SpiffeId, TrustDomain};

/// A fixed clock: the same input must take the same path on every run.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn ca() -> &'static Option<(CertificateAuthority, SpiffeId)> {
    static CA: OnceLock<Option<(CertificateAuthority, SpiffeId)>> = OnceLock::new();
    CA.get_or_init(|| {
        let td = TrustDomain::parse("cluster.local").ok()?;
        let ca = CertificateAuthority::generate(&td, now()).ok()?;
        let id = SpiffeId::parse("spiffe://cluster.local/ns/prod/sa/api").ok()?;
        Some((ca, id))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((ca, id)) = ca() else {
        panic!("cannot make the test CA");
    };
    let pem = if data.starts_with(b"-----BEGIN") {
        match std::str::from_utf8(data) {
            Ok(text) => text.to_string(),
            Err(_) => return,
        }
    } else {
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        format!("-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n")
    };
    let Ok(issued) = ca.sign_csr(&pem, id, Duration::from_secs(3600), now()) else {
        return;
    };
    let Some(leaf) = issued.chain.first() else {
        panic!("an issued chain has no leaf");
    };
    match identity_from_cert(leaf) {
        Ok(named) => assert_eq!(&named, id, "the leaf names another identity"),
        Err(e) => panic!("the issued leaf has no readable identity: {e}"),
    }
});
