//! The attempts of one routed request: its timeouts, and with a rule's `retry` (GEP-1731) the
//! retries.
//!
//! - **Timeouts** (GEP-1742): the whole request, retries and backoff included, has the rule's
//!   `timeouts.request`, else the default (`--upstream-timeout`, or a gRPC call's own
//!   `grpc-timeout`, [`crate::layers::deadline`]); each attempt at most `backendRequest`.
//!   The deadline passing answers `504` at once, whatever attempt is under way.
//! - **Retries**: a response whose status is in `codes` is retried, and so is a request that
//!   failed on its connection (connect refused or timed out, TLS refused, reset) or, when
//!   `codes` has 504, an attempt that ran past `backendRequest`; up to `attempts` times,
//!   `backoff` apart, while the deadline leaves room and the service's [`Budget`] allows.
//!   Only a request whose body can be sent again is retried: an empty body, or one of known
//!   length up to `--retry-max-body-bytes`, buffered before the first attempt. A longer or
//!   streamed body (no `content-length`), or `Expect: 100-continue` (its body must not be
//!   asked for before the callee answers), is sent once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, request, HeaderMap, Request, Response};
use http_body::{Body as _, Frame};
use http_body_util::{BodyExt as _, StreamBody};
use hyper::body::Incoming;
use tokio::time::Instant;
use trustmesh_policies::route::{format_duration, CompiledRule};
use trustmesh_policies::ServiceEntry;

use super::super::Outbound;
use super::budget::Budget;
use crate::layers::body::{self, Body, Stalled};
use crate::layers::rescue::ProxyError;

/// The clock of one request: its deadline, and what its attempts may take.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// When the whole request must be answered.
    pub deadline: Instant,
    total: Duration,
    from_route: bool,
    per_try: Option<Duration>,
}

impl Timeouts {
    /// The timeouts `rule` gives a request starting now; `default` when it has no
    /// `timeouts.request`.
    pub fn new(rule: &CompiledRule, default: Duration) -> Self {
        let total = rule.request_timeout.unwrap_or(default);
        Self {
            deadline: Instant::now() + total,
            total,
            from_route: rule.request_timeout.is_some(),
            per_try: rule.backend_request_timeout,
        }
    }

    /// The error of a deadline that passed.
    fn expired(&self, target: String) -> ProxyError {
        if self.from_route {
            return ProxyError::RouteTimeout {
                target,
                timeout: format_duration(self.total),
                which: "request",
            };
        }
        ProxyError::Timeout {
            target,
            secs: self.total.as_secs(),
        }
    }
}

/// What the attempts of one request share.
pub struct Plan<'a> {
    /// The backend the rule chose.
    pub service: &'a ServiceEntry,
    /// The parent service, `name.namespace` (its budget and the metrics' `service`).
    pub parent: &'a str,
    /// The rule taken.
    pub rule: &'a CompiledRule,
    /// The request's clock.
    pub timeouts: &'a Timeouts,
    /// Whether the client's body stalled (`--body-timeout`: 408, never retried).
    pub stalled: &'a Stalled,
}

/// A request body that can be sent again.
#[derive(Debug, Clone)]
pub struct Replay {
    data: Bytes,
    trailers: Option<HeaderMap>,
}

impl Replay {
    /// A fresh copy of the body.
    pub fn body(&self) -> Body {
        match &self.trailers {
            None => body::full(self.data.clone()),
            Some(t) => {
                let frames = [Frame::data(self.data.clone()), Frame::trailers(t.clone())];
                let frames = frames.into_iter().map(Ok::<_, body::BoxError>);
                StreamBody::new(futures_util::stream::iter(frames)).boxed()
            }
        }
    }
}

/// Whether a request with this head and body may be retried: its body is empty, or of a
/// known length up to `limit` and not held back for `Expect: 100-continue`.
pub fn replayable(head: &request::Parts, body: &Body, limit: u64) -> bool {
    if body.is_end_stream() {
        return true;
    }
    let expects_continue = head
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    !expects_continue && body.size_hint().upper().is_some_and(|n| n <= limit)
}

/// Reads a [`replayable`] body whole; a body that stalls past `body_timeout` is `408`, one
/// that breaks (or runs past `limit` after all) `400`.
pub async fn buffer(
    body: Body,
    limit: u64,
    stalled: Stalled,
    body_timeout: Duration,
) -> Result<Replay, ProxyError> {
    let mut body = body;
    let mut data = bytes::BytesMut::new();
    let mut trailers = None;
    let broken = |e: String| {
        if stalled.get() {
            return ProxyError::BodyTimeout {
                secs: body_timeout.as_secs(),
            };
        }
        ProxyError::BadRequest(format!("the request body could not be read: {e}"))
    };
    // Read frame by frame rather than through `Limited`, whose error bound trips rustc's
    // `Send` inference for this future (rust-lang/rust#102211).
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| broken(e.to_string()))?;
        match frame.into_data() {
            Ok(chunk) => {
                if (data.len() + chunk.len()) as u64 > limit {
                    return Err(broken(format!("longer than its {limit} bytes")));
                }
                data.extend_from_slice(&chunk);
            }
            Err(frame) => trailers = frame.into_trailers().ok().or(trailers),
        }
    }
    Ok(Replay {
        data: data.freeze(),
        trailers,
    })
}

