//! One access-log line, written as JSON straight into the writer's buffer.
//!
//! The field names and the punctuation between them are constants of this file; every value
//! that comes from a request (or from the mesh's configuration) goes through `serde_json`, so
//! its escaping is serde_json's (for an identity, serde_json's escaping kept from an earlier
//! line, see [`identities`]); only the trace id, hex digits by its type, is copied as it is. Written field by field rather than through a derived
//! `Serialize` with `#[serde(flatten)]`: a flattened struct is serialized as a map whose every
//! key is escaped again on every line, which cost more than the rest of the line.

use std::time::SystemTime;

use std::sync::Arc;

use super::{identities, stamp, Entry};

/// What a finished request (or closed tunnel) writes: the [`Entry`] and the response.
pub(super) struct Line<'a> {
    /// When the response headers left (or the tunnel closed).
    pub time: SystemTime,
    /// `inbound` or `outbound`.
    pub direction: &'a str,
    /// What the stages recorded.
    pub entry: &'a Entry,
    /// The status sent back.
    pub status: u16,
    /// The response's `Content-Length`, when it has one.
    pub response_bytes: Option<u64>,
    /// Request headers to response headers (or to the tunnel's close).
    pub duration_ms: f64,
}

impl Line<'_> {
    /// Appends the line as one JSON object (no newline) to `out`. The fields and their order
    /// are those the README's "Access log" lists; `upgrade` and the tunnel's bytes appear only
    /// for an upgrade, every other field is always there (`null` when unknown).
    pub(super) fn encode(&self, out: &mut Vec<u8>) -> serde_json::Result<()> {
        let e = self.entry;
        out.extend_from_slice(b"{\"time\":");
        stamp::write(out, self.time)?;
        text(out, b",\"direction\":", Some(self.direction))?;
        identity(out, b",\"source\":", e.source.as_ref())?;
        identity(out, b",\"destination\":", e.destination.as_ref())?;
        text(out, b",\"method\":", Some(e.method.as_str()))?;
        text(out, b",\"authority\":", e.authority.as_deref())?;
        text(out, b",\"path\":", e.path.as_deref())?;
        text(out, b",\"decision\":", e.decision)?;
        text(out, b",\"policy\":", e.policy.as_deref())?;
        text(out, b",\"route\":", e.route.as_deref())?;
        number(out, b",\"request_bytes\":", e.request_bytes)?;
        out.extend_from_slice(b",\"trace_id\":");
        match &e.trace_id {
            // 32 lowercase hex digits (the type holds nothing else): nothing to escape.
            Some(id) => {
                out.push(b'"');
                out.extend_from_slice(id.as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        if let Some(protocol) = e.upgrade.as_deref() {
            text(out, b",\"upgrade\":", Some(protocol))?;
        }
        if e.tunnel_bytes_up.is_some() {
            number(out, b",\"tunnel_bytes_up\":", e.tunnel_bytes_up)?;
        }
        if e.tunnel_bytes_down.is_some() {
            number(out, b",\"tunnel_bytes_down\":", e.tunnel_bytes_down)?;
        }
        number(out, b",\"status\":", Some(self.status))?;
        number(out, b",\"response_bytes\":", self.response_bytes)?;
        out.extend_from_slice(b",\"duration_ms\":");
        serde_json::to_writer(&mut *out, &self.duration_ms)?;
        out.push(b'}');
        Ok(())
    }
}

/// `key` (a constant: `,"name":`) and the string, escaped by serde_json, or `null`.
fn text(out: &mut Vec<u8>, key: &[u8], value: Option<&str>) -> serde_json::Result<()> {
    out.extend_from_slice(key);
    match value {
        Some(v) => serde_json::to_writer(&mut *out, v),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

/// `key` and a SPIFFE ID (see [`identities`]), or `null`.
fn identity(out: &mut Vec<u8>, key: &[u8], value: Option<&Arc<str>>) -> serde_json::Result<()> {
    out.extend_from_slice(key);
    match value {
        Some(id) => identities::write(out, id),
        None => {
            out.extend_from_slice(b"null");
            Ok(())
        }
    }
}

/// `key` and the number, or `null`.
fn number<N: serde::Serialize>(
    out: &mut Vec<u8>,
    key: &[u8],
    value: Option<N>,
) -> serde_json::Result<()> {
    out.extend_from_slice(key);
    serde_json::to_writer(&mut *out, &value)
}

#[cfg(test)]
mod tests;
