//! Command-line flags of `trustmesh` and the dispatch to each subcommand. Every flag also reads
//! `TRUSTMESH_<FLAG>` from the environment; a flag given on the command line wins.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use trustmesh_certs::{SpiffeId, TrustDomain};

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
    Serve(Box<ServeArgs>),
    /// Bootstrap tokens for proxies.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Policy folders.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Authorization questions answered from a policy folder.
    Authz {
        #[command(subcommand)]
        command: AuthzCommand,
    },
    /// Route questions answered from a policy folder (Gateway API HTTPRoutes).
    Route {
        #[command(subcommand)]
        command: crate::route_check::RouteCommand,
    },
    /// Run a whole mesh on loopback with the example policies: a control plane, three example
    /// services and their sidecars. Ctrl-C stops everything.
    Demo(DemoArgs),
    /// The proxies connected and the control plane's own state (`GET /v1/proxies`, with the
    /// admin certificate).
    Status(crate::status::StatusArgs),
    /// Write a client certificate and key for the admin identity
    /// (spiffe://TD/ns/trustmesh-system/sa/admin) to a 0600 file, for `trustmesh status`.
    AdminCert(crate::admin_cert::AdminCertArgs),
    /// The mesh CA: rotation without restarts, and its state.
    Ca {
        #[command(subcommand)]
        command: crate::ca_cli::CaCommand,
    },
    /// Block and unblock identities (revocation without waiting for certificates to expire).
    Identity {
        #[command(subcommand)]
        command: crate::blocklist::IdentityCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a single-use bootstrap token bound to one identity; prints the token.
    Create(TokenCreateArgs),
}

#[derive(Debug, Subcommand)]
enum AuthzCommand {
    /// What would a sidecar decide for this request? Prints ALLOW or DENY with the deciding
    /// policy and rule; exit 0 allow, 3 deny.
    Check(crate::authz_check::AuthzCheckArgs),
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate a policy folder: exit 0, or 1 with every error as FILE:LINE:COL: message.
    Validate {
        /// The policy folder.
        dir: PathBuf,
    },
}

/// Flags of `trustmesh serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the HTTPS API.
    #[arg(long, env = "TRUSTMESH_LISTEN", default_value = "127.0.0.1:15012")]
    pub listen: SocketAddr,
    /// Folder of the CA key (mode 0600), the CA certificate, trust-bundle.pem and token state.
    #[arg(long, env = "TRUSTMESH_DATA_DIR", default_value = ".trustmesh")]
    pub data_dir: PathBuf,
    /// The policy folder (usually a git checkout); watched for changes.
    #[arg(long, env = "TRUSTMESH_POLICIES", default_value = "policies")]
    pub policies: PathBuf,
    /// The mesh's trust domain; must agree with mesh.yaml and with an existing CA.
    #[arg(long, env = "TRUSTMESH_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: TrustDomain,
    /// Lifetime of the workload certificates this CA issues (e.g. 1h, 10m, 30s).
    #[arg(long, env = "TRUSTMESH_CERT_TTL", default_value = "1h", value_parser = parse_duration)]
    pub cert_ttl: Duration,
    /// Extra DNS names for the control plane's own serving certificate (besides localhost).
    #[arg(
        long = "server-name",
        env = "TRUSTMESH_SERVER_NAMES",
        value_delimiter = ','
    )]
    pub server_names: Vec<String>,
    /// Other replicas to exchange blocked identities with, when they do not share this
    /// replica's --data-dir: `HOST:PORT`, repeated or comma-separated; a name that resolves to
    /// several addresses (a headless Service) names them all.
    #[arg(long = "peers", env = "TRUSTMESH_PEERS", value_delimiter = ',', value_parser = crate::peers::parse_peer)]
    pub peers: Vec<String>,
    /// Bring your own CA: the signing certificate (an intermediate signed by an offline root),
    /// then its chain up to the root. Imported into --data-dir on first start; with --ca-key.
    #[arg(long, env = "TRUSTMESH_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The key of --ca-cert (PKCS#8 P-256 PEM, mode 0600).
    #[arg(long, env = "TRUSTMESH_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Kubernetes bootstrap with projected ServiceAccount tokens.
    #[command(flatten)]
    pub k8s: crate::k8s_jwt::K8sArgs,
    /// On SIGTERM, how long open requests may take to finish before the server exits
    /// (snapshot long polls are answered at once).
    #[arg(long, env = "TRUSTMESH_DRAIN_TIMEOUT", default_value = "25s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Timeouts and caps of the API listener.
    #[command(flatten)]
    pub limits: crate::limits::LimitArgs,
    /// YAML file with any of these flags as keys (`cert_ttl: 30m`); flags and TRUSTMESH_*
    /// variables win over it.
    #[arg(long, env = "TRUSTMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the merged configuration with the source of each value, and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Flags of `trustmesh token create`.
#[derive(Debug, Args)]
struct TokenCreateArgs {
    /// The SPIFFE ID the token's bearer may get a certificate for.
    #[arg(long, env = "TRUSTMESH_IDENTITY")]
    identity: SpiffeId,
    /// Attested labels (k=v) bound to the identity; repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// How long the token may be used (once).
    #[arg(long, env = "TRUSTMESH_TTL", default_value = "15m", value_parser = parse_duration)]
    ttl: Duration,
    /// The control plane's data folder (holds the token signing key).
    #[arg(long, env = "TRUSTMESH_DATA_DIR", default_value = ".trustmesh")]
    data_dir: PathBuf,
}

/// Flags of `trustmesh demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Where the demo keeps its CA and state (a temporary folder by default).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration ({e})"))?;
    if d.is_zero() {
        return Err(format!("{s:?} is zero; a positive duration is needed"));
    }
    Ok(d)
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

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            runtime()?.block_on(crate::serve::run(*args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Token {
            command: TokenCommand::Create(args),
        } => {
            let ca = crate::ca_store::load_existing(&args.data_dir)?;
            if args.identity.trust_domain_str() != ca.trust_domain().as_str() {
                anyhow::bail!(
                    "--identity {} is not in the CA's trust domain {}",
                    args.identity,
                    ca.trust_domain()
                );
            }
            if crate::admin_cert::is_reserved(ca.trust_domain(), &args.identity) {
                anyhow::bail!(
                    "--identity {} is reserved for the control plane and its operators and never \
                     gets a certificate through a token (for the admin certificate use \
                     `trustmesh admin-cert`)",
                    args.identity
                );
            }
            let key = crate::tokens::load_or_create_key(&args.data_dir)?;
            let labels: BTreeMap<String, String> = args.labels.into_iter().collect();
            let token = crate::tokens::create(&key, &args.identity, labels, args.ttl)
                .context("creating the token")?;
            println!("{}", token.expose());
            Ok(ExitCode::SUCCESS)
        }
        Command::Policy {
            command: PolicyCommand::Validate { dir },
        } => Ok(crate::validate::run(&dir)),
        Command::Authz {
            command: AuthzCommand::Check(args),
        } => crate::authz_check::run(args),
        Command::Route {
            command: crate::route_check::RouteCommand::Check(args),
        } => crate::route_check::run(args),
        Command::Demo(args) => runtime()?.block_on(crate::demo::run(args)),
        Command::Status(args) => {
            runtime()?.block_on(crate::status::run(args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::AdminCert(args) => {
            crate::admin_cert::run(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ca { command } => crate::ca_cli::run(command),
        Command::Identity { command } => crate::blocklist::run(command),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}
