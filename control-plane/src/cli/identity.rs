//! Command line: `trustmesh identity block|unblock|list`, the shared blocklist
//! ([`crate::domain::blocklist`]) that every replica follows within a second: the data folder's,
//! or with `--kubernetes` / `--kubeconfig` the `trustmesh-blocklist` ConfigMap.

use std::process::ExitCode;
use std::time::SystemTime;

use clap::{Args, Subcommand};
use trustmesh_certs::{SpiffeId, TrustDomain};

use super::{Shared, StateArgs};
use crate::domain::blocklist::{self, Blocked};
use crate::domain::ca::{kube_api, store as ca_store};

/// `trustmesh identity ...`.
#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Block an identity: no more certificates for it, and every sidecar refuses its new
    /// connections and requests within a second (no need to wait for its certificate to expire).
    Block(IdentityArgs),
    /// Lift a block.
    Unblock(IdentityArgs),
    /// List the blocked identities.
    List(StateArgs),
}

/// An identity and where the shared state is.
#[derive(Debug, Args)]
pub struct IdentityArgs {
    /// The SPIFFE ID.
    pub identity: SpiffeId,
    #[command(flatten)]
    state: StateArgs,
}

/// Runs `trustmesh identity ...`.
pub fn run(command: IdentityCommand) -> anyhow::Result<ExitCode> {
    match command {
        IdentityCommand::Block(a) => {
            let (changed, place) = match a.state.open()? {
                Shared::Dir(dir) => {
                    check_trust_domain(ca_store::load_existing(&dir)?.trust_domain(), &a.identity)?;
                    let changed = blocklist::block(&dir, &a.identity, SystemTime::now())?;
                    (changed, format!("on {}", dir.display()))
                }
                Shared::Kube(kube, rt) => {
                    let changed = rt.block_on(async {
                        let ca = kube_api::load(&kube, None).await?.signer;
                        check_trust_domain(ca.trust_domain(), &a.identity)?;
                        blocklist::kube_api::block(&kube, &a.identity, SystemTime::now()).await
                    })?;
                    (changed, format!("of namespace {}", kube.namespace))
                }
            };
            if changed {
                println!(
                    "blocked {}: control planes {place} refuse its certificates from now on, and \
                     every sidecar refuses its connections and requests within a second",
                    a.identity,
                );
            } else {
                println!("{} was already blocked", a.identity);
            }
        }
        IdentityCommand::Unblock(a) => {
            let changed = match a.state.open()? {
                Shared::Dir(dir) => blocklist::unblock(&dir, &a.identity)?,
                Shared::Kube(kube, rt) => {
                    rt.block_on(blocklist::kube_api::unblock(&kube, &a.identity))?
                }
            };
            if changed {
                println!("unblocked {}", a.identity);
            } else {
                println!("{} was not blocked", a.identity);
            }
        }
        IdentityCommand::List(state) => print_list(&read(&state.open()?)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// The blocked identities of the shared state.
pub fn read(shared: &Shared) -> anyhow::Result<Blocked> {
    match shared {
        Shared::Dir(dir) => blocklist::read(dir),
        Shared::Kube(kube, rt) => rt.block_on(blocklist::kube_api::read(kube)),
    }
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

fn check_trust_domain(td: &TrustDomain, id: &SpiffeId) -> anyhow::Result<()> {
    if id.trust_domain_str() != td.as_str() {
        anyhow::bail!("{id} is not in the mesh's trust domain {td}");
    }
    Ok(())
}
