//! Command line: `trustmesh identity block|unblock|list`, the blocklist in the data folder
//! ([`crate::domain::blocklist`]) that every replica reads within a second.

use std::path::Path;
use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Subcommand};
use trustmesh_certs::SpiffeId;

use super::DataDirArg;
use crate::domain::blocklist::{block, read, unblock, Blocked};
use crate::domain::ca::store as ca_store;

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
            if unblock(&a.data.data_dir, &a.identity, SystemTime::now())? {
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
    let ca = ca_store::load_existing(dir)?;
    if id.trust_domain_str() != ca.trust_domain().as_str() {
        anyhow::bail!(
            "{id} is not in the mesh's trust domain {}",
            ca.trust_domain()
        );
    }
    Ok(())
}