/// Whether a failed attempt may be retried: it failed on its connection, or (when the rule
/// retries 504) ran past `backendRequest`.
pub(super) fn retryable_error(e: &ProxyError, codes: &[u16]) -> bool {
    match e {
        ProxyError::Connect { .. } | ProxyError::Tls { .. } | ProxyError::Upstream { .. } => true,
        ProxyError::RouteTimeout { which, .. } => {
            *which == "backendRequest" && codes.contains(&504)
        }
        _ => false,
    }
}

fn clone_head(head: &request::Parts) -> request::Parts {
    let mut req = Request::new(());
    *req.method_mut() = head.method.clone();
    *req.uri_mut() = head.uri.clone();
    *req.version_mut() = head.version;
    *req.headers_mut() = head.headers.clone();
    req.into_parts().0
}

impl Outbound {
    /// Sends `req` as `plan` says: once, or with the rule's retries.
    pub(super) async fn attempts(
        &self,
        plan: &Plan<'_>,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let Some(retry) = plan.rule.retry.as_ref() else {
            return self.attempt(plan, req).await;
        };
        // Every request a retry rule covers earns its service's budget, resent or not.
        let budget: Arc<Budget> = self.budgets.of(plan.parent);
        budget.deposit(std::time::Instant::now());
        let (head, body) = req.into_parts();
        let limit = self.config.retry.max_body_bytes;
        let body_timeout = self.config.body_timeout;
        if !replayable(&head, &body, limit) {
            return self.attempt(plan, Request::from_parts(head, body)).await;
        }
        let reading = buffer(body, limit, plan.stalled.clone(), body_timeout);
        let Ok(read) = tokio::time::timeout_at(plan.timeouts.deadline, reading).await else {
            let target = format!("{}.{}", plan.service.name, plan.service.namespace);
            return Err(plan.timeouts.expired(target));
        };
        let replay = match read {
            Ok(replay) => replay,
            Err(e) => {
                if matches!(e, ProxyError::BodyTimeout { .. }) {
                    crate::layers::limits::exceeded(
                        &self.shared.metrics,
                        "body_timeout",
                        "outbound",
                    );
                }
                return Err(e);
            }
        };
        let metrics = &self.shared.metrics;
        let template = clone_head(&head);
        let mut first = Some(head);
        let mut left = retry.attempts;
        loop {
            let head = first.take().unwrap_or_else(|| clone_head(&template));
            let result = self
                .attempt(plan, Request::from_parts(head, replay.body()))
                .await;
            let again = match &result {
                Ok(resp) => retry.codes.contains(&resp.status().as_u16()),
                Err(e) => retryable_error(e, &retry.codes),
            };
            let backoff = retry.backoff.unwrap_or_default();
            if !again || left == 0 || Instant::now() + backoff >= plan.timeouts.deadline {
                return result;
            }
            if !budget.withdraw(std::time::Instant::now()) {
                metrics
                    .retry_budget_exhausted
                    .with_label_values(&[plan.parent])
                    .inc();
                tracing::info!(service = plan.parent, "retry budget exhausted: not retried");
                return result;
            }
            metrics.retries.with_label_values(&[plan.parent]).inc();
            left -= 1;
            drop(result);
            tokio::time::sleep(backoff).await;
        }
    }

    /// One attempt, bounded by `backendRequest` and by what is left of the deadline.
    pub(super) async fn attempt(
        &self,
        plan: &Plan<'_>,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let t = plan.timeouts;
        let left = t.deadline.saturating_duration_since(Instant::now());
        let (limit, per_try) = match t.per_try {
            Some(p) if p < left => (p, true),
            _ => (left, false),
        };
        let service = plan.service;
        let sent = tokio::time::timeout(limit, self.send_to_service(service, req, limit)).await;
        let target = format!("{}.{}", service.name, service.namespace);
        match sent {
            Err(_) | Ok(Err(ProxyError::Timeout { .. })) if per_try => {
                Err(ProxyError::RouteTimeout {
                    target,
                    timeout: format_duration(limit),
                    which: "backendRequest",
                })
            }
            Err(_) | Ok(Err(ProxyError::Timeout { .. })) => Err(t.expired(target)),
            Ok(Err(_)) if plan.stalled.get() => {
                crate::layers::limits::exceeded(&self.shared.metrics, "body_timeout", "outbound");
                Err(ProxyError::BodyTimeout {
                    secs: self.config.body_timeout.as_secs(),
                })
            }
            Ok(result) => result,
        }
    }
}
