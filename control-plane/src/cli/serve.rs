//! Command line: `trustmesh serve` wires the CA, the bootstrap-token state, the policy source and the API
//! listener together, then runs until SIGTERM or Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::Args;
use trustmesh_certs::TrustDomain;

use crate::api::limits::{LimitArgs, Limits};
use crate::api::tickets::TicketKeys;
use crate::api::{listener, AppState, Metrics};
use crate::domain::ca::store::ImportFrom;
use crate::domain::k8s_jwt::{K8sArgs, K8sVerifier};
use crate::domain::policy_source::follow::follow;
use crate::domain::policy_source::PolicySource;
use crate::domain::snapshot;
use crate::domain::tokens;
use crate::domain::trust::TrustStore;
use crate::storage::kube::watch::ClusterCache;
use crate::storage::kube::KubeArgs;

/// Flags of `trustmesh serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address of the HTTPS API.
    #[arg(long, env = "TRUSTMESH_LISTEN", default_value = "127.0.0.1:15012")]
    pub listen: SocketAddr,
    /// Folder of the CA key (mode 0600), the CA certificate, trust-bundle.pem and token state;
    /// in Kubernetes mode only this replica's copy of trust-bundle.pem and its token state
    /// (the CA, its rotation and the blocklist are in the Kubernetes API).
    #[arg(long, env = "TRUSTMESH_DATA_DIR", default_value = ".trustmesh")]
    pub data_dir: PathBuf,
    /// The policy folder (usually a git checkout); watched for changes.
    #[arg(long, env = "TRUSTMESH_POLICIES", default_value = "policies")]
    pub policies: PathBuf,
    /// The mesh's trust domain; must agree with mesh.yaml and with an existing CA.
    #[arg(long, env = "TRUSTMESH_TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: TrustDomain,
    /// Lifetime of the workload certificates this CA issues (e.g. 1h, 10m, 30s).
    #[arg(long, env = "TRUSTMESH_CERT_TTL", default_value = "1h", value_parser = trustmesh_runtime::parse_duration)]
    pub cert_ttl: Duration,
    /// Extra DNS names for the control plane's own serving certificate (besides localhost).
    #[arg(
        long = "server-name",
        env = "TRUSTMESH_SERVER_NAMES",
        value_delimiter = ','
    )]
    pub server_names: Vec<String>,
    /// Bring your own CA: the signing certificate (an intermediate signed by an offline root),
    /// then its chain up to the root. Imported on first start (into --data-dir, or the
    /// trustmesh-ca Secret in Kubernetes mode); with --ca-key.
    #[arg(long, env = "TRUSTMESH_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,
    /// The key of --ca-cert (PKCS#8 P-256 PEM, mode 0600).
    #[arg(long, env = "TRUSTMESH_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,
    /// Kubernetes bootstrap with projected ServiceAccount tokens.
    #[command(flatten)]
    pub k8s: K8sArgs,
    /// Kubernetes mode: the registry from the cluster, shared state in the Kubernetes API.
    #[command(flatten)]
    pub kube: KubeArgs,
    /// On SIGTERM, how long open requests may take to finish before the server exits
    /// (snapshot long polls are answered at once).
    #[arg(long, env = "TRUSTMESH_DRAIN_TIMEOUT", default_value = "25s", value_parser = trustmesh_runtime::parse_duration)]
    pub drain_timeout: Duration,
    /// Timeouts and caps of the API listener.
    #[command(flatten)]
    pub limits: LimitArgs,
    /// YAML file with any of these flags as keys (`cert_ttl: 30m`); flags and TRUSTMESH_*
    /// variables win over it.
    #[arg(long, env = "TRUSTMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the merged configuration with the source of each value, and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// How long `serve` waits for the cluster's first complete registry before it serves anyway
/// (with the policy folder's registry until discovery catches up).
const FIRST_REGISTRY_WAIT: Duration = Duration::from_secs(30);

