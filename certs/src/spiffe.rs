//! SPIFFE IDs and trust domains, parsed and validated by the SPIFFE ID specification
//! (SPIFFE-ID §2). Every identity in trustmesh is one of these types: a string that names a
//! workload is only trusted once it has been through [`SpiffeId::parse`] or certificate
//! verification.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest SPIFFE ID the specification allows, in bytes (SPIFFE-ID §2.3).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;
/// The longest trust domain name the specification allows, in bytes (SPIFFE-ID §2.1).
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a valid SPIFFE ID or trust domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The input was empty.
    #[error("SPIFFE ID is empty")]
    Empty,
    /// The ID is longer than 2048 bytes.
    #[error("SPIFFE ID is {0} bytes long; at most 2048 are allowed")]
    TooLong(usize),
    /// The scheme is not `spiffe://`.
    #[error("SPIFFE ID must start with \"spiffe://\"")]
    WrongScheme,
    /// There is no trust domain after the scheme.
    #[error("SPIFFE ID has no trust domain")]
    MissingTrustDomain,
    /// The trust domain has a character outside `[a-z0-9.-_]`.
    #[error("trust domain {domain:?} has the character {ch:?}; only lowercase letters, digits, '.', '-' and '_' are allowed")]
    BadTrustDomainChar {
        /// The trust domain as given.
        domain: String,
        /// The first offending character.
        ch: char,
    },
    /// The trust domain is longer than 255 bytes.
    #[error("trust domain is {0} bytes long; at most 255 are allowed")]
    TrustDomainTooLong(usize),
    /// The authority carries user info (`user@`).
    #[error("SPIFFE ID must not contain user info")]
    UserInfo,
    /// The authority carries a port.
    #[error("SPIFFE ID must not contain a port")]
    Port,
    /// A query (`?`) is present.
    #[error("SPIFFE ID must not contain a query")]
    Query,
    /// A fragment (`#`) is present.
    #[error("SPIFFE ID must not contain a fragment")]
    Fragment,
    /// The path has an empty segment (`//` or a trailing `/`).
    #[error("SPIFFE ID path has an empty segment")]
    EmptySegment,
    /// The path has a `.` or `..` segment.
    #[error("SPIFFE ID path has a dot segment ({0:?})")]
    DotSegment(String),
    /// A path segment has a character outside `[A-Za-z0-9.-_]`.
    #[error("SPIFFE ID path has the character {0:?}; only letters, digits, '.', '-' and '_' are allowed")]
    BadPathChar(char),
}

/// A validated trust domain name, such as `cluster.local`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a bare trust domain name (no scheme). Accepts `[a-z0-9.-_]`, 1 to 255 bytes.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::MissingTrustDomain);
        }
        if s.len() > MAX_TRUST_DOMAIN_LEN {
            return Err(SpiffeIdError::TrustDomainTooLong(s.len()));
        }
        if s.contains('@') {
            return Err(SpiffeIdError::UserInfo);
        }
        if s.contains(':') {
            return Err(SpiffeIdError::Port);
        }
        if let Some(ch) = s.chars().find(|c| !is_trust_domain_char(*c)) {
            return Err(SpiffeIdError::BadTrustDomainChar {
                domain: s.to_string(),
                ch,
            });
        }
        Ok(Self(s.to_string()))
    }

    /// The trust domain name, e.g. `cluster.local`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The SPIFFE ID of the trust domain itself, `spiffe://<name>`, as put in a CA certificate.
    pub fn id_string(&self) -> String {
        format!("spiffe://{}", self.0)
    }
}

fn is_trust_domain_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A validated SPIFFE ID, `spiffe://<trust-domain>/<path>`. A workload ID always has a path;
/// the bare trust domain ID is represented by [`TrustDomain`].
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// The whole ID as a string.
    id: String,
    /// Where the path starts in `id` (the index of its first `/`).
    path_start: usize,
}

const SCHEME: &str = "spiffe://";

impl SpiffeId {
    /// Parses and validates a workload SPIFFE ID (SPIFFE-ID §2): scheme `spiffe`, a lowercase
    /// trust domain of `[a-z0-9.-_]` with no port or user info, no query or fragment, and a
    /// non-empty path of segments of `[A-Za-z0-9.-_]`, none empty, `.` or `..`; 2048 bytes at most.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if s.len() > MAX_SPIFFE_ID_LEN {
            return Err(SpiffeIdError::TooLong(s.len()));
        }
        // The scheme is case-insensitive in URIs, but the spec requires the lowercase form.
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
        if rest.contains('#') {
            return Err(SpiffeIdError::Fragment);
        }
        if rest.contains('?') {
            return Err(SpiffeIdError::Query);
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        TrustDomain::parse(authority)?;
        validate_path(path)?;
        if path.is_empty() {
            // A workload ID needs a path; `spiffe://td` alone names the trust domain.
            return Err(SpiffeIdError::EmptySegment);
        }
        Ok(Self {
            id: s.to_string(),
            path_start: SCHEME.len() + authority.len(),
        })
    }

    /// Builds `spiffe://<td><path>`; `path` must start with `/` and be a valid SPIFFE path.
    pub fn new(td: &TrustDomain, path: &str) -> Result<Self, SpiffeIdError> {
        Self::parse(&format!("{SCHEME}{}{path}", td.as_str()))
    }

    /// The Kubernetes form, `spiffe://<td>/ns/<ns>/sa/<sa>`.
    pub fn from_service_account(
        td: &TrustDomain,
        ns: &str,
        sa: &str,
    ) -> Result<Self, SpiffeIdError> {
        Self::new(td, &format!("/ns/{ns}/sa/{sa}"))
    }

    /// The trust domain name (borrowed from the ID).
    pub fn trust_domain_str(&self) -> &str {
        &self.id[SCHEME.len()..self.path_start]
    }

    /// The trust domain as its own type.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_str().to_string())
    }

    /// The path, starting with `/`.
    pub fn path(&self) -> &str {
        &self.id[self.path_start..]
    }

    /// The whole ID, `spiffe://...`.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The ID without its scheme, `<td>/<path>`, as Istio principals are written.
    pub fn principal(&self) -> &str {
        &self.id[SCHEME.len()..]
    }

    /// The namespace for IDs of the form `/ns/<ns>/...`.
    pub fn namespace(&self) -> Option<&str> {
        // A byte scan, not `split('/')`: every request asks this of a peer's or our own ID,
        // and the path is validated ASCII without empty segments.
        let rest = self.path().strip_prefix("/ns/")?;
        let end = rest.bytes().position(|b| b == b'/').unwrap_or(rest.len());
        Some(&rest[..end])
    }

    /// The service account for IDs of exactly the form `/ns/<ns>/sa/<sa>` (`None` when more
    /// segments follow: that is not a Kubernetes service account ID).
    pub fn service_account(&self) -> Option<&str> {
        let mut segs = self.path().split('/').skip(1);
        match (
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
            segs.next(),
        ) {
            (Some("ns"), Some(_), Some("sa"), Some(sa), None) => Some(sa),
            _ => None,
        }
    }
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    // `path` starts with '/', so the first split element is the empty string before it.
    for seg in path.split('/').skip(1) {
        if seg.is_empty() {
            return Err(SpiffeIdError::EmptySegment);
        }
        if seg == "." || seg == ".." {
            return Err(SpiffeIdError::DotSegment(seg.to_string()));
        }
        if let Some(ch) = seg.chars().find(|c| !is_path_char(*c)) {
            return Err(SpiffeIdError::BadPathChar(ch));
        }
    }
    Ok(())
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.id)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.id)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
