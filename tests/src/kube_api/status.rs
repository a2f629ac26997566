//! The API server's errors as the `Status` objects (`kind: Status`) it answers them with:
//! `404 NotFound`, `409 AlreadyExists` and `Conflict`, `410 Expired`/`Gone`, `400 BadRequest`,
//! `415 UnsupportedMediaType`, `422 Invalid`, and injected failures.

use serde_json::{json, Value};

use super::resources::Resource;

/// Why a request failed; each maps to a `Status` reason and code as the real server sends it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// `404 NotFound`: no such object (or no such resource type).
    #[error("{resource} {name:?} not found")]
    NotFound {
        /// The type.
        resource: String,
        /// The object's name.
        name: String,
    },
    /// `409 AlreadyExists`: a create for a name that exists.
    #[error("{resource} {name:?} already exists")]
    AlreadyExists {
        /// The type.
        resource: Resource,
        /// The object's name.
        name: String,
    },
    /// `409 Conflict`: a write whose `metadata.resourceVersion` (or precondition) is stale.
    #[error("Operation cannot be fulfilled on {resource} {name:?}: the object has been modified; please apply your changes to the latest version and try again")]
    Conflict {
        /// The type.
        resource: Resource,
        /// The object's name.
        name: String,
    },
    /// `410 Expired`: a list or watch from a resourceVersion older than the retained history.
    #[error("too old resource version: {requested} ({oldest})")]
    Gone {
        /// The version asked for.
        requested: u64,
        /// The oldest version still served.
        oldest: u64,
    },
    /// `400 BadRequest`: a malformed query, body or selector.
    #[error("{0}")]
    BadRequest(String),
    /// `422 Invalid`: an object that fails validation (no name, wrong namespace, ...).
    #[error("{0}")]
    Invalid(String),
    /// `415 UnsupportedMediaType`: a patch type the stub does not implement.
    #[error("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json")]
    UnsupportedMediaType,
    /// `405 MethodNotAllowed`.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// A failure the test injected with `KubeApi::fail_next`.
    #[error("injected failure")]
    Injected(u16),
}

impl ApiError {
    /// The HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Gone { .. } => 410,
            ApiError::BadRequest(_) => 400,
            ApiError::Invalid(_) => 422,
            ApiError::UnsupportedMediaType => 415,
            ApiError::MethodNotAllowed => 405,
            ApiError::Injected(code) => *code,
        }
    }

    /// The `Status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Gone { .. } => "Expired",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Invalid(_) => "Invalid",
            ApiError::UnsupportedMediaType => "UnsupportedMediaType",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::Injected(429) => "TooManyRequests",
            ApiError::Injected(503) => "ServiceUnavailable",
            ApiError::Injected(504) => "Timeout",
            ApiError::Injected(_) => "InternalError",
        }
    }

    /// The `Status` object (`apiVersion: v1, kind: Status`) the server answers with.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            ApiError::AlreadyExists { resource, name } | ApiError::Conflict { resource, name } => {
                Some(json!({"name": name, "kind": resource.plural()}))
            }
            ApiError::NotFound { resource, name } => Some(json!({"name": name, "kind": resource})),
            _ => None,
        };
        if let (Some(d), Some(obj)) = (details, status.as_object_mut()) {
            obj.insert("details".into(), d);
        }
        status
    }
}
