//! The mesh's certificate authority: a self-signed ECDSA P-256 root that signs X.509-SVIDs
//! (SPIFFE X.509-SVID §4) for workloads whose identity the control plane has established
//! (bootstrap token or current certificate). The CA decides the identity; a CSR only proves
//! possession of the key and is refused when it asks for anything else.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PublicKeyData, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::bundle::TrustBundle;
use crate::csr::{uri_san, ParsedCsr};
use crate::error::CertError;
use crate::identity;
use crate::key::PrivateKey;
use crate::pem;
use crate::spiffe::{SpiffeId, TrustDomain};

/// How long a new root lives.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);
/// How far back NotBefore is set, for peers whose clocks run behind.
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// The SPIFFE ID of the control plane's own serving certificate,
/// `spiffe://<td>/ns/trustmesh-system/sa/trustmesh-control-plane`.
pub fn control_plane_identity(td: &TrustDomain) -> SpiffeId {
    match SpiffeId::from_service_account(td, "trustmesh-system", "trustmesh-control-plane") {
        Ok(id) => id,
        // A validated trust domain (at most 255 bytes) and this constant path always make a
        // valid SPIFFE ID.
        Err(e) => unreachable!("control plane identity for {td}: {e}"),
    }
}

/// A certificate chain the CA issued, ready to hand to rustls or to send to a workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCert {
    /// The leaf first, then intermediates (none today); never the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// `chain` as PEM.
    pub chain_pem: String,
    /// The leaf's NotAfter (whole seconds, as written in the certificate).
    pub not_after: SystemTime,
    /// The leaf's serial as lowercase hex.
    pub serial_hex: String,
}

/// The mesh CA: its signing key, its certificate and its trust domain.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    trust_domain: TrustDomain,
    not_after: SystemTime,
    bundle: TrustBundle,
}

