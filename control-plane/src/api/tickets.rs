//! API layer: TLS 1.3 session tickets that outlive a restart of the control plane, so that the
//! fleet reconnecting after one resumes its sessions (RFC 8446 §2.2: no certificate signed or
//! verified in the handshake) instead of paying a full mTLS handshake each.
//!
//! A ticket is the session state rustls hands us (its resumption secret, the client's
//! certificate chain), sealed with AES-256-GCM under a key of the control plane's own. The
//! keys live in `--data-dir`'s `ticket-keys` (mode 0600, beside the CA key), newest first:
//! the current key seals, it and the one before it open. The current key is replaced every
//! [`ROTATE`], and a key is never used to open a ticket once it is two periods old, so a ticket
//! lives at most that long (rustls leaves a ticket's lifetime to key erasure).
//!
//! What the key is: a symmetric secret of the control plane, never a workload's private key,
//! and it leaves no control-plane process (replicas on one data folder share it as they share
//! the CA key). Whoever reads it could forge a ticket and so pass for a client whose (public)
//! certificate they hold, or open a captured ticket and answer that client as the control
//! plane; reading `ca-key.pem` in the same folder already gives both and more, so the file adds
//! nothing an intruder into the data folder did not have. A ticket proves only that the client
//! once completed a full handshake with a certificate: the listener checks that certificate
//! again on every resumed connection ([`super::listener`]), and the blocklist applies per
//! request as for any connection.

