//! API layer: the errors of the control-plane API. Every error code the API answers with is a
//! variant of [`Code`], which alone knows its wire name and its status, and an [`ApiError`]
//! becomes a JSON `{"error", "message"}` response in one place, [`error_response`].

use http::StatusCode;

use super::respond::{json, Resp};
use crate::domain::tokens::TokenError;

/// The stable error codes of the API (`control-plane/openapi.yaml`), each with its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 401: no credential, or not the one the endpoint needs.
    Unauthenticated,
    /// 403: a credential, but not one this endpoint answers.
    Forbidden,
    /// 401: the connection's client certificate has passed its NotAfter (a kept connection
    /// outlives the certificate it was verified with); the connection closes after it.
    CertificateExpired,
    /// 403: a certificate asked for an identity reserved for the control plane and operators.
    ReservedIdentity,
    /// 403: the identity is blocked (`trustmesh identity block`).
    IdentityBlocked,
    /// 403: the CSR names an identity beyond the caller's.
    CsrIdentityMismatch,
    /// 400: the CSR does not parse or verify.
    BadCsr,
    /// 401: the bearer token is not a token.
    TokenMalformed,
    /// 401: the bootstrap token's MAC does not verify.
    TokenInvalid,
    /// 401: the bootstrap token has expired.
    TokenExpired,
    /// 401: the bootstrap token was used before.
    TokenUsed,
    /// 503: the used-token record cannot be written.
    TokenUnavailable,
    /// 401: a refused Kubernetes ServiceAccount JWT, by its code
    /// ([`crate::domain::k8s_jwt::JwtError::code`]).
    Jwt(&'static str),
    /// 503: the cluster's JWKS cannot be read now.
    JwksUnavailable,
    /// 400: `wait=` of a snapshot poll is no duration.
    BadWait,
    /// 429: over `--max-watches-per-identity` snapshot polls waiting.
    TooManyWatches,
    /// 408: the body did not arrive within `--header-timeout`.
    BodyTimeout,
    /// 413: the body is over the endpoint's limit or was cut off.
    BodyTooLarge,
    /// 400: the body could not be read.
    BadBody,
    /// 400: the body is not the expected JSON.
    BadJson,
    /// 400: the injection webhook's body is no AdmissionReview v1.
    BadAdmissionReview,
    /// 500: the metrics could not be encoded.
    Metrics,
    /// 500: a certificate the CA just made cannot be read back (a bug, never bad input).
    Internal,
    /// 405: the endpoint exists, the method does not.
    MethodNotAllowed,
    /// 404: no such endpoint.
    NotFound,
}

impl Code {
    /// The code as the JSON body's `error` names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthenticated => "unauthenticated",
            Code::Forbidden => "forbidden",
            Code::CertificateExpired => "certificate_expired",
            Code::ReservedIdentity => "reserved_identity",
            Code::IdentityBlocked => "identity_blocked",
            Code::CsrIdentityMismatch => "csr_identity_mismatch",
            Code::BadCsr => "bad_csr",
            Code::TokenMalformed => "token_malformed",
            Code::TokenInvalid => "token_invalid",
            Code::TokenExpired => "token_expired",
            Code::TokenUsed => "token_used",
            Code::TokenUnavailable => "token_unavailable",
            Code::Jwt(code) => code,
            Code::JwksUnavailable => "jwks_unavailable",
            Code::BadWait => "bad_wait",
            Code::TooManyWatches => "too_many_watches",
            Code::BodyTimeout => "body_timeout",
            Code::BodyTooLarge => "body_too_large",
            Code::BadBody => "bad_body",
            Code::BadJson => "bad_json",
            Code::BadAdmissionReview => "bad_admission_review",
            Code::Metrics => "metrics",
            Code::Internal => "internal",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::NotFound => "not_found",
        }
    }

    /// The HTTP status the code is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            Code::Unauthenticated
            | Code::CertificateExpired
            | Code::TokenMalformed
            | Code::TokenInvalid
            | Code::TokenExpired
            | Code::TokenUsed
            | Code::Jwt(_) => StatusCode::UNAUTHORIZED,
            Code::Forbidden
            | Code::ReservedIdentity
            | Code::IdentityBlocked
            | Code::CsrIdentityMismatch => StatusCode::FORBIDDEN,
            Code::BadCsr
            | Code::BadWait
            | Code::BadBody
            | Code::BadJson
            | Code::BadAdmissionReview => StatusCode::BAD_REQUEST,
            Code::TokenUnavailable | Code::JwksUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Code::TooManyWatches => StatusCode::TOO_MANY_REQUESTS,
            Code::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Code::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::Metrics | Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::NotFound => StatusCode::NOT_FOUND,
        }
    }
}

/// An API error: its code (which decides the status) and a human message.
#[derive(Debug)]
pub struct ApiError {
    code: Code,
    message: String,
}

impl ApiError {
    /// An error with its code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The error's code.
    pub fn code(&self) -> Code {
        self.code
    }
}

impl From<TokenError> for ApiError {
    fn from(e: TokenError) -> Self {
        let code = match e {
            TokenError::Malformed => Code::TokenMalformed,
            TokenError::BadSignature => Code::TokenInvalid,
            TokenError::Expired => Code::TokenExpired,
            TokenError::AlreadyUsed => Code::TokenUsed,
            TokenError::Store => Code::TokenUnavailable,
        };
        Self::new(code, e.to_string())
    }
}

/// The one place an error becomes a response.
pub fn error_response(e: ApiError) -> Resp {
    let (status, code) = (e.code().status(), e.code().as_str());
    if status.is_server_error() {
        tracing::warn!(code, "{}", e.message);
    } else {
        tracing::debug!(code, status = status.as_u16(), "{}", e.message);
    }
    json(
        status,
        &serde_json::json!({"error": code, "message": e.message}),
    )
}
