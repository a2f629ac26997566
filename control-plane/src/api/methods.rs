//! API layer: which method each API path answers, in one table: the router answers any other method on a
//! known path with `405` and an `Allow` header naming the method it takes (RFC 9110 §15.5.6),
//! and a path outside the table with `404`. `control-plane/openapi.yaml` describes exactly
//! these paths and methods (checked by the tests).

use http::{header, HeaderValue, Response, StatusCode};

/// Every path of the API with the one method it answers.
pub(super) const ROUTES: &[(&str, &str)] = &[
    ("/healthz", "GET"),
    ("/metrics", "GET"),
    ("/v1/trust-bundle", "GET"),
    ("/v1/certificates", "POST"),
    ("/v1/snapshot", "GET"),
    ("/v1/proxies", "GET"),
    ("/v1/inject", "POST"),
];

/// The method `path` answers, or `None` for a path the API does not have.
pub(super) fn allowed(path: &str) -> Option<&'static str> {
    ROUTES.iter().find(|(p, _)| *p == path).map(|(_, m)| *m)
}

/// Adds `Allow` to a `405` for `path` (RFC 9110 §15.5.6: a 405 must carry it).
pub(super) fn add_allow<B>(path: &str, resp: &mut Response<B>) {
    if resp.status() != StatusCode::METHOD_NOT_ALLOWED {
        return;
    }
    if let Some(allow) = allowed(path) {
        resp.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
}

#[cfg(test)]
mod tests;
