//! Command line: `trustmesh token create`, a single-use bootstrap token bound to one identity
//! ([`crate::domain::tokens`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use trustmesh_certs::SpiffeId;

use crate::domain::ca::store as ca_store;
use crate::domain::{reserved, tokens};

/// `trustmesh token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a single-use bootstrap token bound to one identity; prints the token.
    Create(TokenCreateArgs),
}

/// Flags of `trustmesh token create`.
#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The SPIFFE ID the token's bearer may get a certificate for.
    #[arg(long, env = "TRUSTMESH_IDENTITY")]
    identity: SpiffeId,
    /// Attested labels (k=v) bound to the identity; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// How long the token may be used (once).
    #[arg(long, env = "TRUSTMESH_TTL", default_value = "15m", value_parser = trustmesh_runtime::parse_duration)]
    ttl: Duration,
    /// The control plane's data folder (holds the token signing key).
    #[arg(long, env = "TRUSTMESH_DATA_DIR", default_value = ".trustmesh")]
    data_dir: PathBuf,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not k=v"))?;
    if k.is_empty() {
        return Err(format!("{s:?} has an empty key"));
    }
    Ok((k.to_string(), v.to_string()))
}

/// Runs `trustmesh token ...`: prints the token.
pub fn run(command: TokenCommand) -> anyhow::Result<()> {
    let TokenCommand::Create(args) = command;
    let td = ca_store::trust_domain_of(&args.data_dir)?;
    if args.identity.trust_domain_str() != td.as_str() {
        anyhow::bail!(
            "--identity {} is not in the CA's trust domain {td}",
            args.identity,
        );
    }
    if reserved::is_reserved(&td, &args.identity) {
        anyhow::bail!(
            "--identity {} is reserved for the control plane and its operators and never \
             gets a certificate through a token (for the admin certificate use \
             `trustmesh admin-cert`)",
            args.identity
        );
    }
    let key = tokens::load_or_create_key(&args.data_dir)?;
    let labels: BTreeMap<String, String> = args.labels.into_iter().collect();
    let token =
        tokens::create(&key, &args.identity, labels, args.ttl).context("creating the token")?;
    println!("{}", token.expose());
    Ok(())
}
