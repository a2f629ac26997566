//! API layer: request bodies in (JSON within the caps of [`super::limits`]) and responses out
//! (JSON or text with their content type).

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use super::error::{ApiError, Code};
use super::limits::{Limit, Limits};

/// A response of the API.
pub type Resp = Response<Full<Bytes>>;

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

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    let body = serde_json::to_vec(value).unwrap_or_default();
    text(status, "application/json", body)
}

/// A response of `content_type`.
pub fn text(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}
