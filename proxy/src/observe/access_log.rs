//! The access log: one JSON line per request on stdout, inbound and outbound, written when the
//! response headers leave the proxy (`--access-log json`, the default; `off` writes nothing).
//!
//! Fields: `time` (RFC 3339, UTC), `direction`, `source` and `destination` (SPIFFE IDs),
//! `method`, `authority`, `path` (normalized, without the query), `status`, `decision`,
//! `policy`, `request_bytes` and `response_bytes` (from `Content-Length`, when the message has
//! one), `duration_ms` (request headers to response headers) and `trace_id` (W3C).
//!
//! An upgrade that succeeded (`101`, or `200` to an extended CONNECT) is logged once, when its
//! tunnel closes ([`crate::layers::upgrade::tunnel`]): with `upgrade` (the protocol),
//! `tunnel_bytes_up` (caller to callee), `tunnel_bytes_down` (back) and `duration_ms` from the
//! request head to the tunnel's end.
//!
//! Nothing a caller can hide a secret in is logged: no header values (so no `Authorization`,
//! cookies or tokens), no query string, and no userinfo of the authority.
//!
//! Lines leave through [`writer`]: a bounded queue and a thread of their own, never a write
//! on the thread that carries traffic.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{header, HeaderMap, Method};
use serde::Serialize;
use trustmesh_policies::normalize::normalize_path;

use crate::observe::trace::{self, TraceId};

mod identities;
mod line;
mod stamp;
pub mod writer;

pub use identities::shared;

/// `--access-log`: whether and how requests are logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// No access log.
    Off,
    /// One JSON object per line on stdout.
    Json,
}

/// What one request leaves for the log, filled in by the stages it passes. Values that are
/// shared (identities, see [`shared`]; the method, the deciding policy and rule) are held
/// without a copy per request.
#[derive(Debug, Default, Clone)]
pub struct Entry {
    /// The caller's SPIFFE ID (inbound: verified by mTLS; outbound: this sidecar).
    pub source: Option<Arc<str>>,
    /// The callee's SPIFFE ID (inbound: this sidecar; outbound: the registry's identity).
    pub destination: Option<Arc<str>>,
    /// The request method (a standard one is a constant, an extension method its bytes).
    pub method: Method,
    /// The authority the request named, without userinfo.
    pub authority: Option<String>,
    /// The normalized path, without the query.
    pub path: Option<String>,
    /// `allow`, `deny`, `would_deny`, `bad_request` (inbound) or `passthrough`, `deny` (outbound).
    pub decision: Option<&'static str>,
    /// The deciding policy, `namespace/name`, shared with the compiled policies.
    pub policy: Option<Arc<str>>,
    /// The deciding rule, `namespace/name#index`: inbound the policy rule, outbound the
    /// `HTTPRoute` rule taken.
    pub route: Option<Arc<str>>,
    /// The request's `Content-Length`, when it has one.
    pub request_bytes: Option<u64>,
    /// The W3C trace id (32 hex digits).
    pub trace_id: Option<TraceId>,
    /// The protocol a successful upgrade switched to (`websocket`).
    pub upgrade: Option<String>,
    /// Bytes an upgrade's tunnel carried from the caller to the callee.
    pub tunnel_bytes_up: Option<u64>,
    /// Bytes an upgrade's tunnel carried from the callee back to the caller.
    pub tunnel_bytes_down: Option<u64>,
    /// Set once an upgrade succeeded: the line is not written with the response but by the
    /// tunnel when it closes, with its bytes and full duration.
    pub deferred: bool,
    /// The `traceparent` parent id the request arrived with (for OTLP export only: read
    /// only while spans are exported).
    pub parent_id: Option<String>,
    /// This hop's span id (for OTLP export only).
    pub span_id: Option<String>,
    /// Whether anyone reads the entry (an access log or span export is on). When not, the
    /// stages skip the copies only those need; `decision`, `route` and `destination`, which
    /// the metrics use, are kept either way.
    pub detail: bool,
}

impl Entry {
    /// Whether entries need their details: an access log is written (`format`) or spans are
    /// exported (`spans`).
    pub fn wanted(format: AccessLogFormat, spans: bool) -> bool {
        format == AccessLogFormat::Json || spans
    }

    /// Starts an entry from what the request's head says, or an empty one without `detail`.
    pub fn from_request(
        method: &Method,
        uri: &http::Uri,
        headers: &HeaderMap,
        detail: bool,
    ) -> Self {
        if !detail {
            return Self::default();
        }
        let authority = uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| headers.get(header::HOST).and_then(|h| h.to_str().ok()))
            .map(without_userinfo);
        Self {
            method: method.clone(),
            authority,
            request_bytes: content_length(headers),
            trace_id: trace::trace_id(headers),
            parent_id: if crate::observe::otlp::enabled() {
                trace::parent_id(headers)
            } else {
                None
            },
            detail: true,
            ..Self::default()
        }
    }

    /// Records the normalized path of a raw request target; a target that does not normalize
    /// is left out rather than logged raw.
    pub fn set_raw_path(&mut self, raw: &str) {
        if !self.detail {
            return;
        }
        self.path = match already_normal(raw) {
            Some(path) => Some(path.to_string()),
            None => normalize_path(raw).ok().map(|p| p.as_str().to_string()),
        };
    }
}

/// Queues one line for a finished request, unless the format is `off` (see [`writer`]).
pub fn write(
    format: AccessLogFormat,
    direction: &str,
    entry: &Entry,
    status: http::StatusCode,
    response_headers: &HeaderMap,
    duration: Duration,
) {
    if format == AccessLogFormat::Off || entry.deferred {
        return;
    }
    let line = line::Line {
        time: SystemTime::now(),
        direction,
        entry,
        status: status.as_u16(),
        response_bytes: content_length(response_headers),
        duration_ms: (duration.as_secs_f64() * 1e6).round() / 1e3,
    };
    writer::send(|out| line.encode(out));
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// `user:password@host:port` → `host:port` (RFC 3986 §3.2.1: userinfo may carry credentials).
fn without_userinfo(authority: &str) -> String {
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_string()
}

/// The path of `raw` when normalizing would leave it as it is, so that the common target
/// (`/orders/1?page=2`) is not run through the normalizer only to be logged: a path of
/// unreserved characters and `/` alone (no `%`, `;`, `\`, space), no empty segment but a
/// trailing one, no `.` or `..` segment, and a query of visible ASCII without `#`. Anything
/// else returns `None` and goes through [`normalize_path`] (the tests check both agree).
fn already_normal(raw: &str) -> Option<&str> {
    let (path, query) = raw.split_once('?').unwrap_or((raw, ""));
    let segments = path.strip_prefix('/')?;
    let mut rest = segments.split('/').peekable();
    while let Some(seg) = rest.next() {
        let plain = match seg {
            "" => rest.peek().is_none(),
            "." | ".." => false,
            _ => seg.bytes().all(unreserved),
        };
        if !plain {
            return None;
        }
    }
    query
        .bytes()
        .all(|b| b > b' ' && b < 0x7f && b != b'#')
        .then_some(path)
}

/// RFC 3986 §2.3: ALPHA / DIGIT / "-" / "." / "_" / "~".
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests;
