//! API layer: `GET /v1/snapshot`, the proxies' long poll for what concerns them.

use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;

use super::error::{ApiError, Code};
use super::respond::{text, Resp};
use super::state::{AppState, Caller};
use crate::domain::snapshot;

/// Default and longest wait of a snapshot long poll.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);
const MAX_WAIT: Duration = Duration::from_secs(120);

/// `GET /v1/snapshot?version=V[&wait=30s]`: answers at once when the caller's version is not
/// the current one, otherwise waits until it changes; `304` when the wait ends with no change.
/// A blocked identity gets `403 identity_blocked`, also when the block comes during the wait.
pub async fn snapshot(
    state: &AppState,
    caller: &Caller,
    query: Option<&str>,
) -> Result<Resp, ApiError> {
    let identity = caller.identity.clone().ok_or_else(|| {
        ApiError::new(
            Code::Unauthenticated,
            "a mesh client certificate is required",
        )
    })?;
    let mut have = None;
    let mut wait = DEFAULT_WAIT;
    for (k, v) in query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
    {
        match k {
            "version" => have = Some(percent_decode(v)),
            "wait" => {
                wait = humantime::parse_duration(v)
                    .map_err(|_| {
                        ApiError::new(Code::BadWait, format!("wait={v} is not a duration"))
                    })?
                    .min(MAX_WAIT)
            }
            _ => {}
        }
    }
    state.proxies.record(
        &identity,
        caller.addr.ip().to_string(),
        have.clone(),
        caller.cert_expiry,
    );
    let mut rx = state.policies.subscribe();
    let mut trust_rx = state.trust.subscribe();
    let deadline = tokio::time::Instant::now() + wait;
    // Held while this poll waits: at most --max-watches-per-identity of one identity's polls.
    let mut watching = None;
    loop {
        let current = rx.borrow_and_update().clone();
        let trust = trust_rx.borrow_and_update().clone();
        // Checked on every wake-up too: a block that lands during a long poll ends it.
        if trust.is_blocked(&identity) {
            tracing::info!(client.id = %identity, "refused a snapshot to a blocked identity");
            return Err(ApiError::new(
                Code::IdentityBlocked,
                format!("{identity} is blocked (trustmesh identity block)"),
            ));
        }
        if have.as_deref() != Some(snapshot::version(&current.version, &trust).as_str()) {
            // Encoded per identity and version; shared by its polls once asked for twice.
            let timer = state.metrics.snapshot_push.start_timer();
            let body = state
                .snapshots
                .get(&current, &trust, &identity, Some(caller.addr.ip()))
                .map_err(|e| ApiError::new(Code::Internal, format!("encoding a snapshot: {e}")))?;
            timer.observe_duration();
            return Ok(text(StatusCode::OK, "application/json", body));
        }
        if watching.is_none() && !wait.is_zero() {
            watching = Some(state.limits.watch(&identity).ok_or_else(|| {
                ApiError::new(
                    Code::TooManyWatches,
                    format!(
                        "{identity} already has {} snapshot polls waiting \
                         (--max-watches-per-identity); retry later",
                        state.limits.args.max_watches_per_identity
                    ),
                )
            })?);
        }
        let changed = async {
            tokio::select! {
                r = rx.changed() => r.is_ok(),
                r = trust_rx.changed() => r.is_ok(),
                // Draining: end the wait now, so the proxy polls again (elsewhere).
                () = state.drain.started() => false,
            }
        };
        match tokio::time::timeout_at(deadline, changed).await {
            Ok(true) => continue,
            // Timed out, draining, or the source went away: tell the caller nothing changed.
            _ => {
                return Ok(Response::builder()
                    .status(StatusCode::NOT_MODIFIED)
                    .body(Full::new(Bytes::new()))
                    .unwrap_or_default())
            }
        }
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
