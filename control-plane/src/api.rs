//! The control-plane HTTP API (see `control-plane/openapi.yaml`): routing, authentication of
//! the caller (bootstrap token or mesh client certificate), and the one place where errors
//! become JSON `{"error", "message"}` responses with a 4xx status.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use trustmesh_certs::{CertError, SpiffeId};

use crate::policy_source::PolicySource;
use crate::snapshot::{self, ProxyBook};
use crate::tokens::{TokenError, UsedTokens};
use crate::trust::TrustStore;

mod methods;
#[cfg(test)]
mod tests;

/// Largest request body accepted (a CSR is well under 2 KiB).
const MAX_BODY: usize = 64 * 1024;
/// Default and longest wait of a snapshot long poll.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const MAX_WAIT: Duration = Duration::from_secs(120);

/// Everything the handlers share.
pub struct AppState {
    /// The CA that issues, the trust bundle and the blocked identities, as the data folder
    /// has them now.
    pub trust: Arc<TrustStore>,
    /// Checks Kubernetes ServiceAccount JWTs, with `--k8s-jwks`.
    pub k8s: Option<crate::k8s_jwt::K8sVerifier>,
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
    /// Peer replicas (`--peers`) and how the last blocklist exchange with each went.
    pub peers: crate::peers::PeerBook,
    /// Metrics.
    pub metrics: Metrics,
    /// Graceful drain on SIGTERM.
    pub drain: trustmesh_runtime::Drain,
    /// The listener's caps and timeouts, and what is held against them.
    pub limits: Arc<crate::limits::Limits>,
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

/// `trustmesh_cp_certificates_issued_total{result}`: `issued` and every refusal reason but
/// the Kubernetes token ones ([`crate::k8s_jwt::JwtError::CODES`]).
const ISSUE_RESULTS: &[&str] = &[
    "issued",
    "unauthenticated",
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
    registry: prometheus::Registry,
    issued: prometheus::IntCounterVec,
    proxies: prometheus::IntGauge,
    trust: crate::trust::TrustMetrics,
    snapshot_push: prometheus::Histogram,
    /// Blocklist exchanges with peer replicas by result (`changed`, `unchanged`, `error`).
    pub peer_sync: prometheus::IntCounterVec,
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
        let peer_sync = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "trustmesh_cp_peer_sync_total",
                "Blocklist exchanges with peer replicas (--peers) by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(peer_sync.clone()))?;
        // Known label values start at zero, so an alert on them works before the first event.
        for result in ISSUE_RESULTS.iter().chain(crate::k8s_jwt::JwtError::CODES) {
            issued.with_label_values(&[result]);
        }
        for result in ["changed", "unchanged", "error"] {
            peer_sync.with_label_values(&[result]);
        }
        Ok(Self {
            peer_sync,
            snapshot_push,
            trust: crate::trust::TrustMetrics::register(&registry)?,
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
    pub(crate) fn refused(&self, reason: &str) {
        self.issued.with_label_values(&[reason]).inc();
    }
}

/// An API error: status, stable code, human message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    /// An error with its status, stable code and message.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        let code = match e {
            TokenError::Malformed => "token_malformed",
            TokenError::BadSignature => "token_invalid",
            TokenError::Expired => "token_expired",
            TokenError::AlreadyUsed => "token_used",
            TokenError::Store => "token_unavailable",
        };
        let status = if e == TokenError::Store {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::UNAUTHORIZED
        };
        Self::new(status, code, e.to_string())
    }
}

type Resp = Response<Full<Bytes>>;

/// Handles one request. Never fails: every error is a JSON response.
pub async fn handle(
    state: Arc<AppState>,
    caller: Arc<Caller>,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => Ok(healthz(&state)),
        (&Method::GET, "/metrics") => metrics(&state),
        (&Method::GET, "/v1/trust-bundle") => Ok(text(
            StatusCode::OK,
            "application/x-pem-file",
            state.trust.current().bundle.pem().to_string(),
        )),
        (&Method::POST, "/v1/certificates") => certificates(&state, &caller, req).await,
        (&Method::GET, "/v1/snapshot") => snapshot(&state, &caller, req.uri().query()).await,
        (&Method::GET, "/v1/proxies") => {
            crate::status::proxies(&state, &caller).map(|v| json(StatusCode::OK, &v))
        }
        (&Method::GET, "/v1/blocklist") => blocklist(&state, &caller),
        (&Method::POST, "/v1/inject") => {
            Ok(crate::inject::handle(req, caller.identity.as_ref(), &state.trust.current()).await)
        }
        (_, p) if methods::allowed(p).is_some() => Err(ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no such endpoint: {path}"),
        )),
    };
    let mut resp = result.unwrap_or_else(error_response);
    methods::add_allow(&path, &mut resp);
    // No browser is a client here, but one pointed at the API must render JSON and PEM as
    // what they are declared to be, never sniff them into HTML (OWASP REST Security).
    resp.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

