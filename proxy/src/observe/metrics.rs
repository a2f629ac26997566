//! The proxy's Prometheus metrics (all prefixed `trustmesh_`), in a registry of its own.
//! Labels are bounded: direction, status code, peer identity, route (a policy rule), reason,
//! result, version. Never raw paths.

use std::sync::Mutex;

use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// `trustmesh_tls_handshake_errors_total{reason}`: every reason the inbound listener counts.
pub const HANDSHAKE_ERROR_REASONS: &[&str] = &[
    "no_client_certificate",
    "expired",
    "unknown_issuer",
    "bad_certificate",
    "incompatible",
    "protocol",
    "io",
    "timeout",
];
/// `trustmesh_certificate_renewals_total{result}`.
pub const RENEWAL_RESULTS: &[&str] = &["ok", "refused", "unavailable"];
/// `trustmesh_blocked_refusals_total{stage}`.
pub const BLOCKED_STAGES: &[&str] = &["connection", "request"];
/// `trustmesh_authz_decisions_total{decision}`; these start at zero with `policy="-"` (the
/// decisions no policy made: the mesh default, and bad requests), since the policy values are
/// only known once policies decide.
pub const AUTHZ_DECISIONS: &[&str] = &["allow", "deny", "would_deny", "bad_request"];
/// `trustmesh_limits_exceeded_total{limit,direction}`: each limit with the directions it
/// applies to.
pub const LIMITS: &[(&str, &[&str])] = &[
    ("connections", &["inbound", "outbound"]),
    ("handshake_timeout", &["inbound"]),
    ("header_timeout", &["inbound", "outbound"]),
    ("header_bytes", &["inbound", "outbound"]),
    ("body_timeout", &["inbound", "outbound"]),
    ("idle_timeout", &["inbound", "outbound"]),
];
/// `trustmesh_outbound_passthrough_total{decision}`.
pub const PASSTHROUGH_DECISIONS: &[&str] = &["deny", "passthrough"];
/// `trustmesh_connections_open{direction}`.
pub const DIRECTIONS: &[&str] = &["inbound", "outbound"];

/// Every metric the proxy exports. The counters and gauges whose label values are known in
/// advance are exported from the start with each of those values at zero, so that an alert
/// on them (a rate, or an absent series) works before the first event.
pub struct Metrics {
    registry: Registry,
    /// Requests by direction, status code, peer identity (inbound: the verified caller;
    /// outbound: the destination's registry identity, `-` when there is none) and route (inbound:
    /// the deciding policy rule, `namespace/name#index`; outbound: the `HTTPRoute` rule taken,
    /// `namespace/name#index`; `-` when no rule decided).
    /// Identities are bounded by the mesh's CA and registry, routes by the policy set.
    pub requests: IntCounterVec,
    /// Request duration by direction and route (the deciding rule inbound, `-` outbound).
    pub duration: HistogramVec,
    /// Outbound request duration.
    pub duration_outbound: Histogram,
    /// Failed inbound TLS handshakes by reason.
    pub handshake_errors: IntCounterVec,
    /// Expiry of the certificate in use, Unix seconds.
    pub cert_expiry: Gauge,
    /// Certificate renewals by result.
    pub renewals: IntCounterVec,
    /// Connections and requests refused because their identity is blocked, by stage.
    pub blocked_refusals: IntCounterVec,
    /// Open connections by direction.
    pub connections: IntGaugeVec,
    /// Intercepted traffic to addresses outside the registry, by decision (deny, passthrough).
    pub outbound_passthrough: IntCounterVec,
    /// Authorization decisions by decision and deciding policy.
    pub authz_decisions: IntCounterVec,
    /// Limits hit (`crate::layers::limits`), by limit and direction.
    pub limits_exceeded: IntCounterVec,
    /// Access-log lines dropped because the writer's queue was full (stdout not read fast
    /// enough; see `crate::access_log::writer`).
    pub access_log_dropped: IntCounter,
    /// mTLS connections made to other sidecars' inbound listeners (the pool re-uses each one
    /// for every request to that destination, so this grows only on a new or lost connection).
    pub upstream_connections: IntCounter,
    /// Of those, the HTTP/1.1 ones (ALPN `http/1.1`, for HTTP/1.1 apps; see
    /// `crate::outbound::hop`): one per request in flight at once, kept alive between requests.
    pub upstream_http1_connections: IntCounter,
    /// Open upgrade tunnels (WebSocket and other `Upgrade`s, extended CONNECT) by direction.
    pub tunnels: IntGaugeVec,
    /// Retries sent by `HTTPRoute` `retry` rules, by parent service (`name.namespace`).
    pub retries: IntCounterVec,
    /// Retries a rule asked for that the retry budget refused, by parent service: the
    /// failure reached the client.
    pub retry_budget_exhausted: IntCounterVec,
    /// Endpoints of each service called, in rotation (`ready`) or not (`ejected`).
    pub endpoints: IntGaugeVec,
    /// Endpoints taken out of rotation, by service and reason.
    pub ejections: IntCounterVec,
    policy_version: IntGaugeVec,
    current_version: Mutex<Option<String>>,
}

