//! Blocked identities: revocation that does not wait for a certificate to expire.
//!
//! `trustmesh identity block SPIFFE_ID` writes the identity into `blocked-identities.json` in
//! the data folder (under the data folder's lock, replaced atomically). Every `serve` replica on
//! that folder reads the file within a fraction of a second ([`crate::trust`]), refuses to
//! issue certificates to a blocked identity, and pushes the list in every proxy's snapshot; the
//! sidecars then refuse new connections and requests from it at once. `unblock` removes it.
//! The file is the one source of truth, so the list survives restarts and is the same on every
//! replica.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};
use trustmesh_certs::SpiffeId;

use crate::files;
use crate::lock::DataDirLock;

/// The blocklist's file name in the data folder.
pub const BLOCKED_FILE: &str = "blocked-identities.json";

/// The file's form: `{"blocked": [{"identity": ID, "blocked_at": RFC3339}]}`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    blocked: Vec<Entry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    identity: SpiffeId,
    blocked_at: String,
}

/// The blocked identities and when each was blocked (RFC 3339), sorted by identity.
pub type Blocked = BTreeMap<SpiffeId, String>;

/// Reads the blocklist of `dir`; no file is an empty list. A file that does not parse is an
/// error (the server then keeps the list it had, and never silently unblocks everyone).
pub fn read(dir: &Path) -> anyhow::Result<Blocked> {
    let path = dir.join(BLOCKED_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Blocked::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let form: FileForm = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid blocklist", path.display()))?;
    Ok(form
        .blocked
        .into_iter()
        .map(|e| (e.identity, e.blocked_at))
        .collect())
}

fn write(dir: &Path, blocked: &Blocked) -> anyhow::Result<()> {
    let form = FileForm {
        blocked: blocked
            .iter()
            .map(|(identity, at)| Entry {
                identity: identity.clone(),
                blocked_at: at.clone(),
            })
            .collect(),
    };
    let mut json = serde_json::to_vec_pretty(&form)?;
    json.push(b'\n');
    files::write_atomic(&dir.join(BLOCKED_FILE), &json, 0o644)
}

/// Adds `id` to the blocklist; `false` when it was already there.
pub fn block(dir: &Path, id: &SpiffeId, now: SystemTime) -> anyhow::Result<bool> {
    let _lock = DataDirLock::acquire(dir)?;
    let mut blocked = read(dir)?;
    if blocked.contains_key(id) {
        return Ok(false);
    }
    blocked.insert(id.clone(), crate::api::rfc3339(now));
    write(dir, &blocked)?;
    Ok(true)
}

/// Removes `id` from the blocklist; `false` when it was not there.
pub fn unblock(dir: &Path, id: &SpiffeId) -> anyhow::Result<bool> {
    let _lock = DataDirLock::acquire(dir)?;
    let mut blocked = read(dir)?;
    if blocked.remove(id).is_none() {
        return Ok(false);
    }
    write(dir, &blocked)?;
    Ok(true)
}

/// `trustmesh identity ...`.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Block an identity: no more certificates for it, and every sidecar refuses its new
    /// connections and requests within a second (no need to wait for its certificate to expire).
    Block(IdentityArgs),
    /// Lift a block.
    Unblock(IdentityArgs),
    /// List the blocked identities.
    List(DataDirArg),
}

/// An identity and the data folder.
#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// The SPIFFE ID.
    pub identity: SpiffeId,
    #[command(flatten)]
    data: DataDirArg,
}

/// The data folder shared with `trustmesh serve`.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The control plane's data folder (shared by every replica).
    #[arg(long, env = "TRUSTMESH_DATA_DIR", default_value = ".trustmesh")]
    pub data_dir: std::path::PathBuf,
}

/// Runs `trustmesh identity ...`.
pub fn run(command: IdentityCommand) -> anyhow::Result<ExitCode> {
    match command {
        IdentityCommand::Block(a) => {
            let dir = &a.data.data_dir;
            check_trust_domain(dir, &a.identity)?;
            if block(dir, &a.identity, SystemTime::now())? {
                println!(
                    "blocked {}: control planes on {} refuse its certificates from now on, and \
                     every sidecar refuses its connections and requests within a second",
                    a.identity,
                    dir.display()
                );
            } else {
                println!("{} was already blocked", a.identity);
            }
        }
        IdentityCommand::Unblock(a) => {
            if unblock(&a.data.data_dir, &a.identity)? {
                println!("unblocked {}", a.identity);
            } else {
                println!("{} was not blocked", a.identity);
            }
        }
        IdentityCommand::List(d) => print_list(&read(&d.data_dir)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the blocklist as a table (`IDENTITY  BLOCKED AT`), or says it is empty.
pub fn print_list(blocked: &Blocked) {
    if blocked.is_empty() {
        println!("no blocked identities");
        return;
    }
    let width = blocked
        .keys()
        .map(|id| id.as_str().len())
        .max()
        .unwrap_or(8);
    println!("{:<width$}  BLOCKED AT", "BLOCKED IDENTITY");
    for (id, at) in blocked {
        println!("{:<width$}  {at}", id.as_str());
    }
}

fn check_trust_domain(dir: &Path, id: &SpiffeId) -> anyhow::Result<()> {
    let ca = crate::ca_store::load_existing(dir)?;
    if id.trust_domain_str() != ca.trust_domain().as_str() {
        anyhow::bail!(
            "{id} is not in the mesh's trust domain {}",
            ca.trust_domain()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SpiffeId {
        SpiffeId::parse(s).unwrap()
    }

    #[test]
    fn block_and_unblock_persist_in_the_data_folder() {
        let dir = tempfile::tempdir().unwrap();
        let a = id("spiffe://cluster.local/ns/test/sa/a");
        assert!(read(dir.path()).unwrap().is_empty());
        assert!(block(dir.path(), &a, SystemTime::now()).unwrap());
        assert!(!block(dir.path(), &a, SystemTime::now()).unwrap());
        let listed = read(dir.path()).unwrap();
        assert_eq!(listed.keys().collect::<Vec<_>>(), vec![&a]);
        assert!(unblock(dir.path(), &a).unwrap());
        assert!(!unblock(dir.path(), &a).unwrap());
        assert!(read(dir.path()).unwrap().is_empty());
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_list() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(BLOCKED_FILE), "{not json").unwrap();
        assert!(read(dir.path()).is_err());
        let a = id("spiffe://cluster.local/ns/test/sa/a");
        assert!(block(dir.path(), &a, SystemTime::now()).is_err());
    }
}