/// `GET /v1/blocklist`: the blocked identities with the dated unblocks, for peer replicas
/// (the control plane's identity) and operators (the admin identity) only.
fn blocklist(state: &AppState, caller: &Caller) -> Result<Resp, ApiError> {
    let td = state.trust.current().signer.trust_domain().clone();
    let Some(id) = caller.identity.as_ref() else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a control-plane or admin client certificate is required",
        ));
    };
    let allowed = *id == trustmesh_certs::control_plane_identity(&td)
        || crate::admin_cert::admin_identity(&td).is_ok_and(|admin| admin == *id);
    if !allowed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "only the control plane's replicas and the admin identity may read the blocklist",
        ));
    }
    let list = crate::blocklist::read_state(state.trust.dir()).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "blocklist_unreadable",
            format!("{e:#}"),
        )
    })?;
    Ok(json(StatusCode::OK, &list.to_form()))
}

/// The one place an error becomes a response.
fn error_response(e: ApiError) -> Resp {
    if e.status.is_server_error() {
        tracing::warn!(code = e.code, "{}", e.message);
    } else {
        tracing::debug!(code = e.code, status = e.status.as_u16(), "{}", e.message);
    }
    json(
        e.status,
        &serde_json::json!({"error": e.code, "message": e.message}),
    )
}

/// `GET /healthz`, for anyone who reaches the listener (probes, load balancers): the status
/// and the versions in force, nothing more. Policy errors (file names, rule text), blocked
/// identities and the CA's details are for the admin identity, in `GET /v1/proxies`.
fn healthz(state: &AppState) -> Resp {
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

fn metrics(state: &AppState) -> Result<Resp, ApiError> {
    state.metrics.proxies.set(state.proxies.len() as i64);
    state.metrics.trust.set(&state.trust.current());
    let mut out = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&state.metrics.registry.gather(), &mut out)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "metrics", e.to_string()))?;
    Ok(text(
        StatusCode::OK,
        "text/plain; version=0.0.4; charset=utf-8",
        out,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateRequest {
    csr: String,
}

#[derive(Serialize)]
struct CertificateResponse {
    certificate_chain: String,
    expires_at: String,
    trust_bundle: String,
}

/// `POST /v1/certificates`: the identity comes from the bearer token or from the caller's
/// current certificate, never from the CSR. A token is spent only once a certificate has been
/// signed, so a malformed CSR does not burn it.
async fn certificates(
    state: &AppState,
    caller: &Caller,
    req: Request<Incoming>,
) -> Result<Resp, ApiError> {
    let bearer = bearer_token(&req)?;
    let proof = crate::authn::authenticate(state, caller, bearer.as_deref()).await?;
    let identity = proof.identity().clone();
    let trust = state.trust.current();
    if crate::admin_cert::is_reserved(trust.signer.trust_domain(), &identity) {
        state.metrics.refused("reserved_identity");
        tracing::warn!(client.id = %identity, via = proof.via(), "refused a certificate for a reserved identity");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "reserved_identity",
            format!("{identity} is reserved for the control plane and its operators"),
        ));
    }
    if trust.is_blocked(&identity) {
        state.metrics.refused("identity_blocked");
        tracing::info!(client.id = %identity, "refused a certificate to a blocked identity");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "identity_blocked",
            format!("{identity} is blocked (trustmesh identity block)"),
        ));
    }
    let body: CertificateRequest = read_json(state, req).await?;
    let issued = trust
        .signer
        .sign_csr(&body.csr, &identity, state.cert_ttl, SystemTime::now())
        .map_err(|e| {
            let (status, code) = csr_refusal(&e);
            state.metrics.issued.with_label_values(&[code]).inc();
            ApiError::new(status, code, e.to_string())
        })?;
    if let crate::authn::Proof::Token(c) = &proof {
        state.used_tokens.consume(c).inspect_err(|e| {
            state
                .metrics
                .issued
                .with_label_values(&[refusal_label(e)])
                .inc()
        })?;
    }
    state.metrics.issued.with_label_values(&["issued"]).inc();
    let via = proof.via();
    tracing::info!(
        client.id = %identity,
        via,
        serial = %issued.serial_hex,
        "issued a certificate"
    );
    Ok(json(
        StatusCode::OK,
        &CertificateResponse {
            certificate_chain: issued.chain_pem,
            expires_at: trustmesh_runtime::rfc3339(issued.not_after),
            trust_bundle: trust.bundle.pem().to_string(),
        },
    ))
}

