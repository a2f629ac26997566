//! Flags of `trustmesh-proxy`. Every flag also reads `TRUSTMESH_<FLAG>` from the environment;
//! a flag on the command line wins. The flags are read here and in start-up ([`crate::run`])
//! only: each component gets the small config it needs, made from them once (`components.rs`).

mod components;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use trustmesh_certs::SpiffeId;
use trustmesh_runtime::parse_duration;

/// trustmesh-proxy: the trustmesh sidecar. Gets its identity from the control plane, carries
/// the app's outbound HTTP over mutual TLS and terminates mutual TLS for the app.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "trustmesh-proxy",
    version,
    about,
    after_help = "Transparent interception (the pod's init container): trustmesh-proxy init --help"
)]
pub struct Args {
    /// The control plane's API, e.g. https://127.0.0.1:15012. Repeat the flag (or separate
    /// URLs with commas) for several replicas: calls fail over from one to the next.
    #[arg(
        long,
        env = "TRUSTMESH_CONTROL_PLANE",
        value_delimiter = ',',
        required = true
    )]
    pub control_plane: Vec<http::Uri>,
    /// PEM file with the mesh's trust bundle (the control plane's trust-bundle.pem).
    #[arg(long, env = "TRUSTMESH_TRUST_BUNDLE")]
    pub trust_bundle: PathBuf,
    /// File with the bootstrap token (`trustmesh token create`, or a projected ServiceAccount
    /// token), read again at every try. With --state-dir and a valid certificate there, it
    /// may be missing or spent.
    #[arg(long, env = "TRUSTMESH_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// Folder (created mode 0700) where the certificate and its key (0600) are kept across
    /// restarts: restarted while that certificate is valid, the sidecar renews with it and
    /// needs no token.
    #[arg(long, env = "TRUSTMESH_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// This workload's SPIFFE ID.
    #[arg(long, env = "TRUSTMESH_IDENTITY")]
    pub identity: SpiffeId,
    /// The app this sidecar fronts (plain HTTP on loopback).
    #[arg(long, env = "TRUSTMESH_APP", default_value = "127.0.0.1:8080")]
    pub app: SocketAddr,
    /// Inbound mTLS listener.
    #[arg(long, env = "TRUSTMESH_INBOUND", default_value = "0.0.0.0:15006")]
    pub inbound: SocketAddr,
    /// Outbound listener for the app's plain HTTP (HTTP/1.1 or h2c).
    #[arg(long, env = "TRUSTMESH_OUTBOUND", default_value = "127.0.0.1:15001")]
    pub outbound: SocketAddr,
    /// Admin listener (/live, /ready, /config, /metrics).
    #[arg(long, env = "TRUSTMESH_ADMIN", default_value = "127.0.0.1:15000")]
    pub admin: SocketAddr,
    /// How long to wait for an upstream's response headers before answering 504.
    #[arg(long, env = "TRUSTMESH_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub upstream_timeout: Duration,
    /// The longest deadline a gRPC caller may set with `grpc-timeout`, which replaces
    /// --upstream-timeout for its request.
    #[arg(long, env = "TRUSTMESH_MAX_GRPC_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub max_grpc_timeout: Duration,
    /// Largest request body buffered so that an `HTTPRoute` `retry` can send it again: a
    /// request whose body is empty or of a known length up to this is retried; a longer or
    /// streamed one is sent once.
    #[arg(long, env = "TRUSTMESH_RETRY_MAX_BODY_BYTES", default_value = "65536", value_parser = clap::value_parser!(u64).range(0..=16_777_216))]
    pub retry_max_body_bytes: u64,
    /// Retry budget: retries to a service may add at most this percentage of its requests
    /// over a 10 s window (on top of --retry-budget-min-per-sec).
    #[arg(long, env = "TRUSTMESH_RETRY_BUDGET_PERCENT", default_value = "20", value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub retry_budget_percent: u32,
    /// Retry budget: retries per second to a service allowed whatever its request count
    /// (averaged over the 10 s window).
    #[arg(long, env = "TRUSTMESH_RETRY_BUDGET_MIN_PER_SEC", default_value = "10", value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub retry_budget_min_per_sec: u32,
    /// 5xx answers, resets or timeouts in a row that take an endpoint out of rotation
    /// (outlier ejection, as Envoy's consecutive_5xx).
    #[arg(long, env = "TRUSTMESH_EJECT_CONSECUTIVE_FAILURES", default_value = "5", value_parser = clap::value_parser!(u32).range(1..))]
    pub eject_consecutive_failures: u32,
    /// How long the first outlier ejection lasts (then a probe); doubled at each ejection in
    /// a row, up to ten times this.
    #[arg(long, env = "TRUSTMESH_EJECT_BASE_TIME", default_value = "30s", value_parser = parse_duration)]
    pub eject_base_time: Duration,
    /// The most of a service's endpoints out of rotation at once, in percent (rounded down:
    /// the only endpoint of a service is never out).
    #[arg(long, env = "TRUSTMESH_EJECT_MAX_PERCENT", default_value = "50", value_parser = clap::value_parser!(u8).range(0..=100))]
    pub eject_max_percent: u8,
    /// How an endpoint is picked: ewma (power of two choices over peak-EWMA latency, the
    /// default) or rr (round robin, for comparison).
    #[arg(
        long,
        env = "TRUSTMESH_BALANCER",
        value_enum,
        default_value = "ewma",
        hide = true
    )]
    pub balancer: crate::outbound::balance::Kind,
    /// Whether HTTP/1.1 apps' requests to ports declared `http` (or undeclared) take pooled
    /// HTTP/1.1 connections between sidecars (ALPN `http/1.1`) rather than HTTP/2.
    #[arg(
        long,
        env = "TRUSTMESH_HOP_HTTP1",
        default_value = "true",
        action = clap::ArgAction::Set,
        hide = true
    )]
    pub hop_http1: bool,
    /// How long to wait for a TCP connection to an upstream before answering 502.
    #[arg(long, env = "TRUSTMESH_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Renew the certificate once this fraction of its lifetime has passed (0.1 to 0.9).
    #[arg(long, env = "TRUSTMESH_RENEW_FRACTION", default_value = "0.5", value_parser = parse_fraction)]
    pub renew_fraction: f64,
    /// Plaintext listener for the kubelet's rewritten probes (`/app-health/<container>/<probe>`,
    /// see --app-probes); off unless set. The injector sets 0.0.0.0:15020.
    #[arg(long, env = "TRUSTMESH_PROBE_LISTEN")]
    pub probe_listen: Option<SocketAddr>,
    /// The app's original probes as JSON, keyed by rewritten path (Istio's
    /// ISTIO_KUBE_APP_PROBERS format): {"/app-health/app/livez": {"httpGet": {"port": 8080,
    /// "path": "/healthz"}}}. Only these reach the app through --probe-listen.
    #[arg(long, env = "TRUSTMESH_APP_PROBES", value_parser = crate::probes::declared::parse_app_probes)]
    pub app_probes: Option<crate::probes::declared::AppProbes>,
    /// Largest request head (HTTP/1) or header list (HTTP/2) accepted, in bytes; larger gets
    /// 431. At least 8192.
    #[arg(long, env = "TRUSTMESH_MAX_HEADER_BYTES", default_value = "65536", value_parser = clap::value_parser!(u32).range(8192..))]
    pub max_header_bytes: u32,
    /// Most header fields in a request head (HTTP/1) or header list (HTTP/2); more gets 431.
    #[arg(long, env = "TRUSTMESH_MAX_HEADERS", default_value = "100", value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub max_headers: u32,
    /// How long a client may take to send a request head (HTTP/1) before the connection is
    /// closed: slow clients (slowloris) cannot hold connections.
    #[arg(long, env = "TRUSTMESH_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,
    /// A request body that sends nothing for this long is cut; the request gets 408 when no
    /// response has started.
    #[arg(long, env = "TRUSTMESH_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,
    /// A connection with no request in flight and no traffic for this long is closed.
    #[arg(long, env = "TRUSTMESH_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// How long an inbound TLS handshake may take.
    #[arg(long, env = "TRUSTMESH_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// Threads that carry traffic. `1` (the default, as Linkerd's proxy) runs everything on
    /// one thread, which costs the least CPU per request; `0` is one per core.
    #[arg(long, env = "TRUSTMESH_THREADS", default_value = "1", value_parser = clap::value_parser!(u16).range(0..=256))]
    pub threads: u16,
    /// Most connections open at once on each of the inbound and outbound listeners; more are
    /// closed at once.
    #[arg(long, env = "TRUSTMESH_MAX_CONNECTIONS", default_value = "10000", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most inbound connections one peer identity may hold at once (counted after the TLS
    /// handshake); more are closed. Default: a quarter of --max-connections.
    #[arg(long, env = "TRUSTMESH_MAX_CONNECTIONS_PER_IDENTITY", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections_per_identity: Option<u32>,
    /// Most concurrent HTTP/2 streams a client may open on one connection.
    #[arg(long, env = "TRUSTMESH_MAX_CONCURRENT_STREAMS", default_value = "256", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_concurrent_streams: u32,
    /// On SIGTERM, how long requests in flight may take to finish before the sidecar exits.
    #[arg(long, env = "TRUSTMESH_DRAIN_TIMEOUT", default_value = "25s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Export a span per sidecar hop over OTLP/HTTP (protobuf) to this collector, e.g.
    /// http://127.0.0.1:4318 (spans are POSTed to /v1/traces). Off unless set.
    #[arg(long, env = "TRUSTMESH_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<http::Uri>,
    /// Access log of every request on stdout: json (one JSON object per line) or off.
    #[arg(long, env = "TRUSTMESH_ACCESS_LOG", value_enum, default_value = "json")]
    pub access_log: crate::observe::access_log::AccessLogFormat,
    /// YAML file with any of these flags as keys (`upstream_timeout: 10s`); flags and
    /// TRUSTMESH_* variables win over it.
    #[arg(long, env = "TRUSTMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the merged configuration (flags, environment, file, defaults) with the source of
    /// each value, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Log filter; RUST_LOG wins when set. Changeable at run time: PUT /log-level on --admin.
    #[arg(long, env = "TRUSTMESH_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

impl Args {
    /// `--max-connections-per-identity`, or a quarter of `--max-connections` (at least 1).
    pub fn connections_per_identity(&self) -> u32 {
        self.max_connections_per_identity
            .unwrap_or((self.max_connections / 4).max(1))
    }

    /// The limits every served HTTP connection is held to.
    pub fn serve(&self) -> crate::layers::drive::ServeConfig {
        crate::layers::drive::ServeConfig {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            max_concurrent_streams: self.max_concurrent_streams,
        }
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let f: f64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    if !(0.1..=0.9).contains(&f) {
        return Err(format!("{s} is outside 0.1..0.9"));
    }
    Ok(f)
}
