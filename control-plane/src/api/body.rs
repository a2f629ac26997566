//! API layer: request bodies in, JSON within [`MAX_BODY`] and `--header-timeout`
//! ([`super::limits`]).

use http::Request;
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;

use super::error::{ApiError, Code};
use super::limits::{Limit, Limits};

/// Largest request body accepted (a CSR is well under 2 KiB).
pub const MAX_BODY: usize = 64 * 1024;

/// Reads a JSON body of at most [`MAX_BODY`] bytes, sent within `--header-timeout` (a body
/// trickled to hold the connection gets 408, as a trickled head is closed).
pub async fn read_json<T: serde::de::DeserializeOwned>(
    limits: &Limits,
    req: Request<Incoming>,
) -> Result<T, ApiError> {
    let timeout = limits.args.header_timeout;
    let body = tokio::time::timeout(timeout, Limited::new(req.into_body(), MAX_BODY).collect())
        .await
        .map_err(|_| {
            limits.exceeded(Limit::BodyTimeout);
            ApiError::new(
                Code::BodyTimeout,
                format!("the request body did not arrive within {timeout:?} (--header-timeout)"),
            )
        })?;
    let bytes = body
        .map_err(|_| {
            ApiError::new(
                Code::BodyTooLarge,
                format!("the request body is larger than {MAX_BODY} bytes or was cut off"),
            )
        })?
        .to_bytes();
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            Code::BadJson,
            format!("the request body is not the expected JSON: {e}"),
        )
    })
}
