//! What a matched rule does with a request, compiled: its weighted backends, header edits,
//! timeouts and retries. This is what the proxy applies and `trustmesh route check` prints.

use std::time::Duration;

use http::{HeaderName, HeaderValue};

/// What a matched rule does with the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompiledRule {
    /// Where requests go, with their weights (in the order written).
    pub backends: Vec<Backend>,
    /// `RequestHeaderModifier`.
    pub request_headers: HeaderEdits,
    /// `ResponseHeaderModifier`.
    pub response_headers: HeaderEdits,
    /// The request and per-attempt timeouts; `None` is no timeout (absent or `0s`).
    pub request_timeout: Option<Duration>,
    /// The timeout of one attempt to a backend.
    pub backend_request_timeout: Option<Duration>,
    /// Retries, when the rule asks for them.
    pub retry: Option<RetryPolicy>,
}

/// One backend of a rule: a registry Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// The Service port; the request's port when `None` (the parent itself as backend).
    pub port: Option<u16>,
    /// Relative share of requests.
    pub weight: u32,
}

/// Header changes of one modifier filter, already valid HTTP names and values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderEdits {
    /// Replace (or add) these.
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append these.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// Remove these.
    pub remove: Vec<HeaderName>,
}

impl HeaderEdits {
    /// Whether there is nothing to change.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// A rule's retries (GEP-1731).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// Response codes that are retried (a connection error always is).
    pub codes: Vec<u16>,
    /// Wait before each retry.
    pub backoff: Option<Duration>,
}
