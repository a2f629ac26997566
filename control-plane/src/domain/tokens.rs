//! Domain: bootstrap tokens: `tm1.<claims>.<mac>`, where the claims are base64url JSON (token id,
//! identity, labels, expiry) and the MAC is HMAC-SHA256 under a key kept in the data folder
//! (`token-key`, mode 0600; a key file of the wrong length is an error, never replaced). A
//! token is single use: [`crate::domain::used_tokens`] records it as spent. Tokens are never logged:
//! [`Token`] prints `<redacted>`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use aws_lc_rs::{hmac, rand::SecureRandom as _};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use trustmesh_certs::SpiffeId;

use crate::storage::files;
use crate::storage::lock::DataDirLock;
use crate::storage::paths::TOKEN_KEY as KEY_FILE;

const PREFIX: &str = "tm1";
/// The MAC key's length in bytes (HMAC-SHA256).
const KEY_LEN: usize = 32;

/// A bootstrap token. Its `Debug` never shows the secret.
pub struct Token(String);

impl Token {
    /// The token text, for printing to the operator who asked for it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// What a valid token proves.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// Unique token id (128 random bits, hex).
    pub jti: String,
    /// The identity the bearer may get a certificate for.
    pub identity: SpiffeId,
    /// Attested labels bound to the identity.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

/// Why a token was refused. Every variant maps to 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    /// Not of the `tm1.<claims>.<mac>` form.
    #[error("the bootstrap token is malformed")]
    Malformed,
    /// The MAC does not verify: forged or altered, or made by another control plane.
    #[error("the bootstrap token's signature is not valid")]
    BadSignature,
    /// Past its expiry.
    #[error("the bootstrap token has expired")]
    Expired,
    /// Already used once.
    #[error("the bootstrap token has already been used")]
    AlreadyUsed,
    /// Recording its use failed; refusing is the safe answer.
    #[error("the bootstrap token's use could not be recorded")]
    Store,
}

/// Loads the token MAC key, creating it (mode 0600) on first use. Under the data folder's
/// lock, so that two replicas starting together agree on one key.
pub fn load_or_create_key(dir: &Path) -> anyhow::Result<hmac::Key> {
    files::ensure_private_dir(dir)?;
    let _lock = DataDirLock::acquire(dir)?;
    let path = dir.join(KEY_FILE);
    let bytes = if path.exists() {
        let text = files::read_private(&path)?;
        let key = hex_decode(text.trim())
            .with_context(|| format!("{} is not a hex key", path.display()))?;
        // A short or long key is a damaged file, never a reason to make a new one (which
        // would invalidate every token handed out).
        if key.len() != KEY_LEN {
            anyhow::bail!(
                "{} holds a {}-byte key, expected {KEY_LEN} bytes (64 hex digits): the file is \
                 damaged; restore it, or remove it to make a new key (tokens made with the old \
                 one are then refused)",
                path.display(),
                key.len()
            );
        }
        key
    } else {
        let mut key = vec![0u8; KEY_LEN];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        files::write_atomic(&path, hex_encode(&key).as_bytes(), 0o600)?;
        key
    };
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

/// Creates a token for `identity` valid for `ttl` from now.
pub fn create(
    key: &hmac::Key,
    identity: &SpiffeId,
    labels: BTreeMap<String, String>,
    ttl: Duration,
) -> anyhow::Result<Token> {
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut jti)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    let exp = unix(SystemTime::now() + ttl);
    let claims = Claims {
        jti: hex_encode(&jti),
        identity: identity.clone(),
        labels,
        exp,
    };
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?);
    let signed = format!("{PREFIX}.{body}");
    let tag = hmac::sign(key, signed.as_bytes());
    Ok(Token(format!(
        "{signed}.{}",
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    )))
}

/// Checks a token's form, signature and expiry (not whether it was used).
pub fn verify(key: &hmac::Key, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
    let (signed, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
    let body = signed
        .strip_prefix(PREFIX)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or(TokenError::Malformed)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| TokenError::Malformed)?;
    // Constant-time comparison inside aws-lc.
    hmac::verify(key, signed.as_bytes(), &tag).map_err(|_| TokenError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if unix(now) >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// Seconds since the Unix epoch.
pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> SpiffeId {
        SpiffeId::parse("spiffe://cluster.local/ns/a/sa/b").unwrap()
    }

    #[test]
    fn the_key_is_stable_across_loads_and_a_damaged_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_key(dir.path()).unwrap();
        let t = create(&key, &id(), BTreeMap::new(), Duration::from_secs(60)).unwrap();
        let again = load_or_create_key(dir.path()).unwrap();
        assert!(verify(&again, t.expose(), SystemTime::now()).is_ok());
        let path = dir.path().join(KEY_FILE);
        for bad in ["abcd", &"ab".repeat(33), "not hex at all"] {
            files::write_atomic(&path, bad.as_bytes(), 0o600).unwrap();
            let err = format!("{:#}", load_or_create_key(dir.path()).unwrap_err());
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert_eq!(
                std::fs::read_to_string(&path).unwrap(),
                bad,
                "left as it was"
            );
        }
    }

    #[test]
    fn refuses_forged_expired_and_malformed_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create_key(dir.path()).unwrap();
        let t = create(&key, &id(), BTreeMap::new(), Duration::from_secs(60)).unwrap();
        let text = t.expose().to_string();
        let later = SystemTime::now() + Duration::from_secs(61);
        assert_eq!(verify(&key, &text, later), Err(TokenError::Expired));
        let mut forged = text.clone().into_bytes();
        let i = forged.len() / 2;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        assert!(matches!(
            verify(&key, &forged, SystemTime::now()),
            Err(TokenError::BadSignature | TokenError::Malformed)
        ));
        let other = hmac::Key::new(hmac::HMAC_SHA256, b"another key entirely, 32 bytes!!");
        assert_eq!(
            verify(&other, &text, SystemTime::now()),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&key, "nonsense", SystemTime::now()),
            Err(TokenError::Malformed)
        );
        assert!(!format!("{t:?}").contains(&text[4..20]));
    }
}
