//! The mesh's certificate authority: an ECDSA P-256 signing certificate that issues X.509-SVIDs
//! (SPIFFE X.509-SVID §4) for workloads whose identity the control plane has established
//! (bootstrap token or current certificate). The CA decides the identity; a CSR only proves
//! possession of the key and is refused when it asks for anything else.
//!
//! The signing certificate is either a self-signed root made here ([`CertificateAuthority::generate`])
//! or an intermediate signed by an offline root that the operator brings (the plug-in CA of
//! Istio): then every issued chain carries the intermediates, so that peers which trust only
//! the root can build the path (RFC 5280 §6.1), and the trust bundle holds the root alone.

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
    /// The leaf first, then the intermediates up to (not including) the root: none for a CA
    /// that is itself the root.
    pub chain: Vec<CertificateDer<'static>>,
    /// `chain` as PEM.
    pub chain_pem: String,
    /// The leaf's NotAfter (whole seconds, as written in the certificate).
    pub not_after: SystemTime,
    /// The leaf's serial as lowercase hex.
    pub serial_hex: String,
}

/// The mesh CA: its signing key, its certificate, the chain above it and its trust domain.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    /// What follows a leaf in an issued chain: the signing certificate and the intermediates
    /// above it, without the root. Empty when the signing certificate is the root.
    issuer_chain: Vec<CertificateDer<'static>>,
    /// The signing certificate, its intermediates and its root, as PEM (the `ca-cert.pem` form).
    chain_pem: String,
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
            chain_pem: cert.pem(),
            issuer_chain: Vec::new(),
            cert_der,
            trust_domain: td.clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate PEM and its PKCS#8 P-256 key PEM; the trust domain comes
    /// from the signing certificate's `spiffe://<td>` URI SAN. See
    /// [`Self::from_pem_for_trust_domain`] for the chain rules.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        Self::from_pem_for_trust_domain(cert_pem, key_pem, None)
    }

    /// Loads a CA from `cert_pem` and its PKCS#8 P-256 key PEM.
    ///
    /// `cert_pem` holds the signing certificate first. Alone, it is its own trust anchor (a
    /// root made by [`Self::generate`]). Followed by more certificates, those are its issuers
    /// in order, and the last must be the self-signed root: an intermediate signed by an
    /// offline root (RFC 5280 §6.1). The root alone goes into the trust bundle, and every
    /// chain issued carries the signing certificate and the intermediates between it and the
    /// root.
    ///
    /// The trust domain is the signing certificate's `spiffe://<td>` URI SAN (SPIFFE
    /// X.509-SVID §3), which must equal `td` when both are there; a signing certificate without
    /// one takes `td`, and fails with [`CertError::CaTrustDomain`] when `td` is `None`.
    ///
    /// Refuses a signing certificate that is not a CA, a key that does not match it, a chain
    /// whose last certificate is not self-signed, and a chain that webpki cannot build: a
    /// probe leaf is signed and verified against the root with the intermediates, at a time
    /// inside every certificate's validity, so a chain out of order, with a missing link or
    /// with constraints that forbid our leaves fails here rather than at the first handshake.
    pub fn from_pem_for_trust_domain(
        cert_pem: &str,
        key_pem: &str,
        td: Option<&TrustDomain>,
    ) -> Result<Self, CertError> {
        let chain = pem::decode_certs(cert_pem)?;
        let cert_der = chain
            .first()
            .cloned()
            .ok_or_else(|| CertError::Pem("CA certificate: no CERTIFICATE block".into()))?;
        let x509 = identity::parse(&cert_der)?;
        if !x509.is_ca() {
            return Err(CertError::NotCa {
                subject: x509.subject().to_string(),
            });
        }
        let trust_domain = match (identity::ca_trust_domain(&x509), td) {
            (Ok(own), Some(td)) if own != *td => {
                return Err(CertError::CaTrustDomain(format!(
                    "the CA certificate is for trust domain {own}, expected {td}"
                )))
            }
            (Ok(own), _) => own,
            (Err(_), Some(td)) if identity::uri_sans(&x509)?.is_empty() => td.clone(),
            (Err(e), _) => return Err(e),
        };
        let key = PrivateKey::from_pem(key_pem)?.key_pair()?;
        if key.subject_public_key_info() != x509.public_key().raw {
            return Err(CertError::KeyMismatch);
        }
        let mut not_after = identity::to_system_time(x509.validity().not_after)?;
        let mut not_before = identity::to_system_time(x509.validity().not_before)?;
        for (i, c) in chain.iter().enumerate().skip(1) {
            let x = identity::parse(c)?;
            if !x.is_ca() {
                return Err(CertError::BadCaChain(format!(
                    "certificate #{} ({}) is not a CA certificate",
                    i + 1,
                    x.subject()
                )));
            }
            not_after = not_after.min(identity::to_system_time(x.validity().not_after)?);
            not_before = not_before.max(identity::to_system_time(x.validity().not_before)?);
        }
        // `chain` holds at least the signing certificate (checked above).
        let (root, above_leaf) = chain.split_last().unwrap_or((&cert_der, &[]));
        if !above_leaf.is_empty() && !is_self_signed(root)? {
            return Err(CertError::BadCaChain(
                "the last certificate of a CA chain must be its self-signed root".into(),
            ));
        }
        // webpki never checks a trust anchor's own signature: a root altered on disk would
        // otherwise load. A self-issued root must carry a signature its own key verifies.
        let root_x509 = identity::parse(root)?;
        if root_x509.subject().as_raw() == root_x509.issuer().as_raw()
            && root_x509.verify_signature(None).is_err()
        {
            return Err(CertError::BadCaChain(
                "the CA root's self-signature does not verify (the certificate was altered)".into(),
            ));
        }
        let (issuer_chain, root) = (above_leaf.to_vec(), root.clone());
        let issuer = Issuer::from_ca_cert_der(&cert_der, key)
            .map_err(CertError::rcgen("reading the CA certificate"))?;
        let ca = Self {
            issuer,
            bundle: TrustBundle::from_roots(vec![root])?,
            cert_pem: pem::encode("CERTIFICATE", &cert_der),
            chain_pem: pem::encode_certs(&chain),
            issuer_chain,
            cert_der,
            trust_domain,
            not_after,
        };
        ca.probe(not_before, not_after)?;
        Ok(ca)
    }

    /// Makes a new intermediate CA signed by this one (the way an offline root signs the
    /// mesh's online CA): ECDSA P-256, CA:true with path length 0, keyUsage keyCertSign +
    /// cRLSign + digitalSignature, URI SAN `spiffe://<td>`, valid from `now` - 1 min for
    /// `validity` (capped at this CA's own expiry). Its chain ends with this CA's root.
    pub fn new_intermediate(
        &self,
        now: SystemTime,
        validity: Duration,
    ) -> Result<CertificateAuthority, CertError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(CertError::rcgen("generating the intermediate key"))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "trustmesh");
        dn.push(
            DnType::CommonName,
            format!("trustmesh intermediate CA ({})", self.trust_domain),
        );
        params.distinguished_name = dn;
        params.subject_alt_names = vec![uri_san(&self.trust_domain.id_string())?];
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = to_offset(sub(whole_seconds(now)?, CLOCK_SKEW)?)?;
        params.not_after = to_offset(add(whole_seconds(now)?, validity)?.min(self.not_after))?;
        params.serial_number = Some(random_serial()?);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(CertError::rcgen("signing the intermediate certificate"))?;
        let mut chain = vec![cert.der().clone()];
        chain.extend(self.issuer_chain.iter().cloned());
        chain.extend(self.bundle.roots().iter().cloned());
        let key_pem = pem::encode("PRIVATE KEY", key.serialized_der());
        Self::from_pem_for_trust_domain(&pem::encode_certs(&chain), &key_pem, None)
    }

    /// The signing certificate as PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The signing certificate followed by its intermediates and its root (when it is not the
    /// root itself), as PEM: what [`Self::from_pem`] reads back.
    pub fn chain_pem(&self) -> &str {
        &self.chain_pem
    }

    /// Whether the signing certificate is an intermediate below an offline root.
    pub fn is_intermediate(&self) -> bool {
        !self.issuer_chain.is_empty()
    }

    /// The signing certificate as DER.
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

    /// When the CA (its signing certificate or a certificate above it) expires; no leaf it
    /// signs outlives it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// A bundle holding this CA's root.
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
        IssuedCert::from_leaf(cert, &self.issuer_chain)
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
        Ok((IssuedCert::from_leaf(cert, &self.issuer_chain)?, key))
    }

    /// Signs a throw-away leaf at a time inside the chain's validity and verifies it with
    /// webpki against the root, as a peer would.
    fn probe(&self, not_before: SystemTime, not_after: SystemTime) -> Result<(), CertError> {
        let at = add(not_before, CLOCK_SKEW + Duration::from_secs(1))?;
        if at >= not_after {
            return Err(CertError::BadCaChain(
                "the certificates of the CA chain have no validity period in common".into(),
            ));
        }
        let probe = SpiffeId::parse(&format!(
            "{}/trustmesh/ca-probe",
            self.trust_domain.id_string()
        ))?;
        let (issued, _) = self
            .issue(&probe, &[], &[], Duration::from_secs(1), at)
            .map_err(|e| CertError::BadCaChain(format!("signing a probe certificate: {e}")))?;
        let leaf = rustls::server::ParsedCertificate::try_from(&issued.chain[0])
            .map_err(|e| CertError::BadCaChain(format!("the probe certificate: {e}")))?;
        let secs = at
            .duration_since(UNIX_EPOCH)
            .map_err(|_| CertError::Time("time is before 1970".into()))?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &leaf,
            &self.bundle.root_store(),
            &issued.chain[1..],
            rustls::pki_types::UnixTime::since_unix_epoch(secs),
            crate::provider::provider()
                .signature_verification_algorithms
                .all,
        )
        .map_err(|e| {
            CertError::BadCaChain(format!(
                "a certificate signed by this CA does not verify against its root: {e}"
            ))
        })
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
    fn from_leaf(
        cert: rcgen::Certificate,
        issuer_chain: &[CertificateDer<'static>],
    ) -> Result<Self, CertError> {
        let der = cert.der().clone();
        let mut chain = Vec::with_capacity(1 + issuer_chain.len());
        chain.push(der);
        chain.extend(issuer_chain.iter().cloned());
        Ok(Self {
            not_after: identity::cert_not_after(&chain[0])?,
            serial_hex: identity::cert_serial_hex(&chain[0])?,
            chain_pem: pem::encode_certs(&chain),
            chain,
        })
    }
}

/// Whether `cert` is self-signed: its issuer is its subject and its signature verifies with
/// its own key.
fn is_self_signed(cert: &CertificateDer<'_>) -> Result<bool, CertError> {
    let x = identity::parse(cert)?;
    Ok(x.subject().as_raw() == x.issuer().as_raw() && x.verify_signature(None).is_ok())
}

/// A positive 16-byte serial with 126 random bits from the system's secure random source
/// (CA/B BR §7.1 asks for at least 64; RFC 5280 §4.1.2.2 allows at most 20 octets).
fn random_serial() -> Result<SerialNumber, CertError> {
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
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