/// The status and code of a CSR the CA refused to sign. One that names an identity beyond the
/// caller's (another SPIFFE ID, another trust domain, or a second URI SAN beside the caller's
/// own) is a `403`; one that does not parse or verify is a `400`.
fn csr_refusal(e: &CertError) -> (StatusCode, &'static str) {
    match e {
        CertError::CsrIdentityMismatch { .. }
        | CertError::TrustDomainMismatch { .. }
        | CertError::MultipleUriSans => (StatusCode::FORBIDDEN, "csr_identity_mismatch"),
        _ => (StatusCode::BAD_REQUEST, "bad_csr"),
    }
}

/// The metrics label of a refused bootstrap token.
pub(crate) fn refusal_label(e: &TokenError) -> &'static str {
    match e {
        TokenError::Malformed | TokenError::BadSignature => "token_invalid",
        TokenError::Expired => "token_expired",
        TokenError::AlreadyUsed => "token_used",
        TokenError::Store => "token_unavailable",
    }
}

fn bearer_token(req: &Request<Incoming>) -> Result<Option<String>, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| TokenError::Malformed)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "the Authorization header must be `Bearer <token>`",
            )
        })?;
    Ok(Some(token.trim().to_string()))
}

/// `GET /v1/snapshot?version=V[&wait=30s]`: answers at once when the caller's version is not
/// the current one, otherwise waits until it changes; `304` when the wait ends with no change.
/// A blocked identity gets `403 identity_blocked`, also when the block comes during the wait.
async fn snapshot(
    state: &AppState,
    caller: &Caller,
    query: Option<&str>,
) -> Result<Resp, ApiError> {
    let identity = caller.identity.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "a mesh client certificate is required",
        )
    })?;
    let mut have = None;
    let mut wait = DEFAULT_WAIT;
    for (k, v) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
    {
        match k {
            "version" => have = Some(percent_decode(v)),
            "wait" => {
                wait = humantime::parse_duration(v)
                    .map_err(|_| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "bad_wait",
                            format!("wait={v} is not a duration"),
                        )
                    })?
                    .min(MAX_WAIT)
            }
            _ => {}
        }
    }
    state.proxies.record(
        &identity,
        caller.addr.ip().to_string(),
        have.clone(),
        caller.cert_expiry,
    );
    let mut rx = state.policies.subscribe();
    let mut trust_rx = state.trust.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    // Held while this poll waits: at most --max-watches-per-identity of one identity's polls.
    let mut watching = None;
    loop {
        let current = rx.borrow_and_update().clone();
        let trust = trust_rx.borrow_and_update().clone();
        // Checked on every wake-up too: a block that lands during a long poll ends it.
        if trust.is_blocked(&identity) {
            tracing::info!(client.id = %identity, "refused a snapshot to a blocked identity");
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "identity_blocked",
                format!("{identity} is blocked (trustmesh identity block)"),
            ));
        }
        if have.as_deref() != Some(snapshot::version(&current.version, &trust).as_str()) {
            let timer = state.metrics.snapshot_push.start_timer();
            let snap = snapshot::build(&current, &trust, &identity);
            let resp = json(StatusCode::OK, &snap);
            timer.observe_duration();
            return Ok(resp);
        }
        if watching.is_none() && !wait.is_zero() {
            watching = Some(state.limits.watch(&identity).ok_or_else(|| {
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_watches",
                    format!(
                        "{identity} already has {} snapshot polls waiting \
                         (--max-watches-per-identity); retry later",
                        state.limits.args.max_watches_per_identity
                    ),
                )
            })?);
        }
        let changed = async {
            tokio::select! {
                r = rx.changed() => r.is_ok(),
                r = trust_rx.changed() => r.is_ok(),
                // Draining: end the wait now, so the proxy polls again (elsewhere).
                () = state.drain.started() => false,
            }
        };
        match tokio::time::timeout_at(deadline, changed).await {
            Ok(true) => continue,
            // Timed out, draining, or the source went away: tell the caller nothing changed.
            _ => {
                return Ok(Response::builder()
                    .status(StatusCode::NOT_MODIFIED)
                    .body(Full::new(Bytes::new()))
                    .unwrap_or_default())
            }
        }
    }
}

/// Reads a JSON body of at most [`MAX_BODY`] bytes, sent within `--header-timeout` (a body
/// trickled to hold the connection gets 408, as a trickled head is closed).
async fn read_json<T: serde::de::DeserializeOwned>(
    state: &AppState,
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let timeout = state.limits.args.header_timeout;
    let body = tokio::time::timeout(timeout, Limited::new(req.into_body(), MAX_BODY).collect())
        .await
        .map_err(|_| {
            state.limits.exceeded(crate::limits::Limit::BodyTimeout);
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!("the request body did not arrive within {timeout:?} (--header-timeout)"),
            )
        })?;
    let bytes = body
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("the request body is larger than {MAX_BODY} bytes or was cut off"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("the request body is not the expected JSON: {e}"),
        )
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    let body = serde_json::to_vec(value).unwrap_or_default();
    text(status, "application/json", body)
}

fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