/// Starts discovery on `cluster` and waits (at most [`FIRST_REGISTRY_WAIT`]) for its first
/// complete registry, so that no sidecar is sent a registry without the cluster's services.
async fn first_registry(cluster: ClusterCache, policies: &Arc<PolicySource>, td: &TrustDomain) {
    let mut rx = policies.subscribe();
    tokio::spawn(follow(cluster, policies.clone(), td.clone()));
    let discovered = rx.wait_for(|s| s.discovered.is_some());
    if tokio::time::timeout(FIRST_REGISTRY_WAIT, discovered)
        .await
        .is_err()
    {
        tracing::warn!(
            target: "kube",
            "no complete list from the Kubernetes API yet; serving the policy folder's registry until it comes"
        );
    }
}

/// Runs the control plane.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let limits = Limits::new(args.limits.clone())?;
    let policies = PolicySource::load(&args.policies)?;
    let mesh_td = &policies.current().set.mesh.trust_domain;
    if *mesh_td != args.trust_domain {
        anyhow::bail!(
            "--trust-domain {} disagrees with trust_domain {} in {}/mesh.yaml",
            args.trust_domain,
            mesh_td,
            args.policies.display()
        );
    }
    let import = match (&args.ca_cert, &args.ca_key) {
        (Some(cert), Some(key)) => Some(ImportFrom { cert, key }),
        _ => None,
    };
    let kube = args.kube.connect().await?;
    if let Some(k) = &kube {
        tracing::info!(namespace = %k.namespace, "Kubernetes mode");
    }
    let cluster = kube.as_ref().map(ClusterCache::start).transpose()?;
    let trust = match kube.clone() {
        Some(k) => {
            TrustStore::open_kube(k, &args.data_dir, &args.trust_domain, args.cert_ttl, import)
                .await?
        }
        None => TrustStore::open(&args.data_dir, &args.trust_domain, args.cert_ttl, import)?,
    };
    let state = Arc::new(AppState {
        trust: trust.clone(),
        k8s: K8sVerifier::from_args(&args.k8s, &args.trust_domain).await?,
        token_key: tokens::load_or_create_key(&args.data_dir)?,
        used_tokens: crate::domain::used_tokens::UsedTokens::load(
            &args.data_dir,
            SystemTime::now(),
        )?,
        policies: policies.clone(),
        cert_ttl: args.cert_ttl,
        proxies: Default::default(),
        snapshots: Default::default(),
        metrics: Metrics::new()?,
        drain: Default::default(),
        limits,
        kube,
        cluster: cluster.clone(),
    });
    state.metrics.register(Box::new(policies.reloads.clone()))?;
    state.metrics.register(Box::new(policies.scans.clone()))?;
    for c in state
        .limits
        .collectors()
        .into_iter()
        .chain(trust.collectors())
    {
        state.metrics.register(c)?;
    }
    if let Some(cluster) = cluster {
        state
            .metrics
            .register(Box::new(cluster.watch_errors.clone()))?;
        state.metrics.register(Box::new(cluster.objects.clone()))?;
        first_registry(cluster, &policies, &args.trust_domain).await;
    }
    tokio::spawn(policies.watch());
    let shared_state = trust.backend_name();
    let book = state.clone();
    tokio::spawn(trust.watch(move |generation| snapshot::lagging_in(&book.proxies, generation)));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding --listen {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        trust_domain = %args.trust_domain,
        data_dir = %args.data_dir.display(),
        shared_state = %shared_state,
        cert_ttl = %humantime::format_duration(args.cert_ttl),
        "control plane serving"
    );
    let tickets = Arc::new(TicketKeys::load(&args.data_dir, SystemTime::now())?);
    listener::serve(
        listener,
        state,
        args.server_names,
        tickets,
        args.drain_timeout,
        trustmesh_runtime::shutdown_signal(),
    )
    .await?;
    tracing::info!("control plane stopped");
    Ok(())
}
