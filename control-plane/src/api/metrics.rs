//! API layer: the control plane's metrics (prefixed `trustmesh_cp_`), served by
//! `GET /metrics`.

use crate::domain::k8s_jwt::JwtError;
use crate::domain::tokens::TokenError;
use crate::domain::trust::TrustMetrics;

/// `trustmesh_cp_certificates_issued_total{result}`: `issued` and every refusal reason but
/// the Kubernetes token ones ([`JwtError::CODES`]).
const ISSUE_RESULTS: &[&str] = &[
    "issued",
    "unauthenticated",
    "certificate_expired",
    "reserved_identity",
    "identity_blocked",
    "csr_identity_mismatch",
    "bad_csr",
    "token_invalid",
    "token_expired",
    "token_used",
    "token_unavailable",
];

/// Control-plane metrics (prefixed `trustmesh_cp_`).
pub struct Metrics {
    pub(super) registry: prometheus::Registry,
    pub(super) issued: prometheus::IntCounterVec,
    pub(super) proxies: prometheus::IntGauge,
    pub(super) trust: TrustMetrics,
    pub(super) snapshot_push: prometheus::Histogram,
}

impl Metrics {
    /// Registers the control plane's metrics.
    pub fn new() -> anyhow::Result<Self> {
        let registry = prometheus::Registry::new();
        let issued = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "trustmesh_cp_certificates_issued_total",
                "Certificate requests by result (issued, or the reason for refusal).",
            ),
            &["result"],
        )?;
        let proxies = prometheus::IntGauge::new(
            "trustmesh_cp_proxies_connected",
            "Proxies (identity and address) connected to this replica: seen in the last 3 minutes.",
        )?;
        registry.register(Box::new(issued.clone()))?;
        registry.register(Box::new(proxies.clone()))?;
        let snapshot_push = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new(
                "trustmesh_cp_snapshot_push_duration_seconds",
                "Time to build and encode one snapshot sent to a proxy.",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
            ]),
        )?;
        registry.register(Box::new(snapshot_push.clone()))?;
        // Known label values start at zero, so an alert on them works before the first event.
        for result in ISSUE_RESULTS.iter().chain(JwtError::CODES) {
            issued.with_label_values(&[result]);
        }
        Ok(Self {
            snapshot_push,
            trust: TrustMetrics::register(&registry)?,
            registry,
            issued,
            proxies,
        })
    }

    /// Registers a metric kept elsewhere (the policy source's reload counter).
    pub fn register(&self, c: Box<dyn prometheus::core::Collector>) -> anyhow::Result<()> {
        Ok(self.registry.register(c)?)
    }

    /// Counts a refused certificate request under its reason.
    pub fn refused(&self, reason: &str) {
        self.issued.with_label_values(&[reason]).inc();
    }
}

/// The metrics label of a refused bootstrap token.
pub fn refusal_label(e: &TokenError) -> &'static str {
    match e {
        TokenError::Malformed | TokenError::BadSignature => "token_invalid",
        TokenError::Expired => "token_expired",
        TokenError::AlreadyUsed => "token_used",
        TokenError::Store => "token_unavailable",
    }
}
