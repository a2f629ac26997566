//! Domain: blocked identities, revocation that does not wait for a certificate to expire.
//!
//! `trustmesh identity block SPIFFE_ID` writes the identity into `blocked-identities.json` in
//! the data folder (under the data folder's lock, replaced atomically). Every `serve` replica on
//! that folder reads the file within a fraction of a second ([`crate::domain::trust`]), refuses to
//! issue certificates to a blocked identity, and pushes the list in every proxy's snapshot; the
//! sidecars then refuse new connections and requests from it at once. `unblock` removes it.
//! The file is the one source of truth, so the list survives restarts and is the same on every
//! replica.
//!
//! Replicas with data folders of their own (Kubernetes without a shared volume) exchange the
//! list with `--peers` ([`crate::domain::peers`]): each entry is a last-writer-wins register, so an
//! unblock is kept as a dated tombstone (`unblocked`) that wins over an older block, and a
//! block and an unblock at the same instant resolve to blocked. Timestamps carry nanoseconds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use trustmesh_certs::SpiffeId;

use crate::storage::files;
use crate::storage::lock::DataDirLock;
pub use crate::storage::paths::BLOCKED_FILE;

/// How far into the future a peer's event may be dated (clock skew between replicas). An
/// event dated later is refused: last writer wins, so a bad clock or a malicious replica could
/// otherwise pin a block or an unblock that no later event ever overrides.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Unblocks older than this are forgotten. A replica cut off from its peers for longer may
/// bring back a block that was lifted meanwhile: the safe way to be wrong.
const TOMBSTONE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The file's form, also the body of `GET /v1/blocklist`:
/// `{"blocked": [{"identity": ID, "blocked_at": RFC3339}], "unblocked": [{"identity": ID,
/// "unblocked_at": RFC3339}]}` (`unblocked` may be absent).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileForm {
    blocked: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    unblocked: Vec<Tombstone>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    identity: SpiffeId,
    blocked_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Tombstone {
    identity: SpiffeId,
    unblocked_at: String,
}

/// The blocked identities and when each was blocked (RFC 3339), sorted by identity.
pub type Blocked = BTreeMap<SpiffeId, String>;

/// The blocklist with its tombstones: what replicas exchange and merge.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct State {
    /// Blocked identities and when.
    pub blocked: Blocked,
    /// Identities unblocked and when (RFC 3339).
    pub unblocked: BTreeMap<SpiffeId, String>,
}

impl State {
    /// The file's (and the API's) form.
    pub fn to_form(&self) -> FileForm {
        FileForm {
            blocked: self
                .blocked
                .iter()
                .map(|(identity, at)| Entry {
                    identity: identity.clone(),
                    blocked_at: at.clone(),
                })
                .collect(),
            unblocked: self
                .unblocked
                .iter()
                .map(|(identity, at)| Tombstone {
                    identity: identity.clone(),
                    unblocked_at: at.clone(),
                })
                .collect(),
        }
    }

    /// From the file's (or a peer's) form. Timestamps that are not RFC 3339 are refused, so a
    /// merge never compares what it cannot read.
    pub fn from_form(form: FileForm) -> anyhow::Result<Self> {
        for at in form
            .blocked
            .iter()
            .map(|e| &e.blocked_at)
            .chain(form.unblocked.iter().map(|t| &t.unblocked_at))
        {
            parse_time(at)?;
        }
        Ok(Self {
            blocked: form
                .blocked
                .into_iter()
                .map(|e| (e.identity, e.blocked_at))
                .collect(),
            unblocked: form
                .unblocked
                .into_iter()
                .map(|t| (t.identity, t.unblocked_at))
                .collect(),
        }
        .canonical())
    }

    /// Keeps one entry per identity, its latest event (a hand-edited file, or a peer, may
    /// list an identity as both blocked and unblocked).
    fn canonical(mut self) -> Self {
        let both: Vec<SpiffeId> = self
            .blocked
            .keys()
            .filter(|id| self.unblocked.contains_key(*id))
            .cloned()
            .collect();
        for id in both {
            match self.last_event(&id) {
                Some(e) if e.blocked => self.unblocked.remove(&id),
                _ => self.blocked.remove(&id),
            };
        }
        self
    }

    /// Takes in `other` entry by entry, the later event winning (a block on a tie); returns
    /// whether anything changed. Events of `other` dated more than [`MAX_CLOCK_SKEW`] after
    /// `now` are left out ([`State::future_events`] names them).
    pub fn merge(&mut self, other: &State, now: SystemTime) -> bool {
        let latest = time::OffsetDateTime::from(now + MAX_CLOCK_SKEW);
        let mut changed = false;
        let ids: Vec<SpiffeId> = other
            .blocked
            .keys()
            .chain(other.unblocked.keys())
            .cloned()
            .collect();
        for id in ids {
            let mine = self.last_event(&id);
            let theirs = other.last_event(&id);
            let (Some(theirs), mine) = (theirs, mine) else {
                continue;
            };
            if theirs.at > latest {
                continue;
            }
            if mine.as_ref().is_some_and(|m| !theirs.beats(m)) {
                continue;
            }
            match theirs.blocked {
                true => {
                    self.unblocked.remove(&id);
                    self.blocked.insert(id, theirs.at_text);
                }
                false => {
                    self.blocked.remove(&id);
                    self.unblocked.insert(id, theirs.at_text);
                }
            }
            changed = true;
        }
        changed
    }

