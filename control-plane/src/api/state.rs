//! API layer: what every handler shares ([`AppState`]: the domain's stores and the API's
//! metrics and limits) and who is calling ([`Caller`], as the TLS handshake proved it).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use trustmesh_certs::SpiffeId;

use super::limits::Limits;
use super::metrics::Metrics;
use crate::domain::k8s_jwt::K8sVerifier;
use crate::domain::policy_source::PolicySource;
use crate::domain::snapshot::{ProxyBook, SnapshotCache};
use crate::domain::trust::TrustStore;
use crate::domain::used_tokens::UsedTokens;
use crate::storage::kube::watch::ClusterCache;
use crate::storage::kube::Kube;

/// Everything the handlers share.
pub struct AppState {
    /// The CA that issues, the trust bundle and the blocked identities, as the data folder
    /// has them now.
    pub trust: Arc<TrustStore>,
    /// Checks Kubernetes ServiceAccount JWTs, with `--k8s-jwks`.
    pub k8s: Option<K8sVerifier>,
    /// The bootstrap token MAC key.
    pub token_key: aws_lc_rs::hmac::Key,
    /// Used bootstrap tokens.
    pub used_tokens: UsedTokens,
    /// The policy source.
    pub policies: Arc<PolicySource>,
    /// Lifetime of issued workload certificates.
    pub cert_ttl: Duration,
    /// Proxies seen.
    pub proxies: ProxyBook,
    /// The snapshots of the version in force, encoded and shared per identity.
    pub snapshots: SnapshotCache,
    /// Metrics.
    pub metrics: Metrics,
    /// Graceful drain on SIGTERM.
    pub drain: trustmesh_runtime::Drain,
    /// The listener's caps and timeouts, and what is held against them.
    pub limits: Arc<Limits>,
    /// The Kubernetes API, in Kubernetes mode (`--kubernetes`, `--kubeconfig`).
    #[allow(dead_code)] // The writes of Kubernetes mode land next.
    pub kube: Option<Kube>,
    /// The cluster cache (Kubernetes mode): what discovery and pod-bound tokens read.
    pub cluster: Option<ClusterCache>,
}

/// The caller of one connection, as the TLS handshake proved it.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The SPIFFE ID of a verified client certificate.
    pub identity: Option<SpiffeId>,
    /// Its expiry.
    pub cert_expiry: Option<SystemTime>,
    /// The peer address.
    pub addr: SocketAddr,
}
