//! W3C Trace Context through the mesh: a request's `traceparent` and `tracestate` reach B's
//! app unchanged; a request without one gets a new trace from A's outbound sidecar, and both
//! sidecars' access-log lines carry its trace id.

// Helpers outside #[test] functions fail the test by panicking, like the tests themselves.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use serde_json::Value;
use trustmesh_e2e::client::http1_get;
use trustmesh_e2e::mesh::Mesh;

const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

/// The single value of header `name` as B's app saw it.
fn seen_header(seen: &Value, name: &str) -> Option<String> {
    let values = seen["headers"][name].as_array()?;
    assert_eq!(values.len(), 1, "{name}: {values:?}");
    values[0].as_str().map(str::to_string)
}

fn is_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    parts.len() == 4
        && parts[0] == "00"
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && v.bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_passes_unchanged_or_is_started_by_the_outbound_sidecar() {
    let mut mesh = Mesh::a_to_b("tracing").await.expect("mesh starts");

    let resp = http1_get(
        mesh.a.outbound(),
        "b.test",
        "/traced",
        &[("traceparent", TRACEPARENT), ("tracestate", TRACESTATE)],
    )
    .await
    .expect("GET through A");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = resp.json().unwrap();
    assert_eq!(
        seen_header(&seen, "traceparent").as_deref(),
        Some(TRACEPARENT)
    );
    assert_eq!(
        seen_header(&seen, "tracestate").as_deref(),
        Some(TRACESTATE)
    );

    let resp = http1_get(mesh.a.outbound(), "b.test", "/untraced", &[])
        .await
        .expect("GET through A");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let seen = resp.json().unwrap();
    let started = seen_header(&seen, "traceparent").expect("A started a trace");
    assert!(is_traceparent(&started), "{started}");
    assert!(seen_header(&seen, "tracestate").is_none());
    let trace_id = started.split('-').nth(1).unwrap().to_string();
    assert_ne!(trace_id, "0".repeat(32));

    let out = mesh.a.wait_access_log(2).await;
    let inb = mesh.b.wait_access_log(2).await;
    assert_eq!(out.len(), 2, "{out:?}");
    assert_eq!(inb.len(), 2, "{inb:?}");
    assert_eq!(out[0]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(inb[0]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(out[1]["trace_id"], trace_id.as_str(), "{}", out[1]);
    assert_eq!(inb[1]["trace_id"], trace_id.as_str(), "{}", inb[1]);
}