impl Metrics {
    /// Registers the metrics.
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "trustmesh_requests_total",
                "HTTP requests handled, by direction, status, peer identity and route.",
            ),
            &["direction", "status", "peer", "route"],
        )?;
        let duration = prometheus::HistogramVec::new(
            HistogramOpts::new(
                "trustmesh_request_duration_seconds",
                "Time from request headers to response headers, by direction and route.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ]),
            &["direction", "route"],
        )?;
        let handshake_errors = IntCounterVec::new(
            Opts::new(
                "trustmesh_tls_handshake_errors_total",
                "Inbound TLS handshakes that failed, by reason.",
            ),
            &["reason"],
        )?;
        let cert_expiry = Gauge::new(
            "trustmesh_certificate_expiry_timestamp_seconds",
            "When the certificate in use expires (Unix time).",
        )?;
        let renewals = IntCounterVec::new(
            Opts::new(
                "trustmesh_certificate_renewals_total",
                "Certificate renewals by result.",
            ),
            &["result"],
        )?;
        let blocked_refusals = IntCounterVec::new(
            Opts::new(
                "trustmesh_blocked_refusals_total",
                "Inbound connections and requests refused because the caller's identity is blocked, by stage.",
            ),
            &["stage"],
        )?;
        let connections = IntGaugeVec::new(
            Opts::new(
                "trustmesh_connections_open",
                "Open connections by direction.",
            ),
            &["direction"],
        )?;
        let authz_decisions = IntCounterVec::new(
            Opts::new(
                "trustmesh_authz_decisions_total",
                "Inbound authorization decisions (allow, deny, would_deny, bad_request) by deciding policy.",
            ),
            &["decision", "policy"],
        )?;
        let policy_version = IntGaugeVec::new(
            Opts::new(
                "trustmesh_policy_version_info",
                "The policy version in force (value 1).",
            ),
            &["version"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(handshake_errors.clone()))?;
        registry.register(Box::new(cert_expiry.clone()))?;
        registry.register(Box::new(renewals.clone()))?;
        registry.register(Box::new(blocked_refusals.clone()))?;
        registry.register(Box::new(connections.clone()))?;
        registry.register(Box::new(policy_version.clone()))?;
        let outbound_passthrough = IntCounterVec::new(
            Opts::new(
                "trustmesh_outbound_passthrough_total",
                "Intercepted outbound traffic to addresses outside the registry, by decision.",
            ),
            &["decision"],
        )?;
        registry.register(Box::new(outbound_passthrough.clone()))?;
        registry.register(Box::new(authz_decisions.clone()))?;
        let limits_exceeded = IntCounterVec::new(
            Opts::new(
                "trustmesh_limits_exceeded_total",
                "Connections or requests refused or closed on a limit, by limit and direction.",
            ),
            &["limit", "direction"],
        )?;
        registry.register(Box::new(limits_exceeded.clone()))?;
        let access_log_dropped = IntCounter::new(
            "trustmesh_access_log_dropped_total",
            "Access-log lines dropped because stdout was not read fast enough.",
        )?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        let upstream_connections = IntCounter::new(
            "trustmesh_upstream_connections_total",
            "mTLS connections made to other sidecars, HTTP/2 and HTTP/1.1 (pooled and re-used).",
        )?;
        registry.register(Box::new(upstream_connections.clone()))?;
        let upstream_http1_connections = IntCounter::new(
            "trustmesh_upstream_http1_connections_total",
            "Of trustmesh_upstream_connections_total, the HTTP/1.1 keep-alive connections.",
        )?;
        registry.register(Box::new(upstream_http1_connections.clone()))?;
        let tunnels = IntGaugeVec::new(
            Opts::new(
                "trustmesh_tunnels_open",
                "Open upgrade tunnels (HTTP/1.1 Upgrade, extended CONNECT) by direction.",
            ),
            &["direction"],
        )?;
        registry.register(Box::new(tunnels.clone()))?;
        let retries = IntCounterVec::new(
            Opts::new(
                "trustmesh_retries_total",
                "Retries sent by HTTPRoute retry rules, by parent service.",
            ),
            &["service"],
        )?;
        registry.register(Box::new(retries.clone()))?;
        let retry_budget_exhausted = IntCounterVec::new(
            Opts::new(
                "trustmesh_retry_budget_exhausted_total",
                "Retries refused by the retry budget (the failure reached the client), by parent service.",
            ),
            &["service"],
        )?;
        registry.register(Box::new(retry_budget_exhausted.clone()))?;
        let endpoints = IntGaugeVec::new(
            Opts::new(
                "trustmesh_endpoints",
                "Endpoints of each service called, by state: ready (in rotation) or ejected.",
            ),
            &["service", "state"],
        )?;
        registry.register(Box::new(endpoints.clone()))?;
        let ejections = IntCounterVec::new(
            Opts::new(
                "trustmesh_ejections_total",
                "Endpoints taken out of rotation, by service and reason (connect, 5xx, reset, timeout).",
            ),
            &["service", "reason"],
        )?;
        registry.register(Box::new(ejections.clone()))?;
        for reason in HANDSHAKE_ERROR_REASONS {
            handshake_errors.with_label_values(&[reason]);
        }
        for result in RENEWAL_RESULTS {
            renewals.with_label_values(&[result]);
        }
        for stage in BLOCKED_STAGES {
            blocked_refusals.with_label_values(&[stage]);
        }
        for decision in AUTHZ_DECISIONS {
            authz_decisions.with_label_values(&[decision, "-"]);
        }
        for (limit, directions) in LIMITS {
            for direction in *directions {
                limits_exceeded.with_label_values(&[limit, direction]);
            }
        }
        for decision in PASSTHROUGH_DECISIONS {
            outbound_passthrough.with_label_values(&[decision]);
        }
        for direction in DIRECTIONS {
            connections.with_label_values(&[direction]);
            tunnels.with_label_values(&[direction]);
        }
        Ok(Self {
            registry,
            requests,
            duration_outbound: duration.with_label_values(&["outbound", "-"]),
            duration,
            handshake_errors,
            cert_expiry,
            renewals,
            blocked_refusals,
            connections,
            outbound_passthrough,
            authz_decisions,
            limits_exceeded,
            access_log_dropped,
            upstream_connections,
            upstream_http1_connections,
            tunnels,
            retries,
            retry_budget_exhausted,
            endpoints,
            ejections,
            policy_version,
            current_version: Mutex::new(None),
        })
    }

    /// The series the outbound balancer keeps.
    pub fn balance(&self) -> crate::outbound::balance::BalanceMetrics {
        crate::outbound::balance::BalanceMetrics {
            endpoints: self.endpoints.clone(),
            ejections: self.ejections.clone(),
        }
    }

    /// Marks `version` as the one in force.
    pub fn set_policy_version(&self, version: &str) {
        if let Ok(mut cur) = self.current_version.lock() {
            if let Some(old) = cur.take() {
                let _ = self.policy_version.remove_label_values(&[&old]);
            }
            self.policy_version.with_label_values(&[version]).set(1);
            *cur = Some(version.to_string());
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::warn!("encoding metrics: {e}");
        }
        out
    }
}