    /// The identities whose latest event is dated more than [`MAX_CLOCK_SKEW`] after `now`
    /// (what [`State::merge`] refuses to take in), with that date.
    pub fn future_events(&self, now: SystemTime) -> Vec<(SpiffeId, String)> {
        let latest = time::OffsetDateTime::from(now + MAX_CLOCK_SKEW);
        self.blocked
            .keys()
            .chain(self.unblocked.keys())
            .filter_map(|id| self.last_event(id).map(|e| (id, e)))
            .filter(|(_, e)| e.at > latest)
            .map(|(id, e)| (id.clone(), e.at_text))
            .collect()
    }

    /// The latest thing that happened to `id`: a block or an unblock, and when.
    fn last_event(&self, id: &SpiffeId) -> Option<Event> {
        let block = self.blocked.get(id).and_then(|t| Event::new(true, t));
        let unblock = self.unblocked.get(id).and_then(|t| Event::new(false, t));
        match (block, unblock) {
            (Some(b), Some(u)) => Some(if u.beats(&b) { u } else { b }),
            (b, u) => b.or(u),
        }
    }

    /// Forgets unblocks older than [`TOMBSTONE_TTL`].
    fn prune(&mut self, now: SystemTime) {
        let Some(since) = now.checked_sub(TOMBSTONE_TTL) else {
            return;
        };
        let since = time::OffsetDateTime::from(since);
        self.unblocked
            .retain(|_, at| parse_time(at).map_or(true, |t| t >= since));
    }
}

/// A block (`blocked`) or an unblock at `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    blocked: bool,
    at: time::OffsetDateTime,
    at_text: String,
}

impl Event {
    fn new(blocked: bool, at: &str) -> Option<Self> {
        Some(Self {
            blocked,
            at: parse_time(at).ok()?,
            at_text: at.to_string(),
        })
    }

    /// Later wins; at the same instant, a block wins (fail closed).
    fn beats(&self, other: &Event) -> bool {
        self.at > other.at || (self.at == other.at && self.blocked && !other.blocked)
    }
}

fn parse_time(at: &str) -> anyhow::Result<time::OffsetDateTime> {
    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{at:?} is not an RFC 3339 time"))
}

/// Reads the blocklist of `dir`; no file is an empty list. A file that does not parse is an
/// error (the server then keeps the list it had, and never silently unblocks everyone).
pub fn read(dir: &Path) -> anyhow::Result<Blocked> {
    Ok(read_state(dir)?.blocked)
}

/// Reads the blocklist of `dir` with its tombstones.
pub fn read_state(dir: &Path) -> anyhow::Result<State> {
    let path = dir.join(BLOCKED_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let form: FileForm = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid blocklist", path.display()))?;
    State::from_form(form).with_context(|| format!("{} is not a valid blocklist", path.display()))
}

fn write(dir: &Path, state: &State) -> anyhow::Result<()> {
    let mut json = serde_json::to_vec_pretty(&state.to_form())?;
    json.push(b'\n');
    files::write_atomic(&dir.join(BLOCKED_FILE), &json, 0o644)
}

/// Adds `id` to the blocklist; `false` when it was already there.
pub fn block(dir: &Path, id: &SpiffeId, now: SystemTime) -> anyhow::Result<bool> {
    let _lock = DataDirLock::acquire(dir)?;
    let mut state = read_state(dir)?;
    if state.blocked.contains_key(id) {
        return Ok(false);
    }
    state.unblocked.remove(id);
    state
        .blocked
        .insert(id.clone(), trustmesh_runtime::rfc3339_precise(now));
    state.prune(now);
    write(dir, &state)?;
    Ok(true)
}

/// Removes `id` from the blocklist, leaving a dated tombstone for the peers; `false` when it
/// was not there.
pub fn unblock(dir: &Path, id: &SpiffeId, now: SystemTime) -> anyhow::Result<bool> {
    let _lock = DataDirLock::acquire(dir)?;
    let mut state = read_state(dir)?;
    if state.blocked.remove(id).is_none() {
        return Ok(false);
    }
    state
        .unblocked
        .insert(id.clone(), trustmesh_runtime::rfc3339_precise(now));
    state.prune(now);
    write(dir, &state)?;
    Ok(true)
}

/// Merges a peer's list into the one of `dir` (under the folder's lock), leaving out events
/// dated too far in the future; returns whether the folder's list changed.
pub fn merge(dir: &Path, theirs: &State) -> anyhow::Result<bool> {
    let _lock = DataDirLock::acquire(dir)?;
    let mut state = read_state(dir)?;
    let now = SystemTime::now();
    if !state.merge(theirs, now) {
        return Ok(false);
    }
    state.prune(now);
    write(dir, &state)?;
    Ok(true)
}

#[cfg(test)]
mod tests;
