//! The authorization step of the inbound path, after TLS and before anything reaches the app:
//! normalize the path (RFC 3986; `%2F`, `%00`, double encoding, `;` parameters, malformed
//! escapes or a climb above the root get 400; `mesh.yaml` `path_parameters` says about `;`),
//! then ask the workload's compiled policies (the same evaluator `trustmesh authz check`
//! calls). A refusal is a [`ProxyError`] ([`ProxyError::BadPath`], [`ProxyError::Denied`]),
//! answered by [`crate::layers::rescue::respond`]: `403 RBAC: access denied`, or for a gRPC
//! caller `grpc-status: 7`. The log and the metrics name the deciding policy and rule; the
//! response never does.

use std::net::IpAddr;

use http::{header, request::Parts};
use trustmesh_certs::SpiffeId;
use trustmesh_policies::normalize::{normalize_path_with, RoutePath};
use trustmesh_policies::request::Request as AuthzRequest;
use trustmesh_policies::WorkloadPolicies;

use crate::layers::rescue::ProxyError;
use crate::observe::access_log::Entry;
use crate::observe::metrics::Metrics;

/// What the connection told us about the caller.
pub struct Peer<'a> {
    /// The verified SPIFFE ID.
    pub id: &'a SpiffeId,
    /// The peer's IP address.
    pub ip: IpAddr,
    /// The SNI it sent.
    pub sni: Option<&'a str>,
}

/// Normalizes and authorizes one request. `Ok` carries the normalized path the app must get;
/// `Err` is the refusal to answer instead. The path, decision and policy go into `log`.
pub fn authorize(
    policies: &WorkloadPolicies,
    parts: &Parts,
    peer: &Peer<'_>,
    port: u16,
    metrics: &Metrics,
    log: &mut Entry,
) -> Result<RoutePath, ProxyError> {
    let raw = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let path = normalize_path_with(raw, policies.path_parameters()).map_err(|e| {
        tracing::info!(client.id = %peer.id, "refused a request path: {e}");
        metrics
            .authz_decisions
            .with_label_values(&["bad_request", "-"])
            .inc();
        log.decision = Some("bad_request");
        ProxyError::BadPath(e.to_string())
    })?;
    let host = parts.uri.authority().map(|a| a.as_str()).or_else(|| {
        parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
    });
    let request = AuthzRequest {
        source: Some(peer.id),
        source_ip: Some(peer.ip),
        method: Some(parts.method.as_str()),
        path: Some(&path),
        host,
        port,
        headers: &parts.headers,
        sni: peer.sni,
        is_tcp: false,
    };
    let decision = policies.authorize(&request);
    let policy = decision.policy.as_deref().unwrap_or("-");
    if log.detail {
        log.path = Some(path.as_str().to_string());
        log.policy = decision.policy.clone();
    }
    log.decision = Some(decision.label());
    log.route = decision.route.clone();
    metrics
        .authz_decisions
        .with_label_values(&[decision.label(), policy])
        .inc();
    let rule = decision.rule.map(|r| r as i64).unwrap_or(-1);
    if let Some(audit) = decision.audit.as_deref() {
        tracing::info!(client.id = %peer.id, method = %parts.method, route = path.as_str(), authz.audit = audit, "audited");
    }
    if decision.allowed {
        if decision.would_deny {
            tracing::info!(
                client.id = %peer.id, method = %parts.method, route = path.as_str(),
                authz.policy = policy, authz.rule = rule, reason = decision.reason.as_str(),
                decision = "would_deny", "dry run: this request would be denied"
            );
        } else {
            tracing::debug!(client.id = %peer.id, route = path.as_str(), authz.policy = policy, decision = "allow");
        }
        return Ok(path);
    }
    tracing::info!(
        client.id = %peer.id, method = %parts.method, route = path.as_str(),
        authz.policy = policy, authz.rule = rule, reason = decision.reason.as_str(),
        decision = "deny", authz.would_allow = decision.would_allow, "request denied"
    );
    Err(ProxyError::Denied)
}
