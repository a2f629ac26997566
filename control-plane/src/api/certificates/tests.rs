use http::StatusCode;
use trustmesh_certs::{CertError, SpiffeId};

use super::csr_refusal;

fn id(s: &str) -> SpiffeId {
    s.parse().expect("a SPIFFE ID")
}

#[test]
fn a_csr_naming_a_second_identity_is_forbidden_like_one_naming_another() {
    // openapi.yaml: a CSR for another SPIFFE ID, or with more than one URI SAN, gets 403.
    let other = CertError::CsrIdentityMismatch {
        requested: "spiffe://cluster.local/ns/prod/sa/admin".into(),
        allowed: id("spiffe://cluster.local/ns/prod/sa/api"),
    };
    for e in [other, CertError::MultipleUriSans] {
        let code = csr_refusal(&e);
        assert_eq!(
            (code.status(), code.as_str()),
            (StatusCode::FORBIDDEN, "csr_identity_mismatch"),
            "{e}"
        );
    }
}

#[test]
fn a_csr_that_does_not_parse_or_verify_is_a_bad_request() {
    for e in [
        CertError::Pem("no items found".into()),
        CertError::CsrSignature,
        CertError::NoUriSan,
    ] {
        let code = csr_refusal(&e);
        assert_eq!(
            (code.status(), code.as_str()),
            (StatusCode::BAD_REQUEST, "bad_csr"),
            "{e}"
        );
    }
}
