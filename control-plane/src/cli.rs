//! Command line, the top layer of the control plane: the flags of `trustmesh` and the dispatch
//! to each subcommand, one file per command (`serve`, `demo`, `token`, `ca`, `identity`,
//! `policy`, `authz`, `status`, `admin-cert`). Commands call the API layer ([`crate::api`],
//! `serve` only), the domain ([`crate::domain`]) and storage ([`crate::storage`]); nothing below
//! imports from here. Every flag also reads `TRUSTMESH_<FLAG>` from the environment; a flag
//! given on the command line wins.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

mod admin_cert;
mod authz;
mod ca;
mod demo;
mod identity;
mod policy;
mod route;
mod serve;
mod status;
mod token;

/// trustmesh: a zero-trust service mesh. The control plane and operator CLI.
#[derive(Debug, Parser)]
#[command(name = "trustmesh", version, about)]
pub struct Cli {
    /// Log filter (`info`, `debug`, `trustmesh=debug,hyper=warn`); RUST_LOG wins when set.
    #[arg(
        long,
        global = true,
        env = "TRUSTMESH_LOG_LEVEL",
        default_value = "info"
    )]
    pub log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: the mesh CA, the policy source and the API on :15012.
    Serve(Box<serve::ServeArgs>),
    /// Bootstrap tokens for proxies.
    Token {
        #[command(subcommand)]
        command: token::TokenCommand,
    },
    /// Policy folders.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Authorization questions answered from a policy folder.
    Authz {
        #[command(subcommand)]
        command: authz::AuthzCommand,
    },
    /// Route questions answered from a policy folder (Gateway API HTTPRoutes).
    Route {
        #[command(subcommand)]
        command: route::RouteCommand,
    },
    /// Run a whole mesh on loopback with the example policies: a control plane, three example
    /// services and their sidecars. Ctrl-C stops everything.
    Demo(demo::DemoArgs),
    /// The proxies connected and the control plane's own state (`GET /v1/proxies`, with the
    /// admin certificate).
    Status(status::StatusArgs),
    /// Write a client certificate and key for the admin identity
    /// (spiffe://TD/ns/trustmesh-system/sa/admin) to a 0600 file, for `trustmesh status`.
    AdminCert(admin_cert::AdminCertArgs),
    /// The mesh CA: rotation without restarts, and its state.
    Ca {
        #[command(subcommand)]
        command: ca::CaCommand,
    },
    /// Block and unblock identities (revocation without waiting for certificates to expire).
    Identity {
        #[command(subcommand)]
        command: identity::IdentityCommand,
    },
}

/// The data folder shared with `trustmesh serve`.
#[derive(Debug, Args)]
pub struct DataDirArg {
    /// The control plane's data folder (shared by every replica).
    #[arg(long, env = "TRUSTMESH_DATA_DIR", default_value = ".trustmesh")]
    pub data_dir: std::path::PathBuf,
}

/// Where the shared state is: the data folder, or with `--kubernetes` / `--kubeconfig` the
/// Kubernetes API (`trustmesh identity`, `trustmesh ca`).
#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    kube: crate::storage::kube::KubeArgs,
}

/// The shared state a command works on.
pub enum Shared {
    /// The data folder.
    Dir(std::path::PathBuf),
    /// The Kubernetes API, and the runtime its client runs on.
    Kube(crate::storage::kube::Kube, tokio::runtime::Runtime),
}

impl StateArgs {
    /// Connects to the API in Kubernetes mode, else names the data folder.
    pub fn open(&self) -> anyhow::Result<Shared> {
        if !self.kube.enabled() {
            return Ok(Shared::Dir(self.data.data_dir.clone()));
        }
        let rt = runtime()?;
        match rt.block_on(self.kube.connect())? {
            Some(kube) => Ok(Shared::Kube(kube, rt)),
            None => Ok(Shared::Dir(self.data.data_dir.clone())),
        }
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            runtime()?.block_on(serve::run(*args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token { command } => {
            token::run(command)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy { command } => Ok(policy::run(command)),
        Command::Authz { command } => authz::run(command),
        Command::Demo(args) => runtime()?.block_on(demo::run(args)),
        Command::Route {
            command: route::RouteCommand::Check(args),
        } => route::run(args),
        Command::Status(args) => {
            runtime()?.block_on(status::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::AdminCert(args) => {
            admin_cert::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ca { command } => ca::run(command),
        Command::Identity { command } => identity::run(command),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
