//! Reading what trustmesh needs out of an X.509 certificate: the SPIFFE ID of its URI SAN
//! (SPIFFE X.509-SVID §2), its validity and its serial. These functions parse only; whether the
//! certificate is trustworthy is for [`crate::verify`] to decide.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

use crate::error::CertError;
use crate::spiffe::{SpiffeId, TrustDomain};

/// The SPIFFE ID of a workload certificate. The certificate must carry exactly one URI SAN and
/// it must be a valid workload SPIFFE ID (SPIFFE X.509-SVID §2); other SAN types are allowed.
pub fn identity_from_cert(cert: &CertificateDer<'_>) -> Result<SpiffeId, CertError> {
    let x509 = parse(cert)?;
    let uri = single_uri_san(&x509)?;
    Ok(SpiffeId::parse(uri)?)
}

/// The certificate's NotAfter.
pub fn cert_not_after(cert: &CertificateDer<'_>) -> Result<SystemTime, CertError> {
    to_system_time(parse(cert)?.validity().not_after)
}

/// The certificate's NotBefore.
pub fn cert_not_before(cert: &CertificateDer<'_>) -> Result<SystemTime, CertError> {
    to_system_time(parse(cert)?.validity().not_before)
}

/// The certificate's serial number as lowercase hex without separators (the DER integer bytes).
pub fn cert_serial_hex(cert: &CertificateDer<'_>) -> Result<String, CertError> {
    Ok(hex(parse(cert)?.raw_serial()))
}

/// The certificate's SubjectPublicKeyInfo, DER: what identifies the key it was issued to.
pub fn cert_public_key(cert: &CertificateDer<'_>) -> Result<Vec<u8>, CertError> {
    Ok(parse(cert)?.public_key().raw.to_vec())
}

/// Parses a DER certificate, refusing trailing bytes.
pub(crate) fn parse<'a>(cert: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, CertError> {
    let (rest, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| CertError::Parse(format!("certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(CertError::Parse(
            "certificate: trailing bytes after the DER".into(),
        ));
    }
    Ok(x509)
}

/// Every URI SAN of the certificate, in order.
pub(crate) fn uri_sans<'a>(x509: &X509Certificate<'a>) -> Result<Vec<&'a str>, CertError> {
    let san = x509
        .subject_alternative_name()
        .map_err(|e| CertError::Parse(format!("subjectAltName: {e}")))?;
    Ok(san
        .map(|ext| {
            ext.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::URI(u) => Some(*u),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The one URI SAN (SPIFFE X.509-SVID §2: exactly one).
fn single_uri_san<'a>(x509: &X509Certificate<'a>) -> Result<&'a str, CertError> {
    match uri_sans(x509)?.as_slice() {
        [] => Err(CertError::NoUriSan),
        [one] => Ok(one),
        _ => Err(CertError::MultipleUriSans),
    }
}

/// The trust domain of a CA certificate, from its single `spiffe://<td>` URI SAN
/// (SPIFFE X.509-SVID §3: a signing certificate may carry the trust domain's own ID).
pub(crate) fn ca_trust_domain(x509: &X509Certificate<'_>) -> Result<TrustDomain, CertError> {
    let uri = single_uri_san(x509).map_err(|e| CertError::CaTrustDomain(e.to_string()))?;
    let td = uri
        .strip_prefix("spiffe://")
        .ok_or_else(|| CertError::CaTrustDomain(format!("{uri:?} is not a spiffe:// URI")))?;
    TrustDomain::parse(td).map_err(|e| CertError::CaTrustDomain(format!("{uri:?}: {e}")))
}

pub(crate) fn to_system_time(t: ASN1Time) -> Result<SystemTime, CertError> {
    let secs = t.timestamp();
    let d = Duration::from_secs(secs.unsigned_abs());
    let st = if secs >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    };
    st.ok_or_else(|| CertError::Time(format!("certificate time {t} is out of range")))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