/// Counts an open connection while alive.
pub struct ConnGuard(prometheus::IntGauge);

impl ConnGuard {
    /// Increments the gauge for `direction`.
    pub fn new(m: &Metrics, direction: &str) -> Self {
        let g = m.connections.with_label_values(&[direction]);
        g.inc();
        Self(g)
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_label_values_are_exported_at_zero_before_any_event() {
        let text = Metrics::new().unwrap().encode();
        for reason in HANDSHAKE_ERROR_REASONS {
            let line = format!("trustmesh_tls_handshake_errors_total{{reason=\"{reason}\"}} 0");
            assert!(text.contains(&line), "{line} missing:\n{text}");
        }
        let line =
            "trustmesh_limits_exceeded_total{direction=\"inbound\",limit=\"handshake_timeout\"} 0";
        assert!(text.contains(line), "{line} missing:\n{text}");
        let line = "trustmesh_authz_decisions_total{decision=\"deny\",policy=\"-\"} 0";
        assert!(text.contains(line), "{line} missing:\n{text}");
        let line = "trustmesh_tunnels_open{direction=\"outbound\"} 0";
        assert!(text.contains(line), "{line} missing:\n{text}");
        let line = "trustmesh_access_log_dropped_total 0";
        assert!(text.contains(line), "{line} missing:\n{text}");
    }
}
