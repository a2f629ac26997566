//! API layer: the endpoints anyone who reaches the listener may call: `GET /healthz`,
//! `GET /metrics` and `GET /v1/trust-bundle`.

use http::StatusCode;

use super::error::{ApiError, Code};
use super::respond::{json, text, Resp};
use super::state::AppState;

/// `GET /healthz`, for anyone who reaches the listener (probes, load balancers): the status
/// and the versions in force, nothing more. Policy errors (file names, rule text), blocked
/// identities and the CA's details are for the admin identity, in `GET /v1/proxies`.
pub fn healthz(state: &AppState) -> Resp {
    let (status, word) = match state.drain.is_draining() {
        true => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
        false => (StatusCode::OK, "ok"),
    };
    json(
        status,
        &serde_json::json!({
            "status": word,
            "policy_version": state.policies.current().version,
            "trust_generation": state.trust.current().generation,
        }),
    )
}

/// `GET /metrics`: the Prometheus text format.
pub fn metrics(state: &AppState) -> Result<Resp, ApiError> {
    state.metrics.proxies.set(state.proxies.len() as i64);
    state.metrics.trust.set(&state.trust.current());
    let mut out = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&state.metrics.registry.gather(), &mut out)
        .map_err(|e| ApiError::new(Code::Metrics, e.to_string()))?;
    Ok(text(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        out,
    ))
}

/// `GET /v1/trust-bundle`: the roots proxies and operators trust, as PEM.
pub fn trust_bundle(state: &AppState) -> Resp {
    text(
        StatusCode::OK,
        "application/x-pem-file",
        state.trust.current().bundle.pem().to_string(),
    )
}
