//! Gateway API `HTTPRoute`s applied on the caller's sidecar (ARCHITECTURE.md "Traffic"): an
//! outbound request to a registry service that has routes is matched against them (the
//! routes were compiled once per snapshot, [`crate::state::MeshView::routes`], by the same
//! library code `trustmesh route check` runs), and the rule it takes decides:
//!
//! - no rule matches: `404`, as the Gateway API asks of a parent with routes attached;
//! - `RequestHeaderModifier` edits the request before it leaves, `ResponseHeaderModifier`
//!   the response before the app sees it;
//! - the backend is chosen by `weight`; it is a registry service of its own, so the request
//!   goes to *its* endpoints and its sidecar must present *its* identity; a backend the
//!   caller's registry does not hold (it may not call it) answers `500`, as the Gateway API
//!   asks for an invalid backendRef;
//! - timeouts and retries ([`retry`], within the service's retry [`budget`]).
//!
//! The `route` label of the access log and the request metric is the rule taken,
//! `namespace/name#index`.

pub mod budget;
pub mod deadline;
pub mod retry;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use http::{HeaderMap, Request, Response};
use hyper::body::Incoming;
use trustmesh_policies::normalize::normalize_path_with;
use trustmesh_policies::route::{query_pairs, CompiledRule, HeaderEdits, RouteRequest};
use trustmesh_policies::ServiceEntry;

use super::forward::to_mesh_request;
use super::Outbound;
use crate::layers::body::{self, Body};
use crate::layers::headers;
use crate::layers::rescue::ProxyError;
use crate::observe::access_log::Entry;
use crate::state::MeshView;

/// What route retries need from the flags.
#[derive(Debug, Clone, Copy)]
pub struct RetryConfig {
    /// `--retry-max-body-bytes`: the largest request body buffered to be sent again.
    pub max_body_bytes: u64,
    /// `--retry-budget-percent`.
    pub budget_percent: u32,
    /// `--retry-budget-min-per-sec`.
    pub budget_min_per_sec: u32,
}

impl Outbound {
    /// Whether the request for `service` goes through [`Outbound::routed`].
    pub(super) fn has_routes(mesh: &MeshView, service: &ServiceEntry) -> bool {
        mesh.routes
            .has_routes_for(&service.namespace, &service.name)
    }

    /// Sends `req`, for `parent` (a service with routes, see [`Outbound::has_routes`]), where
    /// the rule it matches says; `default_timeout` (`--upstream-timeout`, or a gRPC call's
    /// `grpc-timeout`) applies when the rule has no `timeouts.request`. `host` is the host the
    /// app named (it stays the request's `:authority`, whichever backend takes it); `orig` the
    /// original destination of a redirected connection.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn routed(
        &self,
        mesh: &MeshView,
        parent: &ServiceEntry,
        req: Request<Incoming>,
        host: &str,
        orig: Option<SocketAddr>,
        default_timeout: Duration,
        log: &mut Entry,
    ) -> Result<Response<Body>, ProxyError> {
        let parent_name = format!("{}.{}", parent.name, parent.namespace);
        let (mut parts, body) = req.into_parts();
        let raw = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        // Matched on the path the callee will authorize and its app receive.
        let path = normalize_path_with(raw, mesh.snapshot.mesh.path_parameters).map_err(|e| {
            tracing::info!(service = %parent_name, "request path refused before routing: {e}");
            ProxyError::BadPath(e.to_string())
        })?;
        let port = host_port(host)
            .or(orig.map(|o| o.port()))
            .or_else(|| parent.ports.first().map(|p| p.port))
            .unwrap_or(80);
        let query = query_pairs(path.query());
        let routed = mesh.routes.route(&RouteRequest {
            namespace: &parent.namespace,
            service: &parent.name,
            port,
            method: parts.method.as_str(),
            path: &path,
            headers: &parts.headers,
            query: &query,
        });
        let Some(routed) = routed else {
            tracing::info!(service = %parent_name, port, "no HTTPRoute rule matches: 404");
            return Err(ProxyError::NoRouteRule {
                service: parent_name,
            });
        };
        let rule_name = format!("{}#{}", routed.route, routed.rule);
        log.route = Some(rule_name.as_str().into());
        let rule = routed.action;
        let service = backend_of(mesh, rule, &rule_name)?;
        log.destination = Some(crate::observe::access_log::shared(
            service.identity.as_str(),
        ));
        edit(&mut parts.headers, &rule.request_headers);
        let req = Request::from_parts(parts, body);
        let hop = super::hop::choose(self.config.hop_http1, &req, service, host, orig);
        let (upstream, stalled) = to_mesh_request(req, host, hop, self.config.body_timeout)?;
        let timeouts = retry::Timeouts::new(rule, default_timeout);
        let plan = retry::Plan {
            service,
            parent: &parent_name,
            rule,
            timeouts: &timeouts,
            stalled: &stalled,
        };
        let resp = self.attempts(&plan, upstream).await?;
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        edit(&mut parts.headers, &rule.response_headers);
        let mut body = body::stream(body);
        if rule.request_timeout.is_some() {
            body = deadline::until(body, timeouts.deadline);
        }
        Ok(Response::from_parts(parts, body))
    }
}

/// The registry entry of the backend `rule` picks for this request.
fn backend_of<'m>(
    mesh: &'m MeshView,
    rule: &CompiledRule,
    rule_name: &str,
) -> Result<&'m ServiceEntry, ProxyError> {
    let invalid = |backend: String| ProxyError::InvalidBackend {
        route: rule_name.to_string(),
        backend,
    };
    let backend = rule
        .pick(fastrand::u64(..))
        .ok_or_else(|| invalid("no backend (every weight is 0)".to_string()))?;
    mesh.snapshot
        .registry
        .entries()
        .iter()
        .find(|e| e.namespace == backend.namespace && e.name == backend.name)
        .ok_or_else(|| invalid(format!("{}.{}", backend.name, backend.namespace)))
}

/// Applies a header modifier filter: `set` replaces every value of its header, `add` appends
/// one, `remove` drops every value (Gateway API `HTTPHeaderFilter`). Validation refuses a
/// name given twice in one filter, so the order of the three does not matter.
pub fn edit(headers: &mut HeaderMap, edits: &HeaderEdits) {
    for (name, value) in &edits.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &edits.add {
        headers.append(name.clone(), value.clone());
    }
    for name in &edits.remove {
        headers.remove(name);
    }
}

/// The port a Host names, if it names one (`orders:8080`, `10.0.0.1:80`, `[::1]:80`), as
/// `trustmesh route check` reads it.
pub fn host_port(host: &str) -> Option<u16> {
    if let Ok(addr) = host.parse::<SocketAddr>() {
        return Some(addr.port());
    }
    let (name, port) = host.rsplit_once(':')?;
    (!name.contains(':') || name.ends_with(']'))
        .then(|| port.parse().ok())
        .flatten()
}
