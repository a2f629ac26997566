use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Method};
use serde::Serialize;

use super::Line;
use crate::observe::access_log::Entry;
use crate::observe::trace;

/// The line as it was serialized before it was written field by field: a derived
/// `Serialize` with the entry flattened into it. The encoder must give the same bytes.
#[derive(Serialize)]
struct Reference<'a> {
    time: String,
    direction: &'a str,
    source: Option<&'a str>,
    destination: Option<&'a str>,
    method: &'a str,
    authority: Option<&'a str>,
    path: Option<&'a str>,
    decision: Option<&'static str>,
    policy: Option<&'a str>,
    route: Option<&'a str>,
    request_bytes: Option<u64>,
    trace_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upgrade: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tunnel_bytes_up: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tunnel_bytes_down: Option<u64>,
    status: u16,
    response_bytes: Option<u64>,
    duration_ms: f64,
}

fn both(line: &Line<'_>) -> (String, String) {
    let e = line.entry;
    let reference = Reference {
        time: trustmesh_runtime::rfc3339_precise(line.time),
        direction: line.direction,
        source: e.source.as_deref(),
        destination: e.destination.as_deref(),
        method: e.method.as_str(),
        authority: e.authority.as_deref(),
        path: e.path.as_deref(),
        decision: e.decision,
        policy: e.policy.as_deref(),
        route: e.route.as_deref(),
        request_bytes: e.request_bytes,
        trace_id: e.trace_id.as_deref(),
        upgrade: e.upgrade.as_deref(),
        tunnel_bytes_up: e.tunnel_bytes_up,
        tunnel_bytes_down: e.tunnel_bytes_down,
        status: line.status,
        response_bytes: line.response_bytes,
        duration_ms: line.duration_ms,
    };
    let mut out = Vec::new();
    line.encode(&mut out).unwrap();
    (
        String::from_utf8(out).unwrap(),
        serde_json::to_string(&reference).unwrap(),
    )
}

fn full() -> Entry {
    let mut h = HeaderMap::new();
    h.insert(
        trace::TRACEPARENT,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    Entry {
        source: Some("spiffe://cluster.local/ns/shop/sa/web".into()),
        destination: Some("spiffe://cluster.local/ns/shop/sa/orders".into()),
        method: Method::POST,
        authority: Some("orders.shop:8080".into()),
        path: Some("/orders/42".into()),
        decision: Some("allow"),
        policy: Some(Arc::from("shop/orders-api")),
        route: Some(Arc::from("shop/orders-api#0")),
        request_bytes: Some(512),
        trace_id: trace::trace_id(&h),
        detail: true,
        ..Entry::default()
    }
}

#[test]
fn every_line_is_the_json_the_derived_serializer_wrote() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_796_118_795_113_000_000);
    let empty = Entry::default();
    let mut escapes = full();
    // What a caller controls, with everything JSON must escape.
    escapes.authority = Some("a\"b\\c\u{1}\n\t\u{7f}é\u{2028}".into());
    escapes.path = Some("/\u{0}\"</script>".into());
    escapes.method = Method::from_bytes(b"PURGE").unwrap();
    escapes.policy = None;
    escapes.decision = None;
    let mut upgrade = full();
    upgrade.upgrade = Some("websocket".into());
    upgrade.tunnel_bytes_up = Some(0);
    upgrade.tunnel_bytes_down = Some(u64::MAX);
    let mut half = full();
    half.tunnel_bytes_up = Some(7);
    let cases = [
        (&full(), t, 200, Some(3), 1.84),
        (&empty, SystemTime::UNIX_EPOCH, 400, None, 0.0),
        (
            &escapes,
            t + Duration::from_nanos(1),
            503,
            Some(0),
            12345.678,
        ),
        (&upgrade, t + Duration::from_secs(86_400), 101, None, 0.001),
        (&half, t, 200, None, f64::NAN),
    ];
    for (entry, time, status, response_bytes, duration_ms) in cases {
        for direction in ["inbound", "outbound"] {
            let line = Line {
                time,
                direction,
                entry,
                status,
                response_bytes,
                duration_ms,
            };
            let (ours, reference) = both(&line);
            assert_eq!(ours, reference);
            let parsed: serde_json::Value = serde_json::from_str(&ours).unwrap();
            assert_eq!(parsed["direction"], direction);
        }
    }
    let (ours, _) = both(&Line {
        time: t,
        direction: "inbound",
        entry: &escapes,
        status: 200,
        response_bytes: None,
        duration_ms: 1.0,
    });
    let parsed: serde_json::Value = serde_json::from_str(&ours).unwrap();
    assert_eq!(parsed["authority"], "a\"b\\c\u{1}\n\t\u{7f}é\u{2028}");
    assert_eq!(parsed["path"], "/\u{0}\"</script>");
    assert_eq!(parsed["method"], "PURGE");
}
