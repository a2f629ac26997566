//! Span export over OTLP/HTTP (`--otlp-endpoint http://collector:4318`): each sidecar hop of a
//! request becomes one span, `SERVER` for inbound and `CLIENT` for outbound, in the request's
//! W3C trace. The spans are encoded with the OpenTelemetry protocol types
//! (`opentelemetry-proto`, protobuf) and POSTed to `<endpoint>/v1/traces` in batches
//! (OTLP/HTTP, `application/x-protobuf`) by one background task.
//!
//! Parentage: a span's parent is the `traceparent` parent id the request arrived with. When the
//! outbound sidecar started the trace ([`crate::observe::trace::ensure`]), the parent id it wrote is its
//! own span's id, so the callee's inbound span hangs under it. Export never slows a request: a
//! full queue drops spans (counted in the log at debug), and a failed POST is logged and
//! dropped.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message as _;
use tokio::sync::{mpsc, oneshot};

use crate::observe::access_log::Entry;

/// Spans waiting for export at most; more are dropped.
const QUEUE: usize = 4096;
/// Spans in one export request at most.
const BATCH: usize = 512;
/// How often a partial batch is sent.
const INTERVAL: Duration = Duration::from_millis(500);

enum Msg {
    Span(Box<Span>),
    Flush(oneshot::Sender<()>),
}

static EXPORTER: OnceLock<mpsc::Sender<Msg>> = OnceLock::new();

/// Starts the export task for `endpoint` (an `http://` URL; `/v1/traces` is appended unless
/// the path already ends with it). Spans carry `service.name` = this sidecar's identity.
pub fn start(endpoint: &http::Uri, service: &str) -> anyhow::Result<()> {
    if endpoint.scheme_str() != Some("http") {
        anyhow::bail!("--otlp-endpoint {endpoint}: only http:// endpoints are supported (a collector next to the sidecar)");
    }
    let base = endpoint.to_string();
    let url: http::Uri = if base.trim_end_matches('/').ends_with("/v1/traces") {
        endpoint.clone()
    } else {
        format!("{}/v1/traces", base.trim_end_matches('/')).parse()?
    };
    let (tx, rx) = mpsc::channel(QUEUE);
    if EXPORTER.set(tx).is_err() {
        anyhow::bail!("the OTLP exporter was started twice");
    }
    tokio::spawn(export_loop(rx, url, service.to_string()));
    Ok(())
}

/// Whether spans are exported (`--otlp-endpoint` given).
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// Records one hop; a no-op without `--otlp-endpoint` or without a trace id.
pub fn record(
    direction: &str,
    entry: &Entry,
    status: StatusCode,
    start: SystemTime,
    elapsed: Duration,
) {
    let Some(tx) = EXPORTER.get() else {
        return;
    };
    let (Some(trace), Some(span_id)) = (entry.trace_id.as_deref(), entry.span_id.as_deref()) else {
        return;
    };
    let (Some(trace_id), Some(span_id)) = (unhex(trace), unhex(span_id)) else {
        return;
    };
    let parent = entry
        .parent_id
        .as_deref()
        .and_then(unhex)
        .unwrap_or_default();
    let start_ns = nanos(start);
    let mut attributes = vec![
        kv_str("http.request.method", entry.method.as_str()),
        kv_int("http.response.status_code", i64::from(status.as_u16())),
        kv_str("trustmesh.direction", direction),
    ];
    let optional = [
        ("url.path", entry.path.as_deref()),
        ("server.address", entry.authority.as_deref()),
        ("trustmesh.source", entry.source.as_deref()),
        ("trustmesh.destination", entry.destination.as_deref()),
        ("trustmesh.policy", entry.policy.as_deref()),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            attributes.push(kv_str(k, v));
        }
    }
    if let Some(d) = entry.decision {
        attributes.push(kv_str("trustmesh.decision", d));
    }
    let span = Span {
        trace_id,
        span_id,
        parent_span_id: parent,
        name: format!("{direction} {}", entry.method),
        kind: if direction == "inbound" {
            span::SpanKind::Server
        } else {
            span::SpanKind::Client
        } as i32,
        start_time_unix_nano: start_ns,
        end_time_unix_nano: start_ns.saturating_add(elapsed.as_nanos() as u64),
        attributes,
        status: Some(Status {
            code: if status.is_server_error() {
                status::StatusCode::Error
            } else {
                status::StatusCode::Unset
            } as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    if tx.try_send(Msg::Span(Box::new(span))).is_err() {
        tracing::debug!("OTLP queue full; a span was dropped");
    }
}

/// Sends what is queued and waits for it, up to `timeout` (at shutdown).
pub async fn flush(timeout: Duration) {
    let Some(tx) = EXPORTER.get() else {
        return;
    };
    let (done, wait) = oneshot::channel();
    if tx.send(Msg::Flush(done)).await.is_ok() {
        let _ = tokio::time::timeout(timeout, wait).await;
    }
}

async fn export_loop(mut rx: mpsc::Receiver<Msg>, url: http::Uri, service: String) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut batch: Vec<Span> = Vec::new();
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        let flush_done = tokio::select! {
            msg = rx.recv() => match msg {
                Some(Msg::Span(s)) => {
                    batch.push(*s);
                    if batch.len() < BATCH {
                        continue;
                    }
                    None
                }
                Some(Msg::Flush(done)) => Some(done),
                None => return,
            },
            _ = tick.tick() => None,
        };
        if !batch.is_empty() {
            let spans = std::mem::take(&mut batch);
            send(&client, &url, &service, spans).await;
        }
        if let Some(done) = flush_done {
            let _ = done.send(());
        }
    }
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &http::Uri,
    service: &str,
    spans: Vec<Span>,
) {
    let n = spans.len();
    let body = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "trustmesh-proxy".to_string(),
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    let req = match Request::post(url.clone())
        .header(header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::new(Bytes::from(body)))
    {
        Ok(r) => r,
        Err(e) => return tracing::warn!("OTLP request: {e}"),
    };
    match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
        Ok(Ok(resp)) if resp.status().is_success() => tracing::debug!(spans = n, "OTLP export"),
        Ok(Ok(resp)) => tracing::warn!(spans = n, status = %resp.status(), "OTLP export refused"),
        Ok(Err(e)) => tracing::warn!(spans = n, "OTLP export to {url} failed: {e}"),
        Err(_) => tracing::warn!(spans = n, "OTLP export to {url} timed out"),
    }
}

fn kv_str(key: &str, v: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.to_string())),
        }),
        ..Default::default()
    }
}

fn kv_int(key: &str, v: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        ..Default::default()
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Lowercase hex to bytes; `None` for anything else.
fn unhex(s: &str) -> Option<Vec<u8>> {
    s.as_bytes()
        .chunks(2)
        .map(|pair| match pair {
            [hi, lo] => u8::from_str_radix(std::str::from_utf8(&[*hi, *lo]).ok()?, 16).ok(),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unhex_round_trips_ids() {
        assert_eq!(
            unhex("00f067aa0ba902b7"),
            Some(vec![0, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        );
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