use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use aws_lc_rs::aead::{Aad, Nonce, RandomizedNonceKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::SecureRandom as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::storage::files;
use crate::storage::lock::DataDirLock;
use crate::storage::paths::TICKET_KEYS;

/// How long a key seals tickets before the next one replaces it; it opens them for as long
/// again.
pub const ROTATE: Duration = Duration::from_secs(6 * 3600);
/// Length of a key (AES-256).
const KEY_LEN: usize = 32;
/// Authenticated with every ticket, so that nothing else sealed under a key reads as one.
const AAD: &[u8] = b"trustmesh tls13 ticket v1";
/// Most keys kept: the current one and the one before it.
const KEPT: usize = 2;

/// One key: when it was made, and the key.
struct TicketKey {
    created: u64,
    secret: [u8; KEY_LEN],
    aead: RandomizedNonceKey,
}

impl TicketKey {
    fn new(created: u64, secret: [u8; KEY_LEN]) -> anyhow::Result<Self> {
        let aead = RandomizedNonceKey::new(&AES_256_GCM, &secret)
            .map_err(|_| anyhow::anyhow!("AES-256-GCM refused a ticket key"))?;
        Ok(Self {
            created,
            secret,
            aead,
        })
    }

    fn fresh(now: u64) -> anyhow::Result<Self> {
        let mut secret = [0u8; KEY_LEN];
        aws_lc_rs::rand::SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
        Self::new(now, secret)
    }

    /// May still open tickets at `now`.
    fn opens_at(&self, now: u64) -> bool {
        now.saturating_sub(self.created) < 2 * ROTATE.as_secs()
    }
}

/// The file's form: keys newest first, each `{created (Unix seconds), key (base64)}`.
#[derive(Serialize, Deserialize)]
struct KeyFile {
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    created: u64,
    key: String,
}

/// The ticket keys of one control plane; a rustls [`rustls::server::ProducesTickets`].
pub struct TicketKeys {
    dir: PathBuf,
    keys: RwLock<Vec<TicketKey>>,
}

impl std::fmt::Debug for TicketKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TicketKeys(<redacted>)")
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl TicketKeys {
    /// The keys kept in `dir` (made and written, mode 0600, when there are none or the newest
    /// is due for rotation at `now`). A damaged or loosely permitted file is an error.
    pub fn load(dir: &Path, now: SystemTime) -> anyhow::Result<Self> {
        files::ensure_private_dir(dir)?;
        let this = Self {
            dir: dir.to_path_buf(),
            keys: RwLock::new(Vec::new()),
        };
        this.rotate_if_due(now)?;
        Ok(this)
    }

    /// Replaces the current key when it is [`ROTATE`] old at `now` (a replica on the same
    /// folder that rotated first is followed instead); keys past opening are dropped. Returns
    /// whether the keys changed. When the file cannot be written the new key is used anyway
    /// (old tickets must stop opening on time); a restart then starts with fresh keys.
    pub fn rotate_if_due(&self, now: SystemTime) -> anyhow::Result<bool> {
        let now = unix(now);
        let due = |keys: &[TicketKey]| {
            keys.first()
                .is_none_or(|k| now.saturating_sub(k.created) >= ROTATE.as_secs())
        };
        if !due(&self.read()) {
            return Ok(false);
        }
        let _lock = DataDirLock::acquire(&self.dir)?;
        let path = self.dir.join(TICKET_KEYS);
        let mut keys = if path.exists() {
            read_file(&path)?
        } else {
            Vec::new()
        };
        keys.retain(|k| k.opens_at(now));
        if due(&keys) {
            keys.insert(0, TicketKey::fresh(now)?);
            keys.truncate(KEPT);
            if let Err(e) = write_file(&path, &keys) {
                tracing::warn!("keeping the new TLS ticket key in memory only: {e:#}");
            }
        }
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
        Ok(true)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<TicketKey>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Seals `plain` under the current key: `nonce || ciphertext || tag`.
    fn seal(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let keys = self.read();
        let key = keys.first()?;
        let mut sealed = plain.to_vec();
        let nonce = key
            .aead
            .seal_in_place_append_tag(Aad::from(AAD), &mut sealed)
            .ok()?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&sealed);
        Some(out)
    }

    /// Opens a ticket sealed by a key that may still open at `now`; `None` for anything else
    /// (the client then gets a full handshake).
    fn open(&self, ticket: &[u8], now: u64) -> Option<Vec<u8>> {
        let nonce_bytes: [u8; NONCE_LEN] = ticket.get(..NONCE_LEN)?.try_into().ok()?;
        let sealed = ticket.get(NONCE_LEN..)?;
        let keys = self.read();
        keys.iter().filter(|k| k.opens_at(now)).find_map(|k| {
            let mut buf = sealed.to_vec();
            let nonce = Nonce::assume_unique_for_key(nonce_bytes);
            let plain = k
                .aead
                .open_in_place(nonce, Aad::from(AAD), &mut buf)
                .ok()?
                .len();
            buf.truncate(plain);
            Some(buf)
        })
    }

    /// Rotates on schedule until the process ends.
    pub async fn rotate_forever(self: std::sync::Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let this = self.clone();
            let r =
                tokio::task::spawn_blocking(move || this.rotate_if_due(SystemTime::now())).await;
            match r {
                Ok(Ok(true)) => tracing::info!("rotated the TLS session ticket key"),
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!("rotating the TLS session ticket key: {e:#}"),
                Err(e) => tracing::warn!("rotating the TLS session ticket key: {e}"),
            }
        }
    }
}

impl rustls::server::ProducesTickets for TicketKeys {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        u32::try_from(ROTATE.as_secs()).unwrap_or(u32::MAX)
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open(cipher, unix(SystemTime::now()))
    }
}

fn read_file(path: &Path) -> anyhow::Result<Vec<TicketKey>> {
    let text = files::read_private(path)?;
    let file: KeyFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a ticket key file", path.display()))?;
    file.keys
        .into_iter()
        .map(|e| {
            let bytes = STANDARD
                .decode(e.key.trim())
                .ok()
                .and_then(|b| <[u8; KEY_LEN]>::try_from(b).ok())
                .with_context(|| format!("{} holds a damaged key", path.display()))?;
            TicketKey::new(e.created, bytes)
        })
        .collect()
}

fn write_file(path: &Path, keys: &[TicketKey]) -> anyhow::Result<()> {
    let file = KeyFile {
        keys: keys
            .iter()
            .map(|k| KeyEntry {
                created: k.created,
                key: STANDARD.encode(k.secret),
            })
            .collect(),
    };
    files::write_atomic(path, serde_json::to_string(&file)?.as_bytes(), 0o600)
}

#[cfg(test)]
mod tests;