impl CertificateAuthority {
    /// Makes a new self-signed root for `td`: ECDSA P-256, subject
    /// `O=trustmesh, CN=trustmesh root CA (<td>)`, URI SAN `spiffe://<td>`, basicConstraints
    /// CA:true, keyUsage keyCertSign + cRLSign + digitalSignature, a subject key identifier,
    /// a random 127-bit serial, valid from `now` - 1 min to `now` + 10 years.
    pub fn generate(td: &TrustDomain, now: SystemTime) -> Result<Self, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(CertError::rcgen("generating the CA key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "trustmesh");
        dn.push(DnType::CommonName, format!("trustmesh root CA ({td})"));
        params.distinguished_name = dn;
        params.subject_alt_names = vec![uri_san(&td.id_string())?];
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = to_offset(sub(now, CLOCK_SKEW)?)?;
        params.not_after = to_offset(add(now, CA_VALIDITY)?)?;
        params.serial_number = Some(random_serial()?);
        let cert = params
            .self_signed(&key)
            .map_err(CertError::rcgen("self-signing the CA certificate"))?;
        let cert_der = cert.der().clone();
        Ok(Self {
            bundle: TrustBundle::from_roots(vec![cert_der.clone()])?,
            not_after: identity::cert_not_after(&cert_der)?,
            cert_pem: cert.pem(),
            cert_der,
            trust_domain: td.clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate PEM (the first `CERTIFICATE` block) and its PKCS#8 P-256
    /// key PEM. Refuses a certificate that is not a CA, a key that does not match the
    /// certificate's public key, and a certificate without a `spiffe://<td>` URI SAN.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let cert_der = pem::decode_certs(cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| CertError::Pem("CA certificate: no CERTIFICATE block".into()))?;
        let x509 = identity::parse(&cert_der)?;
        if !x509.is_ca() {
            return Err(CertError::NotCa {
                subject: x509.subject().to_string(),
            });
        }
        let trust_domain = identity::ca_trust_domain(&x509)?;
        let not_after = identity::to_system_time(x509.validity().not_after)?;
        let key = PrivateKey::from_pem(key_pem)?.key_pair()?;
        if key.subject_public_key_info() != x509.public_key().raw {
            return Err(CertError::KeyMismatch);
        }
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(CertError::rcgen("reading the CA certificate"))?;
        Ok(Self {
            issuer,
            bundle: TrustBundle::from_roots(vec![cert_der.clone()])?,
            cert_pem: pem::encode("CERTIFICATE", &cert_der),
            cert_der,
            trust_domain,
            not_after,
        })
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate as DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA private key as PKCS#8 PEM, for writing the key file (mode 0600) and nothing else.
    pub fn key_pem(&self) -> String {
        pem::encode("PRIVATE KEY", self.issuer.key().serialized_der())
    }

    /// The trust domain this CA signs for.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// When the CA certificate expires; no leaf it signs outlives it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// A bundle holding this CA's certificate.
    pub fn trust_bundle(&self) -> TrustBundle {
        self.bundle.clone()
    }

    /// Signs an X.509-SVID for `id` over the public key of `csr_pem`.
    ///
    /// The CSR's self-signature must verify (proof of possession). `id` must be in this CA's
    /// trust domain, and the CSR must ask for exactly one URI SAN, equal to `id`; its DNS and IP
    /// SANs, subject and other extensions are ignored, not copied. The leaf has exactly one URI
    /// SAN (`id`), subject `O=trustmesh`, basicConstraints CA:false, keyUsage digitalSignature
    /// (critical), extendedKeyUsage serverAuth + clientAuth, an authority key identifier, a
    /// random serial, NotBefore `now` - 60 s and NotAfter `now` + `ttl`, capped at the CA's
    /// own NotAfter (SPIFFE X.509-SVID §4).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        id: &SpiffeId,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<IssuedCert, CertError> {
        let csr = ParsedCsr::from_pem(csr_pem)?;
        self.check_trust_domain(id)?;
        match csr.uri_sans.as_slice() {
            [] => return Err(CertError::NoUriSan),
            [one] if one == id.as_str() => {}
            [one] => {
                return Err(CertError::CsrIdentityMismatch {
                    requested: one.clone(),
                    allowed: id.clone(),
                })
            }
            _ => return Err(CertError::MultipleUriSans),
        }
        let params = self.leaf_params(id, Vec::new(), ttl, now)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer)
            .map_err(CertError::rcgen("signing the leaf certificate"))?;
        IssuedCert::from_leaf(cert)
    }

    /// Makes a key and an X.509-SVID for `id` in this process, with the DNS and IP SANs given
    /// beside the one URI SAN (allowed by SPIFFE X.509-SVID §2). Used for the control plane's
    /// serving certificate, which curl users reach by name, and in tests. Same leaf profile
    /// as [`Self::sign_csr`].
    pub fn issue(
        &self,
        id: &SpiffeId,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<(IssuedCert, PrivateKey), CertError> {
        self.check_trust_domain(id)?;
        let mut extra = Vec::with_capacity(dns_names.len() + ips.len());
        for name in dns_names {
            let s = rcgen::string::Ia5String::try_from(name.clone())
                .map_err(|e| CertError::Rcgen(format!("DNS SAN {name:?}: {e}")))?;
            extra.push(SanType::DnsName(s));
        }
        extra.extend(ips.iter().copied().map(SanType::IpAddress));
        let params = self.leaf_params(id, extra, ttl, now)?;
        let key = PrivateKey::generate()?;
        let cert = params
            .signed_by(&key.key_pair()?, &self.issuer)
            .map_err(CertError::rcgen("signing the leaf certificate"))?;
        Ok((IssuedCert::from_leaf(cert)?, key))
    }

    fn check_trust_domain(&self, id: &SpiffeId) -> Result<(), CertError> {
        if id.trust_domain_str() != self.trust_domain.as_str() {
            return Err(CertError::TrustDomainMismatch {
                id: id.to_string(),
                expected: self.trust_domain.clone(),
                actual: id.trust_domain(),
            });
        }
        Ok(())
    }

    /// The X.509-SVID leaf profile (SPIFFE X.509-SVID §4.1–4.4).
    fn leaf_params(
        &self,
        id: &SpiffeId,
        extra_sans: Vec<SanType>,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<CertificateParams, CertError> {
        let now = whole_seconds(now)?;
        let not_before = sub(now, CLOCK_SKEW)?;
        let not_after = add(now, ttl)?.min(self.not_after);
        if not_after <= not_before {
            return Err(CertError::CaExpired);
        }
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "trustmesh");
        params.distinguished_name = dn;
        params.subject_alt_names = vec![uri_san(id.as_str())?];
        params.subject_alt_names.extend(extra_sans);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_offset(not_before)?;
        params.not_after = to_offset(not_after)?;
        params.serial_number = Some(random_serial()?);
        Ok(params)
    }
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trust_domain", &self.trust_domain)
            .field("not_after", &self.not_after)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl IssuedCert {
    fn from_leaf(cert: rcgen::Certificate) -> Result<Self, CertError> {
        let der = cert.der().clone();
        Ok(Self {
            not_after: identity::cert_not_after(&der)?,
            serial_hex: identity::cert_serial_hex(&der)?,
            chain_pem: cert.pem(),
            chain: vec![der],
        })
    }
}

/// A positive 16-byte serial with 126 random bits from aws-lc-rs (CA/B BR §7.1 asks for at
/// least 64; RFC 5280 §4.1.2.2 allows at most 20 octets).
fn random_serial() -> Result<SerialNumber, CertError> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| CertError::Rcgen("the system random source failed".into()))?;
    // Clear the sign bit and set the next one, so the DER INTEGER is positive and exactly
    // 16 bytes long.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

fn whole_seconds(t: SystemTime) -> Result<SystemTime, CertError> {
    let d = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CertError::Time("time is before 1970".into()))?;
    add(UNIX_EPOCH, Duration::from_secs(d.as_secs()))
}

fn add(t: SystemTime, d: Duration) -> Result<SystemTime, CertError> {
    t.checked_add(d)
        .ok_or_else(|| CertError::Time(format!("{t:?} + {d:?} overflows")))
}

fn sub(t: SystemTime, d: Duration) -> Result<SystemTime, CertError> {
    t.checked_sub(d)
        .ok_or_else(|| CertError::Time(format!("{t:?} - {d:?} underflows")))
}

fn to_offset(t: SystemTime) -> Result<OffsetDateTime, CertError> {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| CertError::Time("time is before 1970".into()))?
        .as_secs();
    let secs = i64::try_from(secs).map_err(|_| CertError::Time(format!("{secs} s is too far")))?;
    OffsetDateTime::from_unix_timestamp(secs).map_err(|e| CertError::Time(e.to_string()))
}

#[cfg(test)]
mod tests;
