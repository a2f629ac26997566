//! API layer: the control-plane HTTP API (see `control-plane/openapi.yaml`). It sits below
//! the command line ([`crate::cli`]) and above the domain ([`crate::domain`]): the listener
//! ([`listener`], TLS and the caps of [`limits`]), authentication of the caller ([`authn`]:
//! bootstrap token, Kubernetes JWT or mesh client certificate), the router ([`handle`]), one
//! handler file per endpoint group, and the one place where errors become JSON
//! `{"error", "message"}` responses ([`error`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use http::{header, Method, Request, StatusCode};
use hyper::body::Incoming;

pub mod authn;
pub mod body;
mod certificates;
pub mod error;
mod health;
mod inject;
pub mod limits;
pub mod listener;
mod methods;
pub mod metrics;
mod proxies;
pub mod respond;
pub mod resume;
mod snapshot;
pub mod state;
pub mod tickets;

pub use error::{ApiError, Code};
pub use metrics::Metrics;
pub use state::{AppState, Caller};

use respond::{json, Resp};

/// Handles one request. Never fails: every error is a JSON response.
pub async fn handle(
    state: Arc<AppState>,
    caller: Arc<Caller>,
    req: Request<Incoming>,
) -> Result<Resp, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    // A kept connection can outlive the client certificate its handshake verified: from its
    // NotAfter on, every request is refused and the connection closes.
    let expired = caller
        .cert_expiry
        .is_some_and(|not_after| not_after < SystemTime::now());
    let result = if expired {
        if path == "/v1/certificates" {
            state.metrics.refused(Code::CertificateExpired.as_str());
        }
        Err(ApiError::new(
            Code::CertificateExpired,
            "the connection's client certificate has expired; reconnect with a current one",
        ))
    } else {
        route(&state, &caller, req, &method, &path).await
    };
    let mut resp = result.unwrap_or_else(error::error_response);
    if expired {
        resp.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    methods::add_allow(&path, &mut resp);
    // No browser is a client here, but one pointed at the API must render JSON and PEM as
    // what they are declared to be, never sniff them into HTML (OWASP REST Security).
    resp.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        header::HeaderValue::from_static("nosniff"),
    );
    Ok(resp)
}

/// The endpoint of `method` and `path`.
async fn route(
    state: &Arc<AppState>,
    caller: &Arc<Caller>,
    req: Request<Incoming>,
    method: &Method,
    path: &str,
) -> Result<Resp, ApiError> {
    match (method, path) {
        (&Method::GET, "/healthz") => Ok(health::healthz(state)),
        (&Method::GET, "/metrics") => health::metrics(state),
        (&Method::GET, "/v1/trust-bundle") => Ok(health::trust_bundle(state)),
        // Boxed, as the admission review below: this future is held for as long as a
        // snapshot poll waits, so it is as small as that poll's state, not these routes'.
        (&Method::POST, "/v1/certificates") => {
            Box::pin(certificates::certificates(state, caller, req)).await
        }
        (&Method::GET, "/v1/snapshot") => {
            // The request's head (URI, headers) points into hyper's 8 KiB read buffer, and
            // hyper reads on into a new one while the poll waits: dropped now, the long poll
            // holds one buffer instead of two (8 KiB per held connection).
            let query = req.uri().query().map(str::to_owned);
            drop(req);
            snapshot::snapshot(state, caller, query.as_deref()).await
        }
        (&Method::GET, "/v1/proxies") => {
            proxies::proxies(state, caller).map(|v| json(StatusCode::OK, &v))
        }
        (&Method::POST, "/v1/inject") => {
            let trust = state.trust.current();
            Box::pin(inject::handle(req, caller.identity.as_ref(), &trust)).await
        }
        (_, p) if methods::allowed(p).is_some() => Err(ApiError::new(
            Code::MethodNotAllowed,
            format!("{method} is not allowed on {path}"),
        )),
        _ => Err(ApiError::new(
            Code::NotFound,
            format!("no such endpoint: {path}"),
        )),
    }
}
