//! Domain: blocked identities, revocation that does not wait for a certificate to expire.
//!
//! `trustmesh identity block SPIFFE_ID` writes the identity into the shared blocklist: outside
//! Kubernetes `blocked-identities.json` in the data folder (under the data folder's lock,
//! replaced atomically), in Kubernetes mode the `trustmesh-blocklist` ConfigMap ([`kube_api`]).
//! Every `serve` replica follows it within a fraction of a second ([`crate::domain::trust`]),
//! refuses to issue certificates to a blocked identity, and pushes the list in every proxy's
//! snapshot; the sidecars then refuse new connections and requests from it at once. `unblock`
//! removes it. The shared list is the one source of truth, so it survives restarts and is the
//! same on every replica; concurrent writers are ordered by the folder's lock or by the API's
//! `resourceVersion`, never by clocks.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use trustmesh_certs::SpiffeId;

use crate::storage::files;
use crate::storage::lock::DataDirLock;
pub use crate::storage::paths::BLOCKED_FILE;

pub mod kube_api;

/// The stored form (the file's, and the ConfigMap's `blocked-identities.json`):
/// `{"blocked": [{"identity": ID, "blocked_at": RFC3339}]}`.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Form {
    blocked: Vec<Entry>,
    /// The dated unblocks that builds with `--peers` kept for their exchange: read and
    /// dropped (an identity listed there is not blocked), never written.
    #[serde(default, skip_serializing)]
    unblocked: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    identity: SpiffeId,
    blocked_at: String,
}

/// The blocked identities and when each was blocked (RFC 3339), sorted by identity.
pub type Blocked = BTreeMap<SpiffeId, String>;

/// Parses the stored form; `what` names it in errors. A time that is not RFC 3339 is refused,
/// as is anything else that does not parse: the caller then keeps the list it had, and never
/// silently unblocks everyone.
pub fn parse(text: &str, what: &str) -> anyhow::Result<Blocked> {
    let form: Form =
        serde_json::from_str(text).with_context(|| format!("{what} is not a valid blocklist"))?;
    let mut blocked = Blocked::new();
    for e in form.blocked {
        time::OffsetDateTime::parse(
            &e.blocked_at,
            &time::format_description::well_known::Rfc3339,
        )
        .with_context(|| {
            format!(
                "{what} is not a valid blocklist: {:?} is not an RFC 3339 time",
                e.blocked_at
            )
        })?;
        blocked.insert(e.identity, e.blocked_at);
    }
    Ok(blocked)
}

/// The stored form of `blocked` (pretty JSON, newline-terminated).
pub fn render(blocked: &Blocked) -> anyhow::Result<String> {
    let form = Form {
        blocked: blocked
            .iter()
            .map(|(identity, at)| Entry {
                identity: identity.clone(),
                blocked_at: at.clone(),
            })
            .collect(),
        unblocked: Vec::new(),
    };
    let mut json = serde_json::to_string_pretty(&form)?;
    json.push('\n');
    Ok(json)
}

/// Reads the blocklist of `dir`; no file is an empty list. A file that does not parse is an
/// error.
pub fn read(dir: &Path) -> anyhow::Result<Blocked> {
    let path = dir.join(BLOCKED_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => parse(&text, &path.display().to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Blocked::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn write(dir: &Path, blocked: &Blocked) -> anyhow::Result<()> {
    files::write_atomic(&dir.join(BLOCKED_FILE), render(blocked)?.as_bytes(), 0o644)
}

/// Adds `id` to the blocklist of `dir`; `false` when it was already there.
pub fn block(dir: &Path, id: &SpiffeId, now: SystemTime) -> anyhow::Result<bool> {
    let _lock = DataDirLock::acquire(dir)?;
    let mut blocked = read(dir)?;
    if blocked.contains_key(id) {
        return Ok(false);
    }
    blocked.insert(id.clone(), trustmesh_runtime::rfc3339_precise(now));
    write(dir, &blocked)?;
    Ok(true)
}

/// Removes `id` from the blocklist of `dir`; `false` when it was not there.
pub fn unblock(dir: &Path, id: &SpiffeId) -> anyhow::Result<bool> {
    let _lock = DataDirLock::acquire(dir)?;
    let mut blocked = read(dir)?;
    if blocked.remove(id).is_none() {
        return Ok(false);
    }
    write(dir, &blocked)?;
    Ok(true)
}

#[cfg(test)]
mod tests;
