//! The record of spent bootstrap tokens: `used-tokens` in the data folder, one line per token,
//! `<jti> <exp>` or, since enrolments are remembered, `<jti> <exp> <key>` where `<key>` is the
//! SHA-256 (hex) of the public key the token enrolled. Every replica on the data folder
//! appends to it under the folder's lock ([`crate::storage::lock`]) after reading it again, and the
//! line is fsynced before a certificate is returned, so a token stays spent across restarts
//! and replicas.
//!
//! A retry of the same enrolment (same token, same public key in the CSR) gets the same
//! answer: the proxy's request may time out after the token was spent, and its retry must not
//! be refused (a mass start would leave proxies without certificates). This replica answers
//! with the chain it issued (kept in memory until the token expires); another replica, or this
//! one after a restart, signs the same key again. A different key with a spent token is
//! refused.
//!
//! The file is read strictly: a line that is truncated or unreadable stops the start with the
//! file and line, since skipping it would make a spent token valid again.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::domain::tokens::{unix, Claims, TokenError};
use crate::storage::files;
use crate::storage::lock::DataDirLock;

use crate::storage::paths::USED_TOKENS as USED_FILE;

/// A line of `used-tokens` that cannot be read: the control plane refuses to start on it.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}:{line}: {reason}; the record of spent bootstrap tokens is damaged and a spent token \
     could be used again: refusing to start (restore the file, or remove the line once every \
     token issued before its damage has expired)",
    path.display()
)]
pub struct CorruptLine {
    /// The file.
    pub path: PathBuf,
    /// The line, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// Why the record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Reading the file failed.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A line is damaged.
    #[error(transparent)]
    Corrupt(#[from] CorruptLine),
}

/// One spent token as the file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spent {
    exp: u64,
    /// SHA-256 (hex) of the public key it enrolled; `None` for lines of older builds.
    key: Option<String>,
}

/// A certificate issued for a token, to answer a retry of that enrolment with.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// SHA-256 (hex) of the certificate's public key.
    pub key_sha256: String,
    /// The chain returned (leaf first, PEM).
    pub chain_pem: String,
    /// The leaf's NotAfter.
    pub not_after: SystemTime,
    /// The leaf's serial, hex.
    pub serial_hex: String,
}

/// The spent tokens of a data folder.
pub struct UsedTokens {
    dir: PathBuf,
    path: PathBuf,
    // Serializes this process's own callers before they queue on the file lock, and holds the
    // chains this replica issued, by token id.
    issued: Mutex<HashMap<String, (u64, Enrolled)>>,
}

impl UsedTokens {
    /// Opens the record of `dir`, dropping entries whose tokens have expired anyway. Fails on
    /// a damaged line, naming the file and the line, before rewriting anything.
    pub fn load(dir: &Path, now: SystemTime) -> anyhow::Result<Self> {
        let path = dir.join(USED_FILE);
        if path.exists() {
            let _lock = DataDirLock::acquire(dir)?;
            let used = read_used(&path, now)?;
            // Compact the file to what is still relevant.
            let mut compact = String::new();
            for (jti, spent) in &used {
                compact.push_str(&line(jti, spent));
            }
            files::write_atomic(&path, compact.as_bytes(), 0o600)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            path,
            issued: Mutex::new(HashMap::new()),
        })
    }

    /// Spends the token of `claims` on the certificate `fresh`, or, when the token was spent
    /// before on the same public key, answers with what that enrolment got (the chain this
    /// replica issued then, else `fresh`: the same key signed again). A token spent on another
    /// key, or recorded without one, is [`TokenError::AlreadyUsed`]. The use is on disk before
    /// this returns.
    pub fn spend(&self, claims: &Claims, fresh: Enrolled) -> Result<Enrolled, TokenError> {
        let mut issued = self.issued.lock().map_err(|_| TokenError::Store)?;
        let _lock = DataDirLock::acquire(&self.dir).map_err(|e| {
            tracing::warn!("locking the data folder for a token: {e:#}");
            TokenError::Store
        })?;
        let now = SystemTime::now();
        let used = read_used(&self.path, now).map_err(|e| {
            tracing::warn!("{e}");
            TokenError::Store
        })?;
        if let Some(spent) = used.get(&claims.jti) {
            if spent.key.as_deref() != Some(fresh.key_sha256.as_str()) {
                return Err(TokenError::AlreadyUsed);
            }
            let answer = match issued.get(&claims.jti) {
                Some((_, e)) if e.key_sha256 == fresh.key_sha256 => e.clone(),
                _ => fresh,
            };
            return Ok(answer);
        }
        let spent = Spent {
            exp: claims.exp,
            key: Some(fresh.key_sha256.clone()),
        };
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(|_| TokenError::Store)?;
        f.write_all(line(&claims.jti, &spent).as_bytes())
            .and_then(|_| f.sync_data())
            .map_err(|_| TokenError::Store)?;
        let now = unix(now);
        issued.retain(|_, (exp, _)| *exp > now);
        issued.insert(claims.jti.clone(), (claims.exp, fresh.clone()));
        Ok(fresh)
    }
}

fn line(jti: &str, spent: &Spent) -> String {
    match &spent.key {
        Some(key) => format!("{jti} {} {key}\n", spent.exp),
        None => format!("{jti} {}\n", spent.exp),
    }
}

/// The record as `jti -> spent`, without the entries that have expired by `now`. Every line
/// must be whole: `<32 hex> <digits>` and optionally ` <64 hex>`, ending in a newline.
fn read_used(path: &Path, now: SystemTime) -> Result<HashMap<String, Spent>, ReadError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(source) => {
            return Err(ReadError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let corrupt = |line: usize, reason: &'static str| CorruptLine {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let text = String::from_utf8(text).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        corrupt(line + 1, "it is not text")
    })?;
    let mut used = HashMap::new();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, raw) in lines.iter().enumerate() {
        let n = i + 1;
        let Some(l) = raw.strip_suffix('\n') else {
            return Err(corrupt(n, "the line is truncated (no newline at its end)").into());
        };
        let fields: Vec<&str> = l.split(' ').collect();
        let (jti, exp, key) = match fields.as_slice() {
            [jti, exp] => (*jti, *exp, None),
            [jti, exp, key] => (*jti, *exp, Some(*key)),
            _ => return Err(corrupt(n, "expected `<token id> <expiry> [<key hash>]`").into()),
        };
        if !is_hex(jti, 32) {
            return Err(corrupt(n, "the token id is not 32 hex digits").into());
        }
        if exp.is_empty() || !exp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(corrupt(n, "the expiry is not a number").into());
        }
        let exp: u64 = exp
            .parse()
            .map_err(|_| corrupt(n, "the expiry is out of range"))?;
        if key.is_some_and(|k| !is_hex(k, 64)) {
            return Err(corrupt(n, "the key hash is not 64 hex digits").into());
        }
        if exp > unix(now) {
            let key = key.map(str::to_string);
            used.insert(jti.to_string(), Spent { exp, key });
        }
    }
    Ok(used)
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests;
